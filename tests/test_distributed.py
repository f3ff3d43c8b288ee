"""Fine-tuning on two CPU processes (gloo over loopback) records one run, as one process would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import imagegen
from tl_app import runs
from tl_app.importer import import_files

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_train_one_run_that_saw_every_picture(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=20)])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-m", "tl_app", "train", str(project.root), "--processes", "2",
                          "--no-pretrained", "--size", "32", "--epochs", "1", "--batch-size", "4", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)  # one document: only the first process prints
    assert doc["status"] == "finished"
    listed = runs.list_runs(project)
    assert [r.id for r in listed] == [doc["run"]]  # one run recorded, by the first process only
    run = runs.get_run(project, doc["run"])
    assert run.status == "finished" and run.has_model
    report = runs.read_json(project, doc["run"], "report.json")
    assert report["processes"] == 2 and report["valid_items"] == 8
    # Each process trained on half of every epoch; the run has every training picture's loss in
    # every epoch, gathered from both.
    snap = runs.read_json(project, doc["run"], "snapshot.json")
    train_ids = {s["item"] for s in snap["items"] if not s["valid"]}
    losses = runs.read_json(project, doc["run"], "losses.json")
    for epoch in losses["losses"]:
        assert all(v is not None for i, v in zip(losses["items"], epoch) if i in train_ids)
    scores = runs.read_json(project, doc["run"], "scores.json")
    assert len(scores["items"]) == 40 and all("review" in s for s in scores["items"])
