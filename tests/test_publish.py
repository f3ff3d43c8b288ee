"""Publishing to the Hugging Face Hub, against a loopback stand-in of its HTTP API (tests/hubstandin.py).

The stand-in records the repositories huggingface_hub creates and the files it
commits. Offline (a closed loopback port) and a refused token (401 from the
stand-in) must give a plain message within 10 s. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import time

import pytest

import imagegen
from hubstandin import TOKEN, USER, HubStandIn
from tl_app.importer import import_files
from tl_app.share.publish import PublishFailed, publish


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The Hub reachable for huggingface_hub (the suite runs offline), no saved token of this computer."""
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TL_OFFLINE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(online, monkeypatch):
    with HubStandIn() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


@pytest.fixture
def pictures(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=3)])
    return project


def test_the_dataset_is_published_to_a_dataset_repo(hub, pictures, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rep = publish(pictures, "dataset", "colours")
    assert rep.repo_id == f"{USER}/colours" and rep.repo_type == "dataset" and rep.private
    assert rep.url == f"{hub.url}/datasets/{USER}/colours"
    repo = hub.repos[("dataset", f"{USER}/colours")]
    assert repo.private is True and len(repo.commits) == 1
    expected = {f"{it.label}/{it.id}.jpg": pictures.path_of(it).read_bytes() for it in pictures.items()}
    assert set(repo.files) == set(expected) | {"metadata.csv", "README.md"}
    assert all(repo.files[k] == v for k, v in expected.items())
    assert repo.files["metadata.csv"].decode().startswith("file_name,label,")
    assert rep.files == len(expected) + 2
    # Publishing again adds a commit to the same repository (the Hub answers 409 to its creation).
    publish(pictures, "dataset", f"{USER}/colours", private=False)
    assert len(repo.commits) == 2 and len(hub.repos) == 1


def test_a_repo_of_an_organisation_and_a_token_given_explicitly(hub, pictures):
    rep = publish(pictures, "dataset", "lab/colours", token=TOKEN, private=False)
    assert rep.repo_id == "lab/colours" and hub.repos[("dataset", "lab/colours")].private is False


def test_a_refused_token_is_said_plainly_and_nothing_is_created(hub, pictures, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    t0 = time.monotonic()
    with pytest.raises(PublishFailed) as ei:
        publish(pictures, "dataset", "colours")
    assert time.monotonic() - t0 < 10
    assert "refused the token" in str(ei.value) and "401" not in str(ei.value)
    assert hub.repos == {} and [p for _, p in hub.requests] == ["/api/whoami-v2"]


def test_offline_is_said_plainly_within_ten_seconds(online, pictures, monkeypatch):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    t0 = time.monotonic()
    with pytest.raises(PublishFailed, match="cannot be reached"):
        publish(pictures, "dataset", "colours")
    assert time.monotonic() - t0 < 10


def test_offline_mode_and_no_token_are_said_before_anything_is_sent(online, pictures, monkeypatch):
    with pytest.raises(PublishFailed, match="no Hugging Face token"):
        publish(pictures, "dataset", "colours")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("TL_OFFLINE", "1")
    with pytest.raises(PublishFailed, match="offline mode"):
        publish(pictures, "dataset", "colours")


def test_a_repository_name_the_hub_refuses_is_an_input_mistake(hub, pictures, monkeypatch):
    from tl_app.errors import InputError

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for bad in ("", "a/b/c", "../x", "cats dogs", "-x"):
        with pytest.raises(InputError, match="not a repository name"):
            publish(pictures, "dataset", bad)
    assert hub.repos == {}


def test_the_cli_publishes_with_json(hub, pictures, monkeypatch, capsys):
    from tl_app.cli import main

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["publish", str(pictures.root), "--to", "dataset", "--repo", "colours", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["repo_id"] == f"{USER}/colours" and out["repo_type"] == "dataset" and out["url"].endswith("/colours")
    assert main(["publish", str(pictures.root), "--to", "dataset", "--repo", "x", "--token", "nope", "--json"]) == 1
    assert "refused the token" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tl_app.share.bundle") is None,
                    reason="the bundle and Space exports come with the export branch")
@pytest.mark.parametrize("target", ["model", "space"])
def test_the_model_bundle_and_the_space_are_published(hub, trained_project, monkeypatch, target):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rep = publish(trained_project, target, "colours")
    repo = hub.repos[(target, f"{USER}/colours")]
    assert rep.repo_type == target and repo.commits
    if target == "model":
        assert {"model.onnx", "model.json", "README.md", "predict.py"} <= set(repo.files)
        assert "pipeline_tag: image-classification" in hub.readmes[-1]  # the Hub lists it as a classifier
    else:
        assert repo.sdk == "gradio" and {"app.py", "requirements.txt", "README.md"} <= set(repo.files)
