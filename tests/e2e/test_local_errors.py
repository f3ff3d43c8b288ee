"""A mistake in one field (an empty class name, a search with no words) shows one message and leaves
every other part of the page as it was: no "Error" badges on the class table, dropdowns or gallery."""

from __future__ import annotations

import pytest

import imagegen
from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def _error_badges(page) -> int:
    """Status trackers showing an error (Gradio marks every output of a failed event this way)."""
    return page.locator("[data-testid=status-tracker] .error").count()


def test_an_empty_class_name_and_an_empty_search_stay_local(app, server, tmp_path):
    import_files(server.project, [imagegen.class_folder(tmp_path / "pictures", per_class=3)])
    page = app.page
    page.reload()
    app.open()
    app.choose("browse-class", "red")
    expect(page.locator("#browse-gallery img")).to_have_count(3)
    table = app.text("classes-table")

    page.locator("#add-class").click()                                  # no name typed
    expect(page.get_by_text("A class name cannot be empty.")).to_have_count(1)
    app.wait_idle()
    assert _error_badges(page) == 0
    assert app.text("classes-table") == table                          # the table is still there, unchanged
    expect(page.locator("#browse-gallery img")).to_have_count(3)        # and so is the gallery

    page.locator("#web-search").click()                                 # a search with no words
    expect(page.get_by_text("Type the classes to search for", exact=False)).to_have_count(1)
    app.wait_idle()
    assert _error_badges(page) == 0
    assert app.text("classes-table") == table
    expect(page.locator("#browse-gallery img")).to_have_count(3)
