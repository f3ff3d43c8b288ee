"""Review: wrong labels anywhere in the dataset, duplicates, outliers and poor pictures (core and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagegen
from tl_app import review, runs
from tl_app.errors import RunNotFound, TLError
from tl_app.importer import import_files
from tl_app.project import Project
from tl_app.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


# --- the evidence, on plain arrays ------------------------------------------------------------
def _clusters(n_per=40, dim=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 4
    y = np.repeat(np.arange(classes), n_per)
    emb = centres[y] + rng.normal(size=(len(y), dim))
    return emb, y


def test_neighbours_find_labels_that_do_not_match_their_cluster():
    emb, truth = _clusters()
    noisy = truth.copy()
    wrong = np.array([3, 50, 97, 130, 151])
    noisy[wrong] = (noisy[wrong] + 1) % 4
    ev = review.label_evidence(emb, noisy, 4)
    assert set(np.argsort(-ev.wrong)[:len(wrong)]) == set(wrong)
    assert set(np.flatnonzero(ev.wrong > review.FLAG_WRONG)) == set(wrong)
    # ... and they are judged to belong to their true class, by their neighbours alone.
    assert (ev.clean[wrong].argmax(1) == truth[wrong]).all()
    assert np.allclose(ev.clean.sum(1), 1) and (ev.probs > 0).all()


def test_evidence_and_outliers_search_neighbours_once_with_the_same_answers():
    emb, truth, labels, _ = _look_alikes_and_a_systematic_error()
    early = emb + np.random.default_rng(1).normal(size=emb.shape)
    oof = review.knn_class_probs(early, labels, 4, k=7)
    for e in (None, early):
        ev, out = review.evidence_and_outliers(emb, labels, 4, oof_probs=oof, early=e)
        plain = review.label_evidence(emb, labels, 4, oof_probs=oof, early=e)
        for name in ("probs", "noise", "clean", "wrong", "rival", "apart"):
            assert np.array_equal(getattr(ev, name), getattr(plain, name)), name
        assert np.array_equal(out, review.outlier_scores(emb if e is None else e))


def _look_alikes_and_a_systematic_error(seed=0, n_per=50, dim=8):
    """Four classes: 2 and 3 nearly the same (honest doubts), and a quarter of class 0 filed as 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 4
    centres[3] = centres[2] + rng.normal(size=dim) * 0.6
    truth = np.repeat(np.arange(4), n_per)
    emb = centres[truth] + rng.normal(size=(len(truth), dim))
    labels = truth.copy()
    wrong = rng.choice(np.flatnonzero(truth == 0), size=n_per // 4, replace=False)
    labels[wrong] = 1
    return emb, truth, labels, wrong


def test_systematic_flips_are_found_though_their_look_alikes_share_the_wrong_label():
    emb, truth, labels, wrong = _look_alikes_and_a_systematic_error()
    ev = review.label_evidence(emb, labels, 4)
    k = len(wrong)
    assert set(np.argsort(-ev.score)[:k]) == set(wrong)
    assert set(np.flatnonzero(ev.score > review.FLAG_WRONG)) == set(wrong)  # flagged: exactly those
    assert (ev.clean[wrong].argmax(1) == 0).all() and ev.noise[0, 1] > 0.15 > ev.noise[1, 0]
    # Neighbours' votes alone rank honest doubts between 2 and 3 above the flips: a quarter of a
    # flipped item's look-alikes share its wrong label.
    votes = review.knn_class_probs(emb, labels, 4)
    naive = 1 - votes[np.arange(len(labels)), labels]
    assert len(set(np.argsort(-naive)[:k]) & set(wrong)) <= k * 0.75


def test_classes_the_evidence_cannot_tell_apart_are_unsure_not_flagged():
    emb, truth, labels, wrong = _look_alikes_and_a_systematic_error()
    ev = review.label_evidence(emb, labels, 4)
    doubt = np.flatnonzero((truth >= 2) & (ev.clean.argmax(1) != labels))
    assert len(doubt) >= 5  # pictures of 2 that look more like 3, and the reverse...
    assert (ev.score[doubt] <= review.FLAG_WRONG).all()  # ... are never flagged
    assert (ev.apart[doubt] < review.TELL_APART).all()


def test_an_item_never_votes_for_itself():
    emb, y = _clusters(n_per=5, classes=2)
    lone = np.vstack([emb, emb[0] + 1e-3])  # an exact twin of item 0 with another label
    labels = np.append(y, 1)
    probs = review.knn_class_probs(lone, labels, 2, k=1)
    assert probs[-1].argmax() == 0 and probs[0].argmax() == 1  # each is judged by the other only


def test_outliers_are_far_from_every_neighbour():
    emb, _ = _clusters()
    emb = emb + 10  # a network's features come after a ReLU: away from the origin
    far = np.vstack([emb, np.full((1, emb.shape[1]), 0.0) + np.eye(1, emb.shape[1], 7) * 50])
    z = review.outlier_scores(far)
    assert z.argmax() == len(far) - 1 and z[-1] > review.OUTLIER_Z
    assert (np.sort(z)[-2] < review.OUTLIER_Z)


# --- a project with problems of every kind ------------------------------------------------------
def _messy_source(root: Path) -> tuple[Path, dict[str, str]]:
    """Colour pictures with two reds filed as blue, a near copy across classes, and poor pictures.

    Returns the folder and {file name: what is wrong with it}.
    """
    src = imagegen.class_folder(root, per_class=16)
    problems = {}
    for i in range(2):
        imagegen.noisy(imagegen.COLOURS["red"], seed=900 + i).save(src / "blue" / f"wrong{i}.png")
        problems[f"wrong{i}.png"] = "label"
    Image.open(src / "red" / "3.png").save(src / "blue" / "copy of 3.jpg", quality=70)  # recompressed
    problems["copy of 3.jpg"] = "duplicate"
    Image.new("RGB", (64, 64), (120, 120, 120)).save(src / "red" / "blank.png")
    imagegen.noisy((6, 6, 6), seed=5).save(src / "red" / "dark.png")
    imagegen.noisy(imagegen.COLOURS["red"], size=(40, 48), seed=7).save(src / "red" / "tiny.png")
    problems.update({"blank.png": "quality", "dark.png": "quality", "tiny.png": "quality"})
    return src, problems


@pytest.fixture(scope="module")
def messy_template(tmp_path_factory):
    """The messy project, imported (items added one by one so that "first added" is fixed), untrained."""
    base = tmp_path_factory.mktemp("messy")
    src, problems = _messy_source(base / "src")
    proj = Project.open(base / "proj", create=True)
    for label in ("red", "blue"):
        for f in sorted((src / label).iterdir(), key=lambda p: (p.name.startswith(("copy", "wrong")), p.name)):
            import_files(proj, [f], label=label, workers=1)
    return base / "proj", problems


@pytest.fixture
def messy(messy_template, tmp_path):
    import shutil

    dest = tmp_path / "messy"
    shutil.copytree(messy_template[0], dest)
    proj = Project.open(dest)
    names = {it.id: Path(it.source).name for it in proj.items()}
    return proj, names, messy_template[1]


@pytest.fixture(scope="module")
def messy_trained_template(messy_template, tmp_path_factory):
    import shutil

    dest = tmp_path_factory.mktemp("messy_trained") / "proj"
    shutil.copytree(messy_template[0], dest)
    rep = train(Project.open(dest), TrainConfig(size=64, epochs=2, pretrained=False))
    assert rep.status == "finished", rep
    return dest


@pytest.fixture
def messy_trained(messy_trained_template, messy_template, tmp_path):
    import shutil

    dest = tmp_path / "messy_trained"
    shutil.copytree(messy_trained_template, dest)
    proj = Project.open(dest)
    return proj, {it.id: Path(it.source).name for it in proj.items()}, messy_template[1]


def test_without_a_model_duplicates_and_poor_pictures_are_found(messy):
    project, names, problems = messy
    rows = review.rank(project)
    found = {names[r.item]: r for r in rows}
    assert {n for n, r in found.items() if r.reason == "quality"} == {"blank.png", "dark.png", "tiny.png"}
    assert "single flat colour" in found["blank.png"].detail and "very dark" in found["dark.png"].detail.lower()
    assert "40×48" in found["tiny.png"].detail
    dup = found["copy of 3.jpg"]
    original = project.item(dup.duplicate_of)
    assert dup.reason == "duplicate" and names[original.id] == "3.png" and original.label == "red"
    assert dup.duplicate_of_source == original.source and "in class 'red'" in dup.detail
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    assert dup.score > found["tiny.png"].score  # a picture in two classes before a small one
    with pytest.raises(RunNotFound, match="train"):
        review.rank(project, kind="label")


def test_wrong_labels_are_found_in_training_and_validation_items(messy_trained):
    project, names, problems = messy_trained
    rows = review.rank(project, kind="label")
    assert len(rows) == len(project.items()) and {r.reason for r in rows} == {"label"}
    assert {r.valid for r in rows} == {True, False}  # every item is ranked, not only the validation split
    top = {names[r.item] for r in rows[:4]}
    assert {"wrong0.png", "wrong1.png"} <= top
    for r in rows:
        if names[r.item].startswith("wrong"):
            assert r.predicted == "red" and r.label == "blue" and "Looks like 'red'" in r.detail


def test_a_relabel_is_judged_against_the_new_label_at_once(messy_trained):
    project, names, _ = messy_trained
    wrong = next(r for r in review.rank(project, kind="label") if names[r.item] == "wrong0.png")
    project.relabel([wrong.item], "red")
    after = {r.item: r for r in review.rank(project, kind="label")}[wrong.item]
    assert after.label == "red" and after.score < 0.5 < wrong.score


def test_all_kinds_in_one_queue_each_item_once_with_its_reason(messy_trained):
    project, names, problems = messy_trained
    rows = review.rank(project, top=8)
    assert len({r.item for r in rows}) == len(rows)
    reasons = {names[r.item]: r.reason for r in rows}
    assert {"wrong0.png", "wrong1.png", "blank.png"} <= set(reasons)
    d = rows[0].to_dict()
    assert {"item", "path", "source", "label", "predicted", "confidence", "score", "reason"} <= set(d)
    assert Path(d["path"]).is_file()
    dups = review.rank(project, kind="duplicates")
    assert [names[r.item] for r in dups] == ["copy of 3.jpg"]
    assert all("duplicate_of" not in r.to_dict() for r in review.rank(project, kind="label"))


def test_outliers_are_pictures_unlike_the_rest(messy_trained, tmp_path):
    project, names, _ = messy_trained
    odd = tmp_path / "stripes.png"
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, ::8] = 255
    Image.fromarray(arr).save(odd)
    added = import_files(project, [odd], label="red").items[0]  # after the run: embedded on the spot
    rows = review.rank(project, kind="outliers")
    outliers = [r for r in rows if r.reason == "outlier"]
    assert added in [r.item for r in outliers[:2]], [(names.get(r.item), r.score) for r in rows]
    assert all("unlike the other pictures" in r.detail.lower() for r in outliers)


def test_keep_hides_an_item_from_every_reason_and_survives_a_restart(messy_trained):
    project, names, _ = messy_trained
    blank = next(it.id for it in project.items() if names[it.id] == "blank.png")
    project.keep([blank])
    reopened = Project.open(project.root)
    assert blank not in {r.item for r in review.rank(reopened)}
    assert blank in {r.item for r in review.rank(reopened, include_kept=True)}
    reopened.undo()
    assert blank in {r.item for r in review.rank(Project.open(project.root))}


def test_confusion_cells_list_the_items_behind_them(messy_trained):
    project, names, _ = messy_trained
    q = review.queue(project)
    assert q.labels == ["blue", "red"]
    assert sum(map(sum, q.matrix)) == len(project.items())
    behind = q.cells[("blue", "red")]
    assert {"wrong0.png", "wrong1.png"} <= {names[i] for i in behind}
    assert q.matrix[0][1] == len(behind)
    cell = review.queue(project, cell=("blue", "red"))
    assert [r.item for r in cell.rows] == behind
    assert "probably in the wrong class" in q.summary()


def test_quick_runs_rank_labels_with_out_of_fold_heads(project, tmp_path, fake_pretrained):
    src, _ = _messy_source(tmp_path / "src")
    import_files(project, [src])
    rep = train(project, TrainConfig(size=64, pretrained=True, quick=True))
    assert rep.status == "finished", rep
    scores = runs.read_json(project, rep.run, "scores.json")
    assert scores["out_of_fold"] and all("review" in s and "suspect" in s for s in scores["items"])
    assert (runs.run_dir(project, rep.run) / "embeddings.npy").is_file()
    names = {it.id: Path(it.source).name for it in project.items()}
    rows = review.rank(project, kind="label")
    assert len(rows) == len(project.items())
    assert {"wrong0.png", "wrong1.png"} <= {names[r.item] for r in rows[:6]}


def test_a_full_run_finds_a_systematic_error(project, tmp_path):
    """A quarter of the reds filed as green: found and flagged, every other picture left alone."""
    src = imagegen.class_folder(tmp_path / "src", per_class=20, classes=("red", "blue", "green"))
    for i in range(5):
        (src / "red" / f"{i}.png").rename(src / "green" / f"red{i}.png")
    import_files(project, [src])
    rep = train(project, TrainConfig(size=64, epochs=1, pretrained=False))
    assert rep.status == "finished", rep
    names = {it.id: Path(it.source).name for it in project.items()}
    rows = review.rank(project, kind="label")
    assert len(rows) == len(project.items()) == 60
    assert {names[r.item] for r in rows[:5]} == {f"red{i}.png" for i in range(5)}
    assert {names[r.item] for r in rows if r.flagged} == {f"red{i}.png" for i in range(5)}
    assert all(r.predicted == "red" and "not 'green'" in r.detail for r in rows[:5])
    assert review.queue(project).summary() == "5 probably in the wrong class"


def test_classes_the_model_cannot_tell_apart_say_unsure(project, tmp_path, fake_pretrained):
    """'navy' pictures are made like 'blue' ones: the app says it is unsure, and flags only real errors."""
    src = imagegen.class_folder(tmp_path / "src", per_class=16, classes=("red", "blue", "green"))
    (src / "navy").mkdir()
    for i in range(16):
        imagegen.noisy(imagegen.COLOURS["blue"], seed=5000 + i).save(src / "navy" / f"n{i}.png")
    for i in range(2):
        imagegen.noisy(imagegen.COLOURS["red"], seed=900 + i).save(src / "green" / f"wrong{i}.png")
    import_files(project, [src])
    assert train(project, TrainConfig(size=64, pretrained=True, quick=True)).status == "finished"
    names = {it.id: Path(it.source).name for it in project.items()}
    rows = review.rank(project, kind="label")
    assert {names[r.item] for r in rows if r.flagged} == {"wrong0.png", "wrong1.png"}
    assert {names[r.item] for r in rows[:2]} == {"wrong0.png", "wrong1.png"}
    unsure = [r for r in rows if r.predicted != r.label and not r.flagged]
    assert unsure and all({r.label, r.predicted} == {"blue", "navy"} for r in unsure)
    assert all(r.detail.startswith("Unsure") and "cannot say which is right" in r.detail for r in unsure)
    q = review.queue(project)
    assert q.summary() == "2 probably in the wrong class" and q.counts["label"] == 2


def _cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_app", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_review_kinds_and_keep(messy_trained):
    project, names, _ = messy_trained
    out = _cli("review", str(project.root), "--kind", "duplicates", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [names[r["item"]] for r in rows] == ["copy of 3.jpg"]
    assert rows[0]["reason"] == "duplicate" and rows[0]["duplicate_of_source"].endswith("3.png")

    out = _cli("review", str(project.root), "--kind", "label", "--top", "3", "--json")
    rows = json.loads(out.stdout)
    assert len(rows) == 3 and all(r["reason"] == "label" for r in rows)
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]

    # Every item is ranked for its label, once: also the duplicate and the poor pictures.
    out = _cli("review", str(project.root), "--kind", "label", "--json")
    rows = json.loads(out.stdout)
    assert sorted(r["item"] for r in rows) == sorted(it.id for it in project.items())
    assert {"copy of 3.jpg", "blank.png", "wrong0.png"} <= {names[r["item"]] for r in rows}
    flagged = {names[r["item"]] for r in rows if r["flagged"]}
    assert {"wrong0.png", "wrong1.png", "copy of 3.jpg"} <= flagged  # the copy is a red filed as blue
    assert flagged <= {"wrong0.png", "wrong1.png", "copy of 3.jpg", "blank.png", "dark.png", "tiny.png"}

    out = _cli("review", str(project.root), "--kind", "outliers", "--json")
    assert {"blank.png", "dark.png", "tiny.png"} <= {names[r["item"]] for r in json.loads(out.stdout)}

    keep = json.loads(out.stdout)[0]["item"]
    assert _cli("keep", str(project.root), keep, "--json").returncode == 0
    out = _cli("review", str(project.root), "--json")
    assert keep not in {r["item"] for r in json.loads(out.stdout)}

    text = _cli("review", str(project.root), "--kind", "duplicates")
    assert "Group 1: 2 pictures" in text.stdout and "copy of 3.jpg" in text.stdout and not text.stderr


# --- duplicates: groups, keep one, and the ranking that still holds ------------------------------
def test_a_duplicate_still_gets_its_wrong_class_score_and_counts(messy_trained):
    project, names, _ = messy_trained
    # "copy of 3.jpg" is a red picture filed as blue: a copy of red/3.png AND in the wrong class.
    copy = next(i for i, n in names.items() if n == "copy of 3.jpg")
    label_rows = {r.item: r for r in review.rank(project, kind="label")}
    assert label_rows[copy].predicted == "red" and label_rows[copy].label == "blue"
    assert copy in [r.item for r in review.rank(project, kind="label")[:4]]
    q = review.queue(project)
    assert q.counts["duplicate"] == 1 and q.counts["label"] >= 3  # wrong0, wrong1 and the copy
    [row] = [r for r in q.rows if r.item == copy]
    assert {row.reason, *row.also} == {"label", "duplicate"}
    # Filtered by reason, each list has it.
    assert copy in {r.item for r in review.queue(project, reason="label").rows}
    assert copy in {r.item for r in review.queue(project, reason="duplicate").rows}


@pytest.fixture
def copies_project(project, tmp_path):
    """A beach scene with a cropped copy, a captioned copy and a mirrored one, among other scenes."""
    from PIL import ImageDraw, ImageOps

    src = tmp_path / "src"
    (src / "beach").mkdir(parents=True)
    (src / "other").mkdir()
    scene = imagegen.scene(11)
    w, h = scene.size
    files = [("beach/beach.jpg", scene, 92), ("beach/beach cropped.jpg", scene.crop((20, 10, w - 8, h - 14)), 70)]
    captioned = scene.copy()
    ImageDraw.Draw(captioned).text((w // 2, h - 18), "© pics.com", fill=(255, 255, 255), anchor="mm", font_size=16)
    files += [("other/beach captioned.jpg", captioned, 80), ("beach/beach mirrored.jpg", ImageOps.mirror(scene), 85)]
    files += [(f"other/scene {i}.jpg", imagegen.scene(200 + i), 90) for i in range(6)]
    for name, im, q in files:
        im.save(src / name, quality=q)
        import_files(project, [src / name], label=name.split("/")[0])  # one by one: the beach comes first
    return project, {it.id: Path(it.source).name for it in project.items()}


def test_copies_form_a_group_led_by_the_first_picture(copies_project):
    project, names = copies_project
    [g] = review.duplicate_groups(project)
    assert [names[it.id] for it in g.items] == ["beach.jpg", "beach cropped.jpg", "beach captioned.jpg"]
    kinds = {names[r.item]: r.match for r in g.rows}
    assert kinds == {"beach cropped.jpg": "same", "beach captioned.jpg": "overlay"}
    by = {names[r.item]: r for r in g.rows}
    assert by["beach captioned.jpg"].detail.startswith("The same picture as “beach.jpg” in class 'beach'")
    assert all(r.duplicate_of == g.first.id and r.group == g.first.id for r in g.rows)
    # Loose: the mirrored copy joins, reported as such; it is shown but not counted as a problem.
    [loose] = review.duplicate_groups(project, loose=True)
    assert names[loose.others[-1].id] == "beach mirrored.jpg" and loose.rows[-1].match == "mirrored"
    assert review.queue(project).counts["duplicate"] == 2
    assert review.queue(project, loose=True).counts["duplicate"] == 2
    assert "mirrored" in {r.match for r in review.rank(project, kind="duplicates", loose=True)}


def test_keep_one_trashes_the_others_in_one_undoable_step(copies_project):
    project, names = copies_project
    [g] = review.duplicate_groups(project)
    keep = next(it.id for it in g.items if names[it.id] == "beach cropped.jpg")
    before = {it.id: project.path_of(it).read_bytes() for it in g.items}
    a = review.keep_one(project, [it.id for it in g.items], keep)
    assert a.summary == "kept “beach cropped.jpg” and moved 2 copies of it to the trash"
    assert {p["item"] for p in a.items} == {it.id for it in g.items} - {keep}
    assert project.item(keep).status == "active" and review.duplicate_groups(project) == []
    project.undo()
    assert all(project.path_of(project.item(i)).read_bytes() == b for i, b in before.items())
    with pytest.raises(TLError, match="Choose the picture to keep"):
        review.keep_one(project, [it.id for it in g.items], "nope")


def test_cli_review_shows_duplicate_groups(copies_project):
    project, names = copies_project
    out = _cli("review", str(project.root), "--kind", "duplicates")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Group 1: 3 pictures, the first added kept:") and "beach.jpg" in lines[0]
    assert len(lines) == 3 and all("beach" in ln for ln in lines[1:])
    rows = json.loads(_cli("review", str(project.root), "--kind", "duplicates", "--json").stdout)
    assert {r["match"] for r in rows} == {"same", "overlay"} and len({r["group"] for r in rows}) == 1
    assert all(r["name"] == names[r["item"]] for r in rows)
    rows = json.loads(_cli("review", str(project.root), "--kind", "duplicates", "--loose", "--json").stdout)
    assert "mirrored" in {r["match"] for r in rows}
