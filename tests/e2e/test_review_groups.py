"""Duplicate groups in a real browser: the copies side by side, keep one, trash the others, undo."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageDraw, ImageOps

import imagegen
from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


@pytest.fixture
def copies(tmp_path, server):
    """A beach scene, a cropped copy, a captioned copy and a mirrored one, among other scenes."""
    src = tmp_path / "pictures"
    src.mkdir()
    scene = imagegen.scene(11)
    w, h = scene.size
    captioned = scene.copy()
    ImageDraw.Draw(captioned).text((w // 2, h - 18), "© pics.com", fill=(255, 255, 255), anchor="mm", font_size=16)
    files = [("beach.jpg", scene), ("beach cropped.jpg", scene.crop((20, 10, w - 8, h - 14))),
             ("beach captioned.jpg", captioned), ("beach mirrored.jpg", ImageOps.mirror(scene))]
    files += [(f"scene {i}.jpg", imagegen.scene(300 + i)) for i in range(4)]
    project = server.project
    for name, im in files:  # one by one: the beach is the first added
        im.save(src / name, quality=85)
        import_files(project, [src / name], label="beach" if name.startswith("beach") else "other")
    return project, {Path(it.source).name: it.id for it in project.items()}


def test_keep_one_of_a_group_then_undo(app, copies):
    project, ids = copies
    page = app.page
    app.tab("review")
    group = page.locator("#review-group-gallery img")
    expect(group).to_have_count(3)
    app.wait_text("review-group-note", r"3 pictures.*“beach.jpg” first")
    expect(page.locator("#review-group-gallery")).to_contain_text("✓ keep · beach.jpg")
    # The pictures of the queue and of the group are named by file, never by an item id.
    assert not any(i in page.locator("#review-group-gallery").inner_text() for i in ids.values())
    assert not any(i in page.locator("#review-gallery").inner_text() for i in ids.values())

    # Click the cropped copy: it becomes the one to keep.
    group.nth(1).click()
    app.wait_text("review-group-note", r"now: “beach cropped.jpg”")
    expect(page.locator("#review-group-gallery")).to_contain_text("✓ keep · beach cropped.jpg")
    members = [ids["beach.jpg"], ids["beach cropped.jpg"], ids["beach captioned.jpg"]]
    before = {i: project.path_of(project.item(i)).read_bytes() for i in members}

    page.locator("#review-group-keep").click()
    app.wait_text("review-status", r"Kept “beach cropped.jpg” and moved 2 copies of it to the trash")
    assert [i for i in members if project.item(i).status == "active"] == [ids["beach cropped.jpg"]]
    app.wait_text("review-group-note", r"No copies found")

    # One undo brings both back, byte for byte, and the group is shown again.
    page.locator("#review-undo").click()
    app.wait_text("review-status", r"Undone: kept “beach cropped.jpg”")
    assert all(project.path_of(project.item(i)).read_bytes() == b for i, b in before.items())
    expect(group).to_have_count(3)

    # Loose: the mirrored copy joins the group, named as such.
    page.get_by_text("Loose: also mirrored copies").click()
    expect(group).to_have_count(4)
    expect(page.locator("#review-group-gallery")).to_contain_text("beach mirrored.jpg")
    expect(page.locator("#review-group-gallery")).to_contain_text("mirrored")
