"""A person fills three classes from a web search, clicked through in a real Chromium.

The search engine is replaced by recorded results (a hundred per class, as the
app asks for by default) whose links point at a loopback picture server; the
browser loads the previews from it and the app downloads from it through its
real fetcher and image pipeline.
"""

from __future__ import annotations

import pytest

import badserver
from tl_app.search import RecordedProvider

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser

CLASSES = ("centipede", "millipede", "spider")


@pytest.fixture
def pictures(monkeypatch):
    with badserver.start() as s:
        monkeypatch.setenv("TL_ALLOW_HOSTS", s.hostport)
        yield s


def recorded(srv) -> dict[str, list[dict]]:
    """100 results per class: 96 good pictures, 3 variants of one "photo unavailable" placeholder, 1 dead link."""
    out = {}
    for k, label in enumerate(CLASSES):
        rows = [{"title": f"{label} {i}", "image": srv.url(f"/img/{k * 1000 + i}.jpg"),
                 "thumbnail": srv.url(f"/thumb/{k * 1000 + i}.jpg")} for i in range(96)]
        rows += [{"title": f"removed {i}", "image": srv.url(f"/placeholder/{k * 3 + i}.jpg")} for i in range(3)]
        rows.append({"title": "gone", "image": srv.url(f"/status/404?{label}")})
        out[label] = rows
    return out


def test_three_classes_from_a_web_search(app, server, pictures):
    page, project = app.page, server.project
    server.demo.tl_context.search_provider = RecordedProvider(recorded(pictures))
    # Nothing to download yet: the download buttons appear with the results.
    for button in ("all", "selected"):
        expect(page.locator(f"#web-download-{button}")).to_be_hidden()

    found = app.search_web("centipede, millipede, spider")
    expect(page.locator("#web-download-all")).to_be_visible()
    expect(page.locator("#web-stop")).to_be_visible()
    for label in CLASSES:
        assert f"{label}: 100 pictures found" in found, found
    expect(app.web_results()).to_have_count(300)
    assert project.labels() == []

    # Pick two pictures, then change one's mind: the ticks and the count follow the clicks.
    assert "1 of 300 selected" in app.toggle_web_result(0)
    assert "2 of 300 selected (centipede 1, spider 1)" in app.toggle_web_result(200)
    assert "1 of 300 selected (spider 1)" in app.toggle_web_result(0)
    expect(page.locator("#web-preview")).to_contain_text("☑ spider")

    summary = app.download_web("all", timeout_ms=120_000)
    # Three links of one host gave the same "photo unavailable" picture: none of it stays, and
    # once it is known, a single copy in a later class is refused at once.
    for label in CLASSES:
        assert f"{label}: 96 downloaded, 4 refused (3 of them 'photo unavailable' placeholders)" in summary, summary
    counts = {label: 96 for label in CLASSES}
    for label, n in counts.items():
        app.wait_text("classes-table", rf"{label}\s+{n}")
    assert project.label_counts() == counts

    # Every refusal is there with its reason, folded away until asked for.
    page.locator("#web-refusals-box").get_by_text("Refused links (12)").click()
    expect(page.locator("#web-refusals")).to_contain_text("HTTP 404")
    expect(page.locator("#web-refusals")).to_contain_text(pictures.url("/status/404?spider"))
    expect(page.locator("#web-refusals")).to_contain_text("placeholder")

    # The first class's new pictures are on show below.
    expect(page.locator("#browse-gallery img")).to_have_count(60)
