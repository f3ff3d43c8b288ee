"""Quick mode, the feature cache, user-supplied weights, lr-find, early stopping and `runs --json`.

Pretrained weights come from ``fake_pretrained`` (random resnet18 weights under torchvision's
file name in a temporary TORCH_HOME), so torchvision's real loading path runs offline.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import imagegen
from tl_app import quick, runs
from tl_app.errors import TLError, WeightsMissing
from tl_app.importer import import_files
from tl_app.jobs import StopToken
from tl_app.predict import model_for, predict_files
from tl_app.review import rank
from tl_app.train import TrainConfig, find_lr, train, trainer_lock

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

QUICK = dict(quick=True, size=64)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=ROOT)


@pytest.fixture
def colours(project, colour_folder):
    import_files(project, [colour_folder])
    return project


def test_quick_run_is_a_complete_model_for_classify_and_review(colours, fake_pretrained, tmp_path):
    project = colours
    events = []
    rep = train(project, TrainConfig(**QUICK), events=events.append)
    assert rep.status == "finished" and rep.metrics["features_computed"] == 24
    run = runs.get_run(project, rep.run)
    assert run.mode == "quick" and run.has_model and runs.active_run(project).id == run.id
    report = runs.read_json(project, run.id, "report.json")
    assert set(report["per_class"]) == {"red", "blue"}
    assert sum(map(sum, report["confusion"]["matrix"])) == report["valid_items"]
    assert report["epochs"] and all(e["phase"] == "quick" for e in report["epochs"])
    assert any(e.get("phase") == "device" and e["device"].startswith("CPU") for e in events)

    # Classify loads body + head like any other model.
    model, spec, _ = model_for(project)
    assert spec.head == "linear" and spec.extra["body_file"].startswith("models/bodies/")
    new = tmp_path / "red.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=777).save(new)
    [p] = predict_files(project, [new])
    assert p.label in ("red", "blue") and abs(sum(p.probs.values()) - 1) < 1e-3

    # Review ranks every picture with out-of-fold probabilities (a head that never saw it).
    scores = runs.read_json(project, run.id, "scores.json")
    assert scores["out_of_fold"] is True and len(scores["items"]) == 24
    rows = rank(project)
    assert len(rows) == 24 and [r.loss for r in rows] == sorted((r.loss for r in rows), reverse=True)

    # A stored picture predicted as a file gets what the head says about its cached features:
    # Classify sees the same pixels as training did.
    import numpy as np
    from safetensors.numpy import load_file

    it = project.item(next(s["item"] for s in scores["items"] if s["valid"]))
    [again] = predict_files(project, [project.path_of(it)])
    tag = quick.feature_tag("resnet18", 64, spec.extra["weights"])
    x = quick.FeatureStore(project).get([it.sha256], tag)[it.sha256]
    t = load_file(str(runs.run_dir(project, run.id) / "model.safetensors"))
    expected = quick._softmax((x @ t["1.2.weight"].T + t["1.2.bias"])[None])[0]
    for label, prob in zip(spec.vocab, expected):
        assert again.probs[label] == pytest.approx(float(prob), abs=2e-3)


def test_features_are_computed_once_per_picture(colours, fake_pretrained, tmp_path):
    project = colours
    assert train(project, TrainConfig(**QUICK)).metrics["features_computed"] == 24
    project.delete([project.items()[0].id])
    rep = train(project, TrainConfig(**QUICK))
    assert rep.status == "finished" and rep.metrics["features_computed"] == 0
    assert rep.metrics["train_items"] + rep.metrics["valid_items"] == 23
    new = tmp_path / "new.png"
    imagegen.noisy(imagegen.COLOURS["blue"], seed=4321).save(new)
    import_files(project, [new], label="blue")
    assert train(project, TrainConfig(**QUICK)).metrics["features_computed"] == 1
    # Relabelling changes no picture: nothing to compute. Another image size is another cache.
    item = project.items(label="blue")[0]
    project.relabel([item.id], "red")
    assert train(project, TrainConfig(**QUICK)).metrics["features_computed"] == 0
    assert train(project, TrainConfig(quick=True, size=48)).metrics["features_computed"] == 24


def test_retraining_on_cached_features_imports_neither_fastai_nor_torch(colours, fake_pretrained):
    project = colours
    train(project, TrainConfig(**QUICK))
    project.delete([project.items()[0].id])
    # The CLI's own entry point, in a fresh interpreter that reports what it imported.
    script = ("import json, sys\n"
              "from tl_app.cli import main\n"
              f"rc = main(['train', {str(project.root)!r}, '--quick', '--size', '64', '--json'])\n"
              "heavy = [m for m in ('fastai', 'torch', 'torchvision', 'timm', 'scipy') if m in sys.modules]\n"
              "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120,
                         cwd=ROOT)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    doc = json.loads(out.stdout)
    assert report == {"rc": 0, "heavy": []}, out.stderr
    assert doc["status"] == "finished" and doc["metrics"]["features_computed"] == 0


def test_stop_ends_a_quick_run_at_the_next_batch_of_features(colours, fake_pretrained):
    stop = StopToken()
    batches = []

    def events(ev):
        if ev.get("phase") == "features":
            batches.append(ev)
            stop.set()

    rep = train(colours, TrainConfig(quick=True, size=64, batch_size=8), stop=stop, events=events)
    assert rep.status == "stopped" and len(batches) == 1
    run = runs.get_run(colours, rep.run)
    assert run.status == "stopped" and not run.has_model and runs.active_run(colours) is None
    snap = runs.read_json(colours, rep.run, "snapshot.json")  # what it saw is recorded all the same
    assert len(snap["items"]) == 24 and snap["vocab"] == ["blue", "red"]
    assert {"item", "label", "sha256", "valid"} <= set(snap["items"][0])


def test_quick_mode_without_pretrained_weights_says_what_to_do(colours):
    with pytest.raises(TLError, match="Quick mode trains only the last layer") as err:
        train(colours, TrainConfig(quick=True, size=64, pretrained=False))
    assert "Pretrained weights" in str(err.value) and "full fine-tuning" in str(err.value)
    assert runs.list_runs(colours) == []  # refused before any work
    out = _cli("train", colours.root, "--quick", "--no-pretrained", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "Quick mode trains only the last layer" in json.loads(out.stdout)["error"]


def test_user_weights_file_trains_and_a_pickled_object_is_refused(colours, tmp_path):
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(3)
    sd = torchvision.models.resnet18().state_dict()
    wfile = tmp_path / "my resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(wfile))
    # No pretrained weights on this computer: the file is all the app needs, even for quick mode.
    rep = train(colours, TrainConfig(quick=True, size=64, pretrained=False, weights=str(wfile)))
    assert rep.status == "finished"
    from tl_app.models import load_model

    run = runs.active_run(colours)
    model, _ = load_model(runs.run_dir(colours, run.id), run.model_sha256, colours.root)  # the model as recorded
    assert torch.equal(model[0][0].weight, sd["conv1.weight"])  # the body is the file's weights

    marker = tmp_path / "was-run"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "weights.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    out = _cli("train", colours.root, "--quick", "--size", "64", "--weights", evil, "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    msg = json.loads(out.stdout)["error"]
    assert "weights.pth was refused" in msg and "not only tensors" in msg and "state_dict" in msg
    assert not marker.exists()  # nothing in the file was run

    notes = tmp_path / "notes.pth"
    notes.write_text("not weights")
    with pytest.raises(WeightsMissing, match="notes.pth was refused"):
        train(colours, TrainConfig(size=32, pretrained=False, weights=str(notes)))


def test_weights_file_of_another_network_is_refused_plainly(colours, tmp_path):
    import torch
    import torchvision

    wfile = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), wfile)
    with pytest.raises(WeightsMissing, match="does not fit resnet18") as err:
        train(colours, TrainConfig(quick=True, size=64, weights=str(wfile)))
    assert "Choose the network these weights were made for" in str(err.value)


def test_timm_body_takes_a_weights_file_through_the_same_reader(tmp_path):
    import timm
    import torch

    from tl_app.models import create_body

    net = timm.create_model("efficientnet_b0", pretrained=False)
    wfile = tmp_path / "effnet.pth"
    torch.save(net.state_dict(), wfile)
    body = create_body("efficientnet_b0", pretrained=False, weights=wfile)
    assert torch.equal(body.conv_stem.weight, net.conv_stem.weight)
    assert body(torch.zeros(1, 3, 64, 64)).shape[1] == 1280


def test_lr_find_suggests_a_positive_finite_rate_and_records_no_run(colours, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    phases = []
    res = find_lr(colours, TrainConfig(size=32, pretrained=False, batch_size=8), events=phases.append)
    assert math.isfinite(res["lr"]) and 0 < res["lr"] < 10
    assert len(res["lrs"]) == len(res["losses"]) > 5
    assert any(e["type"] == "batch" for e in phases)
    assert runs.list_runs(colours) == [] and not trainer_lock(colours).holder()
    assert not (tmp_path / "models").exists()  # fastai's temporary model file went elsewhere, and is gone


def test_early_stopping_ends_fine_tuning_and_is_recorded(colours):
    events = []
    # A learning rate far too high: the first unfrozen epoch is worse than the frozen one.
    rep = train(colours, TrainConfig(size=32, epochs=8, pretrained=False, lr=5.0, patience=1), events=events.append)
    assert rep.status == "finished"
    report = runs.read_json(colours, rep.run, "report.json")
    epochs = report["epochs"]
    assert report["early_stopped"] is True and len(epochs) < 9
    # It stopped one epoch (the patience) after the best one, and kept the best one's weights.
    best = min(epochs, key=lambda e: e["valid_loss"])["epoch"]
    assert report["best_epoch"] == best and len(epochs) == best + 1 and report["restored_best"] is True
    assert report["accuracy"] == pytest.approx(epochs[best - 1]["accuracy"], abs=1e-3)
    assert any(e.get("phase") == "early_stop" for e in events)


def test_cli_quick_train_and_runs_json(colours, fake_pretrained):
    out = _cli("train", colours.root, "--quick", "--size", "64", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "finished" and doc["metrics"]["features_computed"] == 24
    out = _cli("runs", colours.root, "--json")
    [row] = json.loads(out.stdout)
    assert {"run", "status", "metrics", "seconds", "arch", "created"} <= set(row)
    assert row["run"] == doc["run"] and row["status"] == "finished" and row["arch"] == "resnet18"
    assert isinstance(row["seconds"], float) and isinstance(row["created"], float)
    assert 0 <= row["metrics"]["accuracy"] <= 1 and row["mode"] == "quick"


def test_head_fit_matches_plain_softmax_regression():
    """The fast head (rotated, preconditioned, warm-started) is the same model as a direct fit."""
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 200)).astype(np.float32)
    y = np.repeat([0, 1, 2], 20)
    X[np.arange(60), y] += 3.0
    head = quick.fit_head(X, y, 3, l2=0.1)

    # The same objective on all 200 standardised features, by gradient descent to convergence.
    Z = (X - X.mean(0)) / (X.std(0) + 1e-6)
    W, b = np.zeros((200, 3)), np.zeros(3)
    Y = np.eye(3)[y]
    for _ in range(3000):
        P = quick._softmax(Z @ W + b)
        G = (P - Y) / len(y)
        W -= 0.5 * (Z.T @ G + 0.1 * W)
        b -= 0.5 * G.sum(0)
    assert np.abs(head.probs(X) - quick._softmax(Z @ W + b)).max() < 1e-3
    fit = quick.fit_quick_head(X, y, 3, np.arange(0, 60, 2), np.arange(1, 60, 2))
    assert fit.l2 in quick.L2_GRID and fit.oof.shape == (60, 3)
    assert np.allclose(fit.oof.sum(1), 1) and fit.trace and fit.trace[-1]["accuracy"] is not None


def test_a_failed_download_of_weights_is_said_in_words_not_the_library_s():
    import socket
    import urllib.error
    import urllib.request

    from tl_app.models import _missing, download_failure

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/resnet18-f37072fd.pth", timeout=5)
    except Exception as e:  # noqa: BLE001 - what torchvision's download raises, as it raises it
        refused = e
    assert download_failure(refused) == "the connection to the download server failed"
    no_dns = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    assert "connected to the internet" in download_failure(no_dns)
    assert download_failure(urllib.error.HTTPError("http://127.0.0.1/x", 403, "Forbidden", {}, None)) == \
        "the server answered with error 403"
    assert download_failure(urllib.error.URLError(socket.timeout("timed out"))) == "the download timed out"
    assert "damaged" in download_failure(RuntimeError('invalid hash value (expected "f37072fd", got "00")'))
    text = str(_missing("resnet18", download_failure(no_dns)))
    assert "URLError" not in text and "Errno" not in text and "resnet18-f37072fd.pth" in text


def test_the_feature_pass_takes_its_input_as_before_and_batches_by_picture_size_on_a_cpu():
    import numpy as np
    import torch

    from tl_app.features import network_input
    from tl_app.quick import inference_batch

    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1)
    old = ((batch.permute(0, 3, 1, 2).float().div_(255) - mean) / std).contiguous(memory_format=torch.channels_last)
    new = network_input(batch, mean, std)
    assert torch.equal(new, old) and new.is_contiguous(memory_format=torch.channels_last)
    cpu = torch.device("cpu")
    assert [inference_batch(s, cpu, 32) for s in (64, 128, 224, 512)] == [64, 16, 8, 8]
    assert inference_batch(224, torch.device("cuda"), 32) == 32  # a GPU keeps the run's batch size
