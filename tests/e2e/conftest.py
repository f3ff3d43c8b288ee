"""Fixtures for the browser tests: the system Chromium, a served app, and a page on it.

Every test here is skipped, with the reason printed in the summary, when no
Chromium is found (Debian: ``apt-get install chromium``; or set TL_CHROMIUM).
"""

from __future__ import annotations

import pytest

import harness


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Remember how each phase went, so that the page fixture can keep a screenshot of a failure.
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def chromium_exe() -> str:
    exe = harness.find_chromium()
    if exe is None:
        reason = "no Chromium found (install Debian's `chromium` or set TL_CHROMIUM to its path)"
        print(f"\nbrowser tests skipped: {reason}")
        pytest.skip(reason)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("Python Playwright is not installed (pip install -r tests/requirements.txt)")
    return exe


@pytest.fixture(scope="module")
def browser(chromium_exe):
    # Not session-wide: Playwright's sync API keeps an asyncio loop running in this thread
    # while it is started, and asyncio.run() in later test modules would then fail.
    with harness.chromium(chromium_exe) as b:
        yield b


@pytest.fixture
def server(tmp_path):
    """The app on a new, empty project, served on a free loopback port in this process.

    The training it starts inherits ``os.environ``: request ``fake_pretrained``
    (which sets TORCH_HOME) to train with pretrained weights offline.
    """
    with harness.serve(tmp_path / "project") as srv:
        yield srv


@pytest.fixture
def app(browser, server, request, tmp_path):
    """A 1280 px wide page on the app; a failing test leaves a full-page screenshot behind."""
    with harness.app_page(browser, server.url) as page:
        yield page
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            shot = page.screenshot(tmp_path / "failure.png")
            print(f"\nscreenshot of the failure: {shot}")
