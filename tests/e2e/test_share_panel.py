"""The sharing panel as a person meets it: download the dataset, restore a project zip into an empty app."""

from __future__ import annotations

import os
import zipfile

import pytest

import imagegen
from tl_app.importer import import_files
from tl_app.share.archive import export_project

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def test_download_the_dataset_and_restore_a_project_zip(app, server, tmp_path):
    page = app.page
    # A project zip made elsewhere, to restore into this (empty) app.
    from tl_app.project import Project

    other = Project.open(tmp_path / "elsewhere", create=True)
    import_files(other, [imagegen.class_folder(tmp_path / "pictures", per_class=5)])
    zip_path = export_project(other, tmp_path / "elsewhere.zip").out

    app.tab("train")
    app.open_accordion("share-panel")
    page.locator("#share-restore-file input[type=file]").set_input_files(str(zip_path))
    page.locator("#share-restore-button").click()
    app.wait_text("share-restored", r"Restored 10 pictures in 2 classes.*It is this app's project now")
    assert server.project.label_counts() == {"red": 5, "blue": 5}

    with page.expect_download() as dl:
        page.locator("#share-dataset-button").click()
        app.wait_text("share-note", r"Wrote project-dataset.zip \(10 pictures in 2 classes")
        page.locator("#share-file a").first.click()
    saved = tmp_path / "downloaded.zip"
    dl.value.save_as(saved)
    assert {"metadata.csv", "README.md"} <= set(zipfile.ZipFile(saved).namelist())
    if os.environ.get("TL_SHOTS"):
        app.screenshot(os.environ["TL_SHOTS"])
