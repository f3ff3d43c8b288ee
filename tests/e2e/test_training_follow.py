"""A training belongs to the person, not to the page: reload during training, see it, stop it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import harness
import imagegen
from tl_app import runs
from tl_app.importer import import_files

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser

PROGRESS = r"(warm-up \(last layers only\)|epoch \d+ of 20), \d+% of the run done"


def _training_processes() -> list[str]:
    """Processes this test process started that the system still holds (running or zombie)."""
    out = subprocess.run(["ps", "-o", "stat=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if "tl_app" in ln or ln.strip().startswith("Z")]


def test_reload_during_training_shows_its_progress_and_stop_ends_it(app, server, browser, tmp_path):
    page = app.page
    import_files(server.project, [imagegen.class_folder(tmp_path / "pictures", per_class=40)])
    app.tab("train")
    page.locator("#train-mode input[type=radio][value=full]").check()
    page.locator("#train-pretrained input[type=checkbox]").set_checked(False)
    app.choose("train-size", "128")
    app.open_accordion("train-full-options")
    epochs = page.locator("#train-epochs input[type=number]")
    epochs.fill("20")
    epochs.press("Enter")
    page.locator("#train-button").click()
    app.wait_text("train-status", PROGRESS, 120_000)
    run = runs.list_runs(server.project)[0]
    assert run.status == "running" and run.name.startswith("Full fine-tuning · resnet18 · ")
    # The progress line appears once: no progress bar repeats it.
    assert page.locator("body").inner_text().count("of the run done") == 1

    # The same person reloads the page: the Train tab catches up with the training and follows it.
    app.reload()
    app.tab("train")
    line = app.wait_text("train-status", rf"^\s*{re.escape(run.name)}: {PROGRESS}", 60_000)
    app.wait_text("runs-table", rf"{re.escape(run.name)}\s+running")
    assert page.locator("body").inner_text().count("of the run done") == 1
    expect(page.locator("#train-plot [aria-roledescription='line mark']")).to_have_count(3, timeout=60_000)

    # A second tab of theirs shows it too, and the line moves on.
    with harness.app_page(browser, server.url) as second:
        second.tab("train")
        second.wait_text("train-status", rf"^\s*{re.escape(run.name)}: {PROGRESS}", 60_000)
        expect(page.locator("#train-status")).not_to_have_text(line.strip(), timeout=60_000)

        # Stop, from the reloaded page: the training ends after its batch, and every page says so.
        page.locator("#stop-button").click()
        app.wait_text("train-status", rf"Stopping {re.escape(run.name)} after the current batch")
        status = app.wait_train_end(timeout_ms=120_000)
        assert status.startswith(f"{run.name} stopped."), status
        second.wait_text("train-status", rf"^\s*{re.escape(run.name)} stopped\.", 30_000)
        for p in (app, second):
            p.wait_text("runs-table", rf"{re.escape(run.name)}\s+stopped")
            expect(p.page.locator("#runs-table")).not_to_contain_text("running")
    assert runs.get_run(server.project, run.id).status == "stopped"
    assert _training_processes() == []  # ended and reaped

    # Opening the tab later: how the run ended, never "running".
    app.reload()
    app.tab("train")
    app.wait_text("train-status", rf"^\s*Latest run: {re.escape(run.name)} stopped\.")
    expect(page.locator("#runs-table")).not_to_contain_text("running")
