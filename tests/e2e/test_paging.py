"""Large classes and long review queues come a page at a time; "Show more" adds the next page."""

from __future__ import annotations

import numpy as np
from PIL import Image
import pytest

from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect


def test_show_more_adds_the_next_pictures_and_goes_away_at_the_end(app, server, tmp_path):
    src = tmp_path / "pics" / "apples"
    src.mkdir(parents=True)
    for i in range(130):  # 40 px: each is also a poor (tiny) picture, so Review lists every one
        small = np.random.default_rng(i).integers(0, 256, (3, 4, 3)).astype(np.uint8)
        Image.fromarray(small).resize((40, 40), Image.Resampling.BICUBIC).save(src / f"{i:03d}.png")
    import_files(server.project, [src.parent])
    page = app.page
    page.reload()
    app.open()
    app.choose("browse-class", "apples")
    expect(app.browse_thumbs()).to_have_count(60)
    more = page.locator("#browse-more")
    expect(more).to_have_text("Show 60 more (of 70 not shown)")
    more.click()
    expect(app.browse_thumbs()).to_have_count(120)
    expect(more).to_have_text("Show 10 more (of 10 not shown)")
    page.screenshot(path=str(tmp_path / "search-more.png"))
    more.click()
    expect(app.browse_thumbs()).to_have_count(130)
    expect(more).to_be_hidden()

    app.tab("review")
    expect(app.review_thumbs()).to_have_count(48)
    review_more = page.locator("#review-more")
    expect(review_more).to_have_text("Show 48 more (of 82 not shown)")
    review_more.click()
    expect(app.review_thumbs()).to_have_count(96)
    page.screenshot(path=str(tmp_path / "review-more.png"))
