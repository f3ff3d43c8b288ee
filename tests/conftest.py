"""Shared fixtures. Every test runs offline: only loopback addresses may be reached."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest

import imagegen

_SESSION_TMP: Path | None = None


def pytest_configure(config):
    import tempfile

    global _SESSION_TMP
    _SESSION_TMP = Path(tempfile.mkdtemp(prefix="tl_app_tests_"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # Gradio's cache of served files goes with the session, not into /tmp/gradio for good
    os.environ["GRADIO_TEMP_DIR"] = str(_SESSION_TMP / "gradio")
    os.environ["TL_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TORCH_HOME"] = str(_SESSION_TMP / "torch_home")
    os.environ["TL_HOME"] = str(_SESSION_TMP / "tl_home")
    os.environ["PYTHONWARNINGS"] = "ignore"
    os.environ.pop("TL_ALLOW_HOSTS", None)


def pytest_unconfigure(config):
    if _SESSION_TMP is not None:
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# --- network guard: tests may only talk to 127.0.0.0/8 and ::1 --------------------------
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            if host != "localhost":
                raise OSError(f"test network guard: connection to {host!r} refused (tests stay on loopback)")
            return
        if not ip.is_loopback:
            raise OSError(f"test network guard: connection to {host} refused (tests stay on loopback)")


def _guarded_connect(self, address):
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


# --- loopback image hosts (tests/badserver.py) for the fetcher and downloader tests ---------
@pytest.fixture(scope="module")
def server():
    """A good-and-bad image host on 127.0.0.1 (the browser tests' ``server`` is the app instead)."""
    import badserver

    with badserver.start() as s:
        yield s


@pytest.fixture(scope="module")
def other():
    """A second host on 127.0.0.1 that is never allowed: nothing may reach it."""
    import badserver

    with badserver.start() as s:
        yield s


@pytest.fixture
def allow(monkeypatch, server):
    """``server`` let through the fetcher's address guard (``TL_ALLOW_HOSTS``), for this test only."""
    monkeypatch.setenv("TL_ALLOW_HOSTS", server.hostport)
    return server


# --- data -------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path):
    from tl_app.project import Project

    return Project.open(tmp_path / "proj", create=True)


@pytest.fixture
def colour_folder(tmp_path):
    """A folder with red/ and blue/ sub-folders of 12 noisy 64 px pictures each."""
    return imagegen.class_folder(tmp_path / "colours", per_class=12)


@pytest.fixture(scope="session")
def trained_project_template(tmp_path_factory):
    """A project with 2 x 16 colour pictures and one finished run (from scratch, 64 px).

    Built once per session; tests get a copy through ``trained_project``.
    """
    from tl_app.importer import import_files
    from tl_app.project import Project
    from tl_app.train import TrainConfig, train

    base = tmp_path_factory.mktemp("trained")
    src = imagegen.class_folder(base / "src", per_class=16)
    proj = Project.open(base / "proj", create=True)
    import_files(proj, [src])
    rep = train(proj, TrainConfig(size=64, epochs=2, pretrained=False))
    assert rep.status == "finished", rep
    return base / "proj"


@pytest.fixture
def trained_project(trained_project_template, tmp_path):
    from tl_app.project import Project

    dest = tmp_path / "trained"
    shutil.copytree(trained_project_template, dest)
    return Project.open(dest)


@pytest.fixture
def fake_pretrained(tmp_path, monkeypatch):
    """A TORCH_HOME holding resnet18 weights under torchvision's file name (random values).

    torchvision's real loading path finds the file where a download would have put it.
    """
    import torch
    import torchvision

    home = tmp_path / "torch_home"
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    return ckpt / "resnet18-f37072fd.pth"


@pytest.fixture
def hub_user(monkeypatch):
    """A Hugging Face token and the Hub's answer to "who am I" (the Hub is out of reach of tests).

    Gradio's local sign-in (its mock of a Space's OAuth) asks the Hub who the token
    belongs to when the app starts, then signs every click in as that user.
    """
    import gradio.oauth
    import huggingface_hub

    user = {"type": "user", "name": "ann-hf", "fullname": "Ann", "avatarUrl": "http://127.0.0.1:9/avatar.png"}
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_for_a_stand_in_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TL_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "whoami", lambda *a, **k: user)
    monkeypatch.setattr(gradio.oauth, "whoami", lambda *a, **k: user)
    return user


def chromium_path() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def open_set_template(tmp_path_factory):
    """2 x 50 colour pictures and a full run from scratch (64 px): 20 held out, enough for the
    run to set its none-of-these threshold (tl_app.openset.MIN_HELD_OUT)."""
    from tl_app.importer import import_files
    from tl_app.project import Project
    from tl_app.train import TrainConfig, train

    base = tmp_path_factory.mktemp("open_set")
    proj = Project.open(base / "proj", create=True)
    import_files(proj, [imagegen.class_folder(base / "src", per_class=50)])
    rep = train(proj, TrainConfig(size=64, epochs=1, pretrained=False))
    assert rep.status == "finished", rep
    return proj.root


@pytest.fixture
def open_set_project(open_set_template, tmp_path):
    """A copy of :func:`open_set_template` for one test."""
    from tl_app.project import Project

    dest = tmp_path / "open_set"
    shutil.copytree(open_set_template, dest)
    return Project.open(dest)
