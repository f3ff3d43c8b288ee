"""The Train tab's options as a person meets them: quick mode and its weights, stopping a learning-rate search."""

from __future__ import annotations

import pytest

import imagegen
from tl_app import runs
from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def test_quick_mode_needs_weights_and_a_learning_rate_search_stops(app, server, tmp_path):
    page = app.page
    import_files(server.project, [imagegen.class_folder(tmp_path / "pictures", per_class=12)])
    app.tab("train")
    assert app.train_mode() == "quick"
    expect(page.locator("#train-full-options [data-testid=accordion-content]")).to_be_hidden()

    # Unticking the pretrained weights cannot leave quick mode on: the tab switches, and says why.
    page.locator("#train-pretrained input[type=checkbox]").set_checked(False)
    app.wait_text("train-mode-note", r"Quick mode needs pretrained weights.*Switched to full fine-tuning")
    assert app.train_mode() == "full"
    expect(page.locator("#train-epochs")).to_be_visible()  # the full fine-tuning options open

    # Choosing quick again ticks the weights again.
    page.locator("#train-mode input[type=radio][value=quick]").check()
    app.wait_text("train-mode-note", r"'Pretrained weights' is ticked again")
    expect(page.locator("#train-pretrained input[type=checkbox]")).to_be_checked()

    # "Suggest a learning rate" runs in the background and Stop ends it (the suggestion itself is
    # checked through the API in test_ui_client.py).
    page.locator("#train-mode input[type=radio][value=full]").check()
    page.locator("#train-pretrained input[type=checkbox]").set_checked(False)
    app.choose("train-size", "320")  # large enough that the search is still running when Stop is clicked
    page.locator("#lr-find-button").click()
    app.wait_text("train-status", r"Searching for a good learning rate|Reading pictures|Trying learning rates")
    page.locator("#stop-button").click()
    app.wait_text("train-status", r"The learning-rate search was stopped; the learning rate is unchanged", 180_000)
    app.wait_idle()
    assert app.learning_rate() == ""  # no suggestion filled in
    assert runs.list_runs(server.project) == []  # a search is not a run
