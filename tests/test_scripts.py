"""The two set-up scripts a user starts with: ./scripts/run takes --port and --project."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], env: dict, port: int, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ./scripts/run and wait until the page answers; returns the process and the page."""
    proc = subprocess.Popen([str(ROOT / "scripts" / "run"), *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"./scripts/run ended with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                return proc, r.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise AssertionError(f"./scripts/run did not answer on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> str:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs the repository's .venv "
                    "(./scripts/test creates it)")
def test_run_serves_the_given_project_on_the_given_port_and_installs_nothing_twice(tmp_path):
    port = _free_port()
    project = tmp_path / "my project"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", TL_HOME=str(tmp_path / "home"))
    stamp = ROOT / ".venv" / ".tl_app-installed"
    proc, page = _serve(["--port", str(port), "--project", str(project)], env, port)
    try:
        assert "tl_app" in page
        assert (project / "project.db").is_file()          # the project named on the command line, created
        assert not (tmp_path / "home").exists()            # not the default one
    finally:
        out = _stop(proc)
    assert "No such requirements file" not in out
    before = stamp.read_text()
    port2 = _free_port()
    proc, _ = _serve(["--port", str(port2), "--project", str(project)], env, port2)
    _stop(proc)
    assert stamp.read_text() == before                      # a second start appends nothing to the marker
    assert len(before.split()) == len(set(before.split()))
