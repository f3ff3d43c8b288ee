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


def test_after_a_class_is_renamed_classify_and_the_model_card_use_the_new_name(browser, trained_project, tmp_path):
    pic = tmp_path / "pic.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=93).save(pic)
    with harness.serve(trained_project.root) as srv, harness.app_page(browser, srv.url) as app:
        app.tab("search")
        app.pick_classes(["red"])
        app.page.locator("#manage-name textarea, #manage-name input").first.fill("crimson")
        app.class_action("class-rename", r"Renamed class 'red' to 'crimson'")

        text = app.classify([pic])
        assert "crimson" in text and "blue" in text and not re.search(r"\bred\b", text), text
        app.open_accordion("model-card")
        card = app.page.locator("#model-card-text")
        expect(card).to_contain_text("Changed since it was trained: 'red' is now 'crimson'")
        expect(app.page.locator("#model-card-confusion")).to_contain_text("crimson")
        app.screenshot(tmp_path / "classify-after-rename.png")

        app.tab("search")
        app.class_action("pictures-undo", r"Undone: renamed class 'red' to 'crimson'")
        app.tab("classify")
        app.upload("classify-files", [pic])
        app.wait_idle()
        expect(app.page.locator("#classify-label")).to_contain_text(re.compile(r"\bred\b"))
        expect(app.page.locator("#classify-label")).not_to_contain_text("crimson")
