"""The Train tab's export section in a real browser: pick a run, export, read the parity figures, download."""

from __future__ import annotations

import os
import zipfile

import pytest

import harness

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_an_owner_exports_the_run_in_use_as_a_bundle_and_downloads_the_zip(browser, trained_project, tmp_path):
    with harness.serve(trained_project.root) as srv, harness.app_page(browser, srv.url) as app:
        app.tab("train")
        app.open_accordion("export-panel")
        app.wait_idle()
        assert "(in use)" not in app.options("export-run")[0] and ", in use" in app.options("export-run")[0]
        app.page.locator("#export-bundle-button").click()
        text = app.wait_text("export-status", "Same answers as the app", timeout_ms=180_000)
        assert "checked on 32 pictures (6 held out)" in text and "the same for 100%" in text
        app.page.locator("#export-panel").scroll_into_view_if_needed()
        app.screenshot(tmp_path / "export.png")
        if os.environ.get("TL_SHOTS"):
            app.page.locator("#export-panel").screenshot(path=os.environ["TL_SHOTS"])
        with app.page.expect_download() as dl:
            app.page.locator("#export-file a").first.click()
        path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(path)
        assert path.name.endswith("-bundle.zip")
        with zipfile.ZipFile(path) as z:
            assert {"model.onnx", "predict.py", "README.md"} <= set(z.namelist())
