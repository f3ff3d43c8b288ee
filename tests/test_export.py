"""Exporting a run: the bundle, its parity check, predict.py, the CLI, and the classify-only Space.

Nothing of the export is mocked: a real run (resnet18 from scratch, 64 px, synthetic colour
pictures) is converted with torch.onnx.export and checked on onnxruntime.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagegen
from tl_app import config, runs
from tl_app.errors import ExportRefused, InputError
from tl_app.share import bundle

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout)


def new_pictures(folder: Path, n: int = 20) -> list[Path]:
    """``n`` pictures the project never saw, of every kind the pipeline handles differently.

    PNGs at 64 px, bigger JPEGs (some turned by their EXIF orientation), WEBPs, a palette GIF
    and an RGBA PNG: resizing, re-encoding, EXIF and transparency all take part.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    names = list(imagegen.COLOURS)[:2]
    for i in range(n):
        colour = imagegen.COLOURS[names[i % 2]]
        kind = i % 5
        if kind == 0:
            p = folder / f"{i}.png"
            imagegen.noisy(colour, (64, 64), seed=500 + i).save(p)
        elif kind == 1:
            p = folder / f"{i}.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6  # shown turned by 90 degrees
            imagegen.noisy(colour, (150, 100), seed=500 + i).save(p, quality=85, exif=exif)
        elif kind == 2:
            p = folder / f"{i}.webp"
            imagegen.noisy(colour, (90, 70), seed=500 + i).save(p, quality=80)
        elif kind == 3:
            p = folder / f"{i}.gif"
            imagegen.noisy(colour, (72, 72), seed=500 + i).convert("P").save(p)
        else:
            p = folder / f"{i}.png"
            im = imagegen.noisy(colour, (1100, 80), seed=500 + i).convert("RGBA")  # scaled down to 1024 px
            im.putalpha(200)
            im.save(p)
        out.append(p)
    return out


def app_predict(project_root: Path, files: list[Path]) -> list[dict]:
    """``python -m tl_app predict --json``: the app's answers."""
    out = _run(["-m", "tl_app", "predict", project_root, *files, "--json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_same_answers(app: list[dict], other: list[dict]) -> None:
    assert len(app) == len(other)
    for a, b in zip(app, other):
        assert a["label"] == b["label"], (a, b)
        assert set(a["probs"]) == set(b["probs"])
        for k in a["probs"]:
            assert abs(a["probs"][k] - b["probs"][k]) <= 1e-4, (a, b)


# --- the bundle ----------------------------------------------------------------------------------
def test_cli_export_writes_a_checked_bundle_whose_predict_py_gives_the_apps_answers(trained_project, tmp_path):
    out_dir = tmp_path / "bundle"
    out = _run(["-m", "tl_app", "export", trained_project.root, "--out", out_dir, "--json"])
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)  # exactly one JSON document on stdout (the exporter's chatter goes elsewhere)
    assert rep["out"] == str(out_dir) and rep["format"] == "bundle"
    assert rep["parity"]["pictures"] == 32  # all 6 held out, topped up to 32 with the run's other pictures
    assert rep["parity"]["max_abs_diff"] <= 1e-4 and rep["parity"]["top1_agreement"] == 1.0
    assert {"model.safetensors", "model.json", "model.onnx", "predict.py", "README.md", "confusion.png",
            "pictures.sha256"} <= set(rep["files"])

    # model.json: what the app needs to read it back, and the pipeline predict.py follows.
    from tl_app.models import ModelSpec

    spec = ModelSpec.from_json((out_dir / "model.json").read_text(encoding="utf-8"))
    assert spec.arch == "resnet18" and spec.vocab == ["blue", "red"] and spec.size == 64 and spec.resize == "squish"
    assert tuple(spec.mean) == config.IMAGENET_MEAN and spec.extra["export"]["pipeline"]["jpeg_quality"] == 92

    # The ONNX model takes any batch size.
    import onnx

    dim = onnx.load(str(out_dir / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3, 33):
        probs = sess.run(None, {"pixels": np.zeros((n, 3, 64, 64), np.float32)})[0]
        assert probs.shape == (n, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)

    # safetensors: the whole network, loadable into the app's own model.
    from safetensors.torch import load_file

    from tl_app.models import create_model

    create_model(spec).load_state_dict(load_file(str(out_dir / "model.safetensors")))

    # The card: classes, held-out figures, pictures and where they came from, settings, parity.
    card = (out_dir / "README.md").read_text(encoding="utf-8")
    for words in ("**Classes:** blue, red.", "on 6 pictures it never learned from", "32 pictures in all",
                  "| blue | 13 | 3 |", "![Confusion matrix](confusion.png)", "from the owner's own files",
                  "from random weights (from scratch); input 64 px", "## Parity with the app",
                  f"on 32 pictures (6 held out), the largest difference in a probability was "
                  f"{rep['parity']['max_abs_diff']:.1e}"):
        assert words in card, words
    assert str(trained_project.root) not in card

    # predict.py alone, on new pictures and on the project's own, against the app's answers.
    files = new_pictures(tmp_path / "new", 10) + [trained_project.path_of(it) for it in trained_project.items()[:4]]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    got = _run([out_dir / "predict.py", *files, bad, "--json"], cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)
    assert [r["file"] for r in rows] == [str(f) for f in files + [bad]]
    assert all(set(r) == {"file", "label", "confidence", "probs"} for r in rows[:-1])
    assert rows[-1]["label"] is None and rows[-1]["error"] == "not a JPEG, PNG, WEBP, GIF or BMP image"
    assert_same_answers(app_predict(trained_project.root, files), rows[:-1])


def test_an_export_after_a_rename_and_a_merge_answers_with_the_classes_of_now(trained_project, tmp_path):
    """A class renamed after training is exported under its new name; merged classes answer as one, summed."""
    files = new_pictures(tmp_path / "new", 6)
    trained_project.rename_label("red", "crimson")
    renamed = bundle.export_bundle(trained_project, tmp_path / "renamed")
    rows = json.loads(_run([renamed.out / "predict.py", *files, "--json"], cwd=tmp_path).stdout)
    assert {r["label"] for r in rows} == {"blue", "crimson"} and all(set(r["probs"]) == {"blue", "crimson"}
                                                                     for r in rows)
    assert_same_answers(app_predict(trained_project.root, files), rows)

    trained_project.merge_labels(["blue"], "crimson")
    merged = bundle.export_bundle(trained_project, tmp_path / "merged")
    rows = json.loads(_run([merged.out / "predict.py", *files, "--json"], cwd=tmp_path).stdout)
    assert all(r["label"] == "crimson" and abs(r["probs"]["crimson"] - 1) <= 1e-5 and set(r["probs"]) == {"crimson"}
               for r in rows)
    assert_same_answers(app_predict(trained_project.root, files), rows)


def test_an_export_is_refused_for_an_existing_folder_and_without_a_model(trained_project, tmp_path, project):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="already exists and is not an empty folder"):
        bundle.export_bundle(trained_project, taken)
    assert (taken / "mine.txt").read_text() == "keep me"
    out = _run(["-m", "tl_app", "export", project.root, "--out", tmp_path / "x", "--json"])
    assert out.returncode == 1 and "no trained model to export" in json.loads(out.stdout)["error"]
    assert not (tmp_path / "x").exists()


def test_an_export_reports_its_stages_and_a_stop_leaves_nothing_behind(trained_project, tmp_path):
    from tl_app.errors import Stopped
    from tl_app.jobs import StopToken

    stop = StopToken()
    stages: list[str] = []

    def stop_at_onnx(message: str) -> None:
        stages.append(message)
        if message.startswith("Converting"):  # asked during the conversion: ends before the parity check
            stop.set()

    out = tmp_path / "bundle"
    with pytest.raises(Stopped, match="The export was stopped; nothing was written."):
        bundle.export_bundle(trained_project, out, progress=stop_at_onnx, stop=stop)
    assert stages[0].startswith("Loading ") and stages[-1] == "Converting the model to ONNX"
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["trained"]  # no partial folder either


# --- the parity check ---------------------------------------------------------------------------
def test_an_export_whose_preprocessing_differs_from_the_apps_is_refused_and_leaves_nothing(
        trained_project, tmp_path, monkeypatch):
    """A pipeline written with another JPEG quality than the app re-encodes with: the real export refuses it."""
    monkeypatch.setattr(config, "JPEG_QUALITY", 75)  # what the export writes into model.json; the app keeps 92
    out = tmp_path / "bundle"
    with pytest.raises(ExportRefused) as ei:
        bundle.export_bundle(trained_project, out)
    msg = str(ei.value)
    assert msg.startswith("The export was not written because it would not give the app's answers: ")
    assert "differs from the app's by" in msg and "(at most 1e-04 is allowed)" in msg
    assert "Traceback" not in msg and "onnx" not in msg.lower()
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["trained"]


def test_the_parity_check_catches_other_preprocessing_mistakes(trained_project, tmp_path):
    """Edit an exported model.json the way a hand-written export goes wrong; the check must see it."""
    good = tmp_path / "good"
    rep = bundle.export_bundle(trained_project, good)
    run = rep.run
    pictures = bundle.parity_pictures(trained_project, run)
    assert len(pictures) == 32 and sum(p.heldout for p in pictures) == 6
    assert bundle.check_export(trained_project, run, good, pictures).passed

    def variant(name: str, change) -> bundle.Parity:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        spec = json.loads((folder / "model.json").read_text())
        change(spec)
        (folder / "model.json").write_text(json.dumps(spec))
        return bundle.check_export(trained_project, run, folder, pictures)

    def no_normalisation(s):
        s["mean"], s["std"] = [0, 0, 0], [1, 1, 1]

    def forgets_std(s):
        s["std"] = [1, 1, 1]

    def forgets_stored_pictures(s):
        s["extra"]["export"]["stored"] = "missing.sha256"  # every picture re-encoded, the app's own too

    for name, change in (("norm", no_normalisation), ("std", forgets_std), ("stored", forgets_stored_pictures)):
        parity = variant(name, change)
        assert not parity.passed, name
        assert parity.max_abs_diff > bundle.MAX_ABS_DIFF, (name, parity)
        with pytest.raises(ExportRefused, match="would not give the app's answers"):
            bundle.require_parity(parity)


def test_parity_figures_and_refusal_words():
    app = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    close = app + np.array([[5e-5, -5e-5], [0, 0], [0, 0]])
    p = bundle.compare(app, close, ["a.jpg", "b.jpg", "c.jpg"], heldout=2)
    assert p.passed and p.to_dict() == {"pictures": 3, "max_abs_diff": pytest.approx(5e-5), "top1_agreement": 1.0}
    flipped = app.copy()
    flipped[1] = [0.6, 0.4]
    p = bundle.compare(app, flipped, ["a.jpg", "b.jpg", "c.jpg"])
    assert not p.passed and p.differing == ["b.jpg"] and p.top1_agreement == pytest.approx(2 / 3)
    with pytest.raises(ExportRefused, match=r"another class than the app for 1 of 3 pictures \(b.jpg\)"):
        bundle.require_parity(p)


# --- the Space --------------------------------------------------------------------------------------
#: Started before app.py: importing torch, torchvision, fastai, timm or tl_app fails as if they were not installed.
#: A fresh virtualenv would need gradio and onnxruntime downloaded for every run; a finder in front of every
#: other one refuses those imports in this same environment, which is what the Space sees (it has no torch).
GUARD = '''
import importlib.abc, sys
BLOCKED = {"torch", "torchvision", "fastai", "timm", "tl_app"}
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the Space must run without it)", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="127.0.0.1", **extra)
    return env


def test_the_exported_space_runs_without_torch_and_answers_as_the_app(trained_project, tmp_path):
    space = tmp_path / "space"
    out = _run(["-m", "tl_app", "export", trained_project.root, "--out", space, "--format", "space", "--json"])
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["parity"]["top1_agreement"] == 1.0 and rep["parity"]["max_abs_diff"] <= 1e-4
    reqs = (space / "requirements.txt").read_text()
    assert "gradio==" in reqs and "onnxruntime==" in reqs and "pillow==" in reqs and "numpy" in reqs
    assert "torch" not in reqs and "fastai" not in reqs
    readme = (space / "README.md").read_text(encoding="utf-8")
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front and 'title: "Blue or red?"' in front
    assert "## Parity with the app" in readme
    examples = sorted((space / "examples").iterdir())
    assert len(examples) == 6 and {p.name.split("-")[0] for p in examples} == {"blue", "red"}
    assert not (space / "model.safetensors").exists() and (space / "model.onnx").is_file()

    # The guard works: torch and the app cannot be imported behind it.
    probe = subprocess.run([sys.executable, "-c", GUARD + "import torch"], capture_output=True, text=True,
                           cwd=space, env=_clean_env(), timeout=60)
    assert probe.returncode != 0 and "the Space must run without it" in probe.stderr
    probe = subprocess.run([sys.executable, "-c", GUARD + "import tl_app"], capture_output=True, text=True,
                           cwd=space, env=_clean_env(), timeout=60)
    assert probe.returncode != 0

    port = _free_port()
    start = GUARD + "import runpy; sys.argv = ['app.py']; runpy.run_path('app.py', run_name='__main__')"
    log = open(tmp_path / "space.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", start], cwd=space, stdout=log, stderr=subprocess.STDOUT,
                            env=_clean_env(GRADIO_SERVER_PORT=str(port)))
    try:
        import httpx

        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "space.log").read_text()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the Space did not start"
            time.sleep(0.5)
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False, download_files=False)
        files = new_pictures(tmp_path / "new", 20)
        space_rows = []
        for f in files:
            res = client.predict(handle_file(f), api_name="/classify")
            space_rows.append({"label": res["label"],
                               "probs": {c["label"]: c["confidence"] for c in res["confidences"]}})
        assert_same_answers(app_predict(trained_project.root, files), space_rows)
        # An example (a held-out picture the app stored) gets the app's answer too.
        res = client.predict(handle_file(examples[0]), api_name="/classify")
        assert_same_answers(app_predict(trained_project.root, [examples[0]]),
                            [{"label": res["label"], "probs": {c["label"]: c["confidence"] for c in res["confidences"]}}])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# --- the Train tab's export section, through the app's API ------------------------------------------
def test_the_app_exports_a_bundle_and_a_space_as_zips_with_the_parity_figures(trained_project):
    import zipfile

    from gradio_client import Client

    from e2e.harness import serve

    run = runs.list_runs(trained_project)[0]
    with serve(trained_project.root) as srv:
        client = Client(srv.url, verbose=False)
        text, file = client.predict(run.id, api_name="/export_bundle")
        assert text.startswith("**Model bundle of Full fine-tuning · resnet18 ·")
        assert "checked on 32 pictures (6 held out)" in text and "the same for 100%" in text
        with zipfile.ZipFile(file["value"]) as z:
            assert {"model.onnx", "model.safetensors", "model.json", "predict.py", "README.md"} <= set(z.namelist())
        text, file = client.predict(None, api_name="/export_space")  # None: the run in use
        assert text.startswith("**Space of ") and "needs no PyTorch" in text
        with zipfile.ZipFile(file["value"]) as z:
            names = set(z.namelist())
        assert {"app.py", "requirements.txt", "model.onnx", "README.md"} <= names
        assert any(n.startswith("examples/") for n in names) and "model.safetensors" not in names


def test_the_apps_stop_export_ends_an_export_and_leaves_no_zip(trained_project):
    from gradio_client import Client

    from e2e.harness import serve, wait_until

    with serve(trained_project.root) as srv:
        client = Client(srv.url, verbose=False, download_files=False)
        assert client.predict(api_name="/stop_export") == "Nothing is being exported."
        job = client.submit(None, api_name="/export_bundle")
        # Stop as soon as the export runs (its Stop exists from its first step on).
        assert wait_until(lambda: client.predict(api_name="/stop_export").startswith("**Stopping the export"),
                          timeout=60)
        text, file = job.result(timeout=120)
        assert text == "**Export stopped.** Nothing was written."
        assert file is None or (isinstance(file, dict) and not file.get("value") and "path" not in file)  # no zip
        assert srv.demo.tl_context.stops == {}  # the window may export again
