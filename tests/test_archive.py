"""The dataset zip (read back with Hugging Face ``datasets``) and the project zip (exported, imported, compared).

A project zip is untrusted when it comes back: hostile archives are built by hand
(paths leading out, sizes, a changed model, a pickle, a changed picture) and must
be refused or left out with a reason, never extracted or loaded.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

import imagegen
from tl_app import runs
from tl_app.errors import InputError, Stopped
from tl_app.images import normalize
from tl_app.importer import import_files
from tl_app.jobs import StopToken
from tl_app.project import Project
from tl_app.share.archive import export_dataset, export_project, import_project, restore_project

WEB = "https://images.example.org/photos/tabby-cat.jpg"


def add_downloaded(project: Project, label: str, seed: int) -> str:
    """A picture as a web download records it: its address, page, title, licence and search words."""
    norm = normalize(imagegen.encode(imagegen.noisy((200, 40, 40), seed=seed), "PNG"))
    meta = {"page_url": "https://example.org/cats", "title": "A tabby, cat", "license": "cc-by",
            "query": "tabby cat", "engine": "duckduckgo", "url": WEB}
    return project.add_image(norm, label, source=WEB, meta=meta).item.id


def test_the_dataset_zip_loads_with_datasets_imagefolder_with_labels_and_provenance(project, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=4)])
    web_id = add_downloaded(project, "red", seed=99)
    gone = project.items(label="blue")[0]
    project.delete([gone.id])  # the trash is not part of the dataset

    rep = export_dataset(project, tmp_path / "out" / "pets")
    assert rep.out.name == "pets.zip" and rep.pictures == 8 and rep.classes == {"red": 5, "blue": 3}
    names = zipfile.ZipFile(rep.out).namelist()
    assert "metadata.csv" in names and "README.md" in names
    assert f"blue/{gone.id}.jpg" not in names

    ds = datasets.load_dataset("imagefolder", data_files=str(rep.out), cache_dir=str(tmp_path / "cache"))["train"]
    assert ds.num_rows == 8
    by_label: dict[str, list] = {}
    for row in ds:
        by_label.setdefault(row["label"], []).append(row)
    assert {k: len(v) for k, v in by_label.items()} == {"red": 5, "blue": 3}
    # Each picture is the stored one, with its label and where it came from.
    stored = {it.sha256: it for it in project.items()}
    for row in ds:
        buf = io.BytesIO()
        row["image"].save(buf, format="JPEG")  # decoded: compare by size and label, bytes below
        assert row["image"].size == (64, 64)
    web_rows = [r for r in ds if r["source_url"] == WEB]
    assert len(web_rows) == 1
    w = web_rows[0]
    assert (w["label"], w["page_url"], w["title"], w["license"], w["query"]) == (
        "red", "https://example.org/cats", "A tabby, cat", "cc-by", "tabby cat")
    assert w["added"].endswith("Z")
    own = [r for r in ds if r["source_url"] != WEB]
    assert {r["source_file"] for r in own} <= {f"{i}.png" for i in range(4)}  # file names, never a path
    with zipfile.ZipFile(rep.out) as zf:
        assert str(tmp_path) not in zf.read("metadata.csv").decode()
        for it in project.items():
            assert zf.read(f"{it.label}/{it.id}.jpg") == project.path_of(it).read_bytes()
        card = zf.read("README.md").decode()
    assert "image-classification" in card and "| red | 5 |" in card and "cc-by: 1" in card
    assert stored[project.item(web_id).sha256].label == "red"
    # As class ids, the way the card says.
    ids = datasets.load_dataset("imagefolder", data_files=str(rep.out),
                                cache_dir=str(tmp_path / "cache"))["train"].class_encode_column("label")
    assert ids.features["label"].names == ["blue", "red"]


def test_an_empty_project_has_no_dataset_to_export(project, tmp_path):
    with pytest.raises(InputError, match="no pictures"):
        export_dataset(project, tmp_path / "d.zip")
    assert not (tmp_path / "d.zip").exists()


def test_a_stopped_export_leaves_no_zip(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=3)])
    stop = StopToken()
    stop.set()
    with pytest.raises(Stopped):
        export_project(project, tmp_path / "p.zip", stop=stop)
    assert list(tmp_path.glob("*.zip")) == [] and list(tmp_path.glob(".*part")) == []


# --- the project round trip ---------------------------------------------------------------------------------
def snapshot(project: Project) -> dict:
    """Everything a person would check after picking a project up again."""
    items = {}
    for status in ("active", "deleted"):
        for it in project.items(status=status):
            items[it.id] = (it.label, it.status, it.source, it.meta, it.sha256, project.path_of(it).read_bytes())
    rs = runs.list_runs(project)
    active = runs.active_run(project)
    return {"labels": project.labels(), "counts": project.label_counts(), "items": items,
            "kept": project.kept(), "history": [(a.kind, a.state, a.summary) for a in project.history()],
            "runs": [(r.id, r.status, r.arch, r.mode, r.metrics, r.model_sha256, r.config) for r in rs],
            "active": active.id if active else None,
            "reports": {r.id: runs.read_json(project, r.id, "report.json") for r in rs}}


def test_a_project_zip_comes_back_as_a_new_project_byte_for_byte(trained_project, tmp_path):
    p = trained_project
    add_downloaded(p, "red", seed=7)
    items = p.items()
    p.delete([items[0].id, items[1].id])
    p.keep([items[2].id])
    p.relabel([items[3].id], "blue" if items[3].label == "red" else "red")
    p.rename_label("blue", "navy")
    p.undo()  # the rename is undone: redo must still work after the import
    before = snapshot(p)
    (p.cache_dir / "derived.bin").write_bytes(b"x" * 1000)

    rep = export_project(p, tmp_path / "backup.zip")
    names = zipfile.ZipFile(rep.out).namelist()
    assert names[0] == "tl_project.json" and "project.db" in names
    assert not any(n.startswith(("cache/", "tmp/")) for n in names)
    assert rep.runs == 1 and rep.pictures == sum(before["counts"].values())

    res = restore_project(rep.out, tmp_path / "again")
    q = res.project
    assert q.root == (tmp_path / "again").resolve() and res.notes == []
    after = snapshot(q)
    assert after == before
    assert res.models == 1 and res.runs == 1 and res.deleted == 2 and res.kept == 1
    # The model is loaded the app's way (hash checked) and answers as before.
    from tl_app.predict import predict_files

    pics = sorted(imagegen.class_folder(tmp_path / "new", per_class=2, seed=3).rglob("*.png"))
    old = [x.probs for x in predict_files(p, pics)]
    new = [x.probs for x in predict_files(q, pics)]
    assert old == new
    # Undo and redo go on where they were: the redo of the rename, then the undo of the move and the delete.
    q.redo()
    assert "navy" in q.labels()
    q.undo()
    q.undo()
    q.undo()
    q.undo()
    assert q.item(items[0].id).status == "active"
    assert q.path_of(q.item(items[0].id)).read_bytes() == before["items"][items[0].id][5]
    # The original is untouched, and a second import into the same folder is refused.
    assert snapshot(p) == before
    with pytest.raises(InputError, match="already a project"):
        import_project(rep.out, tmp_path / "again")


def test_a_project_zip_restores_into_an_empty_project(trained_project, tmp_path):
    rep = export_project(trained_project, tmp_path / "b.zip")
    empty = Project.open(tmp_path / "fresh", create=True)
    empty.add_label("leftover")  # a class with no pictures is not something to keep
    q = import_project(rep.out, empty.root)
    assert q.label_counts() == trained_project.label_counts()


# --- hostile project zips --------------------------------------------------------------------------------------
def rewrite(src: Path, dest: Path, *, drop=(), add: dict | None = None, change: dict | None = None,
            db=None) -> Path:
    """A copy of a project zip with members dropped, added or changed, or its database edited by ``db(con)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if change and info.filename in change:
                data = change[info.filename](data)
            if db is not None and info.filename == "project.db":
                f = dest.with_suffix(".db")
                f.write_bytes(data)
                con = sqlite3.connect(f)
                db(con)
                con.commit()
                con.close()
                data = f.read_bytes()
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dest


@pytest.fixture
def backup(trained_project, tmp_path):
    return export_project(trained_project, tmp_path / "backup.zip").out


def test_a_zip_with_a_path_leading_out_is_refused_whole(backup, tmp_path):
    bad = rewrite(backup, tmp_path / "bad.zip", add={"../outside.txt": b"x", "images/red/../../../evil.jpg": b"x"})
    with pytest.raises(InputError, match="leads outside"):
        import_project(bad, tmp_path / "q")
    assert not (tmp_path / "q").exists() and not (tmp_path / "outside.txt").exists()


def test_a_zip_that_unpacks_too_large_is_refused_before_reading(backup, tmp_path, monkeypatch):
    import tl_app.share.archive as archive

    monkeypatch.setattr(archive, "MAX_PROJECT_ZIP_BYTES", 1000)
    with pytest.raises(InputError, match="unpacks to"):
        import_project(backup, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_a_zip_that_is_not_a_project_says_so(tmp_path):
    plain = tmp_path / "pictures.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("red/1.png", imagegen.encode(imagegen.noisy((200, 40, 40)), "PNG"))
    with pytest.raises(InputError, match="not a tl_app project zip"):
        import_project(plain, tmp_path / "q")
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(InputError, match="not a readable zip"):
        import_project(tmp_path / "junk.zip", tmp_path / "q")


def test_a_changed_model_or_a_pickle_never_becomes_loadable(trained_project, backup, tmp_path):
    run = runs.list_runs(trained_project)[0]
    name = f"runs/{run.id}/model.safetensors"

    def flip(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    evil = b"cos\nsystem\n(S'touch /tmp/pwned'\ntR."
    bad = rewrite(backup, tmp_path / "bad.zip", change={name: flip},
                  add={f"runs/{run.id}/model.pth": evil, f"runs/{run.id}/learner.pkl": evil,
                       "models/weights/start.pth": evil})
    res = restore_project(bad, tmp_path / "q")
    q = res.project
    r = runs.get_run(q, run.id)
    assert r.metrics == run.metrics and r.status == "finished"  # the figures come in
    assert not r.has_model and runs.active_run(q) is None  # the model does not
    assert res.models == 0
    assert any("model of run" in n and "not the one recorded" in n for n in res.notes)
    assert any("left out" in n and "model.pth" in n for n in res.notes)
    rdir = runs.run_dir(q, run.id)
    assert not (rdir / "model.safetensors").exists()
    assert not list(q.root.rglob("*.pth")) and not list(q.root.rglob("*.pkl"))
    assert (rdir / "report.json").is_file()


def test_a_record_changed_to_match_a_changed_model_still_needs_a_model_tl_app_reads(trained_project, backup, tmp_path):
    """The zip's record is the zip maker's: a matching hash lets in only a safetensors file of a known network."""
    run = runs.list_runs(trained_project)[0]
    junk = b"\x00" * 64
    import hashlib

    sha = hashlib.sha256(junk).hexdigest()
    bad = rewrite(backup, tmp_path / "bad.zip", change={f"runs/{run.id}/model.safetensors": lambda d: junk},
                  db=lambda con: con.execute("UPDATE runs SET model_sha256=?", (sha,)))
    res = restore_project(bad, tmp_path / "q")
    assert not runs.get_run(res.project, run.id).has_model
    assert any("not a safetensors file" in n for n in res.notes)


def test_changed_pictures_and_rows_are_left_out_with_a_reason(trained_project, backup, tmp_path):
    items = trained_project.items()
    a, b = items[0], items[1]

    def edit(con):
        con.execute("UPDATE items SET file=? WHERE id=?", (f"../../{b.id}.jpg", b.id))
        con.execute("CREATE TABLE IF NOT EXISTS extra(x)")

    bad = rewrite(backup, tmp_path / "bad.zip",
                  change={f"images/{a.file}": lambda d: imagegen.encode(imagegen.noisy((1, 2, 3), seed=5), "JPEG")},
                  db=edit)
    res = restore_project(bad, tmp_path / "q")
    q = res.project
    ids = {it.id for it in q.items()}
    assert a.id not in ids and b.id not in ids and len(ids) == len(items) - 2
    assert any("2 pictures could not be restored" in n for n in res.notes)
    for it in q.items():  # every picture that came in is the recorded one
        assert project_bytes_ok(q, it)


def project_bytes_ok(project: Project, it) -> bool:
    import hashlib

    return hashlib.sha256(project.path_of(it).read_bytes()).hexdigest() == it.sha256


def test_a_view_in_place_of_a_table_is_refused(backup, tmp_path):
    def edit(con):
        con.execute("ALTER TABLE items RENAME TO items_real")
        con.execute("CREATE VIEW items AS SELECT * FROM items_real")

    bad = rewrite(backup, tmp_path / "bad.zip", db=edit)
    with pytest.raises(InputError, match="not one tl_app wrote"):
        import_project(bad, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_the_cli_imports_a_project_zip_as_a_new_project(backup, trained_project, tmp_path, capsys):
    from tl_app.cli import main

    assert main(["import", str(backup), "--as", str(tmp_path / "cli"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["project"] == str((tmp_path / "cli").resolve()) and out["runs"] == 1 and out["models"] == 1
    assert Project.open(tmp_path / "cli").label_counts() == trained_project.label_counts()
    assert main(["import", str(backup), "--as", str(tmp_path / "cli"), "--json"]) == 1
    assert "already a project" in json.loads(capsys.readouterr().out)["error"]
