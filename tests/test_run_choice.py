"""Which run Review and Classify use: a new run replaces it only when it does better on the same pictures.

Real trainings on small seeded pictures: a quick run on (random, offline) pretrained features
separates coloured pictures; a full fine-tuning from scratch with a tiny learning rate does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imagegen
from tl_app import run_choice, runs
from tl_app.importer import import_files
from tl_app.predict import predict_items
from tl_app.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

GOOD = dict(quick=True, size=64)                                          # a quick run: right on these pictures
POOR = dict(quick=False, size=64, epochs=1, pretrained=False, lr=1e-6)    # barely trained: about chance


def _direct_score(project, run_id: str, pictures: list[dict]) -> tuple[int, int]:
    """(right, pictures) of a run's model on pictures, by predicting each one afresh, with current classes."""
    probs, vocab = predict_items(project, [p["item"] for p in pictures], run_id=run_id)
    right = sum(p["label"] in vocab and int(np.argmax(row)) == vocab.index(p["label"])
                for p, row in zip(pictures, probs))
    return right, len(pictures)


def _names(project) -> dict[str, str]:
    return runs.run_names(runs.list_runs(project))


@pytest.fixture
def colours(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=20)])
    return project


def test_a_new_run_replaces_the_run_in_use_only_when_it_does_better(colours, fake_pretrained):
    project = colours
    poor = train(project, TrainConfig(**POOR)).run
    iu = run_choice.in_use(project)
    assert iu.run.id == poor and iu.how == "first" and "the project's first model" in iu.describe()

    good = train(project, TrainConfig(**GOOD)).run
    iu = run_choice.in_use(project)
    assert runs.active_run(project).id == good and iu.how == "better" and iu.other.id == poor
    pictures = run_choice.fair_pictures(project, runs.get_run(project, good), runs.get_run(project, poor))
    assert iu.pictures == len(pictures) == 8  # 20% of 2 x 20, the same pictures for both
    # The recorded figures are the models' own answers on those pictures.
    assert (round(iu.accuracy * 8), 8) == _direct_score(project, good, pictures)
    assert (round(iu.other_accuracy * 8), 8) == _direct_score(project, poor, pictures)
    assert iu.accuracy > iu.other_accuracy
    assert f"it replaced {_names(project)[poor]}, which scored {iu.other_accuracy:.0%}" in iu.describe(_names(project))

    # Seen before: a worse full run silently replaced a better quick run. Not any more.
    worse = train(project, TrainConfig(**POOR)).run
    assert runs.get_run(project, worse).status == "finished"
    iu = run_choice.in_use(project)
    assert iu.run.id == good and iu.how == "kept" and iu.other.id == worse
    text = iu.describe(_names(project))
    assert text.startswith(f"In use: {_names(project)[good]}, {iu.accuracy:.0%} on 8 held-out pictures; the newer ")
    assert f"{_names(project)[worse]} scored {iu.other_accuracy:.0%} on the same pictures, so it was not used" in text

    # The person may still choose it; then it is theirs until a better run comes.
    runs.set_active_run(project, worse)
    iu = run_choice.in_use(project)
    assert iu.run.id == worse and iu.how == "picked" and iu.describe().endswith("; you chose it.")


def test_when_the_dataset_changed_both_runs_are_scored_on_pictures_neither_trained_on(colours, fake_pretrained,
                                                                                      tmp_path):
    project = colours
    first = train(project, TrainConfig(**POOR)).run
    before = runs.read_json(project, first, "snapshot.json")["items"]
    # Every picture the first run was checked on goes; new ones come, and a class it never saw.
    project.delete([it["item"] for it in before if it["valid"]])
    import_files(project, [imagegen.class_folder(tmp_path / "more", per_class=10, classes=("red", "blue", "green"),
                                                 seed=7)])
    second = train(project, TrainConfig(**GOOD)).run

    held_out = [it for it in runs.read_json(project, second, "snapshot.json")["items"] if it["valid"]]
    learned = {it["sha256"] for it in before if not it["valid"]}
    fair = run_choice.fair_pictures(project, runs.get_run(project, second), runs.get_run(project, first))
    assert fair == [it for it in held_out if it["sha256"] not in learned]
    assert fair and len(fair) < len(held_out)  # some held-out pictures were learned by the first run: left out
    assert any(it["label"] == "green" for it in fair)

    iu = run_choice.in_use(project)
    winner, loser = (second, first) if iu.run.id == second else (first, second)
    assert iu.pictures == len(fair)
    assert (round(iu.accuracy * len(fair)), len(fair)) == _direct_score(project, winner, fair)
    assert (round(iu.other_accuracy * len(fair)), len(fair)) == _direct_score(project, loser, fair)
    # Green pictures count as wrong for the run that does not know green.
    right_first, _ = _direct_score(project, first, fair)
    assert right_first <= sum(it["label"] != "green" for it in fair)
    # Each model's answers are kept by picture, so the next comparison need not load the network again.
    cached = json.loads((runs.run_dir(project, first) / "heldout.json").read_text())
    assert {it["sha256"] for it in fair} <= set(cached["probs"])


def test_a_stopped_run_never_replaces_the_run_in_use_by_itself(colours, fake_pretrained):
    from tl_app.jobs import StopToken

    project = colours
    good = train(project, TrainConfig(**GOOD)).run
    stop = StopToken()

    def events(ev):
        if ev.get("type") == "epoch":
            stop.set()

    rep = train(project, TrainConfig(size=64, epochs=5, pretrained=False), stop=stop, events=events)
    assert rep.status == "stopped" and runs.get_run(project, rep.run).has_model
    assert runs.active_run(project).id == good and run_choice.in_use(project).how == "first"


def test_cli_runs_says_which_run_is_in_use_and_why(colours, fake_pretrained):
    project = colours
    good = train(project, TrainConfig(**GOOD)).run
    poor = train(project, TrainConfig(**POOR)).run
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tl_app", "runs", str(project.root), "--json"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["run"]: r for r in json.loads(out.stdout)}
    names = _names(project)
    assert rows[good]["in_use"] is True and rows[poor]["in_use"] is False and "why" not in rows[poor]
    assert rows[good]["name"] == names[good] and rows[good]["why"].startswith(f"In use: {names[good]}, ")
    assert f"the newer {names[poor]} scored" in rows[good]["why"]
    text = subprocess.run([sys.executable, "-m", "tl_app", "runs", str(project.root)], capture_output=True,
                          text=True, env=env, timeout=60).stdout
    lines = text.splitlines()
    assert lines[0].startswith(names[poor]) and lines[1].startswith(names[good]) and lines[1].endswith("(in use)")
    assert lines[-1] == rows[good]["why"]


def test_run_names_say_mode_network_and_time_and_tell_runs_apart():
    assert runs.run_name("20261125-140237-ab12", "quick", "resnet18") == "Quick · resnet18 · 25 Nov 14:02"
    assert runs.run_name("20260301-090000-0000", "finetune", "resnet34") == "Full fine-tuning · resnet34 · 1 Mar 09:00"
    a = runs.Run("20261125-140201-aaaa", 0, "finished", "resnet18", "quick")
    b = runs.Run("20261125-140259-bbbb", 0, "finished", "resnet18", "quick")
    c = runs.Run("20261125-140259-cccc", 0, "finished", "resnet18", "finetune")
    assert runs.run_names([b, c, a]) == {a.id: a.name, b.id: a.name + " (2)", c.id: c.name}


def test_a_model_in_use_whose_files_changed_gives_way_to_the_new_run(colours, fake_pretrained):
    project = colours
    good = train(project, TrainConfig(**GOOD)).run
    model = runs.run_dir(project, good) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)  # no longer the file it recorded
    poor = train(project, TrainConfig(**POOR)).run
    iu = run_choice.in_use(project)
    assert iu.run.id == poor and iu.how == "better" and iu.other.id == good
    assert "was changed" in iu.note and iu.describe().startswith(f"In use: {runs.get_run(project, poor).name}, ")


def test_a_project_from_before_choices_were_recorded_uses_its_latest_finished_run(colours, fake_pretrained):
    project = colours
    first = train(project, TrainConfig(**GOOD)).run
    latest = train(project, TrainConfig(**GOOD)).run
    with project._write() as con:  # as an older version left it: no choice recorded
        con.execute("DELETE FROM meta WHERE key IN ('active_run', 'in_use')")
    iu = run_choice.in_use(project)
    assert iu.run.id == latest and iu.how == "latest" and iu.describe().endswith("; the latest finished run.")
    runs.set_active_run(project, first)
    assert run_choice.in_use(project).how == "picked"
