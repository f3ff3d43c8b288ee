"""Classify several pictures: the Prediction box says which one it shows, and a click shows another."""

from __future__ import annotations

import re

import pytest

import harness
import imagegen

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def test_the_prediction_box_names_the_picture_it_shows(browser, trained_project, tmp_path):
    red, blue = tmp_path / "my red one.png", tmp_path / "holiday blue.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=91).save(red)
    imagegen.noisy(imagegen.COLOURS["blue"], seed=92).save(blue)
    with harness.serve(trained_project.root) as srv, harness.app_page(browser, srv.url) as app:
        app.classify([red, blue])
        box = app.page.locator("#classify-label")
        expect(box).to_contain_text("Prediction for my red one.png (1 of 2; click another picture below")
        captions = app.page.locator("#classify-gallery").inner_text()
        assert re.search(r"my red one\.png: (red|blue) \d+%", captions) and "holiday blue.png: " in captions
        app.page.locator("#classify-gallery img").nth(1).click()
        expect(box).to_contain_text("Prediction for holiday blue.png (2 of 2;")
        expect(box).to_contain_text(re.compile(r"\d+%"))
