"""Bulk classification, CSV and sorted zip, the heatmap, and classified pictures going back into the dataset.

Through the command line (a subprocess, as a user types it), the core, and gradio_client
against the app served on loopback. The model is the session's tiny red/blue run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import imagegen
from e2e.harness import serve
from tl_app.classify import (CSV_COLUMNS, PROVENANCE, Picture, add_to_dataset, classify_many, gather,
                             write_sorted_zip)
from tl_app.errors import InputError
from tl_app.explain import explain
from tl_app.jobs import StopToken
from tl_app.predict import predict_files

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tl_app", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def mixed(tmp_path):
    """A folder of red and blue pictures with a text file and a sub-folder, a zip of blue ones, an unsafe zip."""
    src = imagegen.class_folder(tmp_path / "new", per_class=4, seed=21)
    folder = tmp_path / "to-sort"
    (folder / "more").mkdir(parents=True)
    for i, f in enumerate(sorted((src / "red").glob("*.png"))):
        (folder / f"r{i}.png").write_bytes(f.read_bytes())
    (folder / "more" / "1.png").write_bytes((src / "blue" / "0.png").read_bytes())
    (folder / "notes.txt").write_text("not a picture")
    (folder / "page.jpg").write_text("<html><body>404</body></html>")
    zpath = tmp_path / "blues.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((src / "blue").glob("*.png")):
            zf.write(f, f"blue/{f.name}")
        zf.writestr("../../escape.png", (src / "blue" / "1.png").read_bytes())
    return folder, zpath


def test_predict_takes_folders_and_zips_and_writes_a_csv_with_a_row_per_file(trained_project, mixed, tmp_path):
    folder, zpath = mixed
    out = tmp_path / "answers.csv"
    r = _cli("predict", str(trained_project.root), str(folder), str(zpath), str(tmp_path / "missing.jpg"),
             "--csv", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == CSV_COLUMNS
    by_file = {row["file"]: row for row in rows}
    # Every picture of the folder (sub-folders too) and of the zip, each with a class and confidence.
    pictures = [f"to-sort/r{i}.png" for i in range(4)] + ["to-sort/more/1.png"] + \
        [f"{zpath}!blue/{i}.png" for i in range(4)]
    for name in pictures:
        assert by_file[name]["label"] in ("red", "blue") and 0 < float(by_file[name]["confidence"]) <= 1, name
        assert by_file[name]["error"] == "" and by_file[name]["top3"].count("%") == 2
    # What is not a picture has its row and its reason, never a traceback.
    assert by_file["to-sort/notes.txt"]["error"] == "a text file, not an image"
    assert "web page" in by_file["to-sort/page.jpg"]["error"]
    assert by_file[str(tmp_path / "missing.jpg")]["error"] == "no such file or folder"
    assert "outside the archive" in by_file[f"{zpath}!../../escape.png"]["error"]
    assert not (tmp_path.parent / "escape.png").exists()
    # The JSON says the same, file for file.
    doc = json.loads(r.stdout)
    assert [d["file"] for d in doc] == [row["file"] for row in rows]
    assert "refused: to-sort/notes.txt: a text file, not an image" in r.stderr


def test_a_folder_given_to_predict_was_a_traceback_and_is_now_its_pictures(trained_project, tmp_path):
    folder = imagegen.class_folder(tmp_path / "pics", per_class=2) / "red"
    r = _cli("predict", str(trained_project.root), str(folder))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.count("red/") == 2 and "%" in r.stdout


def test_bulk_answers_match_single_predictions_whatever_the_batch(trained_project, mixed):
    folder, zpath = mixed
    pictures = [p for p in gather([folder, zpath]) if p.name.endswith(".png") and "escape" not in p.name]
    one_batch = classify_many(trained_project, pictures)
    small = classify_many(trained_project, pictures, batch_size=3, workers=2)
    assert len(one_batch.classified) == len(pictures) == 9
    for a, b in zip(one_batch.predictions, small.predictions):
        assert a.label == b.label and a.probs == pytest.approx(b.probs, abs=1e-5)
    files = sorted(folder.glob("r*.png"))
    for p, single in zip(one_batch.predictions, predict_files(trained_project, files)):
        assert p.label == single.label and p.probs == pytest.approx(single.probs, abs=1e-5)


def test_the_projects_own_pictures_are_read_as_stored_in_bulk_as_training_read_them(trained_project):
    """A stored picture is not re-encoded (that would change its pixels): bulk gives what the model says
    about the very pixels it trained on, as Review's scoring of the same pictures does."""
    from tl_app.predict import predict_items

    items = trained_project.items()[:6]
    result = classify_many(trained_project, gather([trained_project.path_of(it) for it in items]))
    probs, vocab = predict_items(trained_project, [it.id for it in items])
    for p, row in zip(result.predictions, probs):
        assert p.probs == pytest.approx(dict(zip(vocab, map(float, row))), abs=1e-4)


def test_stop_leaves_the_rest_listed_as_not_classified(trained_project, mixed):
    folder, _ = mixed
    pictures = [p for p in gather([folder]) if p.name.endswith(".png")] * 3
    stop = StopToken()
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done >= 4:
            stop.set()

    res = classify_many(trained_project, pictures, batch_size=4, progress=progress, stop=stop)
    assert res.stopped and len(res.classified) == 4
    assert all(p.error.startswith("not classified: stopped") for p in res.predictions[4:])
    assert "stopped before the end" in res.summary()


def test_a_zip_that_unpacks_too_far_is_one_row_with_the_reason(trained_project, tmp_path):
    from test_access import _zip_bomb

    from tl_app import config

    bomb = _zip_bomb(tmp_path / "huge.zip", config.MAX_ZIP_TOTAL_BYTES // (1 << 20) + 20)
    res = classify_many(trained_project, gather([bomb]))
    assert len(res.predictions) == 1 and "unpacks to" in res.predictions[0].error


def test_sorted_zip_has_a_folder_per_class_and_keeps_the_files_as_given(trained_project, mixed, tmp_path):
    folder, zpath = mixed
    res = classify_many(trained_project, gather([folder, zpath]))
    out = write_sorted_zip(res, tmp_path / "sorted.zip")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "classified.csv" in names
        for pic, p in zip(res.pictures, res.predictions):
            if p.error:
                assert not any(n.endswith("/" + Path(pic.name).name) for n in names if n.startswith("notes"))
                continue
        # Two "1.png" (the folder's more/1.png and the zip's blue/1.png) both kept, side by side.
        ones = [n for n in names if n.rsplit("/", 1)[-1] in ("1.png", "1 (2).png")]
        assert len(ones) == 2 and all(n.split("/")[0] in ("red", "blue") for n in ones)
        # The files are the ones given, byte for byte, in the folder of their class.
        for i in range(4):
            p = next(x for x in res.predictions if x.file == f"to-sort/r{i}.png")
            assert zf.read(f"{p.label}/r{i}.png") == (folder / f"r{i}.png").read_bytes()
        assert not any(".." in n or n.startswith("/") for n in names)
        assert len([n for n in names if n != "classified.csv"]) == len(res.classified)


# --- the heatmap ---------------------------------------------------------------------------------------------------
def test_heatmap_explains_the_predicted_class_over_the_picture(trained_project, tmp_path):
    pic = tmp_path / "p.png"
    imagegen.noisy((200, 30, 30), size=(96, 64), seed=3).save(pic)
    [pred] = predict_files(trained_project, [pic])
    e = explain(trained_project, pic)
    assert e.label == pred.label and e.confidence == pytest.approx(pred.confidence, abs=1e-4)
    heat = np.asarray(e.heat)
    assert heat.min() >= 0 and heat.max() <= 1 and heat.ndim == 2
    assert e.overlay.size[0] > e.overlay.size[1]  # drawn over the picture's own shape (96 x 64), enlarged
    other = "blue" if e.label == "red" else "red"
    assert explain(trained_project, pic, label=other).label == other
    with pytest.raises(InputError):
        explain(trained_project, pic, label="zebra")


def test_grad_cam_finds_the_region_that_decides_the_class():
    """Class 0 is "how red the picture is" (a pooled head, like the app's): the heat sits on the red half."""
    import torch
    from torch import nn

    from tl_app.explain import grad_cam

    class RedHead(nn.Module):
        def forward(self, a):
            red = a[:, 0].mean(dim=(1, 2)) - a[:, 2].mean(dim=(1, 2))
            return torch.stack([red, -red], 1)

    body = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        body.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, :, :4] = 1.0     # red on the left
    x[0, 2, :, 4:] = 0.3     # a little blue on the right
    heat, probs = grad_cam(nn.Sequential(body, RedHead()), x, 0)
    assert heat[:, :4].min() == 1 and heat[:, 4:].max() == 0
    assert probs[0] > probs[1]
    heat_blue, _ = grad_cam(nn.Sequential(body, RedHead()), x, 1)
    assert heat_blue[:, :4].max() == 0 and heat_blue[:, 4:].min() == 1


# --- feedback ----------------------------------------------------------------------------------------------------
def test_a_classified_picture_is_added_with_its_provenance_and_undo_takes_it_out(trained_project, tmp_path):
    project = trained_project
    pic = tmp_path / "IMG_0042.png"
    imagegen.noisy((150, 40, 200), seed=8).save(pic)
    [pred] = predict_files(project, [pic])
    before = sorted(p.name for p in project.images_dir.rglob("*.jpg"))
    act = add_to_dataset(project, pic, "purple", name="IMG_0042.png", prediction=pred)
    [item] = project.items(label="purple")
    assert item.meta["provenance"] == PROVENANCE and item.meta["name"] == "IMG_0042.png"
    assert item.meta["predicted"] == pred.label and item.display_name == "IMG_0042.png"
    assert project.path_of(item).exists() and "purple" in project.labels()
    assert act.summary == "added IMG_0042.png to 'purple'"
    stored = project.path_of(item).read_bytes()

    project.undo()
    assert "purple" not in project.labels() and project.items(label="purple") == []
    assert sorted(p.name for p in project.images_dir.rglob("*.jpg")) == before
    project.redo()
    assert project.item(item.id).status == "active" and project.path_of(project.item(item.id)).read_bytes() == stored
    with pytest.raises(InputError, match="already in the dataset, in 'purple'"):
        add_to_dataset(project, pic, "red", name="IMG_0042.png")
    # Undone, then added again under another class: it comes back from the trash, there.
    project.undo()
    add_to_dataset(project, pic, "red", name="IMG_0042.png")
    assert project.item(item.id).label == "red" and "purple" not in project.labels()
    project.undo()
    assert project.item(item.id).status == "deleted"
    with pytest.raises(InputError):
        add_to_dataset(project, pic, "  ", name="x.png")


def test_through_the_api_bulk_csv_heatmap_and_add_with_undo(trained_project, mixed, tmp_path):
    folder, zpath = mixed
    new = tmp_path / "unseen.png"
    imagegen.noisy((30, 30, 220), seed=77).save(new)
    with serve(trained_project.root) as srv:
        c = Client(srv.url, verbose=False)
        files = [handle_file(p) for p in sorted(folder.glob("*.*"))] + [handle_file(zpath)]
        summary, table, csv_file, zip_file = c.predict(files, api_name="/classify_many")[:4]
        assert summary.startswith("Classified 8 pictures") and "3 files not classified" in summary
        rows = {r[0]: r for r in table["data"]}
        assert rows["notes.txt"][5] == "a text file, not an image" and rows["r0.png"][1] in ("red", "blue")
        assert rows["blues.zip!blue/2.png"][2].endswith("%")
        text = Path(csv_file).read_text(encoding="utf-8")
        assert text.splitlines()[0] == ",".join(CSV_COLUMNS) and len(text.splitlines()) == 1 + len(rows)
        with zipfile.ZipFile(zip_file) as zf:
            assert {n.split("/")[0] for n in zf.namelist() if "/" in n} <= {"red", "blue"}
        # The folder of this computer (single-user mode: the owner's).
        out = c.predict(str(folder), api_name="/classify_folder")
        assert out[0].startswith("Classified 5 pictures")

        heat = c.predict(handle_file(new), "unseen.png", api_name="/explain")
        assert heat["visible"] and "Where the model looked to say" in heat["label"] and "unseen.png" in heat["label"]
        assert Image.open(heat["value"]).size[0] >= 256

        note, choice = c.predict(handle_file(new), "unseen.png", "navy", api_name="/add_to_dataset")
        assert note.startswith("Added unseen.png to 'navy' (a new class)") and choice["value"] == "navy"
        [item] = srv.project.items(label="navy")
        assert item.meta["provenance"] == "classified" and item.source == "unseen.png"
        note = c.predict(api_name="/undo_add")[0]
        assert note == "Undone: added unseen.png to 'navy'." and "navy" not in srv.project.labels()
        with pytest.raises(AppError, match="Type the path of a folder"):
            c.predict("", api_name="/classify_folder")
