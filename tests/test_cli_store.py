"""The store's command line verbs, run as a user runs them: ``python -m tl_app VERB PROJECT ...``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
import imagegen
from tl_app.images import sha256_file
from tl_app.project import Project

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "tl_app", *map(str, args)], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=120)
    if ok:
        assert cp.returncode == 0, cp.stderr
    assert "Traceback" not in cp.stderr, cp.stderr
    return cp


def one_json(cp: subprocess.CompletedProcess):
    """stdout holds exactly one JSON document (json.loads refuses anything else around it)."""
    assert cp.stdout.count("\n") == 1 and cp.stdout.endswith("\n"), cp.stdout
    return json.loads(cp.stdout)


def _make(base: Path):
    src = imagegen.class_folder(base / "src", per_class=4)
    (src / "red" / "page.jpg").write_bytes(b"<!DOCTYPE html><html>captcha</html>")
    (src / "blue" / "0 again.png").write_bytes((src / "blue" / "0.png").read_bytes())
    proj = base / "proj"
    cp = run("import", proj, src, "--json")
    return proj, src, cp


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory):
    """A project made by `import --json` from red/ and blue/ folders plus two bad files; read only."""
    return _make(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def cli_project(tmp_path):
    """The same, for a test that changes it."""
    return _make(tmp_path)


def test_import_json_prints_one_document_with_the_report(shared_project):
    proj, src, cp = shared_project
    rep = one_json(cp)
    assert set(rep) == {"imported", "duplicates", "rejected", "labels", "elsewhere", "stopped", "files", "read"}
    assert rep["elsewhere"] == {}  # no picture of this import was already in another class
    assert rep["stopped"] is False and rep["files"] == rep["read"] == 10  # every file found was read
    assert rep["imported"] == 8 and rep["duplicates"] == 1
    assert rep["labels"] == {"blue": 4, "red": 4}
    assert rep["rejected"] == [{"file": str(src / "red" / "page.jpg"), "reason": "a web page (HTML), not an image"}]
    assert "page.jpg" in cp.stderr  # the refusal is also told on stderr, for people


def test_import_without_json_prints_a_summary(tmp_path):
    src = imagegen.class_folder(tmp_path / "src", per_class=2)
    cp = run("import", tmp_path / "proj", src)
    assert cp.stdout.strip() == "4 imported. Images per class: blue: 2, red: 2"


def test_import_with_label_and_a_zip(tmp_path):
    f = tmp_path / "one.png"
    f.write_bytes(hostile.png(seed=1))
    z = hostile.make_zip(tmp_path / "more.zip", {"wrap/cat/a.png": hostile.png(seed=2),
                                                "wrap/dog/b.png": hostile.png(seed=3)})
    rep = one_json(run("import", tmp_path / "proj", f, "--label", "cat", "--json"))
    assert rep["labels"] == {"cat": 1}
    rep = one_json(run("import", tmp_path / "proj", z, "--json"))
    assert rep["labels"] == {"cat": 2, "dog": 1}


def test_list_json_rows_point_at_existing_files(shared_project):
    proj, src, _ = shared_project
    rows = one_json(run("list", proj, "--json"))
    assert len(rows) == 8
    for r in rows:
        assert set(r) == {"item", "path", "label", "source"}
        p = Path(r["path"])
        assert p.is_absolute() and p.exists() and p.parent.name == r["label"]
        assert Path(r["source"]).parent.name == r["label"] and Path(r["source"]).exists()
    only_red = one_json(run("list", proj, "--label", "red", "--json"))
    assert {r["label"] for r in only_red} == {"red"} and len(only_red) == 4


def test_delete_relabel_keep_undo_redo_from_the_command_line(cli_project):
    proj, _, _ = cli_project
    rows = {r["item"]: r for r in one_json(run("list", proj, "--json"))}
    red = [i for i, r in rows.items() if r["label"] == "red"]
    sha = {i: sha256_file(Path(rows[i]["path"])) for i in red}

    d = one_json(run("delete", proj, red[0], red[1], "--json"))
    assert d["kind"] == "delete" and sorted(d["items"]) == sorted(red[:2])
    assert not Path(rows[red[0]]["path"]).exists()
    assert len(one_json(run("list", proj, "--json"))) == 6

    r = one_json(run("relabel", proj, red[2], "--to", "blue", "--json"))
    assert r["kind"] == "relabel" and r["summary"] == "moved 1 image to 'blue'"
    moved = {x["item"]: x for x in one_json(run("list", proj, "--json"))}[red[2]]
    assert moved["label"] == "blue" and sha256_file(Path(moved["path"])) == sha[red[2]]

    k = one_json(run("keep", proj, red[3], "--json"))
    assert k["kind"] == "keep"
    assert Project.open(proj).kept() == {red[3]}

    assert one_json(run("undo", proj, "--json"))["kind"] == "keep"
    assert one_json(run("undo", proj, "--json"))["kind"] == "relabel"
    u = run("undo", proj)  # plain text for people
    assert u.stdout.strip() == "undone: deleted 2 images"
    after = {x["item"]: x for x in one_json(run("list", proj, "--json"))}
    assert {i: sha256_file(Path(after[i]["path"])) for i in red} == sha
    assert {i: after[i]["path"] for i in red} == {i: rows[i]["path"] for i in red}

    assert one_json(run("redo", proj, "--json"))["kind"] == "delete"
    assert len(one_json(run("list", proj, "--json"))) == 6


@pytest.mark.parametrize("args, words", [
    (("delete", "{proj}", "deadbeefdead"), "no item"),
    (("delete", "{proj}", "../../etc/passwd"), "not an item"),
    (("relabel", "{proj}", "deadbeefdead", "--to", "red"), "no item"),
    (("keep", "{proj}", "/etc/passwd"), "not an item"),
    (("undo", "{empty}"), "nothing to undo"),
    (("redo", "{empty}"), "nothing to redo"),
    (("list", "{missing}"), "no project"),
    (("delete", "{missing}", "deadbeefdead"), "no project"),
    (("import", "{proj}", "{src}", "--label", "../up"), "class name"),
])
def test_errors_exit_1_with_one_line_on_stderr_and_no_traceback(shared_project, tmp_path, args, words):
    proj, src, _ = shared_project
    empty = tmp_path / "empty"
    Project.open(empty, create=True)
    fill = {"proj": proj, "src": src, "empty": empty, "missing": tmp_path / "missing"}
    argv = [a.format(**{k: str(v) for k, v in fill.items()}) for a in args]
    before = sorted(str(p) for p in (proj / "images").rglob("*"))

    cp = run(*argv, ok=False)

    assert cp.returncode == 1
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0].lower(), cp.stderr
    assert cp.stdout == ""
    assert sorted(str(p) for p in (proj / "images").rglob("*")) == before
    assert not (tmp_path / "missing").exists()

    cpj = run(*argv, "--json", ok=False)  # with --json the error is also the one JSON document
    assert cpj.returncode == 1 and words in one_json(cpj)["error"].lower()


def test_undo_after_emptying_the_trash_is_an_error_not_a_crash(cli_project):
    proj, _, _ = cli_project
    first, second = [r["item"] for r in one_json(run("list", proj, "--json"))][:2]
    run("relabel", proj, first, "--to", "green")
    run("delete", proj, second)
    for f in (proj / "trash").rglob("*.jpg"):
        f.unlink()

    cp = run("undo", proj, ok=False)

    assert cp.returncode == 1
    assert len(cp.stderr.strip().splitlines()) == 1 and "removed outside the app" in cp.stderr
    assert run("undo", proj).stdout.strip() == "undone: moved 1 image to 'green'"
