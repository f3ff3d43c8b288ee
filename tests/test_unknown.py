"""None of these: quick and full runs record a threshold, and a picture of a kind the model never
saw is called unknown while new pictures of its classes mostly are not.

Known classes are imagegen's noisy colours; the kind left out of training is another colour (or
grey), which a network separates from them at once: the test is about the app's rule, not about
how hard open-set recognition is (bench/unknown.py measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import imagegen
from tl_app import openset, runs
from tl_app.importer import import_files
from tl_app.predict import predict_files
from tl_app.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

#: Colours no run was trained on.
LEFT_OUT = {"yellow": (220, 220, 30), "grey": (128, 128, 128)}


def _pictures(folder: Path, colours: dict, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ci, (name, rgb) in enumerate(colours.items()):
        for i in range(n):
            f = folder / f"{name} {i}.png"
            imagegen.noisy(rgb, seed=seed + 100 * ci + i).save(f)
            out.append(f)
    return out


def _check_open_set(project, run_id: str, tmp_path: Path) -> None:
    """The run's rule is recorded; left-out kinds are unknown, new pictures of known classes mostly not."""
    rec = runs.read_json(project, run_id, openset.FILE)
    # resnet18: the stem (64 channels) and four stages, each max, mean and std pooled
    widths = [3 * c for c in (64, 64, 128, 256, 512)]
    assert rec is not None and rec["parts"] == list(openset.layer_parts(5)) and rec["accepted"] == 0.95
    assert rec["version"] == 3 and rec["features"] == "layers" and rec["k"] == 1 and rec["widths"] == widths
    assert all(w >= 0 for w in rec["weights"].values()) and abs(sum(rec["weights"].values()) - 1) < 1e-6
    rule = openset.OpenSet.from_dict(rec)
    snap = runs.read_json(project, run_id, "snapshot.json")
    assert rule.held_out == sum(it["valid"] for it in snap["items"]) and rule.bank == len(snap["items"]) - rule.held_out
    import numpy as np

    bank = np.load(runs.run_dir(project, run_id) / openset.BANK_FILE)
    assert bank.dtype == np.float16 and bank.shape == (rule.bank, sum(widths))
    # one row per training picture, each layer's block of unit length
    for a, b in zip(np.cumsum([0] + widths[:-1]), np.cumsum(widths)):
        assert np.allclose(np.linalg.norm(bank[:, a:b].astype(np.float32), axis=1), 1.0, atol=1e-2)

    known = _pictures(tmp_path / "known", {k: imagegen.COLOURS[k] for k in ("red", "blue")}, 6, seed=5000)
    strange = _pictures(tmp_path / "strange", LEFT_OUT, 5, seed=6000)
    preds = predict_files(project, known + strange)
    assert all(p.unknown is not None and p.unknown_score is not None for p in preds)
    k, s = preds[:len(known)], preds[len(known):]
    assert all(p.unknown for p in s), [(p.file, p.unknown_score, rule.threshold) for p in s]
    # Mostly accepted (95% of known pictures, on average).
    assert sum(p.unknown for p in k) <= 1, [(p.file, p.unknown_score, rule.threshold) for p in k]
    # The score orders them: every left-out picture is stranger than every known one.
    assert min(p.unknown_score for p in s) > max(p.unknown_score for p in k)
    # Still a class and its probabilities: "nearest class" is what the UI shows with "not one of".
    assert all(p.label in ("red", "blue") and p.probs for p in s)


def test_full_run_records_a_threshold_and_catches_a_left_out_kind(open_set_project, tmp_path):
    run = runs.active_run(open_set_project)
    assert run.mode == "finetune"
    _check_open_set(open_set_project, run.id, tmp_path)


def test_too_few_held_out_pictures_make_no_claim(trained_project, tmp_path):
    """6 held-out pictures cannot set a 95% threshold: the app says nothing rather than something wrong."""
    run = runs.active_run(trained_project)
    assert runs.read_json(trained_project, run.id, openset.FILE)["held_out"] == 6
    pics = _pictures(tmp_path / "p", {"grey": LEFT_OUT["grey"], "red": imagegen.COLOURS["red"]}, 2, seed=3)
    assert all(p.unknown is None and p.unknown_score is None and p.label for p in predict_files(trained_project, pics))


def test_quick_run_records_a_threshold_and_catches_a_left_out_kind(project, fake_pretrained, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=50)])
    rep = train(project, TrainConfig(quick=True, size=64))
    assert rep.status == "finished"
    _check_open_set(project, rep.run, tmp_path)


def test_a_run_without_a_threshold_makes_no_claim(open_set_project, tmp_path):
    """Runs trained before the rule existed (no unknown.json) predict as before: unknown is None."""
    run = runs.active_run(open_set_project)
    (runs.run_dir(open_set_project, run.id) / openset.FILE).unlink()
    pic = _pictures(tmp_path / "p", {"grey": LEFT_OUT["grey"]}, 1, seed=1)
    (p,) = predict_files(open_set_project, pic)
    assert p.label in ("red", "blue") and p.unknown is None and p.unknown_score is None
    assert p.to_dict()["unknown"] is None and "unknown_score" in p.to_dict()


def test_changed_features_make_no_claim(open_set_project, tmp_path):
    """The bank the threshold was set with is named by its hash; another file gives no claim, not a wrong one."""
    import numpy as np

    run = runs.active_run(open_set_project)
    bfile = runs.run_dir(open_set_project, run.id) / openset.BANK_FILE
    bank = np.load(bfile)
    np.save(bfile, np.zeros_like(bank), allow_pickle=False)
    (p,) = predict_files(open_set_project, _pictures(tmp_path / "p", {"grey": LEFT_OUT["grey"]}, 1, seed=1))
    assert p.label is not None and p.unknown is None


def _claims_as_recorded(project, run_id: str, features: str, tmp_path, *, seed: int) -> None:
    """The run's rule, loaded again as recorded, is of ``features``: left-out kinds are unknown, and at
    most one known picture is."""
    import tl_app.predict as predict_mod

    predict_mod._cache.clear()  # the run's scorer is loaded with its model
    scorer = predict_mod.open_set_for(project, run_id)
    assert scorer is not None and scorer.features == features
    known = _pictures(tmp_path / "known", {k: imagegen.COLOURS[k] for k in ("red", "blue")}, 4, seed=seed)
    strange = _pictures(tmp_path / "strange", LEFT_OUT, 3, seed=seed + 1000)
    preds = predict_files(project, known + strange)
    assert all(p.unknown for p in preds[len(known):])
    assert sum(p.unknown for p in preds[:len(known)]) <= 1


def test_a_first_version_rule_still_makes_its_claim(open_set_project, tmp_path):
    """A run recorded by the first version (distances in the pooled features of embeddings.npy, no bank
    file of its own) keeps its rule: left-out kinds are still called unknown, its classes are not."""
    import numpy as np

    run = runs.active_run(open_set_project)
    rdir = runs.run_dir(open_set_project, run.id)
    snap = runs.read_json(open_set_project, run.id, "snapshot.json")
    emb = np.load(rdir / "embeddings.npy").astype(np.float32)
    valid = np.array([it["valid"] for it in snap["items"]])
    # The held-out rows' logits, as the first version fitted them: the run's own model on its own pictures.
    from tl_app.features import embed_logits
    from tl_app.predict import _item_pixels, model_for

    model, spec, _ = model_for(open_set_project, run.id)
    vids = [it["item"] for it, v in zip(snap["items"], valid) if v]
    vlogits, _ = embed_logits(model, _item_pixels(open_set_project, vids, spec.size), spec)
    old = openset.fit(emb[~valid], emb[valid], vlogits, k=openset.default_k(int((~valid).sum())), features="pooled")
    old.embeddings_sha256 = openset.file_sha256(rdir / "embeddings.npy")
    doc = old.to_dict()
    assert doc["version"] == 1 and "features" in doc
    del doc["features"]  # the first version wrote no such key
    runs.write_json(rdir, openset.FILE, doc)
    (rdir / openset.BANK_FILE).unlink()
    _claims_as_recorded(open_set_project, run.id, "pooled", tmp_path, seed=5100)


def test_a_second_version_rule_still_makes_its_claim(open_set_project, tmp_path):
    """A run recorded by the second version (the last four stages, max and mean pooled, knn + energy alike)
    keeps its rule: predict computes those features for it, and left-out kinds are still unknown."""
    import numpy as np

    from tl_app.features import embed_with_stages
    from tl_app.predict import _item_pixels, model_for

    run = runs.active_run(open_set_project)
    rdir = runs.run_dir(open_set_project, run.id)
    snap = runs.read_json(open_set_project, run.id, "snapshot.json")
    valid = np.array([it["valid"] for it in snap["items"]])
    model, spec, _ = model_for(open_set_project, run.id)
    logits, _, stages = embed_with_stages(model, _item_pixels(open_set_project, [it["item"] for it in snap["items"]],
                                                              spec.size), spec, kind="stages")
    assert stages.shape[1] == 2 * (64 + 128 + 256 + 512)
    bank = stages[~valid].astype(np.float16)
    np.save(rdir / openset.BANK_FILE, bank, allow_pickle=False)
    old = openset.fit(bank.astype(np.float32), stages[valid], logits[valid], k=1, features="stages")
    old.bank_sha256 = openset.file_sha256(rdir / openset.BANK_FILE)
    doc = old.to_dict()
    assert doc["version"] == 2 and doc["parts"] == ["knn", "energy"] and "weights" not in doc
    runs.write_json(rdir, openset.FILE, doc)
    _claims_as_recorded(open_set_project, run.id, "stages", tmp_path, seed=5200)


#: Drawn shapes, each class a shape in its own colour; the unseen kinds are the same shapes in other colours.
SHAPES = {"red circle": ("circle", (210, 40, 40)), "green square": ("square", (40, 190, 40)),
          "blue triangle": ("triangle", (50, 60, 220))}
UNSEEN_SHAPES = [("circle", (220, 210, 40)), ("square", (200, 40, 200)), ("triangle", (40, 200, 200))]


def test_a_known_shape_in_an_unseen_colour_is_none_of_these(project, fake_pretrained, tmp_path):
    """A quick run on red circles, green squares and blue triangles (a body that knows nothing of pictures:
    random weights) calls a yellow circle, a magenta square or a cyan triangle "none of these", and new red
    circles, green squares and blue triangles mostly not. The colour lives in the network's first layers,
    which the score measures distances in (version 3); the last stages alone did not tell them apart."""
    src = tmp_path / "src"
    for ci, (name, (kind, rgb)) in enumerate(SHAPES.items()):
        (src / name).mkdir(parents=True)
        for i in range(40):
            imagegen.shape(kind, rgb, seed=100 * ci + i).save(src / name / f"{i}.png")
    import_files(project, [src])
    rep = train(project, TrainConfig(quick=True, size=64))
    assert rep.status == "finished"
    test = tmp_path / "test"
    test.mkdir()
    known, unseen = [], []
    for ci, (kind, rgb) in enumerate(SHAPES.values()):
        for i in range(4):
            known.append(test / f"known {ci} {i}.png")
            imagegen.shape(kind, rgb, seed=9000 + 100 * ci + i).save(known[-1])
    for i, (kind, rgb) in enumerate(UNSEEN_SHAPES * 3):
        unseen.append(test / f"unseen {i}.png")
        imagegen.shape(kind, rgb, seed=7000 + i).save(unseen[-1])
    preds = predict_files(project, known + unseen)
    k, u = preds[:len(known)], preds[len(known):]
    assert all(p.unknown for p in u), [(p.file, p.unknown_score) for p in u]
    assert sum(p.unknown for p in k) <= 2, [(p.file, p.unknown_score) for p in k]
    assert min(p.unknown_score for p in u) > max(p.unknown_score for p in k)
    # the nearest class is still named (what "not one of: ..." shows beside it)
    assert all(p.label in SHAPES for p in u)


def test_layer_weights_come_from_left_out_known_classes():
    """Version 3's weights, on numbers: a layer in which each class sits apart (a class left out of the bank
    is far from the rest) gets the weight; a layer of noise, where nothing is apart, gets little or none."""
    import numpy as np

    rng = np.random.default_rng(0)
    n_classes, dim = 4, 16
    centres = rng.normal(size=(n_classes, dim)) * 3

    def rows(labels):
        apart = centres[labels] + rng.normal(size=(len(labels), dim))
        noise = rng.normal(size=(len(labels), dim))
        return np.c_[openset.l2_normalise(apart), openset.l2_normalise(noise)]

    yb, yv = np.repeat(np.arange(n_classes), 50), np.repeat(np.arange(n_classes), 15)
    logits = np.eye(n_classes)[yv] * 2 + rng.normal(size=(len(yv), n_classes))
    bank, held_out = rows(yb).astype(np.float16), rows(yv)
    rule = openset.fit_layers(bank, yb, held_out, yv, logits, (dim, dim))
    assert rule.parts == ("knn:0", "knn:1", "energy")
    assert rule.weights["knn:0"] > 0.5 and rule.weights["knn:1"] < 0.1
    assert openset.OpenSet.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    # the conformal threshold: the ceil(61 * 0.95) = 58th smallest of the 60 held-out scores
    assert (rule.combine(openset.layer_raw_parts(bank, held_out, logits, rule)) <= rule.threshold).sum() == 58


def test_a_loaded_scorer_scores_as_the_rule_was_fitted_with_its_bank_prepared_once():
    """A scorer prepares its bank's layer blocks once (float32, unit length) instead of for every picture: the
    same scores to the last bit, and a bank past the memory limit still scores, a chunk at a time."""
    import numpy as np

    rng = np.random.default_rng(1)
    widths = (8, 24)
    yb, yv = np.repeat(np.arange(3), 40), np.repeat(np.arange(3), 20)
    bank = openset.l2_normalise(rng.normal(size=(len(yb), sum(widths)))).astype(np.float16)
    held_out = rng.normal(size=(len(yv), sum(widths)))
    logits = np.eye(3)[yv] + rng.normal(size=(len(yv), 3))
    rule = openset.fit_layers(bank, yb, held_out, yv, logits, widths)
    want = rule.combine(openset.layer_raw_parts(bank, held_out, logits, rule))
    scorer = openset.Scorer(rule, bank)
    assert scorer.blocks is not None and [b.shape for b in scorer.blocks] == [(120, 8), (120, 24)]
    assert all(b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-6) for b in scorer.blocks)
    scores, unknown = scorer.score(held_out, logits)
    assert np.array_equal(scores, want) and np.array_equal(unknown, want > rule.threshold)
    big = openset.Scorer(rule, bank, blocks_most_bytes=1000)
    assert big.blocks is None and np.array_equal(big.score(held_out, logits)[0], want)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300, cwd=ROOT)


def test_predict_json_says_unknown(open_set_project, tmp_path):
    red = _pictures(tmp_path / "r", {"red": imagegen.COLOURS["red"]}, 1, seed=7)
    grey = _pictures(tmp_path / "g", {"grey": LEFT_OUT["grey"]}, 1, seed=8)
    out = _cli("predict", open_set_project.root, *red, *grey, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["unknown"] for r in rows] == [False, True]
    assert all(isinstance(r["unknown_score"], float) for r in rows) and rows[1]["unknown_score"] > rows[0]["unknown_score"]
    text = _cli("predict", open_set_project.root, *grey)
    assert text.returncode == 0 and "none of these (nearest: " in text.stdout

    # An old run (no threshold recorded): the keys are there, and say nothing.
    (runs.run_dir(open_set_project, runs.active_run(open_set_project).id) / openset.FILE).unlink()
    rows = json.loads(_cli("predict", open_set_project.root, *grey, "--json").stdout)
    assert rows[0]["unknown"] is None and rows[0]["unknown_score"] is None and rows[0]["label"] in ("red", "blue")


def test_threshold_accepts_95_percent_of_held_out_known_pictures():
    """The rule's own arithmetic, on separable numbers: 95% of the held-out rows fall under it."""
    import numpy as np

    rng = np.random.default_rng(0)
    train_f = rng.normal(size=(200, 8)) + np.r_[5, np.zeros(7)]
    valid_f = rng.normal(size=(100, 8)) + np.r_[5, np.zeros(7)]
    valid_l = rng.normal(size=(100, 3)) + np.array([4, 0, 0])
    rule = openset.fit(train_f, valid_f, valid_l)
    raw = openset.raw_parts(openset.l2_normalise(train_f), valid_f, valid_l, rule.k, rule.parts)
    # the conformal quantile: the ceil(101 * 0.95) = 96th smallest of the 100 held-out scores
    assert (rule.combine(raw) <= rule.threshold).sum() == 96
    far = rng.normal(size=(20, 8)) - np.r_[5, np.zeros(7)]
    s = rule.combine(openset.raw_parts(openset.l2_normalise(train_f), far, rng.normal(size=(20, 3)), rule.k, rule.parts))
    assert (s > rule.threshold).all()
    assert openset.OpenSet.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
