"""What a Space's owner sees in the browser: the warning about a data folder a restart wipes, and a used-up
GPU quota with "Train on the CPU instead".

The ZeroGPU server is ``python app.py`` with ``SPACES_ZERO_GPU`` set and the real ``spaces`` package; its
device API is a loopback stand-in that lends no GPU (tests/zerogpu_api.py). The browser sends the
``X-IP-Token`` header Hugging Face's proxy adds, so the refusal is the signed-in visitor's own quota.
"""

from __future__ import annotations

import pytest

import imagegen
from harness import AppPage, app_page, serve
from tl_app import runs
from tl_app.importer import import_files
from tl_app.project import Project
from zerogpu_api import QUOTA, ZeroGpuApi, ip_token, zerogpu_app

expect = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed").expect

pytestmark = pytest.mark.browser


def test_on_a_space_the_owner_is_warned_that_a_restart_wipes_the_project_and_visitors_are_not(
        browser, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "ann/classifier")  # a Space; the project is on this machine's root disk
    monkeypatch.delenv("TL_HOME", raising=False)
    with serve(tmp_path / "proj", shared=True, auth=[("ann", "pw-ann")]) as srv, \
            app_page(browser, srv.url, login=("ann", "pw-ann")) as app:
        header = app.text("page-header")
        assert "This Space will forget your pictures and models when it restarts" in header
        assert str(srv.project.root) in header and "attach a storage bucket" in header
        assert "this version cannot do it yet" in header  # the Hub: said to be planned, no button for it
        assert app.page.get_by_role("button", name="Save to the Hub").count() == 0
        app.screenshot(tmp_path / "owner-warning.png")
    with serve(tmp_path / "proj2", shared=True) as srv, app_page(browser, srv.url, visitor=True) as app:
        header = app.text("page-header")
        assert "You are visiting this app" in header and "forget" not in header and "TL_HOME" not in header
        app.screenshot(tmp_path / "visitor-no-warning.png")


@pytest.mark.slow
def test_on_zerogpu_a_used_up_quota_offers_training_on_the_cpu(browser, tmp_path):
    project = Project.open(tmp_path / "proj", create=True)
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=12)])
    with ZeroGpuApi(QUOTA, left=12, wait=3540) as api:
        proc, url = zerogpu_app(project.root, api.url, tmp_path / "app.log")
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      extra_http_headers={"x-ip-token": ip_token()})
        try:
            app = AppPage(context.new_page(), url).open()
            app.tab("train")
            # Gradio caps an unsized queue at one event on ZeroGPU: the page's own events must not be refused.
            assert app.page.get_by_text("This application is currently busy").count() == 0
            assert "a GPU lent by ZeroGPU for each training" in app.text("train-device")
            cpu = app.page.locator("#train-cpu-button")
            expect(cpu).to_be_hidden()
            app.page.locator("#train-mode input[type=radio][value=full]").check()
            app.page.locator("#train-pretrained input[type=checkbox]").set_checked(False)
            app.wait_idle()
            app.choose("train-size", "128")
            app.page.locator("#train-button").click()
            status = app.wait_text("train-status", r"used up for now", 60_000)
            assert status.startswith("Your GPU time on Hugging Face is used up for now (this training asks for")
            assert "It comes back after 59 min" in status and "train on the CPU instead" in status
            expect(cpu).to_be_visible()
            app.wait_idle()
            app.screenshot(tmp_path / "quota.png")
            assert len(api.schedules()) == 1 and runs.list_runs(project) == []

            cpu.click()
            ending = app.wait_train_end(status, 300_000)
            run = runs.list_runs(project)[0]
            assert ending.startswith(f"{run.name} finished in ") and run.config["cpu"] is True
            expect(cpu).to_be_hidden()
            assert app.text("train-device").startswith("Device: CPU")
            app.screenshot(tmp_path / "trained-on-cpu.png")
            assert len(api.schedules()) == 1  # the CPU training asked ZeroGPU for nothing
            assert app.page.get_by_text("This application is currently busy").count() == 0
        finally:
            context.close()
            proc.terminate()
            proc.wait(30)
