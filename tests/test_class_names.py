"""A model trained before classes were renamed, merged or deleted answers with the classes as they are now.

Real trainings (from scratch, 64 px) on seeded colour pictures; the model files are never rewritten
(loading still checks their hash). Rename: Classify, ``predict`` and Review say the new name, and Review
judges the class as before. Merge: one class, probabilities summed. Delete: the model's class is named
"deleted class 'x'" and Review does not call a picture misfiled toward it. Undo brings the old names back;
a change made before training is never applied twice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import imagegen
from tl_app import review, run_choice, runs
from tl_app.class_map import class_map, resolve
from tl_app.importer import import_files
from tl_app.model_card import model_card
from tl_app.predict import predict_files
from tl_app.project import Project
from tl_app.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
CFG = dict(size=64, epochs=2, pretrained=False)


def _three(base: Path) -> Project:
    project = Project.open(base / "proj", create=True)
    src = imagegen.class_folder(base / "src", per_class=10, classes=("red", "blue", "green"))
    for name in ("red", "blue", "green"):
        import_files(project, [src / name], label=name)
    return project


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    project = _three(base)
    assert train(project, TrainConfig(**CFG)).status == "finished"
    return project.root


@pytest.fixture
def trained(trained_template, tmp_path):
    """Red, blue and green (10 pictures each) and one finished run; a fresh copy per test."""
    shutil.copytree(trained_template, tmp_path / "p")
    return Project.open(tmp_path / "p")


def files_of(project: Project, label: str, n: int = 3) -> list[Path]:
    """Copies of the first pictures of a class, outside the project (a class change moves the originals)."""
    out = project.root.parent / "pictures"
    out.mkdir(exist_ok=True)
    return [Path(shutil.copy(project.path_of(it), out / f"{label}-{it.id}.jpg")) for it in project.items(label=label)[:n]]


def label_rows(project: Project) -> dict[str, review.ReviewRow]:
    return {r.item: r for r in review.rank(project, kind="label")}


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=180)
    assert cp.returncode == 0 and "Traceback" not in cp.stderr, cp.stderr
    return cp


# --- rename ------------------------------------------------------------------------------------
def test_after_a_rename_the_model_answers_and_review_judges_with_the_new_name(trained):
    run = runs.active_run(trained)
    model_sha = run.model_sha256
    reds = files_of(trained, "red")
    before_preds = predict_files(trained, reds)
    before_rows = label_rows(trained)
    assert not any("trained without" in r.detail for r in before_rows.values())

    trained.rename_label("red", "crimson")
    preds = predict_files(trained, reds)
    for b, a in zip(before_preds, preds):
        assert set(a.probs) == {"crimson", "blue", "green"}
        assert a.probs["crimson"] == b.probs["red"] and a.probs["blue"] == b.probs["blue"]
        assert a.label == {"red": "crimson"}.get(b.label, b.label)

    rows = label_rows(trained)
    assert set(rows) == set(before_rows)
    for iid, r in rows.items():
        b = before_rows[iid]
        assert "trained without" not in r.detail
        assert r.label == {"red": "crimson"}.get(b.label, b.label)
        assert r.predicted == {"red": "crimson"}.get(b.predicted, b.predicted)
        assert (r.score, r.flagged, r.confidence) == (b.score, b.flagged, b.confidence)
    q = review.queue(trained)
    assert "red" not in q.labels and "crimson" in q.labels

    card = model_card(trained)
    assert [c.name for c in card.classes] == ["blue", "green", "crimson"]
    assert "red" not in card.confusion_labels and card.changes == ["'red' is now 'crimson'"]

    out = json.loads(cli("predict", trained.root, *reds[:1], "--json").stdout)
    assert set(out[0]["probs"]) == {"crimson", "blue", "green"}

    trained.undo()  # the old name comes back, in every answer
    assert set(predict_files(trained, reds[:1])[0].probs) == {"red", "blue", "green"}
    assert {i: (r.label, r.predicted, r.score) for i, r in label_rows(trained).items()} == \
        {i: (r.label, r.predicted, r.score) for i, r in before_rows.items()}
    assert model_card(trained).changes == []
    trained.redo()
    assert predict_files(trained, reds)[0].probs["crimson"] == before_preds[0].probs["red"]
    assert runs.get_run(trained, run.id).model_sha256 == model_sha  # nothing the run wrote was changed


# --- merge -------------------------------------------------------------------------------------
def test_merged_classes_answer_as_one_with_their_probabilities_summed(trained):
    pics = files_of(trained, "red", 2) + files_of(trained, "blue", 2) + files_of(trained, "green", 2)
    before = predict_files(trained, pics)
    before_rows = label_rows(trained)

    trained.merge_labels(["red", "blue"], "warm")
    after = predict_files(trained, pics)
    for b, a in zip(before, after):
        assert set(a.probs) == {"warm", "green"}
        assert a.probs["warm"] == pytest.approx(b.probs["red"] + b.probs["blue"], abs=2e-6)
        assert a.probs["green"] == b.probs["green"]
        assert a.label == max(a.probs, key=a.probs.get)  # the top answer of the summed classes

    rows = label_rows(trained)
    assert set(rows) == set(before_rows)
    for iid, r in rows.items():
        assert "trained without" not in r.detail and r.predicted in ("warm", "green")
        # Red and blue can no longer be confused with each other: only green is another class now.
        if r.flagged:
            assert r.predicted != r.label
    q = review.queue(trained)
    assert q.labels == ["warm", "green"] and sum(map(sum, q.matrix)) == len(rows)

    card = model_card(trained)
    assert [c.name for c in card.classes] == ["warm", "green"]
    assert card.confusion_labels == ["warm", "green"]
    snap = runs.read_json(trained, runs.active_run(trained).id, "snapshot.json")
    assert card.classes[0].learned_from == sum(1 for it in snap["items"]
                                               if not it["valid"] and it["label"] in ("red", "blue"))
    assert card.changes == ["'blue' and 'red' are now one class, 'warm'"]

    trained.undo()
    assert [p.probs for p in predict_files(trained, pics)] == [p.probs for p in before]
    assert [r.label for r in label_rows(trained).values()] == [r.label for r in before_rows.values()]


# --- delete ------------------------------------------------------------------------------------
def test_a_deleted_class_is_named_as_such_and_review_does_not_call_pictures_misfiled_toward_it(trained):
    moved = trained.items(label="green")[0]
    pics = files_of(trained, "green")[1:3]
    before = predict_files(trained, pics)
    trained.move({moved.id: "red"})  # a green picture filed as red: Review says it looks like green
    row = label_rows(trained)[moved.id]
    assert row.predicted == "green" and row.flagged

    trained.delete_labels(["green"])
    after = predict_files(trained, pics)
    for b, a in zip(before, after):
        assert set(a.probs) == {"red", "blue", "deleted class 'green'"}
        assert a.probs["deleted class 'green'"] == b.probs["green"]  # not dropped, not spread over the others
        assert sum(a.probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert a.label == ("deleted class 'green'" if b.label == "green" else b.label)

    rows = label_rows(trained)
    row = rows[moved.id]
    assert row.predicted == "deleted class 'green'" and not row.flagged
    assert "the deleted class 'green'" in row.detail and "not 'red'" in row.detail
    assert not any(r.flagged and r.predicted.startswith("deleted") for r in rows.values())
    q = review.queue(trained)
    assert q.counts["label"] == sum(1 for r in rows.values() if r.flagged)
    card = model_card(trained)
    assert card.changes == ["'green' was deleted"]

    trained.undo()
    assert set(predict_files(trained, pics[:1])[0].probs) == {"red", "blue", "green"}
    assert label_rows(trained)[moved.id].flagged


# --- before training ---------------------------------------------------------------------------
def test_a_change_made_before_training_is_not_applied_again_and_its_undo_is(tmp_path):
    project = _three(tmp_path)
    project.rename_label("red", "crimson")
    project.rename_label("blue", "red")  # "red" now holds the blue pictures
    rep = train(project, TrainConfig(**CFG))
    run = runs.get_run(project, rep.run)
    assert class_map(project, run).names == class_map(project, run).vocab == ["crimson", "green", "red"]
    reds = files_of(project, "red", 2)
    first = predict_files(project, reds)
    assert set(first[0].probs) == {"crimson", "green", "red"}
    assert not any("trained without" in r.detail for r in label_rows(project).values())

    project.undo()  # after training: the blue pictures are "blue" again, and so is the model's "red"
    after = predict_files(project, reds)
    assert set(after[0].probs) == {"crimson", "green", "blue"} and after[0].probs["blue"] == first[0].probs["red"]
    assert {r.label for r in label_rows(project).values()} == {"crimson", "green", "blue"}
    project.redo()
    assert predict_files(project, reds)[0].probs == first[0].probs

    # The run in use is compared with a later one on classes named as the later run saw them.
    project.rename_label("green", "lime")
    newer = runs.get_run(project, train(project, TrainConfig(**CFG)).run)
    cmp = run_choice.compare(project, newer, run)
    pictures = run_choice.fair_pictures(project, newer, run)
    vocab, probs = run_choice.run_probabilities(project, run, pictures)
    as_trained = [{**p, "label": "green" if p["label"] == "lime" else p["label"]} for p in pictures]
    assert any(p["label"] == "lime" for p in pictures)
    assert cmp.old_score.correct == run_choice.score(vocab, probs, as_trained).correct


# --- the log itself (no training) -------------------------------------------------------------
def test_names_follow_every_change_undo_and_redo(project, tmp_path):
    src = imagegen.class_folder(tmp_path / "src", per_class=2, classes=("red", "blue", "green"))
    for name in ("red", "blue", "green"):
        import_files(project, [src / name], label=name)
    vocab = ["blue", "green", "red"]
    start = project.class_log_position()

    def now():
        m = resolve(vocab, project.class_log(after=start), project.labels())
        return dict(zip(m.vocab, m.names))

    project.rename_label("red", "tmp")
    project.rename_label("blue", "red")
    project.rename_label("tmp", "blue")  # a swap
    assert now() == {"blue": "red", "green": "green", "red": "blue"}
    project.undo(), project.undo(), project.undo()
    assert now() == {"blue": "blue", "green": "green", "red": "red"}
    project.redo()
    assert now() == {"blue": "blue", "green": "green", "red": "tmp"}
    project.merge_labels(["tmp", "green"], "Warm")  # the redo stack is gone; a merge into a new name
    assert now() == {"blue": "blue", "green": "Warm", "red": "Warm"}
    project.rename_label("warm", "WARM")  # letter case only
    project.delete_labels(["blue"])
    assert now() == {"blue": "deleted class 'blue'", "green": "WARM", "red": "WARM"}
    project.add_label("Blue")  # a class made again under the deleted one's name is that class
    assert now()["blue"] == "Blue"

    # A model trained after the merge knows "Warm"; undoing the merge splits it again.
    mid = project.class_log_position()
    while project.can_undo():
        project.undo()
    m = resolve(["Blue", "WARM"], project.class_log(after=mid), project.labels())
    assert m.names == ["Blue", "former class 'Warm'"] and not m.is_class("former class 'Warm'")
