"""The page as a person sees it: every table shows all its columns at 1280 px, every tab is reachable at 390 px."""

from __future__ import annotations

import pytest

import harness
import imagegen
from tl_app.importer import import_files
from tl_app.project import Project
from tl_app.train import TrainConfig, train

pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed")

pytestmark = pytest.mark.browser

#: Ten classes with names of the usual lengths: the tables get a column per class.
CLASSES = ("centipede", "millipede", "house spider", "ground beetle", "earwig", "woodlouse", "earthworm", "slug",
           "garden snail", "harvestman")
#: Something a person sees on each tab once it is open.
MARKS = {"search": "add-class", "review": "review-refresh", "train": "train-button", "classify": "classify-files"}
#: The tables of each tab.
TABLES = {"search": ["classes-table"], "review": ["review-matrix"],
          "train": ["train-per-class", "train-confusion", "runs-table"]}


@pytest.fixture
def ten_classes(tmp_path, fake_pretrained):
    """A project of ten classes with a quick run and a fine-tuning run (so the runs table has both)."""
    src = tmp_path / "src"
    for i, name in enumerate(CLASSES):
        (src / name).mkdir(parents=True)
        colour = ((i * 71) % 256, (i * 139) % 256, (i * 197) % 256)
        for k in range(6):
            imagegen.noisy(colour, seed=i * 100 + k).save(src / name / f"{k}.png")
    project = Project.open(tmp_path / "project", create=True)
    import_files(project, [src])
    train(project, TrainConfig(quick=True, size=64))
    train(project, TrainConfig(size=64, epochs=1, pretrained=False))
    return project


def test_tables_show_every_column_at_1280_px_and_every_tab_is_reachable_at_390_px(browser, ten_classes, tmp_path):
    with harness.serve(ten_classes.root) as srv:
        with harness.app_page(browser, srv.url, width=1280) as app:
            for key, tables in TABLES.items():
                app.tab(key)
                if key == "review":
                    app.page.get_by_role("button", name="Confusion matrix: click a cell to see its pictures").click()
                for table in tables:
                    app.page.locator(f"#{table} th").first.wait_for()
                    # The layout at rest: a table shown as its box appears sizes its columns a moment later.
                    harness.wait_until(lambda: app.hidden_columns(table) == [], timeout=10)
                    if app.hidden_columns(table):
                        app.screenshot(tmp_path / f"{key}-1280-cut.png")
                    assert app.hidden_columns(table) == [], (key, table, app.column_boxes(table))
                app.screenshot(tmp_path / f"{key}-1280.png")
        with harness.app_page(browser, srv.url, width=390, height=844) as app:
            for key, name in harness.TABS.items():
                tab = app.page.get_by_role("tab", name=name, exact=True)
                assert tab.is_visible(), f"no visible tab labelled {name!r} at 390 px"
                tab.click()
                app.wait_idle()
                assert app.page.locator(f"#{MARKS[key]}").is_visible(), key
                app.screenshot(tmp_path / f"{key}-390.png")
