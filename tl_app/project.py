"""The dataset on disk: a folder per class, a trash, and an SQLite database.

Layout of a project folder::

    PROJECT/
      images/<label>/<item>.jpg   the dataset, readable as is by fastai, torchvision or Keras
      trash/<action>/<item>.jpg   deleted images; undo moves them back byte for byte
      runs/<run>/                 trained models and what each run recorded
      cache/                      features and other derived data (safe to delete)
      tmp/                        files being written (never inside images/)
      project.db                  items, labels, action log, runs

Consistency: a picture is written and synced to disk before the SQLite write
transaction that inserts its row commits. An import writes it straight into its
class folder under its final name when that folder exists and holds no file of
that name (:meth:`Project.place`); otherwise it is written to ``tmp/`` and renamed
into place inside the transaction. A crash leaves either both, or files no row
claims: :meth:`Project.reconcile` removes those of ``tmp/`` and the pictures an
import wrote in place and never added (left alone while it runs, removed once its
process is gone), and sets any other file of ``images/`` aside in
``trash/recovered/`` (never deleted).
Deletes, relabels and class changes (rename, merge, delete) are file renames
done inside one transaction with the rows they change; :meth:`Project.reconcile`
finishes or reverts whatever a crash interrupted, using the database as the truth.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sqlite3
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence

from . import config
from .errors import (InputError, InvalidLabel, LabelExists, ItemNotFound, NothingToUndo, OutsideProject,
                     ProjectNotFound, TLError)
from .images import NormalizedImage

SCHEMA_VERSION = 1
_ITEM_RE = re.compile(r"^[0-9a-f]{8,64}$")
_STORED_NAME = re.compile(r"^[0-9a-f]{8,64}" + re.escape(config.STORED_EXT) + "$")
_FORBIDDEN_LABEL_CHARS = set('/\\<>:"|?*')
_PICTURE_SUFFIXES = {"jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "dib"}
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS labels(name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items(
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    trash_file TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS items_status_label ON items(status, label);
CREATE TABLE IF NOT EXISTS actions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'done',
    summary TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions(
    item TEXT PRIMARY KEY,
    decision TEXT NOT NULL,
    action INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sources(
    url TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    item TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    fetched REAL NOT NULL
);
-- Every time a class change (rename, merge, delete) is applied, undone or redone: what each
-- class name became ("names": {old: new, or null when deleted, or a list when split}). A run
-- records the last seq it saw, so its model's class names can be read as they are called now.
CREATE TABLE IF NOT EXISTS class_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    action INTEGER NOT NULL,
    step TEXT NOT NULL,
    names TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs(
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    arch TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    seconds REAL,
    reason TEXT NOT NULL DEFAULT '',
    model_file TEXT,
    model_sha256 TEXT,
    finished REAL
);
"""


def validate_label(name: str) -> str:
    """Return the class name normalised (NFC, trimmed) or raise :class:`InvalidLabel`.

    A label becomes a folder name on every OS the app runs on, so separators,
    ``..``, control characters and names Windows reserves are refused.
    """
    if not isinstance(name, str):
        raise InvalidLabel("A class name must be text.")
    return _valid_label(name)


@functools.lru_cache(maxsize=4096)  # an import asks again for every picture; a refusal is not cached
def _valid_label(name: str) -> str:
    label = unicodedata.normalize("NFC", name).strip()
    if not label.replace("\u200d", "").strip():
        raise InvalidLabel("A class name cannot be empty.")
    if len(label) > config.MAX_LABEL_LEN:
        raise InvalidLabel(f"The class name '{label[:20]}...' is too long (at most {config.MAX_LABEL_LEN} characters).")
    # Control and invisible characters are refused, except the joiner that emoji such as 👩‍💻 are built with.
    bad = sorted({c for c in label if c in _FORBIDDEN_LABEL_CHARS
                  or (unicodedata.category(c).startswith("C") and c != "\u200d")})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise InvalidLabel(f"The class name '{label}' contains characters a folder name cannot have: {shown}.")
    if label in (".", "..") or label.startswith("."):
        raise InvalidLabel(f"The class name '{label}' cannot start with a dot.")
    if label.endswith("."):
        raise InvalidLabel(f"The class name '{label}' cannot end with a dot.")
    if label.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise InvalidLabel(f"'{label}' is a reserved name on Windows; choose another class name.")
    return label


def validate_item_id(item: str) -> str:
    """Return the item id if it has the form the app gives ids, else raise :class:`ItemNotFound`."""
    if not isinstance(item, str) or not _ITEM_RE.match(item.strip().lower()):
        raise ItemNotFound(f"'{item}' is not an item of this project (item ids are what `list` and `review` print).")
    return item.strip().lower()


def inside(base: Path, *parts: str | Path) -> Path:
    """Join ``parts`` onto ``base`` and make sure the result stays inside ``base``."""
    base_r = base.resolve()
    p = base_r.joinpath(*parts).resolve()
    if p != base_r and base_r not in p.parents:
        raise OutsideProject(f"'{Path(*parts)}' leads outside the project folder.")
    return p


def source_name(source: str | None) -> str:
    """Where a picture came from, for people, without any path of the server or of the owner's computer.

    A web address is shown as it is; a file by its name only ("cat1.jpg"), a zip member
    by its name and the zip's ("1.png in pets.zip"); "" when nothing was recorded.
    """
    src = (source or "").strip()
    if src.startswith(("http://", "https://")):
        return src

    def base(p: str) -> str:
        return p.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]

    if "!" in src:
        archive, member = src.rsplit("!", 1)
        return f"{base(member)} in {base(archive)}" if base(member) else base(archive)
    return base(src)


def _names(labels: Iterable[str]) -> str:
    """'a', 'a' and 'b', 'a', 'b' and 'c': class names for a sentence."""
    q = [f"'{x}'" for x in labels]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1] if q else "no class"


def _pictures(n: int) -> str:
    return f"{n} picture{'s' if n != 1 else ''}"


#: Actions that change classes; their payload is a dict (items, labels, sources), see :meth:`Project._apply_class`.
CLASS_KINDS = ("rename_class", "merge_classes", "delete_class")


def _respell(payload: dict, old: str, new: str) -> None:
    """Point a class change's payload at class ``new`` wherever it named ``old`` (same name, other case)."""
    for p in payload["items"]:
        for key, file_key in (("to_label", "to_file"), ("from_label", "from_file"), ("label", "file")):
            if p.get(key) == old:
                p[key] = new
                p[file_key] = f"{new}/{p['item']}{config.STORED_EXT}"
    for group in payload["labels"].values():
        for x in group:
            if x["name"] == old:
                x["name"] = new
    for s in payload.get("sources", []):
        for key in ("from", "to"):
            if s[key] == old:
                s[key] = new
    if "names" in payload:
        payload["names"] = {(new if k == old else k): (new if v == old else v) for k, v in payload["names"].items()}


def class_steps(kind: str, payload: dict) -> tuple[dict, dict]:
    """``(forward, backward)``: what each class name becomes when a class change is applied, and undone.

    Forward: a renamed or merged class becomes its target, a deleted one ``None``. Backward:
    a class made by the change goes back to the one class it came from, or is split (a list of
    the classes it came from) when several were merged into it; a class that existed before
    keeps its name. Undoing a delete names nothing: the classes come back as they were.
    """
    names = payload.get("names")
    if names is None:  # recorded before names were: derived from the rest of the payload
        removed = [r["name"] for r in payload.get("labels", {}).get("removed", [])]
        if kind == "delete_class":
            names = {n: None for n in removed}
        else:
            added = [a["name"] for a in payload.get("labels", {}).get("added", [])]
            target = added[0] if added else next((p["to_label"] for p in payload.get("items", [])
                                                  if "to_label" in p), None)
            names = {n: target for n in removed} if target else {}
    made = {a["name"] for a in payload.get("labels", {}).get("added", [])}
    back: dict = {}
    for target in dict.fromkeys(v for v in names.values() if v is not None):
        if target in made:
            came = [k for k, v in names.items() if v == target]
            back[target] = came[0] if len(came) == 1 else came
    return dict(names), back


def _fsync_each(paths: Sequence[Path]) -> None:
    """fsync every file, several at once: the file system commits concurrent syncs together
    (256 files: about 0.01-0.04 s on 8 threads here, against 0.3 s one after another)."""
    def one(p: Path) -> None:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if len(paths) <= 2:
        for p in paths:
            one(p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
        list(pool.map(one, paths))


def _syncfs_call():
    """Linux's ``syncfs``, where it also reports write errors (Linux 5.8 and later); else None."""
    if not sys.platform.startswith("linux"):
        return None
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if m is None or (int(m[1]), int(m[2])) < (5, 8):  # older kernels wait for the data but hide a failed write
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_SYNCFS: list = []  # [_syncfs_call()], looked up once

#: How a staged file is created: a new file, written as bytes (Windows translates line ends otherwise).
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)

def _write_all(fd: int, path: str | Path, data: bytes) -> None:
    """Write ``data`` to the new file ``fd`` (at ``path``) and close it; on failure the file is removed."""
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # a failed close (a full disk on a network file system) is an error too
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


#: From how many files a batch is made durable with one ``syncfs`` rather than an fsync per file.
_SYNCFS_FROM = 16


class SyncPoint:
    """Makes files written after it was opened durable, many at a time (see :meth:`Project.adding`).

    Why it is as safe as an fsync per file: Linux's ``syncfs`` returns once every file of the
    file system has its data and metadata on disk, and (Linux 5.8 and later) fails if writing
    any of them failed since this point was opened; the point is opened before the files are
    written, so no failure of theirs can go unreported. What it saves: the batch is written out
    and the disk's cache flushed once, instead of once per file or few files (measured: 256 files
    of 3.5 KB, a median of 8 ms against 71 ms for an fsync each on 8 threads, on this busy
    machine). What it costs: it also waits for whatever else is waiting to be written to that
    file system. Batches of fewer than ``_SYNCFS_FROM`` files, and systems without such a
    ``syncfs``, get an fsync per file.
    """

    def __init__(self, folder: Path):
        if not _SYNCFS:
            _SYNCFS.append(_syncfs_call())
        self._fd: int | None = None
        if _SYNCFS[0] is not None:
            with contextlib.suppress(OSError):
                self._fd = os.open(folder, os.O_RDONLY)

    def sync(self, paths: Sequence[Path]) -> None:
        """Make ``paths`` (written and closed since this point was opened) durable; raises OSError if not."""
        if self._fd is None or len(paths) < _SYNCFS_FROM:
            _fsync_each(paths)
            return
        if _SYNCFS[0](self._fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"the pictures could not be written to disk ({os.strerror(err)})")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SyncPoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Adding:
    """Batches of pictures added to a project with one database connection and one :class:`SyncPoint`
    (see :meth:`Project.adding`). Pictures staged for it must be staged after it was opened."""

    def __init__(self, project: "Project"):
        self.project = project
        self._point = SyncPoint(project.tmp_dir)
        self._con: sqlite3.Connection | None = None

    def add(self, new: Sequence["NewImage"], *, _synced: bool = False) -> list[AddResult]:
        """:meth:`Project.add_images` for one batch."""
        if self._con is None:
            # While this connection stays open, a batch's commit does not checkpoint the whole
            # database (SQLite does when its last connection closes: a write and an fsync of the file).
            self._con = self.project._connect()
            # Room for the indexes' pages: with SQLite's default 2 MB, a batch's lookups and inserts at
            # 50,000 pictures re-read pages from the file system (measured: 8.9 -> 7.3 µs a row).
            self._con.execute("PRAGMA cache_size=-65536")
        return self.project._add(new, self._point, self._con, _synced)

    def close(self) -> None:
        self._point.close()
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Adding":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@dataclass(slots=True)  # no __dict__: fewer objects for the garbage collector, at 50,000 items
class Item:
    """One image in the dataset. ``file`` is relative to the image root."""

    id: str
    label: str
    file: str
    sha256: str
    width: int
    height: int
    source: str
    added: float
    status: str
    trash_file: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> "Item":
        d = dict(row)
        meta = d.get("meta")
        d["meta"] = json.loads(meta) if meta and meta != "{}" else {}  # most have none: 50,000 rows add up
        return cls(**d)

    @property
    def display_name(self) -> str:
        """A name a person recognises: the file name it came from, else its class (never the id)."""
        src = self.source or ""
        web = src.startswith(("http://", "https://"))
        if web:
            from urllib.parse import unquote, urlsplit

            try:
                src = unquote(urlsplit(src).path)
            except ValueError:
                src = ""
        else:
            src = src.rsplit("!", 1)[-1]  # "pets.zip!animals/cat/1.png": the member's path
        parts = [x for x in src.replace("\\", "/").split("/") if x.strip()]
        name = parts[-1].strip() if parts else ""
        # A link's last part is often an opaque token: keep only a short name with a picture's extension.
        looks_like_file = "." in name and name.rsplit(".", 1)[-1].lower() in _PICTURE_SUFFIXES
        if not name or len(name) > 40 or not (looks_like_file or not web):
            return self.label
        # With the folder it sat in ("cat/1.png"): files of several folders are often all called 1.png, 2.png...
        if not web and len(parts) > 1 and len(parts[-2]) + len(name) < 40:
            return f"{parts[-2]}/{name}"
        return name


@dataclass
class Action:
    """One undoable change: a delete, relabel or keep of items, or a class renamed, merged or deleted.

    ``items`` holds what happened to each item; ``labels`` the classes a class
    change removed and added (``{"removed": [...], "added": [...]}``, empty otherwise).
    """

    id: int
    kind: str
    created: float
    state: str
    summary: str
    items: list[dict]
    labels: dict = field(default_factory=dict)

    @classmethod
    def _from_row(cls, r: sqlite3.Row) -> "Action":
        payload = json.loads(r["payload"])
        if isinstance(payload, dict):  # a class change
            return cls(r["id"], r["kind"], r["created"], r["state"], r["summary"], payload.get("items", []),
                       payload.get("labels", {}))
        return cls(r["id"], r["kind"], r["created"], r["state"], r["summary"], payload)


@dataclass
class ClassStep:
    """One entry of the class-change log: a class change applied (``apply``) or undone (``revert``),
    and what each class name became (``names``: a new name, ``None`` when deleted, a list when split)."""

    seq: int
    action: int
    step: str
    names: dict
    at: float


@dataclass(slots=True)
class AddResult:
    """What happened to one image offered to :meth:`Project.add_image`."""

    item: Item | None
    duplicate: bool = False
    reason: str = ""
    #: set when the picture was refused for another reason than a duplicate (a bad class name)
    error: TLError | None = None


@dataclass(slots=True)
class NewImage:
    """One picture for :meth:`Project.add_images`: the image, its class, where it came from.

    ``staged`` is the file :meth:`Project.stage` or :meth:`Project.place` wrote it to, if it was written already.
    """

    image: NormalizedImage
    label: str
    source: str = ""
    meta: dict | None = None
    staged: Path | str | None = None


@dataclass
class ReconcileReport:
    """What :meth:`Project.reconcile` repaired."""

    moved_back: int = 0
    finished_deletes: int = 0
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    temp_removed: int = 0


#: The connection of each :meth:`Project.reading` block, per thread and database.
_reading = threading.local()


class Project:
    """A project folder: images per class, trash, runs and the metadata database.

    Every method opens its own short-lived SQLite connection, so one Project
    may be used from several threads, and several processes (the web app, the
    CLI, a training process) may use the same folder at once.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.images_dir = self.root / "images"
        self.trash_dir = self.root / "trash"
        self.runs_dir = self.root / "runs"
        self.cache_dir = self.root / "cache"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "project.db"
        self._folders: dict[str, Path] = {}  # class folder name -> its checked absolute path (see path_of)

    # --- opening ------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, create: bool = False, repair: bool = True) -> "Project":
        """Open the project at ``root``; create it when ``create`` is set.

        Raises :class:`ProjectNotFound` when there is no project and ``create``
        is False. With ``repair`` (the default) a crash's leftovers are fixed.
        """
        p = cls(root)
        if not p.db_path.exists():
            if not create:
                raise ProjectNotFound(f"There is no project at {p.root} (import some images to create one).")
            if p.root.exists() and not p.root.is_dir():
                raise ProjectNotFound(f"{p.root} is a file, not a folder.")
        for d in (p.images_dir, p.trash_dir, p.runs_dir, p.cache_dir, p.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        with p._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),))
        if repair:
            p.reconcile()
        return p

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return (Path(root).expanduser() / "project.db").exists()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        shared = getattr(_reading, "cons", {}).get(str(self.db_path))
        if shared is not None:  # inside reading(): the block's one connection
            yield shared
            return
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Reads made in this block, by this thread, share one connection instead of opening one each.

        For a short task that reads many things (one prediction reads the run in use, its class names
        and whether the picture is stored: seven connections otherwise). Each statement still sees
        what was committed before it (autocommit: no read transaction is held across the block);
        writes keep their own connection. Nested blocks use the outer one's connection.
        """
        cons = _reading.__dict__.setdefault("cons", {})
        key = str(self.db_path)
        if key in cons:
            yield
            return
        cons[key] = con = self._connect()
        try:
            yield
        finally:
            del cons[key]
            con.close()

    @contextlib.contextmanager
    def _write(self, con: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds SQLite's write lock from the start (on ``con``, else on a
        connection of its own)."""
        own = con is None
        con = con if con is not None else self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
        finally:
            if own:
                con.close()

    def revision(self) -> tuple:
        """A value that changes whenever the pictures, their classes, decisions, runs or the run in use
        change (an import, an undoable action, its undo or redo, a keep, a training): what derived
        views (the review queue) are cached by. A few milliseconds at 50,000 pictures."""
        with self._read() as con:
            return tuple(con.execute(
                "SELECT (SELECT COUNT(*) FROM items), (SELECT MAX(rowid) FROM items),"
                " (SELECT COUNT(*) FROM items WHERE status='active'),"
                " (SELECT MAX(id) FROM actions), (SELECT COUNT(*) FROM actions WHERE state='done'),"
                " (SELECT COUNT(*) FROM actions WHERE state='undone'),"
                " (SELECT COUNT(*) FROM decisions), (SELECT MAX(rowid) FROM decisions),"
                " (SELECT COUNT(*) FROM labels), (SELECT COUNT(*) FROM runs), (SELECT MAX(finished) FROM runs),"
                " (SELECT group_concat(key || '=' || value, ';') FROM meta WHERE key IN ('active_run', 'in_use'))"
            ).fetchone())

    # --- paths --------------------------------------------------------------
    def path_of(self, item: Item) -> Path:
        """Absolute path of an item's file (in images/ when active, in the trash when deleted)."""
        if item.status == "deleted" and item.trash_file:
            return inside(self.root, item.trash_file)
        folder, _, name = item.file.rpartition("/")
        if folder and "/" not in folder and _STORED_NAME.match(name):
            # The usual "class/<hex id>.jpg": the class folder is checked once (resolving it, symlinks
            # included) and remembered; a hex name cannot lead anywhere. Review lists 50,000 of these.
            base = self._folders.get(folder)
            if base is None:
                base = self._folders[folder] = inside(self.images_dir, folder)
            return base / name
        return inside(self.images_dir, item.file)

    @property
    def thumbs_dir(self) -> Path:
        return self.cache_dir / "thumbs"

    def thumbnail(self, item: Item, side: int = 256) -> Path:
        """A small JPEG copy of an item for galleries, made once per content hash."""
        dest = self.thumbs_dir / item.sha256[:2] / f"{item.sha256}-{side}.jpg"
        if not dest.exists():
            from PIL import Image

            dest.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(self.path_of(item), formats=["JPEG"]) as im:
                im.draft("RGB", (side, side))
                im = im.convert("RGB")
                im.thumbnail((side, side), Image.Resampling.BILINEAR)
                tmp = self.temp_path(".jpg")
                im.save(tmp, format="JPEG", quality=85)
            os.replace(tmp, dest)
        return dest

    def temp_path(self, suffix: str = ".part", *, owner: int | str | None = None) -> Path:
        """A fresh temporary file name in ``tmp/``; the name carries our pid for crash clean-up.

        ``owner``: what to start the name with instead: another pid, or a pid and a tag after a dash
        (a helper process names its files after the process that will use them, so that they are
        kept while that one lives).
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{owner or os.getpid()}-{os.urandom(6).hex()}{suffix}"

    # --- labels -------------------------------------------------------------
    def labels(self) -> list[str]:
        """Every class of the project, in creation order (classes may have no images yet)."""
        with self._read() as con:
            return [r["name"] for r in con.execute("SELECT name FROM labels ORDER BY created, name")]

    def label_counts(self) -> dict[str, int]:
        """Active images per class, for every class (zero included)."""
        with self._read() as con:
            counts = {r["name"]: 0 for r in con.execute("SELECT name FROM labels ORDER BY created, name")}
            for r in con.execute("SELECT label, COUNT(*) AS n FROM items WHERE status='active' GROUP BY label"):
                counts[r["label"]] = r["n"]
        return counts

    def _ensure_label(self, con: sqlite3.Connection, name: str) -> str:
        label = validate_label(name)
        rows = con.execute("SELECT name FROM labels").fetchall()
        for r in rows:  # one class per name whatever the case: folders may be case-insensitive
            if r["name"].casefold() == label.casefold():
                return r["name"]
        con.execute("INSERT INTO labels(name, created) VALUES(?, ?)", (label, time.time()))
        inside(self.images_dir, label).mkdir(parents=True, exist_ok=True)
        return label

    def add_label(self, name: str) -> str:
        """Create a class (and its folder) if it does not exist; return its stored name."""
        with self._write() as con:
            return self._ensure_label(con, name)

    # --- items --------------------------------------------------------------
    def items(self, *, label: str | None = None, status: str = "active", newest: int | None = None) -> list[Item]:
        """Items with the given status (``"active"`` by default), optionally of one class, oldest first.

        With ``newest``, only the ``newest`` most recently added, newest first (a gallery's page).
        """
        q = "SELECT * FROM items WHERE status=?"
        args: list = [status]
        if label is not None:
            q += " AND label=?"
            args.append(label)
        if newest is not None:
            q += " ORDER BY added DESC, id DESC LIMIT ?"
            args.append(max(0, int(newest)))
        else:
            q += " ORDER BY added, id"
        with self._read() as con:
            return [Item._from_row(r) for r in con.execute(q, args)]

    def iter_items(self, *, label: str | None = None, status: str = "active", page: int = 1000) -> Iterator[Item]:
        """Items as :meth:`items` lists them (oldest first), read a page at a time: a listing of 50,000
        starts at once and holds one page in memory."""
        after: tuple = (-1.0, "")
        while True:
            q = "SELECT * FROM items WHERE status=? AND (added > ? OR (added = ? AND id > ?))"
            args: list = [status, after[0], after[0], after[1]]
            if label is not None:
                q += " AND label=?"
                args.append(label)
            q += " ORDER BY added, id LIMIT ?"
            args.append(page)
            with self._read() as con:
                rows = [Item._from_row(r) for r in con.execute(q, args)]
            yield from rows
            if len(rows) < page:
                return
            after = (rows[-1].added, rows[-1].id)

    def items_by_id(self, ids: Iterable[str]) -> dict[str, Item]:
        """The items with these ids that exist (any status), by id: a page of a gallery without reading them all."""
        ids = [i for i in dict.fromkeys(ids) if isinstance(i, str) and _ITEM_RE.match(i)]
        out: dict[str, Item] = {}
        with self._read() as con:
            for s in range(0, len(ids), 500):
                chunk = ids[s:s + 500]
                for r in con.execute(f"SELECT * FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                    out[r["id"]] = Item._from_row(r)
        return out

    def item(self, item_id: str) -> Item:
        """The item with this id (any status); raises :class:`ItemNotFound`."""
        iid = validate_item_id(item_id)
        with self._read() as con:
            row = con.execute("SELECT * FROM items WHERE id=?", (iid,)).fetchone()
        if row is None:
            raise ItemNotFound(f"There is no item '{item_id}' in this project.")
        return Item._from_row(row)

    def stored_shas(self) -> set[str]:
        """The sha256 of every picture the project holds (any status): one query where many
        :meth:`find_sha` calls would each open a connection (bulk classification asks for each picture)."""
        with self._read() as con:
            return {r[0] for r in con.execute("SELECT sha256 FROM items")}

    def find_sha(self, sha256: str) -> Item | None:
        with self._read() as con:
            row = con.execute("SELECT * FROM items WHERE sha256=?", (sha256,)).fetchone()
        return Item._from_row(row) if row else None

    def add_image(self, image: NormalizedImage, label: str, *, source: str = "",
                  meta: dict | None = None) -> AddResult:
        """Store a normalised image under ``label``; exact duplicates are refused.

        The bytes go to ``tmp/`` first and are renamed into the class folder
        inside the transaction that inserts the row. Raises the error of a
        refused picture (a bad class name); see :meth:`add_images` for many.
        """
        res = self.add_images([NewImage(image, label, source=source, meta=meta)])[0]
        if res.error is not None:
            raise res.error
        return res

    def stage(self, image: NormalizedImage, *, owner: int | str | None = None) -> Path:
        """Write ``image`` to a temporary file in ``tmp/``, ready for :meth:`add_images` (which syncs it to disk).

        Thread-safe: an import stages pictures on its workers while it decodes the next ones.
        ``owner`` is as for :meth:`temp_path`.
        """
        name = f"{owner or os.getpid()}-{os.urandom(6).hex()}.part"
        try:
            fd = os.open(os.path.join(self.tmp_dir, name), _CREATE, 0o666)
        except FileNotFoundError:  # tmp/ was removed meanwhile
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(os.path.join(self.tmp_dir, name), _CREATE, 0o666)
        tmp = self.tmp_dir / name
        _write_all(fd, tmp, image.data)
        return tmp

    def place(self, image: NormalizedImage, folder: str | None, *, owner: int | str | None = None) -> str:
        """Write ``image`` for :meth:`Adding.add` straight to its place, ``<folder>/<first 12 of its sha256>.jpg``,
        when the class folder ``folder`` (see :meth:`ensure_class_folder`) exists and holds no file of that name;
        otherwise to ``tmp/`` as :meth:`stage` does. Returns the file's path.

        A file written in place is not renamed when it is added (a rename cost about as much as
        writing the file, here). Until its row is in, it is no one's: a crash leaves it for
        :meth:`reconcile` to set aside, and an import discards it with :meth:`discard`, which
        leaves it if an item's row claims that file meanwhile (the same picture added by another
        import, or earlier by this one).
        """
        if folder is not None:
            path = folder + os.sep + image.sha256[:12] + config.STORED_EXT  # spelled as _insert does
            try:
                fd = os.open(path, _CREATE, 0o666)
            except OSError:  # no such folder (yet), or that name is taken: staged then
                pass
            else:
                _write_all(fd, path, image.data)
                return path
        return str(self.stage(image, owner=owner))

    def ensure_class_folder(self, label: str | None) -> tuple[str | None, bool]:
        """The folder :meth:`add_images` puts a picture of class ``label`` in (the class as stored,
        letter case ignored), for :meth:`place`, made if it is not there, and whether it was made
        here (None for a class name that is refused). An import that made a folder and added
        nothing to it removes it with :meth:`drop_empty_folders`."""
        if label is None:
            return None, False
        try:
            name = self.find_label(label) or validate_label(label)
            inside(self.images_dir, name)
        except (InvalidLabel, OutsideProject):
            return None, False
        folder = os.path.join(str(self.images_dir), name)  # as _insert spells its destinations
        try:
            os.mkdir(folder)
        except FileExistsError:
            return folder, False
        except OSError:
            return None, False
        return folder, True

    def drop_empty_folders(self, folders: Iterable[str]) -> None:
        """Remove the folders :meth:`ensure_class_folder` made that are still empty and of no class."""
        with contextlib.suppress(sqlite3.Error):
            with self._read() as con:
                for folder in folders:
                    if self._find_label(con, os.path.basename(folder)) is None:
                        with contextlib.suppress(OSError):
                            os.rmdir(folder)

    def _written_in_place(self, path: str | Path) -> bool:
        """Whether a file written for :meth:`Adding.add` is in its class folder (:meth:`place`), not staged."""
        return os.path.dirname(os.fspath(path)) != str(self.tmp_dir)

    def _remove_unclaimed(self, con: sqlite3.Connection, path: str) -> None:
        """Inside a write transaction: remove a picture written in place unless an active item's row names
        that file (the same picture, added there meanwhile by another import or an earlier batch)."""
        stem, ext = os.path.splitext(os.path.basename(path))
        rel = f"{os.path.basename(os.path.dirname(path))}/{stem}{ext}"
        if con.execute("SELECT 1 FROM items WHERE id=? AND file=? AND status='active'", (stem, rel)).fetchone() is None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def discard(self, paths: Iterable[str | Path]) -> None:
        """Remove files written for :meth:`Adding.add` and not added: staged ones, and ones written in
        place unless an item's row claims that file. Checked and removed under the write lock, so that
        no import's commit (which puts its files in place inside its transaction) claims one meanwhile.
        What cannot be checked (the database fails) stays, for :meth:`reconcile` to set aside."""
        placed = []
        for p in map(os.fspath, paths):
            if self._written_in_place(p):
                placed.append(p)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(p)
        if not placed:
            return
        with contextlib.suppress(sqlite3.Error, OSError):
            with self._write() as con:
                for p in placed:
                    self._remove_unclaimed(con, p)

    def adding(self) -> "Adding":
        """Open before staging the pictures of an import; add them with :meth:`Adding.add`, a batch at a time.

        The batches share one database connection and one :class:`SyncPoint` (each batch is synced
        to disk at once instead of a file at a time). Close it when done (it is a context manager).
        """
        return Adding(self)

    def add_images(self, new: Sequence["NewImage"]) -> list[AddResult]:
        """Store many normalised images in one transaction (what an import does, a batch at a time).

        Each picture is checked as :meth:`add_image` checks one: an exact
        duplicate (of a stored picture or of an earlier one in the batch) is
        refused with a reason, a bad class name gives a result with ``error``
        set; the others are renamed into their class folders inside the
        transaction that inserts their rows, once every file is on disk.
        Staged files (:meth:`stage`) are used as they are; the others are
        written here. Returns one :class:`AddResult` per picture, in order.
        """
        with self.adding() as adding:  # opened before this call writes anything
            _fsync_each([n.staged for n in new if n.staged is not None])  # staged before it
            return adding.add(new, _synced=True)

    def _add(self, new: Sequence["NewImage"], point: SyncPoint, con: sqlite3.Connection,
             synced: bool = False) -> list[AddResult]:
        staged: list[Path | str | None] = [None] * len(new)
        try:
            written = []
            for i, n in enumerate(new):
                staged[i] = n.staged if n.staged is not None else self.stage(n.image)
                if n.staged is None or not synced:
                    written.append(staged[i])
            point.sync(written)  # on disk before any row says they are there
            return self._insert(new, staged, con)
        finally:
            left = [t for t in staged if t is not None]
            if left:
                self.discard(left)

    def _insert(self, new: Sequence["NewImage"], staged: list[Path | None],
                con: sqlite3.Connection) -> list[AddResult]:
        """The transaction of :meth:`add_images`: rows inserted, files renamed into place (``staged[i]``
        becomes None once its file is in place, or once a file written in place is removed or found to
        be another item's)."""
        out: list[AddResult] = []
        dests: set[str] = set()  # the files this batch puts in place

        def drop(i: int) -> None:
            """A picture written in place and not added: removed, unless an item's file is there now
            (a staged one is removed after the transaction)."""
            t = staged[i]
            if t is not None and self._written_in_place(t):
                if os.fspath(t) not in dests:
                    self._remove_unclaimed(con, os.fspath(t))
                staged[i] = None

        with self._write(con) as con:
            # What the database knows of these pictures, asked in a few queries rather than two per picture.
            shas = list(dict.fromkeys(n.image.sha256 for n in new))
            rows: dict[str, Item] = {}
            taken: set[str] = set()
            for k in range(0, len(shas), 500):
                part = shas[k:k + 500]
                marks = ",".join("?" * len(part))
                for r in con.execute(f"SELECT * FROM items WHERE sha256 IN ({marks})", part):
                    rows[r["sha256"]] = Item._from_row(r)
                short = [h[:12] for h in part]
                taken.update(r[0] for r in con.execute(f"SELECT id FROM items WHERE id IN ({marks})", short))
            labels: dict[str, tuple[str, str]] = {}  # casefolded name -> (stored name, its folder), for this batch
            batch: dict[str, Item] = {}   # sha256 -> item added earlier in this batch
            inserts: list[tuple] = []
            moves: list[tuple[int, str]] = []
            root = str(self.images_dir)
            ext = config.STORED_EXT
            for i, n in enumerate(new):
                try:
                    want = validate_label(n.label)
                except InvalidLabel as err:
                    out.append(AddResult(None, error=err, reason=str(err)))
                    continue
                sha = n.image.sha256
                if sha in batch:
                    old = batch[sha]
                    drop(i)
                    out.append(AddResult(old, duplicate=True,
                                         reason=f"the same image is already in '{old.label}' (item {old.id})"))
                    continue
                # A duplicate creates no class: an import of pictures already here leaves no empty classes behind.
                old = rows.get(sha)
                if old is not None:
                    drop(i)
                    if old.status == "deleted":
                        out.append(AddResult(None, duplicate=True, reason="the same image was deleted earlier "
                                             f"(item {old.id}; Undo restores it)"))
                    else:
                        out.append(AddResult(old, duplicate=True,
                                             reason=f"the same image is already in '{old.label}' (item {old.id})"))
                    continue
                key = want.casefold()
                got = labels.get(key)
                if got is None:
                    stored = self._ensure_label(con, want)
                    inside(self.images_dir, stored).mkdir(parents=True, exist_ok=True)
                    got = labels[key] = (stored, os.path.join(root, stored) + os.sep)  # spelled as place() does
                label, folder = got
                iid = sha[:12]
                if iid in taken:
                    iid = self._new_id(con, sha, taken)
                # The class folder was made safe above; the item id is hex, so the file stays inside it.
                dest = folder + iid + ext
                taken.add(iid)
                rel = f"{label}/{iid}{ext}"
                now = time.time()  # one each: the order pictures were added in is the order of their times
                meta = n.meta
                inserts.append((iid, label, rel, sha, n.image.width, n.image.height, n.source, now,
                                json.dumps(meta, ensure_ascii=False) if meta else "{}"))
                moves.append((i, dest))
                dests.add(dest)
                item = Item(iid, label, rel, sha, n.image.width, n.image.height, n.source, now, "active",
                            None, dict(meta) if meta else {})
                batch[sha] = item
                out.append(AddResult(item))
            con.executemany(
                "INSERT INTO items(id, label, file, sha256, width, height, source, added, status, meta)"
                " VALUES(?,?,?,?,?,?,?,?, 'active', ?)", inserts)
            for i, dest in moves:
                if staged[i] != dest:  # staged, or written in place under another name or class
                    os.replace(staged[i], dest)
                staged[i] = None
        return out

    def add_undoable(self, image: NormalizedImage, label: str, *, source: str = "",
                     meta: dict | None = None) -> Action:
        """Add one picture to ``label`` as an undoable action (kind ``"add"``): undo moves it to the trash.

        For pictures a person adds one at a time (a classified picture put back into the
        dataset); imports stay outside the history. A picture already in the dataset is
        refused with :class:`InputError` naming its class; one that was deleted (or whose
        adding was undone) comes back from the trash into ``label``.
        """
        tmp = self.temp_path()
        with open(tmp, "wb") as f:
            f.write(image.data)
            f.flush()
            os.fsync(f.fileno())
        try:
            with self._write() as con:
                validate_label(label)
                row = con.execute("SELECT * FROM items WHERE sha256=?", (image.sha256,)).fetchone()
                old = Item._from_row(row) if row is not None else None
                if old is not None and old.status == "active":
                    raise InputError(f"This picture is already in the dataset, in '{old.label}'.")
                existed = self._find_label(con, label) is not None
                label = self._ensure_label(con, label)
                now = time.time()
                if old is not None:  # deleted earlier: it comes back from the trash, into this class
                    iid = old.id
                    src = self.path_of(old)
                    if not src.exists():
                        raise ItemNotFound(f"This picture was deleted earlier and its file is no longer in the trash "
                                           f"({src.name}).")
                    con.execute("UPDATE items SET status='active', trash_file=NULL, label=?, file=?, source=?, meta=?"
                                " WHERE id=?", (label, f"{label}/{iid}{config.STORED_EXT}", source,
                                                json.dumps(meta or {}, ensure_ascii=False), iid))
                else:
                    iid = self._new_id(con, image.sha256)
                    src = tmp
                    con.execute(
                        "INSERT INTO items(id, label, file, sha256, width, height, source, added, status, meta)"
                        " VALUES(?,?,?,?,?,?,?,?, 'active', ?)",
                        (iid, label, f"{label}/{iid}{config.STORED_EXT}", image.sha256, image.width, image.height,
                         source, now, json.dumps(meta or {}, ensure_ascii=False)))
                rel = f"{label}/{iid}{config.STORED_EXT}"
                shown = (meta or {}).get("name") or source or "a picture"
                aid = self._record(con, "add", f"added {shown} to '{label}'", [])
                payload = [{"item": iid, "label": label, "file": rel, "trash_file": f"trash/{aid}/{iid}{config.STORED_EXT}",
                            "new_label": not existed}]
                con.execute("UPDATE actions SET payload=? WHERE id=?", (json.dumps(payload, ensure_ascii=False), aid))
                self._move_all([(src, inside(self.images_dir, rel))])
            return self._action(aid)
        finally:
            if tmp.exists():
                tmp.unlink()

    def record_added(self, ids: Sequence[str], summary: str, *, new_labels: Iterable[str] = ()) -> Optional[Action]:
        """Make pictures already added (by :meth:`add_images`) one undoable action (kind ``"add"``).

        What a stopped import keeps: Undo moves those pictures to the trash, and a class in
        ``new_labels`` (created by that import) leaves again when it is empty; Redo brings them
        back. Pictures no longer active are left out; None when none is left.
        """
        made = {validate_label(n).casefold() for n in new_labels}
        with self._write() as con:
            ids = [validate_item_id(i) for i in ids]
            found = {}
            for i in range(0, len(ids), 500):  # an import's 50,000 pictures: a hundred queries, not 50,000
                part = ids[i:i + 500]
                for row in con.execute(f"SELECT * FROM items WHERE id IN ({','.join('?' * len(part))})", part):
                    found[row["id"]] = row
            items = [Item._from_row(found[i]) for i in ids if i in found and found[i]["status"] == "active"]
            if not items:
                return None
            aid = self._record(con, "add", summary, [])
            payload = [{"item": it.id, "label": it.label, "file": it.file,
                        "trash_file": f"trash/{aid}/{it.id}{config.STORED_EXT}",
                        "new_label": it.label.casefold() in made} for it in items]
            con.execute("UPDATE actions SET payload=? WHERE id=?", (json.dumps(payload, ensure_ascii=False), aid))
        return self._action(aid)

    @staticmethod
    def _new_id(con: sqlite3.Connection, sha: str, taken: set[str] = frozenset()) -> str:
        """The shortest prefix of ``sha`` (12 hex digits at least) that no item has, nor any id in ``taken``."""
        for n in (12, 16, 24, 32, 64):
            iid = sha[:n]
            if iid not in taken and con.execute("SELECT 1 FROM items WHERE id=?", (iid,)).fetchone() is None:
                return iid
        raise RuntimeError("item id collision")  # two identical sha256 values: cannot happen (UNIQUE)

    # --- actions (undoable) -------------------------------------------------
    def _active_items(self, con: sqlite3.Connection, ids: Iterable[str]) -> list[Item]:
        out, seen = [], set()
        for raw in ids:
            iid = validate_item_id(raw)
            if iid in seen:
                continue
            seen.add(iid)
            row = con.execute("SELECT * FROM items WHERE id=?", (iid,)).fetchone()
            if row is None:
                raise ItemNotFound(f"There is no item '{raw}' in this project.")
            it = Item._from_row(row)
            if it.status != "active":
                raise ItemNotFound(f"Item '{raw}' is not in the dataset (it was deleted).")
            out.append(it)
        if not out:
            raise ItemNotFound("No items were given.")
        return out

    def _record(self, con: sqlite3.Connection, kind: str, summary: str, payload: list[dict]) -> int:
        # A new action ends the redo history.
        con.execute("UPDATE actions SET state='void' WHERE state='undone'")
        cur = con.execute("INSERT INTO actions(kind, created, state, summary, payload) VALUES(?,?,?,?,?)",
                          (kind, time.time(), "done", summary, json.dumps(payload, ensure_ascii=False)))
        return int(cur.lastrowid)

    def _move_all(self, moves: list[tuple[Path, Path]]) -> None:
        """Rename files; on failure, put back the ones already moved and re-raise."""
        done: list[tuple[Path, Path]] = []
        try:
            for src, dst in moves:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                done.append((src, dst))
        except BaseException:
            for src, dst in reversed(done):
                with contextlib.suppress(OSError):
                    os.replace(dst, src)
            raise

    def delete(self, ids: Iterable[str], *, summary: str = "") -> Action:
        """Move items to the trash (one undoable action); ``summary`` says why, in the history."""
        with self._write() as con:
            items = self._active_items(con, ids)
            aid = self._record(con, "delete", "", [])
            payload, moves = [], []
            for it in items:
                trash_rel = f"trash/{aid}/{it.id}{config.STORED_EXT}"
                payload.append({"item": it.id, "label": it.label, "file": it.file, "trash_file": trash_rel})
                moves.append((inside(self.images_dir, it.file), inside(self.root, trash_rel)))
                con.execute("UPDATE items SET status='deleted', trash_file=? WHERE id=?", (trash_rel, it.id))
            summary = summary or f"deleted {len(items)} image{'s' if len(items) != 1 else ''}"
            con.execute("UPDATE actions SET payload=?, summary=? WHERE id=?",
                        (json.dumps(payload, ensure_ascii=False), summary, aid))
            self._move_all(moves)
        return self._action(aid)

    def relabel(self, ids: Iterable[str], to: str) -> Action:
        """Move items to another class (one undoable action)."""
        ids = list(ids)
        return self.move({i: to for i in ids} if ids else {})

    def move(self, assign: Mapping[str, str]) -> Action:
        """Move each item to the class given for it (``{item: class}``), as one undoable action.

        Items already in their class are left alone; classes are created as needed.
        Raises :class:`ItemNotFound` when no item would move.
        """
        with self._write() as con:
            items = self._active_items(con, assign)
            wanted = {validate_item_id(k): v for k, v in assign.items()}
            payload, moves, per = [], [], {}
            created: set[str] = set()
            for it in items:
                existed = self._find_label(con, wanted[it.id]) is not None
                label = self._ensure_label(con, wanted[it.id])
                if not existed:
                    created.add(label)
                if it.label == label:
                    continue
                new_rel = f"{label}/{it.id}{config.STORED_EXT}"
                payload.append({"item": it.id, "from_label": it.label, "to_label": label,
                                "from_file": it.file, "to_file": new_rel})
                if label in created:  # undo removes the class again once it is empty
                    payload[-1]["new_label"] = True
                moves.append((inside(self.images_dir, it.file), inside(self.images_dir, new_rel)))
                con.execute("UPDATE items SET label=?, file=? WHERE id=?", (label, new_rel, it.id))
                per[label] = per.get(label, 0) + 1
            if not payload:
                targets = sorted({self._ensure_label(con, v) for v in wanted.values()})
                raise ItemNotFound(f"The items are already in {_names(targets)}.")
            parts = [f"{n} image{'s' if n != 1 else ''} to '{label}'" for label, n in per.items()]
            aid = self._record(con, "relabel", "moved " + " and ".join(parts), payload)
            self._move_all(moves)
        return self._action(aid)

    def keep(self, ids: Iterable[str]) -> Action:
        """Mark items as checked by a person so that review stops showing them (undoable)."""
        with self._write() as con:
            items = self._active_items(con, ids)
            payload = []
            for it in items:
                prev = con.execute("SELECT decision FROM decisions WHERE item=?", (it.id,)).fetchone()
                payload.append({"item": it.id, "previous": prev["decision"] if prev else None})
            n = len(items)
            aid = self._record(con, "keep", f"kept {n} image{'s' if n != 1 else ''}", payload)
            for it in items:
                con.execute("INSERT OR REPLACE INTO decisions(item, decision, action, created) VALUES(?,?,?,?)",
                            (it.id, "keep", aid, time.time()))
        return self._action(aid)

    # --- classes (undoable) ---------------------------------------------------
    def find_label(self, name: str) -> str | None:
        """The stored spelling of the class called ``name`` (letter case ignored), or None."""
        with self._read() as con:
            return self._find_label(con, name)

    @staticmethod
    def _find_label(con: sqlite3.Connection, name: str) -> str | None:
        key = unicodedata.normalize("NFC", name or "").strip().casefold()
        for r in con.execute("SELECT name FROM labels"):
            if r["name"].casefold() == key:
                return r["name"]
        return None

    def _existing_label(self, con: sqlite3.Connection, name: str) -> sqlite3.Row:
        if not isinstance(name, str) or not name.strip():
            raise InputError("Choose a class first.")
        stored = self._find_label(con, name)
        if stored is None:
            raise InputError(f"There is no class '{name.strip()}' in this project.")
        return con.execute("SELECT name, created FROM labels WHERE name=?", (stored,)).fetchone()

    def rename_label(self, old: str, new: str, *, merge: bool = False) -> Action:
        """Rename class ``old`` to ``new`` (its folder and every picture in it), as one undoable action.

        A change of letter case only is a rename. When another class is already
        called ``new`` (in any letter case) the two would become one: that is a
        merge, done only with ``merge=True``; otherwise :class:`LabelExists` says so.
        """
        with self._read() as con:
            src = self._existing_label(con, old)["name"]
            target = validate_label(new)
            other = self._find_label(con, target)
        if target == src:
            raise InputError(f"The class is already called '{src}'.")
        if other is not None and other != src:
            if not merge:
                raise LabelExists(f"There is already a class '{other}': renaming '{src}' to it would merge the two "
                                  f"classes (all their pictures in '{other}'). Merge them to do that.")
            return self.merge_labels([src], other)
        return self._class_change("rename_class", [src], target)

    def merge_labels(self, sources: Iterable[str], into: str) -> Action:
        """Put every picture of the ``sources`` classes into class ``into``, as one undoable action.

        ``into`` may be one of the sources (it keeps its pictures), another class
        (spelled as the project spells it) or a new name. The merged classes are
        removed, so no empty class is left behind.
        """
        sources = [sources] if isinstance(sources, str) else (sources or [])
        names = [n for n in sources if isinstance(n, str) and n.strip()]
        if not names:
            raise InputError("Choose the classes to merge.")
        with self._read() as con:
            srcs = list(dict.fromkeys(self._existing_label(con, n)["name"] for n in names))
            target = self._find_label(con, validate_label(into)) or validate_label(into)
        if srcs == [target] or not [x for x in srcs if x != target]:
            raise InputError(f"Choose at least one class other than '{target}' to merge into it.")
        return self._class_change("merge_classes", srcs, target)

    def delete_labels(self, names: Iterable[str]) -> Action:
        """Delete classes: their pictures go to the trash and the classes leave the list (one undoable action)."""
        names = [n for n in ([names] if isinstance(names, str) else (names or [])) if isinstance(n, str) and n.strip()]
        if not names:
            raise InputError("Choose the class to delete.")
        with self._read() as con:
            srcs = list(dict.fromkeys(self._existing_label(con, n)["name"] for n in names))
        return self._class_change("delete_class", srcs, None)

    def _class_change(self, kind: str, srcs: list[str], target: str | None) -> Action:
        """Build the payload of a class change, record it and apply it, in one transaction."""
        with self._write() as con:
            created = {}
            for n in srcs:  # checked again inside the write lock: another process may have changed them
                row = self._existing_label(con, n)
                if row["name"] != n:
                    raise InputError(f"The class '{n}' changed meanwhile; look again and retry.")
                created[n] = row["created"]
            items = [Item._from_row(r) for n in srcs
                     for r in con.execute("SELECT * FROM items WHERE status='active' AND label=? ORDER BY added, id", (n,))]
            aid = self._record(con, kind, "", [])
            moved: list[dict] = []
            labels: dict[str, list] = {"removed": [], "added": []}
            sources: list[dict] = []
            if kind == "delete_class":
                for it in items:
                    moved.append({"item": it.id, "label": it.label, "file": it.file,
                                  "trash_file": f"trash/{aid}/{it.id}{config.STORED_EXT}"})
                labels["removed"] = [{"name": n, "created": created[n]} for n in srcs]
                n, several = len(items), len(srcs) > 1
                what = f"deleted class{'es' if several else ''} {_names(srcs)}"
                summary = (f"{what} ({_pictures(n)} to the trash)" if n
                           else f"{what} ({'they' if several else 'it'} had no pictures)")
            else:
                existing = self._find_label(con, target)
                if existing in srcs and existing != target:  # "cat" -> "Cat": a new spelling, not a merge
                    existing = None
                for it in items:
                    if it.label == target:
                        continue
                    moved.append({"item": it.id, "from_label": it.label, "to_label": target, "from_file": it.file,
                                  "to_file": f"{target}/{it.id}{config.STORED_EXT}"})
                labels["removed"] = [{"name": n, "created": created[n]} for n in srcs if n != target]
                if existing is None:  # a new name takes the place of the first class in the list
                    labels["added"] = [{"name": target, "created": min(created.values())}]
                for n in srcs:
                    if n != target:
                        urls = [r["url"] for r in con.execute("SELECT url FROM sources WHERE label=?", (n,))]
                        if urls:
                            sources.append({"from": n, "to": target, "urls": urls})
                n = len(moved)
                if kind == "rename_class":
                    summary = f"renamed class '{srcs[0]}' to '{target}'" + (f" ({_pictures(n)})" if n else "")
                else:
                    gone = [x for x in srcs if x != target]
                    summary = f"merged {_names(gone)} into '{target}' ({_pictures(n)} moved)"
            names = {x["name"]: target for x in labels["removed"]}
            payload = {"items": moved, "labels": labels, "sources": sources, "names": names}
            moves = self._apply_class(con, payload)
            con.execute("UPDATE actions SET payload=?, summary=? WHERE id=?",
                        (json.dumps(payload, ensure_ascii=False), summary, aid))
            self._move_all(moves)
            self._log_class(con, aid, kind, payload, "apply")
            self._tidy_label_folders(con, [x["name"] for x in labels["removed"]])
        return self._action(aid)

    @staticmethod
    def _log_class(con: sqlite3.Connection, aid: int, kind: str, payload: dict, step: str) -> None:
        forward, backward = class_steps(kind, payload)
        con.execute("INSERT INTO class_log(action, step, names, at) VALUES(?,?,?,?)",
                    (aid, step, json.dumps(forward if step == "apply" else backward, ensure_ascii=False), time.time()))

    def class_log_position(self) -> int:
        """The latest entry of the class-change log (0 when empty): where a run's snapshot stands in it."""
        with self._read() as con:
            return int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM class_log").fetchone()[0])

    def class_log(self, *, after: int = 0, after_time: float | None = None, upto: int | None = None) -> list[ClassStep]:
        """Class changes applied, undone or redone after log entry ``after`` (up to ``upto``), oldest first.

        ``after_time`` instead picks the entries made after a time (for runs that recorded no
        position); class changes made before the log existed then count with their own time.
        """
        with self._read() as con:
            if after_time is None:
                rows = con.execute("SELECT * FROM class_log WHERE seq > ? AND seq <= ? ORDER BY seq",
                                   (after, upto if upto is not None else 2 ** 62)).fetchall()
                return [ClassStep(r["seq"], r["action"], r["step"], json.loads(r["names"]), r["at"]) for r in rows]
            rows = con.execute("SELECT * FROM class_log WHERE at > ? ORDER BY seq", (after_time,)).fetchall()
            steps = [ClassStep(r["seq"], r["action"], r["step"], json.loads(r["names"]), r["at"]) for r in rows]
            logged = {r["action"] for r in con.execute("SELECT DISTINCT action FROM class_log")}
            kinds = ",".join("?" * len(CLASS_KINDS))
            older = con.execute(f"SELECT * FROM actions WHERE kind IN ({kinds}) AND state='done' AND created > ? "
                                "ORDER BY id", (*CLASS_KINDS, after_time)).fetchall()
        early = [ClassStep(0, r["id"], "apply", class_steps(r["kind"], json.loads(r["payload"]))[0], r["created"])
                 for r in older if r["id"] not in logged]
        return early + steps

    def _apply_class(self, con: sqlite3.Connection, payload: dict) -> list[tuple[Path, Path]]:
        """Do (or redo) a class change's row updates; return the file renames it needs."""
        leaving = {r["name"] for r in payload["labels"]["removed"]}
        for a in payload["labels"]["added"]:
            stored = self._find_label(con, a["name"])
            if stored in leaving:  # "cat" -> "Cat": the old spelling is about to go
                stored = None
            if stored is None:
                con.execute("INSERT INTO labels(name, created) VALUES(?, ?)", (a["name"], a["created"]))
            elif stored != a["name"]:  # a class spelled otherwise appeared meanwhile: use it
                _respell(payload, a["name"], stored)
        moves = []
        for p in payload["items"]:
            if "to_label" in p:
                con.execute("UPDATE items SET label=?, file=? WHERE id=?", (p["to_label"], p["to_file"], p["item"]))
                moves.append((inside(self.images_dir, p["from_file"]), inside(self.images_dir, p["to_file"])))
            else:
                con.execute("UPDATE items SET status='deleted', trash_file=? WHERE id=?", (p["trash_file"], p["item"]))
                moves.append((inside(self.images_dir, p["file"]), inside(self.root, p["trash_file"])))
        for r in payload["labels"]["removed"]:  # kept if pictures were added to it since (before a redo)
            con.execute("DELETE FROM labels WHERE name=? AND NOT EXISTS "
                        "(SELECT 1 FROM items WHERE status='active' AND label=?)", (r["name"], r["name"]))
        for s in payload.get("sources", []):
            self._relabel_sources(con, s["urls"], s["to"])
        for a in payload["labels"]["added"]:
            inside(self.images_dir, a["name"]).mkdir(parents=True, exist_ok=True)
        return moves

    def _revert_class(self, con: sqlite3.Connection, payload: dict) -> list[tuple[Path, Path]]:
        """Undo a class change's row updates; return the file renames it needs."""
        leaving = {a["name"] for a in payload["labels"]["added"]}
        for r in payload["labels"]["removed"]:
            stored = self._find_label(con, r["name"])
            if stored in leaving and stored != r["name"] and not self._has_others(con, stored, payload):
                stored = None  # undoing "cat" -> "Cat" (unless pictures were added to "Cat" since: they share it)
            if stored is None:
                con.execute("INSERT INTO labels(name, created) VALUES(?, ?)", (r["name"], r["created"]))
            elif stored != r["name"]:  # the class was made again, spelled otherwise: its pictures go there
                _respell(payload, r["name"], stored)
            inside(self.images_dir, stored or r["name"]).mkdir(parents=True, exist_ok=True)
        moves = []
        for p in payload["items"]:
            if "to_label" in p:
                con.execute("UPDATE items SET label=?, file=? WHERE id=?", (p["from_label"], p["from_file"], p["item"]))
                moves.append((inside(self.images_dir, p["to_file"]), inside(self.images_dir, p["from_file"])))
            else:
                con.execute("UPDATE items SET status='active', trash_file=NULL, label=?, file=? WHERE id=?",
                            (p["label"], p["file"], p["item"]))
                moves.append((inside(self.root, p["trash_file"]), inside(self.images_dir, p["file"])))
        for a in payload["labels"]["added"]:
            # A class this change created leaves again, unless pictures were added to it since.
            con.execute("DELETE FROM labels WHERE name=? AND NOT EXISTS "
                        "(SELECT 1 FROM items WHERE status='active' AND label=?)", (a["name"], a["name"]))
        for s in payload.get("sources", []):
            self._relabel_sources(con, s["urls"], s["from"])
        return moves

    @staticmethod
    def _has_others(con: sqlite3.Connection, label: str, payload: dict) -> bool:
        """Whether class ``label`` holds active pictures that this class change did not put there."""
        n = con.execute("SELECT COUNT(*) FROM items WHERE status='active' AND label=?", (label,)).fetchone()[0]
        return n > sum(1 for p in payload["items"] if p.get("to_label") == label)

    @staticmethod
    def _relabel_sources(con: sqlite3.Connection, urls: list[str], label: str) -> None:
        for i in range(0, len(urls), 500):
            chunk = urls[i:i + 500]
            con.execute(f"UPDATE sources SET label=? WHERE url IN ({','.join('?' * len(chunk))})", (label, *chunk))

    def _tidy_label_folders(self, con: sqlite3.Connection, names: Iterable[str]) -> None:
        """Remove the folders of these classes if they are no longer classes and hold nothing."""
        labels = [r["name"] for r in con.execute("SELECT name FROM labels")]
        for n in names:
            if n not in labels:
                with contextlib.suppress(OSError):  # not empty, or already gone: leave it
                    inside(self.images_dir, n).rmdir()
        for n in labels:  # where folder names ignore case, "cat" and "Cat" were one folder
            inside(self.images_dir, n).mkdir(parents=True, exist_ok=True)


    def kept(self) -> set[str]:
        """Ids of items a person marked as checked."""
        with self._read() as con:
            return {r["item"] for r in con.execute("SELECT item FROM decisions WHERE decision='keep'")}

    def _action(self, aid: int) -> Action:
        with self._read() as con:
            r = con.execute("SELECT * FROM actions WHERE id=?", (aid,)).fetchone()
        return Action._from_row(r)

    def history(self, limit: int = 50) -> list[Action]:
        """Recent actions, newest first (undone ones included, voided ones not)."""
        with self._read() as con:
            rows = con.execute("SELECT * FROM actions WHERE state != 'void' ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [Action._from_row(r) for r in rows]

    def can_undo(self) -> bool:
        with self._read() as con:
            return con.execute("SELECT 1 FROM actions WHERE state='done' LIMIT 1").fetchone() is not None

    def can_redo(self) -> bool:
        with self._read() as con:
            return con.execute("SELECT 1 FROM actions WHERE state='undone' LIMIT 1").fetchone() is not None

    def undo(self) -> Action:
        """Revert the latest action: trashed files come back byte for byte, relabels move back,
        renamed, merged or deleted classes return with their pictures.

        If files of the action were removed outside the app (an emptied trash), the
        action cannot be reverted: it leaves the history, nothing moves, and
        :class:`ItemNotFound` says so; the next undo reaches the action before it.
        """
        with self._write() as con:
            r = con.execute("SELECT * FROM actions WHERE state='done' ORDER BY id DESC LIMIT 1").fetchone()
            if r is None:
                raise NothingToUndo("There is nothing to undo.")
            con.execute("SAVEPOINT step")
            kind, payload = r["kind"], json.loads(r["payload"])
            moves = []
            if kind == "delete":
                for p in payload:
                    con.execute("UPDATE items SET status='active', trash_file=NULL, label=?, file=? WHERE id=?",
                                (p["label"], p["file"], p["item"]))
                    self._ensure_label(con, p["label"])
                    moves.append((inside(self.root, p["trash_file"]), inside(self.images_dir, p["file"])))
            elif kind == "relabel":
                for p in payload:
                    con.execute("UPDATE items SET label=?, file=? WHERE id=?", (p["from_label"], p["from_file"], p["item"]))
                    moves.append((inside(self.images_dir, p["to_file"]), inside(self.images_dir, p["from_file"])))
                # A class the move created leaves again, unless pictures were added to it since.
                made = sorted({p["to_label"] for p in payload if p.get("new_label")})
                for name in made:
                    con.execute("DELETE FROM labels WHERE name=? AND NOT EXISTS "
                                "(SELECT 1 FROM items WHERE status='active' AND label=?)", (name, name))
            elif kind == "add":  # the added picture goes to the trash; a class it created leaves again
                for p in payload:
                    con.execute("UPDATE items SET status='deleted', trash_file=? WHERE id=?", (p["trash_file"], p["item"]))
                    moves.append((inside(self.images_dir, p["file"]), inside(self.root, p["trash_file"])))
                for name in sorted({p["label"] for p in payload if p.get("new_label")}):
                    con.execute("DELETE FROM labels WHERE name=? AND NOT EXISTS "
                                "(SELECT 1 FROM items WHERE status='active' AND label=?)", (name, name))
            elif kind == "keep":
                for p in payload:
                    if p["previous"] is None:
                        con.execute("DELETE FROM decisions WHERE item=?", (p["item"],))
                    else:
                        con.execute("UPDATE decisions SET decision=? WHERE item=?", (p["previous"], p["item"]))
            elif kind in CLASS_KINDS:
                moves = self._revert_class(con, payload)
            lost = self._drop_if_lost(con, r, moves, "undo")
            if not lost:
                con.execute("UPDATE actions SET state='undone' WHERE id=?", (r["id"],))
                self._move_all(moves)
                if kind in CLASS_KINDS:
                    con.execute("UPDATE actions SET payload=? WHERE id=?", (json.dumps(payload, ensure_ascii=False), r["id"]))
                    self._log_class(con, r["id"], kind, payload, "revert")
                    self._tidy_label_folders(con, [x["name"] for x in payload["labels"]["added"]])
                elif kind == "relabel":
                    self._tidy_label_folders(con, [p["to_label"] for p in payload if p.get("new_label")])
                elif kind == "add":
                    self._tidy_label_folders(con, [p["label"] for p in payload if p.get("new_label")])
        if lost:
            raise ItemNotFound(lost)
        return self._action(r["id"])

    def redo(self) -> Action:
        """Apply again the action undone most recently."""
        with self._write() as con:
            # A new action voids every undone one, so the undone actions are exactly the
            # redo stack; the oldest of them was undone last.
            r = con.execute("SELECT * FROM actions WHERE state='undone' ORDER BY id ASC LIMIT 1").fetchone()
            if r is None:
                raise NothingToUndo("There is nothing to redo.")
            con.execute("SAVEPOINT step")
            kind, payload = r["kind"], json.loads(r["payload"])
            moves = []
            if kind == "delete":
                for p in payload:
                    con.execute("UPDATE items SET status='deleted', trash_file=? WHERE id=?", (p["trash_file"], p["item"]))
                    moves.append((inside(self.images_dir, p["file"]), inside(self.root, p["trash_file"])))
            elif kind == "relabel":
                for p in payload:
                    self._ensure_label(con, p["to_label"])
                    con.execute("UPDATE items SET label=?, file=? WHERE id=?", (p["to_label"], p["to_file"], p["item"]))
                    moves.append((inside(self.images_dir, p["from_file"]), inside(self.images_dir, p["to_file"])))
            elif kind == "add":
                for p in payload:
                    con.execute("UPDATE items SET status='active', trash_file=NULL, label=?, file=? WHERE id=?",
                                (p["label"], p["file"], p["item"]))
                    self._ensure_label(con, p["label"])
                    moves.append((inside(self.root, p["trash_file"]), inside(self.images_dir, p["file"])))
            elif kind == "keep":
                for p in payload:
                    con.execute("INSERT OR REPLACE INTO decisions(item, decision, action, created) VALUES(?,?,?,?)",
                                (p["item"], "keep", r["id"], time.time()))
            elif kind in CLASS_KINDS:
                moves = self._apply_class(con, payload)
            lost = self._drop_if_lost(con, r, moves, "redo")
            if not lost:
                con.execute("UPDATE actions SET state='done' WHERE id=?", (r["id"],))
                self._move_all(moves)
                if kind in CLASS_KINDS:
                    con.execute("UPDATE actions SET payload=? WHERE id=?", (json.dumps(payload, ensure_ascii=False), r["id"]))
                    self._log_class(con, r["id"], kind, payload, "apply")
                    self._tidy_label_folders(con, [x["name"] for x in payload["labels"]["removed"]])
        if lost:
            raise ItemNotFound(lost)
        return self._action(r["id"])

    @staticmethod
    def _drop_if_lost(con: sqlite3.Connection, r: sqlite3.Row, moves: list[tuple[Path, Path]], verb: str) -> str:
        """If a file to move is gone, revert this step's row changes, drop the action; return why."""
        lost = [src for src, _ in moves if not src.exists()]
        if not lost:
            return ""
        con.execute("ROLLBACK TO step")
        con.execute("UPDATE actions SET state='void' WHERE id=?", (r["id"],))
        n, total = len(lost), len(moves)
        which = "its file was" if total == 1 else f"{n} of its {total} files {'was' if n == 1 else 'were'}"
        return (f"Cannot {verb} '{r['summary']}': {which} removed outside the app ({lost[0].name}; "
                f"was the trash folder emptied?). This step was dropped from the history.")

    # --- crash recovery -----------------------------------------------------
    @contextlib.contextmanager
    def importing(self) -> Iterator[None]:
        """While an import runs: its mark in ``tmp/`` (named after this process, so that it goes with it),
        which tells :meth:`reconcile` in any process to leave the files written in place and not yet added.

        A reconcile looks for marks after it has listed the class folders, and an import writes its
        first picture after its mark is there, so no file of a running import is set aside.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        mark = self.tmp_dir / f"{os.getpid()}-{os.urandom(6).hex()}.importing"
        mark.touch()
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                mark.unlink()

    def _import_running(self) -> bool:
        for f in self.tmp_dir.glob("*.importing"):
            try:
                pid = int(f.name.split("-", 1)[0])
            except ValueError:
                continue
            if _pid_alive(pid):
                return True
        return False

    def reconcile(self) -> ReconcileReport:
        """Make the folders agree with the database after a crash.

        - temporary files of processes that are gone are removed;
        - an active item whose file is not where the row says is moved back
          from wherever an interrupted rename left it (another class folder or
          the trash); a deleted item still in ``images/`` goes to its trash path;
        - a file in ``images/`` that no row claims is moved to
          ``trash/recovered/`` (never deleted) and reported, except the pictures
          an import writes in place (:meth:`place`): while it runs (:meth:`importing`)
          they are left alone, and those of an import that ended without adding
          them (its process is gone) are removed as its temporary files are;
        - every class has its folder, and empty folders of classes that are gone are removed.
        """
        rep = ReconcileReport()
        ended: list[float] = []  # when each import that ended before adding all it wrote had started
        for f in self.tmp_dir.glob("*"):
            try:
                pid = int(f.name.split("-", 1)[0])
            except ValueError:
                pid = -1
            if f.is_file() and not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    if f.suffix == ".importing":
                        ended.append(f.stat().st_mtime)
                    f.unlink()
                    rep.temp_removed += 1
        with self._write() as con:
            rows = [Item._from_row(r) for r in con.execute("SELECT * FROM items WHERE status IN ('active','deleted')")]
            claimed: set[Path] = set()
            by_name: dict[str, list[Path]] | None = None
            for it in rows:
                want = self.path_of(it)
                claimed.add(want)
                if want.exists():
                    continue
                if by_name is None:
                    by_name = {}
                    for base in (self.images_dir, self.trash_dir):
                        for f in base.rglob(f"*{config.STORED_EXT}"):
                            by_name.setdefault(f.name, []).append(f)
                cands = [c for c in by_name.get(f"{it.id}{config.STORED_EXT}", []) if c.exists()]
                if cands:
                    want.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(cands[0], want)
                    if it.status == "deleted":
                        rep.finished_deletes += 1
                    else:
                        rep.moved_back += 1
                else:
                    con.execute("UPDATE items SET status='missing' WHERE id=?", (it.id,))
                    rep.missing.append(it.id)
            strays = [f for f in sorted(self.images_dir.rglob("*")) if f.is_file() and f.resolve() not in claimed]
            if strays and self._import_running():  # looked for after the listing: see importing()
                strays = [f for f in strays if not _STORED_NAME.match(f.name)]
            if strays and ended:  # written in place by an import after it started, and never added
                since, left = min(ended), []
                for f in strays:
                    try:
                        if _STORED_NAME.match(f.name) and f.stat().st_mtime >= since:
                            f.unlink()
                            rep.temp_removed += 1
                            continue
                    except OSError:
                        pass
                    left.append(f)
                strays = left
            for f in strays:
                rel = f.relative_to(self.images_dir)
                dest = self.trash_dir / "recovered" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    dest = dest.with_name(f"{dest.stem}-{os.urandom(3).hex()}{dest.suffix}")
                os.replace(f, dest)
                rep.orphans.append(str(rel))
            # Folders agree with the class list: an interrupted class change can leave an empty
            # folder of a class that is gone, or a class without its folder.
            labels = {r["name"] for r in con.execute("SELECT name FROM labels")}
            for d in sorted(self.images_dir.iterdir()):
                if d.is_dir() and d.name not in labels:
                    for sub in sorted((x for x in d.rglob("*") if x.is_dir()), reverse=True):
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                    with contextlib.suppress(OSError):
                        d.rmdir()
            for name in labels:
                with contextlib.suppress(OutsideProject, OSError):
                    inside(self.images_dir, name).mkdir(parents=True, exist_ok=True)
        return rep
