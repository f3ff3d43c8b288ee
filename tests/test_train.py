"""Training, runs, model files, prediction and the review ranking (core, no UI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imagegen
from tl_app import runs
from tl_app.errors import ModelFileInvalid, PreflightError, TrainerBusy, WeightsMissing
from tl_app.importer import import_files
from tl_app.jobs import StopToken
from tl_app.predict import predict_files
from tl_app.review import queue as review_queue, rank
from tl_app.train import TrainConfig, split_valid, take_snapshot, train, trainer_lock

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_trained_run_is_recorded_with_model_metrics_and_scores(trained_project):
    [run] = runs.list_runs(trained_project)
    assert run.status == "finished" and run.has_model
    rdir = runs.run_dir(trained_project, run.id)
    assert (rdir / "model.safetensors").is_file() and (rdir / "model.json").is_file()
    report = runs.read_json(trained_project, run.id, "report.json")
    assert set(report["confusion"]["labels"]) == {"red", "blue"}
    assert sum(map(sum, report["confusion"]["matrix"])) == report["valid_items"]
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]  # frozen epoch + 2
    scores = runs.read_json(trained_project, run.id, "scores.json")
    scored = {s["item"] for s in scores["items"]}
    all_ids = {it.id for it in trained_project.items()}
    # Every validation item is scored; training items are scored from their training batches
    # (a few may miss out when the last batch of every epoch is dropped).
    assert scored <= all_ids and len(scored) >= len(all_ids) - 2 * 32
    assert {s["item"] for s in scores["items"] if s["valid"]} and all(s["item"] in scored for s in scores["items"])
    for s in scores["items"]:
        assert abs(sum(s["probs"]) - 1) < 1e-3
    losses = runs.read_json(trained_project, run.id, "losses.json")
    assert len(losses["losses"]) == 3 and len(losses["losses"][0]) == len(all_ids)
    assert runs.active_run(trained_project).id == run.id
    # No pickle anywhere in the run folder.
    assert not list(rdir.glob("*.pkl")) and not list(rdir.glob("*.pth"))


def test_predict_files_gives_probabilities_and_refuses_non_images(trained_project, tmp_path):
    good = tmp_path / "red.png"
    imagegen.noisy(imagegen.COLOURS["red"], seed=999).save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("<html><body>not a picture</body></html>")
    preds = predict_files(trained_project, [good, bad])
    assert preds[0].label in ("red", "blue") and abs(sum(preds[0].probs.values()) - 1) < 1e-3
    assert preds[0].confidence == max(preds[0].probs.values())
    assert preds[1].label is None and "web page" in preds[1].error


def test_prediction_sees_the_same_pixels_as_training(trained_project):
    """A stored item predicted as a file gives the probabilities the run recorded for it."""
    run = runs.active_run(trained_project)
    rows = runs.read_json(trained_project, run.id, "scores.json")["items"]
    scores = {s["item"]: s["probs"] for s in rows}
    # Validation items were scored by the final model without augmentation.
    valid_ids = [s["item"] for s in rows if s["valid"]]
    it = trained_project.item(valid_ids[0])
    [p] = predict_files(trained_project, [trained_project.path_of(it)])
    vocab = runs.read_json(trained_project, run.id, "scores.json")["vocab"]
    for label, prob in zip(vocab, scores[it.id]):
        assert p.probs[label] == pytest.approx(prob, abs=1e-3)


def test_review_ranks_every_item_against_its_current_label(trained_project):
    rows = rank(trained_project, kind="label")
    assert len(rows) == len(trained_project.items())
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    top = rows[0]
    # Relabelling changes the ranking at once: the item is now scored against its new label.
    other = "blue" if top.label == "red" else "red"
    trained_project.relabel([top.item], other)
    after = {r.item: r for r in rank(trained_project, kind="label")}
    assert after[top.item].label == other
    assert after[top.item].loss != pytest.approx(top.loss)
    # Kept items leave the queue; deleted ones too.
    trained_project.keep([top.item])
    trained_project.delete([rows[1].item])
    ids = {r.item for r in rank(trained_project, kind="label")}
    assert top.item not in ids and rows[1].item not in ids


def test_review_scores_items_added_after_training(trained_project, tmp_path):
    img = tmp_path / "new.png"
    imagegen.noisy(imagegen.COLOURS["blue"], seed=4242).save(img)
    rep = import_files(trained_project, [img], label="blue")
    rows = {r.item: r for r in rank(trained_project, kind="label")}
    assert rep.items[0] in rows and rows[rep.items[0]].valid is None


def test_tampered_model_file_is_refused(trained_project):
    from tl_app.predict import model_for

    run = runs.active_run(trained_project)
    wfile = runs.run_dir(trained_project, run.id) / "model.safetensors"
    data = bytearray(wfile.read_bytes())
    data[-1] ^= 0xFF
    wfile.write_bytes(bytes(data))
    with pytest.raises(ModelFileInvalid, match="changed after training"):
        model_for(trained_project, run.id)


def test_preflight_refuses_too_little_data(project, tmp_path):
    with pytest.raises(PreflightError, match="at least two classes"):
        train(project, TrainConfig(size=32, pretrained=False))
    src = imagegen.class_folder(tmp_path / "one", per_class=3, classes=("red",))
    import_files(project, [src])
    with pytest.raises(PreflightError, match="only 'red'"):
        train(project, TrainConfig(size=32, pretrained=False))
    one_blue = tmp_path / "b.png"
    imagegen.noisy(imagegen.COLOURS["blue"]).save(one_blue)
    import_files(project, [one_blue], label="blue")
    with pytest.raises(PreflightError, match="'blue' \\(1\\)"):
        train(project, TrainConfig(size=32, pretrained=False))
    assert runs.list_runs(project) == []  # nothing was started


def test_validation_split_is_stratified_and_stable(project, colour_folder):
    import_files(project, [colour_folder])
    snap = take_snapshot(project)
    tr, va = split_valid(snap)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(snap.items)
    labels_valid = {snap.items[i].label for i in va}
    assert labels_valid == {"red", "blue"}
    assert split_valid(take_snapshot(project)) == (tr, va)


def test_stop_ends_training_at_the_next_batch_and_is_recorded(project, colour_folder):
    import_files(project, [colour_folder])
    stop = StopToken()
    batches = []

    def events(ev):
        if ev["type"] == "batch":
            batches.append(ev)
            stop.set()

    rep = train(project, TrainConfig(size=32, epochs=3, pretrained=False), stop=stop, events=events)
    assert rep.status == "stopped"
    assert len(batches) == 1  # not one batch more
    run = runs.get_run(project, rep.run)
    assert run.status == "stopped" and not run.has_model
    assert runs.active_run(project) is None
    assert not trainer_lock(project).holder()  # the lock is released


def test_deleting_and_relabelling_during_training_cannot_crash_it(project, colour_folder):
    import_files(project, [colour_folder])
    items = project.items()
    done = []

    def events(ev):
        if ev["type"] == "batch" and not done:
            project.delete([items[0].id, items[1].id])
            project.relabel([items[-1].id], "red" if items[-1].label == "blue" else "blue")
            done.append(True)

    rep = train(project, TrainConfig(size=32, epochs=1, pretrained=False), events=events)
    assert rep.status == "finished" and done


def test_second_training_is_refused_while_one_holds_the_trainer(project, colour_folder):
    import_files(project, [colour_folder])
    lock = trainer_lock(project)
    assert lock.acquire({"run": "20260101-000000-abcd", "pid": os.getpid(), "started": time.time()})
    try:
        with pytest.raises(TrainerBusy, match="busy.*since"):
            train(project, TrainConfig(size=32, pretrained=False))
    finally:
        lock.release()


def test_missing_pretrained_weights_say_what_to_do_without_network(project, colour_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    import_files(project, [colour_folder])
    t0 = time.monotonic()
    with pytest.raises(WeightsMissing) as err:
        train(project, TrainConfig(size=32, pretrained=True))
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "empty_torch_home") in msg
    assert "from scratch" in msg and "--no-pretrained" in msg
    assert time.monotonic() - t0 < 60  # it answers instead of hanging on the network
    [run] = runs.list_runs(project)
    assert run.status == "failed" and "resnet18-f37072fd.pth" in run.reason


def test_pretrained_weights_load_through_torchvision_from_torch_home(project, colour_folder, fake_pretrained):
    import torch

    from tl_app.models import create_body

    body = create_body("resnet18", pretrained=True)
    sd = torch.load(fake_pretrained, weights_only=True)
    assert torch.equal(body[0].weight, sd["conv1.weight"])  # the file's weights, not a fresh init
    import_files(project, [colour_folder])
    assert train(project, TrainConfig(size=32, pretrained=True)).status == "finished"


def test_cli_train_prints_one_json_document(project, colour_folder):
    import_files(project, [colour_folder])
    out = subprocess.run([sys.executable, "-m", "tl_app", "train", str(project.root), "--no-pretrained",
                          "--size", "32", "--json"], capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "finished" and set(doc) >= {"run", "status", "metrics", "seconds"}
    runs_out = subprocess.run([sys.executable, "-m", "tl_app", "runs", str(project.root), "--json"],
                              capture_output=True, text=True, env=_env(), timeout=60)
    [row] = json.loads(runs_out.stdout)
    assert row["run"] == doc["run"] and set(row) >= {"run", "status", "metrics", "seconds", "arch", "created"}


def test_ctrl_c_stops_cli_training_and_records_it(project, tmp_path):
    src = imagegen.class_folder(tmp_path / "many", per_class=40)
    import_files(project, [src])
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tl_app", "train", str(project.root), "--no-pretrained",
                             "--size", "64", "--epochs", "20", "--batch-size", "4", "--json", "--events", str(events)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    while time.time() < deadline:
        if events.exists() and '"batch"' in events.read_text():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("training never started")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    doc = json.loads(out)
    assert doc["status"] == "stopped", err
    assert "Traceback" not in err
    assert runs.get_run(project, doc["run"]).status == "stopped"


def test_a_run_left_running_by_a_dead_process_becomes_failed(project):
    from tl_app.runner import fail_abandoned_runs

    run_id = "20260101-000000-abcd"
    runs.start_run(project, run_id, arch="resnet18", mode="quick", cfg={})
    lock = trainer_lock(project)
    assert lock.acquire({"run": run_id, "pid": os.getpid(), "started": time.time()})
    fail_abandoned_runs(project)
    assert runs.get_run(project, run_id).status == "running"  # its process holds the trainer
    lock.release()  # as when the process dies
    fail_abandoned_runs(project)
    run = runs.get_run(project, run_id)
    assert run.status == "failed" and "ended unexpectedly" in run.reason


def test_stop_after_an_epoch_keeps_the_model_and_skips_the_pass_over_every_picture(project, colour_folder):
    import_files(project, [colour_folder])
    stop = StopToken()
    seen = []

    def events(ev):
        seen.append(ev)
        if ev["type"] == "epoch" and ev["epoch"] == 2:
            stop.set()

    rep = train(project, TrainConfig(size=32, epochs=4, pretrained=False), stop=stop, events=events)
    assert rep.status == "stopped" and rep.metrics["epochs"] == 2
    after = seen[[i for i, ev in enumerate(seen) if ev["type"] == "epoch" and ev["epoch"] == 2][0] + 1:]
    assert not [ev for ev in after if ev.get("phase") in ("scoring", "features")]  # no pass over every picture
    run = runs.get_run(project, rep.run)
    assert run.status == "stopped" and run.has_model
    assert "skipped" in run.reason and "Review" in run.reason
    scores = runs.read_json(project, rep.run, "scores.json")
    assert scores["items"] and not any("review" in s for s in scores["items"])
    assert not (runs.run_dir(project, rep.run) / "embeddings.npy").exists()
    # The kept model answers, and Review still ranks every picture by it, but flags none and says why.
    ranked = rank(project, run_id=rep.run, kind="label")
    assert len(ranked) == len(list(project.items()))
    assert not any(r.flagged for r in ranked)
    runs.set_active_run(project, rep.run)
    q = review_queue(project)
    assert q.partial and q.counts["label"] == 0 and q.counts["outlier"] == 0
    assert all("stopped" in r.detail for r in q.rows if r.reason == "label")
