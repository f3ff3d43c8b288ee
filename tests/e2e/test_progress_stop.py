"""A long import clicked through in Chromium: its progress says how much is left, Stop ends it and keeps what is in.

The pictures are large (each takes a noticeable time to read), so the import lasts long enough to watch.
"""

from __future__ import annotations

import re

import pytest

import imagegen

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def _stop_while_it_shows_the_time_left(app, stop_id: str, shots, name: str, bar_id: str) -> None:
    page = app.page
    expect(page.locator(f"#{stop_id}")).to_be_visible(timeout=30_000)
    # Gradio's progress bar under the buttons: "Importing, about 8 s left" and "12/60 files".
    bar = page.locator(f"#{bar_id}")
    expect(bar.get_by_text(re.compile(r"Importing, .* left"))).to_be_visible(timeout=60_000)
    expect(bar.get_by_text(re.compile(r"\d+/60 files"))).to_be_visible()
    if shots is not None:
        app.screenshot(shots / f"{name}-running.png")
    page.locator(f"#{stop_id}").click()
    app.wait_text("import-result", r"stopped after \d+ of 60 files", 30_000)
    app.wait_idle()
    expect(page.locator(f"#{stop_id}")).to_be_hidden()
    expect(bar).to_be_hidden()
    if shots is not None:
        app.screenshot(shots / f"{name}-stopped.png")


def test_a_long_upload_shows_the_time_left_and_stop_keeps_what_is_in(app, server, tmp_path):
    files = sorted(imagegen.slow_pictures(tmp_path / "big", 60).glob("*.png"))
    app.choose("target-class", "gradient")
    app.upload("upload-files", files)
    app.page.locator("#add-files").click()
    _stop_while_it_shows_the_time_left(app, "import-stop", tmp_path, "upload", "import-progress")  # screenshots kept
    text = app.text("import-result")
    assert "1 imported" in text and "the one imported stays (Undo removes it)" in text
    assert len(server.project.items()) == 1 and app.class_counts() == {"gradient": 1}
    # Undo takes the stopped import out again.
    app.class_action("pictures-undo", r"Undone: imported 1 picture before the import was stopped")
    assert server.project.items() == []


def test_a_long_folder_import_has_its_own_stop(app, server, tmp_path):
    src = imagegen.slow_pictures(tmp_path / "big" / "gradient", 60).parent
    app.page.get_by_text("Import a folder from this computer").click()
    app.page.get_by_label("Folder").fill(str(src))
    app.page.locator("#import-folder").click()
    _stop_while_it_shows_the_time_left(app, "import-folder-stop", tmp_path, "folder", "import-folder-progress")
    assert len(server.project.items()) == 1
