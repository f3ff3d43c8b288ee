"""The dataset and the whole project as zip files, and a project zip brought back as a new project.

``export_dataset`` writes the pictures in the layout Hugging Face ``datasets``
(``load_dataset("imagefolder", ...)``), torchvision's ``ImageFolder`` and Keras read:
``<class>/<item>.jpg`` with ``metadata.csv`` beside the class folders (one row per
picture: ``file_name``, ``label`` and where it came from) and a dataset card
``README.md``. With a metadata file, ``imagefolder`` takes the labels from its
``label`` column, as class names (it infers labels from folder names only without
one); ``class_encode_column("label")`` turns them into class ids.

``export_project`` writes everything a person made: the database (a consistent
snapshot), the pictures, the trash (so Undo still works), the runs and the
network bodies quick runs need. ``cache/`` is left out: it is rebuilt.

``import_project`` treats a project zip as untrusted. Only known paths are read
(never extracted blindly; ``..``, absolute paths and links cannot land anywhere),
sizes are capped before anything is read, the database is read-only and only its
known tables and columns are copied, row by row, after checks (class names, item
ids, file paths rebuilt from them, picture bytes against their recorded hash).
Models: the app loads only safetensors files whose hash it recorded, and never a
pickle. A project zip's record was written by whoever made the zip, so a model
comes in only when its bytes match the zip's record, its description names an
architecture this app builds, its network body (quick runs) matches its hash, and
the file parses as safetensors; anything else in a run folder that is not JSON,
JSON lines or a numpy array (read with pickles refused) is dropped, and so are
weights files you gave for training (``models/weights/``: a ``.pth`` may hold a
pickle). A run whose model does not pass keeps its metrics and history and is
marked as having no model: train again. Safetensors cannot run code, so the worst
a crafted model can do is give wrong answers, like any model one downloads.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import struct
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional

from .. import config
from ..errors import InputError, Stopped, TLError
from ..jobs import Progress, StopToken
from ..project import CLASS_KINDS, Item, Project, source_name, validate_label

#: The file naming a project zip's format, first in the archive.
MANIFEST = "tl_project.json"
FORMAT = "tl_app-project"
FORMAT_VERSION = 1
#: Largest total a project zip may unpack to: pictures are at most 1024 px JPEGs, models tens of MB.
MAX_PROJECT_ZIP_BYTES = 4 * 1000 ** 3
#: Most files a project zip may hold (a flood of tiny members costs time, not bytes).
MAX_PROJECT_ZIP_FILES = 200_000
#: Largest side of a stored picture accepted from a project zip (the app stores at most 1024 px).
_MAX_PICTURE_SIDE = 4 * config.MAX_STORED_SIDE
#: Files of a run folder that are imported, by suffix; the model files are checked apart.
_RUN_SUFFIXES = (".json", ".jsonl", ".npy", ".png")
_ACTION_KINDS = {"delete", "relabel", "keep", *CLASS_KINDS}
_ITEM = r"[0-9a-f]{8,64}"
_RUN = r"[0-9]{8}-[0-9]{6}-[0-9a-f]{4}"
_SHA = re.compile(r"^[0-9a-f]{64}$")
_MEMBERS = {
    "image": re.compile(rf"^images/(?P<label>[^/]+)/(?P<item>{_ITEM})\.jpg$"),
    "trash": re.compile(rf"^trash/(?P<action>[0-9]{{1,12}})/(?P<item>{_ITEM})\.jpg$"),
    "run": re.compile(rf"^runs/(?P<run>{_RUN})/(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,80}})$"),
    "body": re.compile(r"^models/bodies/(?P<sha>[0-9a-f]{64})\.safetensors$"),
}

ProgressFn = Callable[[Progress], None]


@dataclass
class ExportReport:
    """What an export wrote: the zip, how many pictures of which classes, its size and time."""

    out: Path
    format: str
    pictures: int
    classes: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d

    def summary(self) -> str:
        what = f"{self.pictures} picture{'s' if self.pictures != 1 else ''} in {len(self.classes)} classes"
        if self.format == "project":
            what += f", {self.runs} run{'s' if self.runs != 1 else ''}"
        size = f"{self.bytes / 1e6:.1f} MB" if self.bytes >= 1e6 else f"{max(1, round(self.bytes / 1e3))} KB"
        return f"Wrote {self.out.name} ({what}, {size}) in {self.seconds:.1f} s."


@dataclass
class RestoreReport:
    """What :func:`restore_project` brought back, and what it left out and why."""

    project: Project
    pictures: int = 0
    deleted: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    models: int = 0
    history: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "project"}
        d["project"] = str(self.project.root)
        return d

    def summary(self) -> str:
        runs = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.runs:
            runs += f" ({self.models} with {'its model' if self.models == 1 else 'their models'})"
        trash = f", {self.deleted} in the trash" if self.deleted else ""
        return (f"Restored {self.pictures} picture{'s' if self.pictures != 1 else ''} in {len(self.classes)} "
                f"classes{trash}, {runs}, {self.history} undoable step{'s' if self.history != 1 else ''}.")


# --- small helpers -------------------------------------------------------------------------------------
def _tick(progress: Optional[ProgressFn], done: int, total: int, message: str) -> None:
    if progress is not None:
        progress(Progress(done, total, message))


def _check_stop(stop: Optional[StopToken], what: str) -> None:
    if stop is not None and stop.is_set():
        raise Stopped(f"{what} was stopped; nothing was written.")


def _iso(t: float | None) -> str:
    if not t:
        return ""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _partial(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.part")


def _out_path(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the name of the zip file to write.")
    if out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _project_name(project: Project) -> str:
    return project.root.name or "project"


# --- the dataset -----------------------------------------------------------------------------------------
#: metadata.csv's columns: file_name and label are what ``imagefolder`` reads; the rest is provenance.
DATASET_COLUMNS = ("file_name", "label", "source_url", "source_file", "page_url", "title", "license", "query",
                   "added")


def dataset_rows(project: Project) -> list[dict]:
    """One row per picture in the dataset, as metadata.csv holds it (never a path of this computer).

    A downloaded picture has its web address, the page it was on, its title, licence
    (when the search engine gave one) and the search words; a picture of the owner's
    own files has the file's name only ("cat1.jpg", "1.png in pets.zip").
    """
    order = {name: i for i, name in enumerate(project.labels())}
    rows = []
    for it in sorted(project.items(), key=lambda it: (order.get(it.label, len(order)), it.added, it.id)):
        web = it.source.startswith(("http://", "https://"))
        meta = it.meta if isinstance(it.meta, dict) else {}
        rows.append({"file_name": f"{it.label}/{it.id}{config.STORED_EXT}", "label": it.label,
                     "source_url": it.source if web else "",
                     "source_file": "" if web else source_name(it.source),
                     "page_url": str(meta.get("page_url") or ""), "title": str(meta.get("title") or ""),
                     "license": str(meta.get("license") or ""), "query": str(meta.get("query") or ""),
                     "added": _iso(it.added), "_item": it})
    return rows


def dataset_card(project: Project, rows: list[dict]) -> str:
    """The dataset's README.md: front matter with the class names, then what it holds and where it came from."""
    labels = [x for x in project.labels() if any(r["label"] == x for r in rows)]
    counts = {x: sum(1 for r in rows if r["label"] == x) for x in labels}
    n = len(rows)
    size = ("n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M")
    # No dataset_info in the front matter: imagefolder takes its columns from metadata.csv, labels as text.
    front = ["---", "license: other", "task_categories:", "- image-classification", "size_categories:", f"- {size}",
             "tags:", "- tl_app", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             "    path:", "    - \"*/*.jpg\"", "    - metadata.csv", "---", ""]
    web = [r for r in rows if r["source_url"]]
    licences: dict[str, int] = {}
    for r in web:
        licences[r["license"] or "not given by the search engine"] = licences.get(
            r["license"] or "not given by the search engine", 0) + 1
    body = [f"# {_project_name(project)}", "",
            f"An image classification dataset made with tl_app: {n} pictures in {len(labels)} classes.", "",
            "| class | pictures |", "| --- | --- |", *[f"| {x} | {c} |" for x, c in counts.items()], "",
            "## Where the pictures came from", "",
            f"- {len(web)} were found by web searches and downloaded (their web address, page, title, licence and "
            "the search words are in `metadata.csv`);",
            f"- {n - len(web)} came from the owner's own files (`source_file` names the file).", ""]
    if web:
        body += ["Licences of the downloaded pictures, as the search engine reported them:", "",
                 *[f"- {k}: {v}" for k, v in sorted(licences.items(), key=lambda kv: -kv[1])], "",
                 "Each picture belongs to its author; check its licence before you publish or reuse it.", ""]
    body += ["## Layout and loading", "",
             "`<class>/<picture>.jpg` (RGB JPEG, at most 1024 px a side) and `metadata.csv` with one row per "
             "picture: `file_name`, `label`, " + ", ".join(f"`{c}`" for c in DATASET_COLUMNS[2:]) + ".", "",
             "```python", "from datasets import load_dataset", "",
             'ds = load_dataset("imagefolder", data_files="dataset.zip")  # or data_dir="the unzipped folder"',
             'ds = ds.class_encode_column("label")  # the class names as class ids (ClassLabel)',
             "```", "",
             "torchvision's `ImageFolder` and Keras' `image_dataset_from_directory` read the unzipped folder as is.",
             ""]
    return "\n".join(front + body)


def export_dataset(project: Project, out: str | Path, *, progress: Optional[ProgressFn] = None,
                   stop: Optional[StopToken] = None) -> ExportReport:
    """Write the labelled pictures as a zip that ``datasets.load_dataset("imagefolder", ...)`` reads with labels.

    The zip holds ``<class>/<item>.jpg`` (the stored bytes, unchanged), ``metadata.csv``
    (file, label, source URL or file name, page, title, licence, query, date added) and a
    dataset card. The zip appears only when complete; Stop leaves nothing behind.
    """
    t0 = time.time()
    out = _out_path(out)
    rows = dataset_rows(project)
    if not rows:
        raise InputError("There are no pictures to export yet: add some first.")
    tmp = _partial(out)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i, r in enumerate(rows):
                _check_stop(stop, "The dataset export")
                it: Item = r["_item"]
                # JPEG does not compress further: stored as is, fast.
                zf.write(project.path_of(it), r["file_name"], compress_type=zipfile.ZIP_STORED)
                if i % 50 == 0:
                    _tick(progress, i, len(rows) + 1, "pictures")
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=DATASET_COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            zf.writestr("metadata.csv", buf.getvalue())
            zf.writestr("README.md", dataset_card(project, rows))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    _tick(progress, len(rows) + 1, len(rows) + 1, "done")
    classes: dict[str, int] = {}
    for r in rows:
        classes[r["label"]] = classes.get(r["label"], 0) + 1
    return ExportReport(out, "dataset", len(rows), classes, bytes=out.stat().st_size, seconds=time.time() - t0)


# --- the project ------------------------------------------------------------------------------------------
def _db_snapshot(project: Project, dest: Path) -> None:
    """A consistent copy of the project database (SQLite's backup: safe while the app writes)."""
    src = sqlite3.connect(project.db_path, timeout=60)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("DROP TABLE IF EXISTS search_cache")  # a cache, and it holds what others searched
            dst.commit()
            dst.execute("VACUUM")
        finally:
            dst.close()
    finally:
        src.close()


def _project_files(project: Project, con: sqlite3.Connection) -> list[tuple[Path, str]]:
    """``(file, name in the zip)`` for what the database claims: pictures, trash, runs, network bodies."""
    files: list[tuple[Path, str]] = []
    root = project.root
    for r in con.execute("SELECT * FROM items WHERE status IN ('active', 'deleted') ORDER BY label, added, id"):
        it = Item._from_row(r)
        p = project.path_of(it)
        if p.is_file():
            files.append((p, p.relative_to(root).as_posix()))
    for r in con.execute("SELECT id FROM runs ORDER BY created"):
        rdir = project.runs_dir / r["id"]
        if rdir.is_dir():
            for f in sorted(rdir.iterdir()):
                if f.is_file() and not f.name.startswith(".") and f.name != "STOP":
                    files.append((f, f"runs/{r['id']}/{f.name}"))
    models = root / "models"
    if models.is_dir():
        for f in sorted(models.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                files.append((f, f.relative_to(root).as_posix()))
    return files


def export_project(project: Project, out: str | Path, *, progress: Optional[ProgressFn] = None,
                   stop: Optional[StopToken] = None) -> ExportReport:
    """Write the whole project as one zip: database, pictures, trash, runs and network bodies (not ``cache/``).

    :func:`import_project` restores it as a new project: classes, pictures byte for
    byte, where they came from, decisions, undo history and runs.
    """
    t0 = time.time()
    out = _out_path(out)
    if out.is_relative_to(project.root):
        raise InputError("Write the project zip outside the project folder.")
    tmp = _partial(out)
    snap = project.temp_path(".db")
    try:
        _db_snapshot(project, snap)
        con = sqlite3.connect(snap)
        con.row_factory = sqlite3.Row
        try:
            files = _project_files(project, con)
            counts = {r["name"]: 0 for r in con.execute("SELECT name FROM labels ORDER BY created, name")}
            for r in con.execute("SELECT label, COUNT(*) AS n FROM items WHERE status='active' GROUP BY label"):
                counts[r["label"]] = r["n"]
            n_runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            con.close()
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "name": _project_name(project),
                    "created": _iso(time.time()), "pictures": sum(counts.values()), "classes": counts,
                    "runs": n_runs}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
            zf.write(snap, "project.db")
            for i, (f, name) in enumerate(files):
                _check_stop(stop, "The project export")
                kind = zipfile.ZIP_STORED if f.suffix.lower() in (".jpg", ".safetensors", ".npy") else zipfile.ZIP_DEFLATED
                zf.write(f, name, compress_type=kind)
                if i % 50 == 0:
                    _tick(progress, i, len(files), "files")
        os.replace(tmp, out)
    finally:
        for p in (tmp, snap):
            if p.exists():
                p.unlink()
    _tick(progress, len(files), len(files), "done")
    return ExportReport(out, "project", sum(counts.values()), counts, runs=n_runs, bytes=out.stat().st_size,
                        seconds=time.time() - t0)


# --- importing a project ------------------------------------------------------------------------------------
class _Bad(Exception):
    """A row or file of the archive that fails a check (its message says which and why)."""


def _member_kind(name: str) -> tuple[str, re.Match | None]:
    if name in (MANIFEST, "project.db"):
        return name, None
    for kind, rx in _MEMBERS.items():
        m = rx.match(name)
        if m:
            return kind, m
    return "", None


def _unsafe(name: str) -> bool:
    n = name.replace("\\", "/")
    return (n.startswith("/") or ".." in n.split("/") or (len(n) > 1 and n[1] == ":") or "\x00" in n)


def _open_archive(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo], list[str]]:
    """Open a project zip and check it before anything is read: known names only, sizes within the limits."""
    name = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{name} is not a readable zip file ({type(e).__name__}).") from None
    try:
        infos = zf.infolist()
        if len(infos) > MAX_PROJECT_ZIP_FILES:
            raise InputError(f"{name} holds {len(infos)} files, more than the {MAX_PROJECT_ZIP_FILES} a project zip "
                             "may hold.")
        total = sum(i.file_size for i in infos)
        if total > MAX_PROJECT_ZIP_BYTES:
            raise InputError(f"{name} unpacks to {total / 1e9:.1f} GB, more than the "
                             f"{MAX_PROJECT_ZIP_BYTES / 1e9:.0f} GB a project zip may hold.")
        members: dict[str, zipfile.ZipInfo] = {}
        ignored: list[str] = []
        for i in infos:
            if i.is_dir():
                continue
            if _unsafe(i.filename):
                raise InputError(f"{name} is not safe to open: '{i.filename}' leads outside the archive.")
            if i.flag_bits & 0x1:
                raise InputError(f"{name} is password-protected; unzip it yourself first.")
            if _member_kind(i.filename)[0]:
                if i.filename in members:
                    raise InputError(f"{name} holds '{i.filename}' twice; it was not written by tl_app.")
                members[i.filename] = i
            else:
                ignored.append(i.filename)
        if MANIFEST not in members or "project.db" not in members:
            raise InputError(f"{name} is not a tl_app project zip (it has no {MANIFEST} and project.db). To add "
                             "pictures from a zip, use the import of pictures instead.")
        need = total + 64 * 1024 * 1024
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
        if need > free:
            raise InputError(f"{name} needs {need / 1e9:.1f} GB free on the disk and only {free / 1e9:.1f} GB are.")
        return zf, members, ignored
    except BaseException:
        zf.close()
        raise


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes; never more than its recorded size (zipfile stops there), with its CRC checked."""
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise _Bad(f"{info.filename} is damaged in the zip ({type(e).__name__})") from None
    if len(data) != info.file_size:
        raise _Bad(f"{info.filename} is damaged in the zip (its size is not the recorded one)")
    return data


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> str:
    """Write a member to ``dest`` (a regular file) and return its sha256; its size may not exceed the recorded one."""
    h = hashlib.sha256()
    n = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as src, open(dest, "wb") as f:
            while chunk := src.read(1 << 20):
                n += len(chunk)
                if n > info.file_size:
                    raise _Bad(f"{info.filename} is larger than the zip says")
                h.update(chunk)
                f.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise _Bad(f"{info.filename} is damaged in the zip ({type(e).__name__})") from None
    return h.hexdigest()


def _open_db(path: Path) -> sqlite3.Connection:
    """The archive's database, read-only, with its schema distrusted (no views or triggers run our way)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA trusted_schema=OFF")
    con.execute("PRAGMA query_only=ON")
    try:
        ok = con.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError:
        ok = "not a database"
    if ok != "ok":
        con.close()
        raise InputError("The project zip's database is damaged; it cannot be imported.")
    return con


def _rows(con: sqlite3.Connection, table: str, columns: Iterable[str]) -> list[dict]:
    """Rows of a real table (not a view), only the named columns; [] when the table is not there."""
    row = con.execute("SELECT type FROM sqlite_master WHERE name=?", (table,)).fetchone()
    if row is None:
        return []
    if row["type"] != "table":
        raise InputError(f"The project zip's database is not one tl_app wrote ('{table}' is not a table).")
    have = {r["name"] for r in con.execute(f'PRAGMA table_info("{table}")')}
    cols = [c for c in columns if c in have]
    return [dict(r) for r in con.execute(f'SELECT {", ".join(cols)} FROM "{table}"')]


def _text(v, what: str, limit: int = 10_000) -> str:
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > limit:
        raise _Bad(f"{what} is not text tl_app writes")
    return v


def _num(v, what: str, *, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{what} is not a number")
    return float(v)


def _json_obj(v, what: str, kind=dict):
    try:
        x = json.loads(v if isinstance(v, str) else "")
    except ValueError:
        raise _Bad(f"{what} is not valid JSON") from None
    if not isinstance(x, kind):
        raise _Bad(f"{what} does not hold what tl_app writes")
    return x


def _check_payload(kind: str, payload, items: dict[str, dict]) -> None:
    """An undo step's payload: only item ids of the archive and file names rebuilt from them."""
    file_rx = re.compile(rf"^(?P<label>[^/]+)/(?P<item>{_ITEM})\.jpg$")
    trash_rx = re.compile(rf"^trash/[0-9]{{1,12}}/(?P<item>{_ITEM})\.jpg$")

    def check_entry(p: dict) -> None:
        if not isinstance(p, dict) or p.get("item") not in items:
            raise _Bad("an undo step names a picture the archive does not hold")
        for key, value in p.items():
            if key in ("file", "from_file", "to_file"):
                m = file_rx.match(value) if isinstance(value, str) else None
                if not m or m["item"] != p["item"]:
                    raise _Bad("an undo step names a file tl_app would not write")
                validate_label(m["label"])
            elif key == "trash_file":
                m = trash_rx.match(value) if isinstance(value, str) else None
                if not m or m["item"] != p["item"]:
                    raise _Bad("an undo step names a trash file tl_app would not write")
            elif key in ("label", "from_label", "to_label"):
                validate_label(value)
            elif key not in ("item", "previous", "new_label"):
                raise _Bad(f"an undo step holds '{key}', which tl_app does not write")

    if kind in CLASS_KINDS:
        if not isinstance(payload, dict):
            raise _Bad("a class change in the history does not hold what tl_app writes")
        for p in payload.get("items", []):
            check_entry(p)
        for group in (payload.get("labels") or {}).values():
            for x in group:
                validate_label(x["name"])
                _num(x["created"], "a class's date")
        for s in payload.get("sources", []):
            validate_label(s["from"]), validate_label(s["to"])
            if not all(isinstance(u, str) for u in s["urls"]):
                raise _Bad("a class change names links that are not text")
    else:
        if not isinstance(payload, list):
            raise _Bad("a step of the history does not hold what tl_app writes")
        for p in payload:
            check_entry(p)


def _check_safetensors(path: Path) -> None:
    """A safetensors file's header: JSON, tensors laid end to end inside the file (no code, nothing else)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise _Bad(f"{path.name} is not a safetensors file")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 * 1024 * 1024):
            raise _Bad(f"{path.name} is not a safetensors file")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise _Bad(f"{path.name} is not a safetensors file") from None
    if not isinstance(header, dict):
        raise _Bad(f"{path.name} is not a safetensors file")
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offs = v.get("data_offsets") if isinstance(v, dict) else None
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= size - 8 - n):
            raise _Bad(f"{path.name} is not a safetensors file")


def _check_model(stage: Path, run_id: str, row: dict, bodies: dict[str, Path]) -> str:
    """Why a run's model may not come in ('' when it may): recorded hash, description, body, file format."""
    from ..errors import ModelFileInvalid
    from ..models import ModelSpec, get_arch

    rdir = stage / "runs" / run_id
    wfile, jfile = rdir / "model.safetensors", rdir / "model.json"
    if row.get("model_file") != "model.safetensors":
        return "its record names another model file than tl_app writes"
    if not wfile.is_file() or not jfile.is_file():
        return "its model files are not in the zip"
    if not _SHA.match(row.get("model_sha256") or "") or _file_sha(wfile) != row["model_sha256"]:
        return "its model file is not the one recorded with it"
    try:
        spec = ModelSpec.from_json(jfile.read_text(encoding="utf-8"))
        get_arch(spec.arch)
    except (TLError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        return "its model description is not one this version of tl_app reads"
    body = spec.extra.get("body_file")
    if body:
        m = _MEMBERS["body"].match(body) if isinstance(body, str) else None
        if not m or m["sha"] != spec.extra.get("body_sha256") or m["sha"] not in bodies:
            return "the network body it needs is not in the zip"
    try:
        _check_safetensors(wfile)
    except _Bad:
        return "its model file is not a safetensors file"
    return ""


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _check_picture(data: bytes, row: dict, where: str) -> None:
    from PIL import Image

    if _sha256(data) != row["sha256"]:
        raise _Bad(f"{where} is not the picture recorded for it")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            size = im.size
    except Exception:  # noqa: BLE001 - whatever Pillow says, it is not a picture the app stored
        raise _Bad(f"{where} is not a JPEG picture") from None
    if size != (row["width"], row["height"]) or max(size) > _MAX_PICTURE_SIDE:
        raise _Bad(f"{where} does not have the size recorded for it")


def project_is_empty(project: Project) -> bool:
    """Whether a project holds no pictures (not even in the trash), no runs and no history: safe to restore into."""
    with project._read() as con:
        return not any(con.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("items", "runs", "actions"))


def restore_project(zip_path: str | Path, dest: str | Path, *, progress: Optional[ProgressFn] = None,
                    stop: Optional[StopToken] = None) -> RestoreReport:
    """Bring a project zip back as a project at ``dest`` (a new folder, or a project with no pictures or runs).

    Classes, pictures (byte for byte, checked against their recorded hash), where each
    came from, keep decisions, the trash with its undo history, and runs (metrics,
    reports; their models only when they pass the checks in this module's notes) come
    back. What is left out is said in :attr:`RestoreReport.notes`. Nothing is written
    to ``dest`` unless the whole import succeeds.
    """
    t0 = time.time()
    zip_path = Path(zip_path).expanduser()
    if not zip_path.is_file():
        raise InputError(f"There is no file {zip_path}.")
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} is a file; give a folder for the new project.")
    if Project.exists(dest):
        existing = Project.open(dest)
        if not project_is_empty(existing):
            raise InputError(f"There is already a project with pictures or runs at {dest}; a project zip is restored "
                             "as a new project: give a new folder.")
    elif dest.exists() and any(dest.iterdir()):
        raise InputError(f"The folder {dest} is not empty; give a new folder for the project.")
    zf, members, ignored = _open_archive(zip_path)
    created_dest = not dest.exists()
    project = Project.open(dest, create=True)
    stage = project.tmp_dir / f"{os.getpid()}-import-{os.urandom(4).hex()}"
    stage.mkdir(parents=True)
    rep = RestoreReport(project)
    try:
        with zf:
            _restore(zf, members, stage, project, rep, progress, stop, ignored)
        if ignored:
            shown = ", ".join(ignored[:3]) + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else "")
            rep.notes.append(f"{len(ignored)} file{'s' if len(ignored) != 1 else ''} of the zip that tl_app does not "
                             f"read {'were' if len(ignored) != 1 else 'was'} left out ({shown}).")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created_dest:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    project.reconcile()
    rep.classes = project.label_counts()
    rep.pictures = sum(rep.classes.values())
    rep.deleted = len(project.items(status="deleted"))
    rep.seconds = time.time() - t0
    return rep


def import_project(zip_path: str | Path, dest: str | Path, *, progress: Optional[ProgressFn] = None,
                   stop: Optional[StopToken] = None) -> Project:
    """Restore a project zip as a new project at ``dest`` and return it (see :func:`restore_project`)."""
    return restore_project(zip_path, dest, progress=progress, stop=stop).project


def _restore(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], stage: Path, project: Project,
             rep: RestoreReport, progress: Optional[ProgressFn], stop: Optional[StopToken],
             ignored: list[str]) -> None:
    from ..project import validate_item_id

    notes = rep.notes
    try:
        manifest = json.loads(_read_member(zf, members[MANIFEST]).decode("utf-8"))
    except (_Bad, ValueError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError("The zip is not a tl_app project zip (its description is missing or damaged).")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > FORMAT_VERSION:
        raise InputError("The project zip was written by a newer version of tl_app; update tl_app to import it.")
    dbfile = stage / "archive.db"
    try:
        _copy_member(zf, members["project.db"], dbfile)
    except _Bad as e:
        raise InputError(f"The project zip cannot be imported: {e}.") from None
    con = _open_db(dbfile)
    try:
        tables = {t: _rows(con, t, cols) for t, cols in (
            ("labels", ("name", "created")),
            ("items", ("id", "label", "file", "sha256", "width", "height", "source", "added", "status", "trash_file",
                       "meta")),
            ("actions", ("id", "kind", "created", "state", "summary", "payload")),
            ("decisions", ("item", "decision", "action", "created")),
            ("sources", ("url", "label", "item", "outcome", "reason", "fetched")),
            ("runs", ("id", "created", "status", "arch", "mode", "config", "metrics", "seconds", "reason",
                      "model_file", "model_sha256", "finished")),
            ("meta", ("key", "value")),
            ("bodies", ("tag", "sha256")),
            ("placeholder_prints", ("sha256", "version", "width", "height", "thumb", "seen")))}
    except sqlite3.DatabaseError:
        raise InputError("The project zip's database is damaged; it cannot be imported.") from None
    finally:
        con.close()

    # Classes.
    labels: dict[str, float] = {}
    folded: set[str] = set()
    for r in tables["labels"]:
        try:
            name = validate_label(r["name"])
            created = _num(r["created"], "a class's date")
        except (TLError, _Bad) as e:
            raise InputError(f"The project zip cannot be imported: a class name is refused ({e}).") from None
        if name != r["name"] or name.casefold() in folded:
            raise InputError(f"The project zip cannot be imported: the class '{r['name']}' is not one tl_app writes.")
        folded.add(name.casefold())
        labels[name] = created

    # Pictures: each row's file name is rebuilt from its class and id; the bytes must hash to the record.
    total = len(tables["items"]) + len(tables["runs"])
    items: dict[str, dict] = {}
    moves: list[tuple[Path, Path]] = []
    dropped: list[str] = []
    shas: set[str] = set()
    for n, r in enumerate(tables["items"]):
        _check_stop(stop, "The project import")
        if n % 50 == 0:
            _tick(progress, n, total, "pictures")
        try:
            iid = validate_item_id(r["id"] or "")
            if iid != r["id"]:
                raise _Bad("an item id is not one tl_app writes")
            if r["status"] not in ("active", "deleted", "missing"):
                raise _Bad(f"item {iid} has an unknown state")
            label = validate_label(_text(r["label"], "a class name"))
            if label != r["label"] or r["file"] != f"{label}/{iid}{config.STORED_EXT}":
                raise _Bad(f"item {iid} names a file tl_app would not write")
            if r["status"] == "active" and label not in labels:
                raise _Bad(f"item {iid} is in a class the archive does not have")
            if not _SHA.match(r["sha256"] or "") or r["sha256"] in shas:
                raise _Bad(f"item {iid} has no valid hash")
            for k in ("width", "height"):
                if not isinstance(r[k], int) or not 0 < r[k] <= _MAX_PICTURE_SIDE:
                    raise _Bad(f"item {iid} has no valid size")
            row = {**r, "source": _text(r["source"], "a source", 4096), "added": _num(r["added"], "a date"),
                   "meta": json.dumps(_json_obj(r["meta"] or "{}", "a picture's details"), ensure_ascii=False)}
            if r["status"] == "missing":
                row["trash_file"] = None
            else:
                member = (f"images/{r['file']}" if r["status"] == "active" else r["trash_file"] or "")
                kind, m = _member_kind(member)
                if kind not in ("image", "trash") or m["item"] != iid or member not in members:
                    raise _Bad(f"the picture of item {iid} is not in the zip")
                if r["status"] == "deleted":
                    row["trash_file"] = member
                else:
                    row["trash_file"] = None
                data = _read_member(zf, members[member])
                _check_picture(data, r, member)
                staged = stage / member
                staged.parent.mkdir(parents=True, exist_ok=True)
                staged.write_bytes(data)
                moves.append((staged, project.root / member))
            shas.add(r["sha256"])
            items[iid] = row
        except (_Bad, TLError) as e:
            dropped.append(str(e))
    if dropped:
        notes.append(f"{len(dropped)} picture{'s' if len(dropped) != 1 else ''} could not be restored "
                     f"({dropped[0]}{'; ...' if len(dropped) > 1 else ''}).")

    # Keep decisions.
    decisions = []
    for r in tables["decisions"]:
        if r["item"] in items and r["decision"] in ("keep",) and isinstance(r["action"], int):
            decisions.append((r["item"], r["decision"], r["action"], _num(r["created"], "a date")))

    # The undo history comes back whole or not at all: a step that cannot be checked would undo wrongly.
    actions = []
    try:
        for r in tables["actions"]:
            if r["kind"] not in _ACTION_KINDS or r["state"] not in ("done", "undone", "void"):
                raise _Bad("a step of the history is not one tl_app writes")
            if not isinstance(r["id"], int) or r["id"] <= 0:
                raise _Bad("a step of the history has no valid number")
            payload = _json_obj(r["payload"], "a step of the history", (list, dict))
            if r["state"] != "void":
                _check_payload(r["kind"], payload, items)
            actions.append((r["id"], r["kind"], _num(r["created"], "a date"), r["state"],
                            _text(r["summary"], "a step's summary", 2000), json.dumps(payload, ensure_ascii=False)))
    except (_Bad, TLError, KeyError, TypeError, AttributeError) as e:
        actions = []
        notes.append(f"The undo history was not restored ({e}); the pictures in the trash stay there.")

    sources = []
    for r in tables["sources"]:
        try:
            sources.append((_text(r["url"], "a link", 4096), _text(r["label"], "a class", 200),
                            r["item"] if r["item"] in items else None, _text(r["outcome"], "an outcome", 100),
                            _text(r["reason"], "a reason", 2000), _num(r["fetched"], "a date")))
        except _Bad:
            continue

    # Network bodies of quick runs: named by their hash, which must be their bytes'.
    bodies: dict[str, Path] = {}
    for name, info in members.items():
        kind, m = _member_kind(name)
        if kind != "body":
            continue
        staged = stage / name
        try:
            if _copy_member(zf, info, staged) != m["sha"]:
                raise _Bad("changed")
            _check_safetensors(staged)
        except _Bad:
            staged.unlink(missing_ok=True)
            notes.append(f"The network body {name} was left out: it is not the file its name records.")
            continue
        bodies[m["sha"]] = staged
        moves.append((staged, project.root / name))
    body_rows = [(r["tag"], r["sha256"]) for r in tables["bodies"]
                 if isinstance(r["tag"], str) and r["sha256"] in bodies]

    # Runs: metrics, reports and history always; the model only when it passes every check.
    run_files: dict[str, list[tuple[str, zipfile.ZipInfo]]] = {}
    for name, info in members.items():
        kind, m = _member_kind(name)
        if kind == "run":
            run_files.setdefault(m["run"], []).append((m["name"], info))
    run_rows = []
    for n, r in enumerate(tables["runs"]):
        _check_stop(stop, "The project import")
        _tick(progress, len(tables["items"]) + n, total, "runs")
        try:
            rid = r["id"]
            if not isinstance(rid, str) or not re.match(rf"^{_RUN}$", rid):
                raise _Bad("a run has no valid name")
            row = {**r, "config": json.dumps(_json_obj(r["config"] or "{}", "a run's settings")),
                   "metrics": json.dumps(_json_obj(r["metrics"] or "{}", "a run's figures")),
                   "created": _num(r["created"], "a date"), "seconds": _num(r["seconds"], "a time", optional=True),
                   "finished": _num(r["finished"], "a date", optional=True),
                   "arch": _text(r["arch"], "a network", 100), "mode": _text(r["mode"], "a mode", 100),
                   "reason": _text(r["reason"], "a reason", 4000)}
            if r["status"] not in ("finished", "stopped", "failed", "running"):
                raise _Bad(f"run {rid} has an unknown state")
            if r["status"] == "running":  # no process of this computer runs it
                row.update(status="failed", reason="it was still running when the project was exported")
        except _Bad as e:
            notes.append(f"A run was left out ({e}).")
            continue
        for fname, info in run_files.get(rid, []):
            if fname in ("model.safetensors", "model.json") or fname.endswith(_RUN_SUFFIXES):
                try:
                    _copy_member(zf, info, stage / "runs" / rid / fname)
                except _Bad:
                    ignored.append(info.filename)
            else:  # a pickle, a script, anything else: never written into the project
                ignored.append(info.filename)
        rdir = stage / "runs" / rid
        if row.get("model_file") or row.get("model_sha256"):
            why = _check_model(stage, rid, row, bodies)
            if why:
                from ..runs import run_name

                for f in ("model.safetensors", "model.json"):
                    (rdir / f).unlink(missing_ok=True)
                row.update(model_file=None, model_sha256=None)
                notes.append(f"The model of run {run_name(rid, row['mode'], row['arch'])} was not imported: {why}. "
                             "Its figures are there; train again for a model.")
            else:
                rep.models += 1
        rdir.mkdir(parents=True, exist_ok=True)
        moves.append((rdir, project.runs_dir / rid))
        run_rows.append(row)
    with_model = {r["id"] for r in run_rows if r.get("model_file")}

    meta = {}
    for r in tables["meta"]:
        if r["key"] == "active_run" and r["value"] in with_model:
            meta["active_run"] = r["value"]
    for r in tables["meta"]:
        if r["key"] == "in_use" and "active_run" in meta:
            try:
                rec = _json_obj(r["value"], "the model in use")
                if rec.get("run") == meta["active_run"]:
                    meta["in_use"] = json.dumps(rec)
            except _Bad:
                pass
    placeholders = []
    for r in tables["placeholder_prints"]:
        if (_SHA.match(str(r["sha256"] or "")) and isinstance(r["version"], int) and isinstance(r["thumb"], bytes)
                and len(r["thumb"]) <= 1 << 16 and all(isinstance(r[k], (int, float)) for k in ("width", "height", "seen"))):
            placeholders.append((r["sha256"], r["version"], r["width"], r["height"], r["thumb"], r["seen"]))

    # Everything checked: one transaction writes the rows and moves the files into place.
    _check_stop(stop, "The project import")
    with project._write() as con:
        con.execute("DELETE FROM labels")  # an empty project's classes held no pictures
        con.executemany("INSERT INTO labels(name, created) VALUES(?, ?)", labels.items())
        con.executemany("INSERT INTO items(id, label, file, sha256, width, height, source, added, status, trash_file,"
                        " meta) VALUES(:id, :label, :file, :sha256, :width, :height, :source, :added, :status,"
                        " :trash_file, :meta)", list(items.values()))
        con.executemany("INSERT INTO actions(id, kind, created, state, summary, payload) VALUES(?,?,?,?,?,?)", actions)
        con.executemany("INSERT OR REPLACE INTO decisions(item, decision, action, created) VALUES(?,?,?,?)", decisions)
        con.executemany("INSERT OR REPLACE INTO sources(url, label, item, outcome, reason, fetched) VALUES(?,?,?,?,?,?)",
                        sources)
        con.executemany("INSERT INTO runs(id, created, status, arch, mode, config, metrics, seconds, reason, model_file,"
                        " model_sha256, finished) VALUES(:id, :created, :status, :arch, :mode, :config, :metrics,"
                        " :seconds, :reason, :model_file, :model_sha256, :finished)", run_rows)
        con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", meta.items())
        if body_rows:
            con.execute("CREATE TABLE IF NOT EXISTS bodies(tag TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")
            con.executemany("INSERT OR REPLACE INTO bodies(tag, sha256) VALUES(?, ?)", body_rows)
        if placeholders:
            con.execute("CREATE TABLE IF NOT EXISTS placeholder_prints(sha256 TEXT PRIMARY KEY, version INTEGER NOT "
                        "NULL, width REAL NOT NULL, height REAL NOT NULL, thumb BLOB NOT NULL, seen REAL NOT NULL)")
            con.executemany("INSERT OR REPLACE INTO placeholder_prints VALUES(?,?,?,?,?,?)", placeholders)
        for name in labels:
            (project.images_dir / name).mkdir(parents=True, exist_ok=True)
        project._move_all(moves)
    rep.runs = len(run_rows)
    rep.history = sum(1 for a in actions if a[3] != "void")
    rep.kept = len(decisions)
    _tick(progress, total, total, "done")
