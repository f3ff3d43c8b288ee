"""Import images from folders, zip files and single files into a project.

Every file goes through :func:`tl_app.images.normalize`; a refused file gets a
reason in the report and the import goes on. Workers decode a few files per
task and write each picture to a temporary file: threads for small imports,
helper processes from :data:`_PROCESSES_FROM` files on (Python's lock lets one
thread at a time run Python code, and at 96 px Pillow's own Python code costs as
much as the decoding; threads take the first files while the helpers start).
Batches of pictures are added on a thread of their own, one transaction per
batch, each batch synced to disk at once before its rows say the pictures are
there (see :class:`tl_app.project.SyncPoint`): its waits for the disk overlap
the decoding of the next batch.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import sys
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from . import config
from .errors import ImageRejected, InvalidLabel
from .images import NormalizedImage, normalize
from .jobs import Progress, ProgressFn, StopToken, no_progress
from .project import NewImage, Project, _pid_alive, validate_label

#: Most pictures added per database transaction (the first batches are smaller), and the longest a
#: decoded picture waits for its batch (seconds). A commit writes every index page its rows touched:
#: at 2,048 a batch it cost about 3% less of the whole import's processor time than at 512 (96 px).
_BATCH = 2048
_BATCH_SECONDS = 1.0
#: Most pictures gathered while the batch before them is being added.
_BATCH_MOST = 8192
_NO_CLASS = "no class given for this file (choose a class, or --label NAME)"
_JUNK = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store"}
_UNPACK_ERRORS: tuple[type[BaseException], ...] = (zlib.error,)
try:
    import lzma

    _UNPACK_ERRORS += (lzma.LZMAError,)
except ImportError:  # Python built without lzma: zipfile cannot open such members anyway
    pass


@dataclass
class Rejected:
    """A file the import refused, and why."""

    file: str
    reason: str


@dataclass
class ImportReport:
    """What an import did. ``labels`` holds the project's image count per class afterwards.

    ``elsewhere`` maps each skipped duplicate that sits in another class than this
    import gives it to that class (``{item: class}``): passed to
    :meth:`Project.move <tl_app.project.Project.move>`, it puts them where the import says.
    """

    imported: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    stopped: bool = False
    elsewhere: dict[str, str] = field(default_factory=dict)
    #: where each of ``elsewhere``'s pictures is now, {item: class}
    elsewhere_from: dict[str, str] = field(default_factory=dict)
    #: files found, and files read before the end (or the stop)
    files: int = 0
    read: int = 0

    def to_dict(self) -> dict:
        return {"imported": self.imported, "duplicates": self.duplicates,
                "rejected": [{"file": r.file, "reason": r.reason} for r in self.rejected],
                "labels": dict(self.labels), "elsewhere": dict(self.elsewhere), "stopped": self.stopped,
                "files": self.files, "read": self.read}

    def elsewhere_note(self) -> str:
        """A sentence on the duplicates filed in another class than the import gives them ('' if none)."""
        if not self.elsewhere:
            return ""
        pairs: dict[tuple[str, str], int] = {}
        for item, to in self.elsewhere.items():
            key = (self.elsewhere_from.get(item, "?"), to)
            pairs[key] = pairs.get(key, 0) + 1
        per = ", ".join(f"{n} in '{a}' (here: '{b}')" for (a, b), n in pairs.items())
        n = len(self.elsewhere)
        return (f"{n} of the duplicates {'are' if n != 1 else 'is'} already in another class than this import "
                f"gives {'them' if n != 1 else 'it'}: {per}.")

    def summary(self) -> str:
        parts = [f"{self.imported} imported"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate{'s' if self.duplicates != 1 else ''} skipped")
        if self.rejected:
            parts.append(f"{len(self.rejected)} refused")
        if self.stopped:
            kept = (f"; the {self.imported} imported stay (Undo removes them)" if self.imported > 1 else
                    "; the one imported stays (Undo removes it)" if self.imported else "")
            return ", ".join(parts) + f", stopped after {self.read} of {self.files} files" + kept
        return ", ".join(parts)


@dataclass(slots=True)  # an import lists every file first: one small object each, no __dict__, no closure
class _Entry:
    name: str                      # shown in messages and kept as the source
    label: Optional[str]
    read: Optional[Callable[[], bytes | Path]] = None  # how to read it, unless it is the file at ``path``
    reason: str = ""               # set when the entry is refused before reading
    source: str = ""               # the folder, zip or file it was found in, as given
    from_folder: bool = False      # its class is the name of a folder it sits in
    path: str = ""                 # a file on disk: its path (what the workers are given)

    def reader(self) -> Callable[[], bytes | Path]:
        return self.read if self.read is not None else (lambda p=self.path: Path(p))


def _is_junk(name: str) -> bool:
    n = name.lower()
    return n in _JUNK or n.startswith(".") or n.startswith("._")


def _unsafe_member(name: str) -> bool:
    n = name.replace("\\", "/")
    return n.startswith("/") or ".." in n.split("/") or (len(n) > 1 and n[1] == ":")


def _walk_files(folder: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        for fn in sorted(filenames):
            if not _is_junk(fn):
                yield os.path.join(dirpath, fn)  # a string: a Path per file cost more than its turn in a thread


def _folder_entries(folder: Path, label: Optional[str], loose: Optional[str]) -> Iterator[_Entry]:
    """A folder: sub-folders are classes; files directly inside go to ``loose`` or take the folder's name."""
    src = str(folder)
    if label is not None:
        for f in _walk_files(folder):
            yield _Entry(f, label, source=src, path=f)
        return
    for child in sorted(folder.iterdir()):
        if _is_junk(child.name):
            continue
        if child.is_dir():
            name = child.name
            for f in _walk_files(child):
                yield _Entry(f, name, source=src, from_folder=True, path=f)
        elif child.is_file():
            yield _Entry(str(child), loose if loose is not None else folder.name, lambda f=child: f, source=src)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _zip_entries(path: Path, label: Optional[str], loose: Optional[str]) -> Iterator[_Entry]:
    """A zip file: its top-level folders are classes (a single wrapping folder is skipped).

    Pictures outside every folder go to ``loose``, else to a class named after the zip.
    """
    src = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        yield _Entry(str(path), label, lambda: b"", reason=f"not a readable zip file ({e})", source=src)
        return
    infos = []
    for i in zf.infolist():
        if i.is_dir():
            continue
        if _unsafe_member(i.filename):  # never extracted, but say so rather than drop it as "hidden"
            yield _Entry(f"{path.name}!{i.filename}", label, lambda: b"",
                         reason="its path inside the zip leads outside the archive (unsafe zip)", source=src)
        elif not any(_is_junk(p) for p in i.filename.replace("\\", "/").split("/")):
            infos.append(i)
    unpacked = sum(i.file_size for i in infos)
    if unpacked > config.MAX_ZIP_TOTAL_BYTES:  # a zip bomb, or more than a shared server should take at once
        yield _Entry(str(path), label, lambda: b"", source=src,
                     reason=f"it unpacks to {_size(unpacked)}, more than the {_size(config.MAX_ZIP_TOTAL_BYTES)} a "
                            "zip file may hold; split it into smaller zip files")
        return
    parts = [i.filename.replace("\\", "/").strip("/").split("/") for i in infos]
    # "dataset/cat/1.jpg, dataset/dog/2.jpg": drop the wrapping folder (a README beside
    # the class folders must not turn the wrapper itself into the only class).
    while (parts and len({p[0] for p in parts}) == 1 and all(len(p) > 1 for p in parts)
           and any(len(p) > 2 for p in parts)):
        parts = [p[1:] for p in parts]
    for info, p in zip(infos, parts):
        name = f"{path.name}!{info.filename}"
        in_folder = label is None and len(p) > 1
        lab = label if label is not None else (p[0] if in_folder else (loose if loose is not None else path.stem))
        if info.file_size > config.MAX_IMPORT_BYTES:
            yield _Entry(name, lab, lambda: b"", reason=f"the file is too large ({info.file_size / 1e6:.0f} MB)",
                         source=src, from_folder=in_folder)
            continue

        def read(info=info) -> bytes:
            if info.flag_bits & 0x1:
                raise ImageRejected("the file is password-protected inside the zip (unzip it yourself, then import the folder)")
            try:
                with zf.open(info) as fh:  # the header can lie about sizes: read at most the limit
                    data = fh.read(config.MAX_IMPORT_BYTES + 1)
            except _UNPACK_ERRORS as err:  # a corrupt compressed stream is one bad member, not a failed import
                raise ImageRejected(f"damaged inside the zip file ({err})") from None
            if len(data) > config.MAX_IMPORT_BYTES:
                raise ImageRejected("the file is too large")
            return data

        yield _Entry(name, lab, read, source=src, from_folder=in_folder)


def _entries(sources: Iterable[str | Path], label: Optional[str], loose: Optional[str] = None) -> Iterator[_Entry]:
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            yield from _folder_entries(p, label, loose)
        elif p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            yield from _zip_entries(p, label, loose)
        elif p.is_file():
            lab = label if label is not None else loose
            yield _Entry(str(p), lab, lambda p=p: p, source=str(p), reason="" if lab is not None else _NO_CLASS)
        else:
            yield _Entry(str(p), label, lambda: b"", reason="no such file or folder", source=str(p))


def files_in(source: str | Path) -> Iterator[tuple[str, Callable[[], bytes | Path], str]]:
    """Every file a folder (walked, hidden files skipped), a zip file or a single file holds.

    Yields ``(name, read, reason)``: ``read()`` gives a path or the bytes, ``reason``
    is set for what is refused before reading (a missing path, an unsafe or oversized
    zip member, a zip that unpacks too far). Zip files get the same checks as an import.
    """
    for e in _entries([source], ""):
        yield e.name, e.reader(), e.reason


# --- what an import will do ---------------------------------------------------------------
#: File name endings of the formats the image pipeline opens (a guess before reading: the
#: content decides, but a README or a .txt beside the pictures can be told apart in advance).
PICTURE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib"}


@dataclass
class PlannedSource:
    """What an import will do with one dropped zip or folder, or with the pictures dropped on their own.

    ``folders`` counts the pictures per class taken from the source's own folders
    (classes spelled as the project spells them); ``loose`` counts the pictures
    outside every folder (all of them for single pictures) and ``loose_label`` is
    the class they go to. ``other`` counts files whose name says they are not
    pictures (they will be refused); ``refused`` lists files refused before reading.
    """

    name: str
    kind: str                                       # "zip", "folder" or "pictures"
    folders: dict[str, int] = field(default_factory=dict)
    loose: int = 0
    loose_label: Optional[str] = None
    other: int = 0
    refused: list[Rejected] = field(default_factory=list)

    @property
    def pictures(self) -> int:
        return sum(self.folders.values()) + self.loose

    @property
    def classes(self) -> dict[str, int]:
        out = dict(self.folders)
        if self.loose and self.loose_label is not None:
            out[self.loose_label] = out.get(self.loose_label, 0) + self.loose
        return out

    def lines(self) -> list[str]:
        what = {"zip": f"The zip {self.name}", "folder": f"The folder {self.name}"}.get(self.kind, "")
        word = "sub-folder" if self.kind == "folder" else "folder"
        out = []
        if self.kind == "pictures":
            if self.loose:
                out.append(f"{'This picture goes' if self.loose == 1 else f'These {self.loose} pictures go'} "
                           f"into '{self.loose_label}'.")
        elif self.folders:
            n = len(self.folders)
            per = ", ".join(f"{k} ({v})" for k, v in self.folders.items())
            out.append(f"{what} holds {n} {word}{'s' if n != 1 else ''}: {per}; "
                       f"{'each becomes its class' if n != 1 else 'it becomes a class'}.")
            if self.loose:
                out.append(f"{_n_pictures(self.loose)} outside the {word}s "
                           f"{'go' if self.loose != 1 else 'goes'} into '{self.loose_label}'.")
        elif self.loose:
            out.append(f"{what} holds {_n_pictures(self.loose)}; {'they go' if self.loose != 1 else 'it goes'} "
                       f"into '{self.loose_label}'.")
        elif not self.other and not self.refused:
            out.append(f"{what} holds no pictures.")
        if self.other:
            where = f" in {self.name}" if self.name else ""
            out.append(f"{self.other} other file{'s' if self.other != 1 else ''}{where} "
                       f"{'are not pictures' if self.other != 1 else 'is not a picture'} by the name and will be "
                       "refused.")
        for r in self.refused[:5]:
            out.append(f"{r.file.split('!', 1)[1] if '!' in r.file else Path(r.file).name} will be refused: "
                       f"{r.reason}.")
        if len(self.refused) > 5:
            out.append(f"… and {len(self.refused) - 5} more files will be refused.")
        return out


@dataclass
class ImportPlan:
    """What :func:`import_files` will do with these sources, told before it does it (see :func:`plan_import`)."""

    sources: list[PlannedSource] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    #: pictures dropped on their own with no class to go to
    unlabelled: int = 0

    @property
    def pictures(self) -> int:
        return sum(s.pictures for s in self.sources) + self.unlabelled

    @property
    def classes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            for k, v in s.classes.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def needs_label(self) -> bool:
        """Whether some pictures wait for a class to be chosen."""
        return self.unlabelled > 0

    def lines(self) -> list[str]:
        """One or two sentences per source, then what still needs a class and which classes are new."""
        out = [line for s in self.sources for line in s.lines()]
        if self.unlabelled:
            n = self.unlabelled
            out.append(f"{'This picture needs' if n == 1 else f'These {n} pictures need'} a class: choose one or "
                       "type a new name.")
        if self.new_classes:
            out.append(f"New class{'es' if len(self.new_classes) != 1 else ''}: {', '.join(self.new_classes)}.")
        return out

    def summary(self) -> str:
        return " ".join(self.lines())

    def to_dict(self) -> dict:
        return {"pictures": self.pictures, "classes": self.classes, "new_classes": list(self.new_classes),
                "unlabelled": self.unlabelled,
                "sources": [{"name": s.name, "kind": s.kind, "folders": dict(s.folders), "loose": s.loose,
                             "loose_label": s.loose_label, "other": s.other,
                             "refused": [{"file": r.file, "reason": r.reason} for r in s.refused]}
                            for s in self.sources],
                "summary": self.summary()}


def _n_pictures(n: int) -> str:
    return f"{n} picture{'s' if n != 1 else ''}"


def plan_import(sources: Iterable[str | Path], *, label: Optional[str] = None, loose_label: Optional[str] = None,
                names: Optional[dict[str, str]] = None, project: Optional[Project] = None) -> ImportPlan:
    """Tell what :func:`import_files` would do with the same arguments, without reading any picture.

    Lists zips and folders only (cheap), with the same rules as the import: the
    same classes, the same files refused in advance. With ``project``, class
    names are spelled as the project spells them and new classes are listed.
    """
    if label is not None:
        label = validate_label(label)
    if loose_label is not None:
        loose_label = validate_label(loose_label)
    names = names or {}
    known = {n.casefold(): n for n in project.labels()} if project is not None else {}
    plan = ImportPlan()
    by_source: dict[str, PlannedSource] = {}
    loose_files = PlannedSource("", "pictures")
    new: dict[str, str] = {}
    for e in _entries(sources, label, loose_label):
        src = Path(e.source)
        shown_src = names.get(e.source, src.name)
        if src.is_dir() or (src.suffix.lower() == ".zip" and src.is_file()):
            ps = by_source.get(e.source)
            if ps is None:
                ps = by_source[e.source] = PlannedSource(shown_src, "folder" if src.is_dir() else "zip")
        else:
            ps = loose_files
        shown = names.get(e.name, e.name)
        if e.reason:
            if e.reason == _NO_CLASS:
                plan.unlabelled += 1
            else:
                ps.refused.append(Rejected(shown, e.reason))
            continue
        if Path(e.name.split("!")[-1]).suffix.lower() not in PICTURE_SUFFIXES:
            ps.other += 1
            continue
        try:
            lab = validate_label(e.label)
        except InvalidLabel as err:
            ps.refused.append(Rejected(shown, str(err)))
            continue
        lab = known.get(lab.casefold()) or new.setdefault(lab.casefold(), lab)
        if e.from_folder:
            ps.folders[lab] = ps.folders.get(lab, 0) + 1
        else:  # one class for every loose picture of a source (the given class, or the source's name)
            ps.loose += 1
            ps.loose_label = lab
    plan.sources = [*by_source.values()] + ([loose_files] if loose_files.pictures or loose_files.refused
                                            or loose_files.other else [])
    used = set().union(*(ps.classes for ps in plan.sources)) if plan.sources else set()
    plan.new_classes = [v for v in new.values() if v in used]
    return plan


# --- decoding and staging, on threads or on helper processes --------------------------------
#: Files per task given to a thread or a helper process: handing over each file on its own made two
#: threads slower than one (Python's lock passed back and forth); Stop waits for at most one task.
_CHUNK = 16
#: Files per task given to a helper process at first (fewer hand-overs between processes cost less:
#: 64 files a task took about 5% less processor time per picture than 16, at 96 px).
_PROCESS_CHUNK = 32
#: Then as many as take a helper about this long (from the pace so far), within these bounds: small
#: pictures go in tasks of 256 (4% less processor time per picture than 64, at 96 px), large photos
#: in tasks of a few (a Stop does not wait for a task: its other pictures are skipped, see _stage_chunk).
_TASK_SECONDS = 0.25
_PROCESS_CHUNK_LEAST, _PROCESS_CHUNK_MOST = 8, 256
#: Tasks in flight per helper process: enough that they go on while a batch is added to the project,
#: few enough that Stop stays quick (its results are small: the pictures' bytes stay in their files).
_WINDOW = 16
#: From how many files an import decodes on helper processes (when it may start them, see
#: :func:`_helpers_may_start`): starting them costs about 0.1 s, and below this threads are as fast.
_PROCESSES_FROM = 1000


def _normalize_one(src: bytes | Path | str) -> NormalizedImage | ImageRejected:
    """Normalise one picture, or the reason it is refused (as an exception object, not raised)."""
    try:
        return normalize(src)
    except ImageRejected as err:
        return err
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as err:
        return ImageRejected(f"cannot be read ({err})")


def _prepare(e: _Entry) -> bytes | Path | ImageRejected | InvalidLabel:
    """What a worker needs for ``e`` (its path, or its bytes read from a zip), or why it is refused now."""
    if e.reason:
        return ImageRejected(e.reason)
    try:
        if e.label is not None:
            validate_label(e.label)  # (cached: an import has few classes and many files)
        return e.path or e.read()
    except (ImageRejected, InvalidLabel) as err:
        return err
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as err:
        return ImageRejected(f"cannot be read ({err})")


def _discard_written(project: Project, results: Iterable) -> None:
    """Remove the files written for results that will not be added (see :meth:`Project.discard`)."""
    paths = [r[1] for r in results if isinstance(r, tuple)]
    if paths:
        project.discard(paths)


class _Folders:
    """Where the pictures of each class are written (:meth:`Project.place`): the class folder, made when
    it is not there; at the end, :meth:`close` removes those made and left empty (every picture of
    the class refused or already in the project), so that such an import leaves no folder behind."""

    def __init__(self, project: Project):
        self.project = project
        self.known: dict[Optional[str], Optional[str]] = {None: None}
        self.made: list[str] = []

    def of(self, label: Optional[str]) -> Optional[str]:
        try:
            return self.known[label]
        except KeyError:
            folder, made = self.project.ensure_class_folder(label)
            if made:
                self.made.append(folder)
            self.known[label] = folder
            return folder

    def close(self) -> None:
        if self.made:
            self.project.drop_empty_folders(self.made)
            self.made = []


def _wait(fut, stop: Optional[StopToken]):
    """A task's result, or None once ``stop`` is set while it runs (a task of large pictures takes
    seconds, and the import's Stop must not wait for it)."""
    if stop is None:
        return fut.result()
    from concurrent.futures import wait

    while not wait([fut], timeout=0.1).done:
        if stop.is_set():
            return None
    return fut.result()


def _by_threads(project: Project, entries: Iterator[_Entry], workers: int,
                chunk: int = 1, folders: Optional[_Folders] = None,
                stop: Optional[StopToken] = None) -> Iterator[tuple[_Entry, object]]:
    """Each entry with its result, in order: ``(image, staged file)`` or the refusal (an exception object).

    Decoded and staged on a small thread pool, ``chunk`` files per task; on close (a Stop), what
    was staged and not taken is removed. Once ``stop`` is set, it ends without waiting for the task
    under way, whose other pictures are skipped.
    """
    import threading

    folders = folders or _Folders(project)
    halt = threading.Event()  # set when nothing more is taken: the tasks under way skip the rest

    def one(e: _Entry, folder: Optional[str]):
        if halt.is_set():
            return ImageRejected("the import was stopped")  # not taken
        src = _prepare(e)
        if isinstance(src, (ImageRejected, InvalidLabel)):
            return src
        img = _normalize_one(src)
        if isinstance(img, ImageRejected):
            return img
        return img, project.place(img, folder)  # written from this thread; synced to disk a batch at a time

    def work(part: list[_Entry], where: list) -> list:
        return [one(e, f) for e, f in zip(part, where)]

    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            # Few tasks in flight: a thread's result holds the picture's bytes (up to a few hundred KB).
            window = workers * 4
            while True:
                while len(pending) < window:
                    part = list(itertools.islice(entries, chunk))
                    if not part:
                        break
                    pending.append((part, pool.submit(work, part, [folders.of(e.label) for e in part])))
                if not pending:
                    return
                part, fut = pending[0]
                got = _wait(fut, stop)
                if got is None:
                    return  # stopped: the task goes with the others still pending
                pending.popleft()
                yield from _handed_out(project, part, got)
        finally:
            halt.set()
            for _, f in pending:
                f.cancel()
            for _, f in pending:
                if not f.cancelled():
                    with contextlib.suppress(Exception):  # the error that ended the import is already on its way
                        _discard_written(project, f.result())


#: In a helper process: the import's Stop, set by the importing process when it stops taking results
#: (see :func:`_stage_chunk`).
_STOPPING = None


def _worker_start(importer: int, stopping=None) -> None:
    """In a helper process: end when the importing process ends, whatever ends it (a kill included).

    The helper's parent is multiprocessing's fork server, not the importing process, and neither
    would see the end of the other by itself: each helper holds the pipes that would tell them.
    """
    import signal
    import threading

    # Ctrl-C in a terminal reaches every process of the program: the importing process decides (a
    # first Ctrl-C stops the import and keeps what is done); a helper ends when it ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _STOPPING
    _STOPPING = stopping

    def watch() -> None:
        try:
            fd = os.pidfd_open(importer)  # Linux: readable once that process has ended
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            import select

            select.select([fd], [], [])
        elif os.getppid() == importer:  # started by the importing process itself (spawn; Windows)
            while os.getppid() == importer:
                time.sleep(0.5)
        else:  # by a fork server, without pidfd (macOS): ask after the importing process
            while _pid_alive(importer):
                time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


_WORKER_PROJECT: dict[str, Project] = {}


def _stage_chunk(root: str, owner: str, jobs: list, stopping=None) -> list:
    """In a helper process: normalise and write each job (``(path or picture bytes, class folder or
    None)``; None is skipped) where :meth:`Project.place` puts it.

    Returns per job ``(its file, sha256, width, height, format, original size)``, the reason it
    is refused, or None: small tuples, the picture's bytes stay in its file. Staged files are named
    after ``owner`` (the importing process's pid, then a tag of the import), so that a clean-up by
    another process keeps them while the import lives.
    """
    project = _WORKER_PROJECT.get(root)
    if project is None:
        project = _WORKER_PROJECT[root] = Project(root)
    stopping = stopping or _STOPPING
    out: list = []
    asked, stopped = time.monotonic(), False
    for job in jobs:
        # Once the import has stopped, the rest of the task is skipped (its results are not taken): a
        # task of large pictures takes seconds. Asked at most every 0.1 s (asking costs a lock).
        if stopping is not None and not stopped and time.monotonic() - asked > 0.1:
            asked, stopped = time.monotonic(), stopping.is_set()
        if stopped:
            job = None
        img = None if job is None else _normalize_one(job[0])
        if img is None or isinstance(img, ImageRejected):
            out.append(img and img.reason)
        else:
            out.append((project.place(img, job[1], owner=owner), img.sha256, img.width, img.height,
                        img.original_format, img.original_size))
    return out


#: Bytes of zip members at most waiting for a helper process (files of folders are sent by name).
_INFLIGHT_BYTES = 256 << 20


def _start_fork_server(forkserver) -> None:
    """Start multiprocessing's fork server deaf to Ctrl-C (SIGINT) from its first instant.

    Ctrl-C in a terminal reaches every process of the program. The fork server loads Python and
    the picture modules first and ignores Ctrl-C only after that, so a Ctrl-C in that fraction of a
    second printed its traceback under the import's own "stopping" line. A process started while
    SIGINT is ignored keeps it ignored through its start (Python then installs no handler for it),
    and the helpers it forks inherit that. So SIGINT is ignored here for the moment it takes to
    start the process (a few milliseconds; only the main thread may change it; elsewhere, in the
    web server's workers, the server is started as it is).
    """
    import signal
    import threading

    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or handler is None:
        forkserver.ensure_running()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


def _pool_context():
    """Where helper processes come from: the fork server where there is one (it starts once per program
    with the picture modules loaded, then forks each helper in a few milliseconds, and is safe in a
    program that runs threads, such as the web server), else a fresh Python each (spawn)."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        from multiprocessing import forkserver

        if not getattr(forkserver._forkserver, "_forkserver_pid", None):  # not started yet: what it preloads
            ctx.set_forkserver_preload(["tl_app.importer"])
            _start_fork_server(forkserver)
        return ctx
    return multiprocessing.get_context("spawn")


#: While the helper processes start (0.1 s on an idle machine, more than 0.5 s on a busy one: a new
#: Python loading Pillow), the first files are decoded on threads here rather than waiting.
_THREADS_WHILE_STARTING = True


def _handed_out(project: Project, entries: list, got: list) -> Iterator[tuple]:
    """``(entry, result)`` pairs of a finished task; when the import stops taking them, the files written
    for the ones not taken are removed."""
    for i, (e, r) in enumerate(zip(entries, got)):
        try:
            yield e, r
        except GeneratorExit:
            _discard_written(project, got[i + 1:])
            raise


def _by_processes(project: Project, entries: Iterator[_Entry], workers: int,
                  folders: _Folders, stop: Optional[StopToken] = None) -> Iterator[tuple[_Entry, object]]:
    """As :func:`_by_threads`, on ``workers`` helper processes, :data:`_PROCESS_CHUNK` files per task at
    first, then as many as take about :data:`_TASK_SECONDS` at the pace so far.

    Zip members are read here (the zip's checks stay in one place) and sent as bytes; files of
    folders are read by the helpers. Until the first helper answers, tasks go to threads here. If a
    helper process dies (a decoder crash, no memory left) or none can start, what is left of the
    import goes on threads, as it would have without helpers.
    """
    import threading
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def results(prepared: list, got: list) -> list:
        out = []
        for pre, r in zip(prepared, got):
            if isinstance(pre, (ImageRejected, InvalidLabel)):
                out.append(pre)
            elif isinstance(r, tuple):
                name, sha, w, h, fmt, size = r
                out.append((NormalizedImage(b"", w, h, sha, fmt, tuple(size)), name))
            else:
                out.append(ImageRejected(r))
        return out

    pending: collections.deque = collections.deque()  # (entries, what was sent or refused, future, bytes sent)
    redo: list[_Entry] | None = None  # when the helpers fail: what is left to do, in order
    unsent: list[_Entry] = []
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"  # this import's staged files: "<tag>-<random>.part"
    root = str(project.root)
    received: set[str] = set()
    ready: list = []   # the pool of helpers, once one of them has answered
    failed: list = []  # or why none could start

    try:  # here, not on the starting thread: the fork server starts deaf to Ctrl-C only from the main thread
        context = _pool_context()
    except Exception as err:  # noqa: BLE001 - no helpers then; the import goes on threads
        context = None
        failed.append(err)

    stopping = threading.Event()  # this import has stopped taking results: the tasks under way skip the rest
    helpers_stopping = []  # the same for the helpers, once they are started

    def start() -> None:
        if context is None:
            return
        try:
            event = context.Event()
            helpers_stopping.append(event)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start,
                                       initargs=(os.getpid(), event))
            try:
                pool.submit(os.getpid).result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            ready.append(pool)
        except Exception as err:  # no way to start helpers here
            failed.append(err)

    starter = threading.Thread(target=start, name="import-helpers", daemon=True)
    starter.start()
    if not _THREADS_WHILE_STARTING:
        starter.join()
    threads = ThreadPoolExecutor(max_workers=workers)
    per_task, paced, since = _PROCESS_CHUNK, 0, 0.0  # pictures a task; pictures back since ``since``
    try:
        window, inflight = workers * _WINDOW, 0
        while True:
            while len(pending) < window and inflight < _INFLIGHT_BYTES and not unsent:
                chunk = list(itertools.islice(entries, per_task if ready else _CHUNK))
                if not chunk:
                    break
                prepared = [_prepare(e) for e in chunk]
                jobs = [None if isinstance(x, (ImageRejected, InvalidLabel)) else
                        (str(x) if isinstance(x, Path) else x, folders.of(e.label))  # paths as text
                        for e, x in zip(chunk, prepared)]
                size = sum(len(x[0]) for x in jobs if x is not None and isinstance(x[0], bytes))
                if ready:
                    try:
                        fut = ready[0].submit(_stage_chunk, root, tag, jobs)
                    except Exception:  # no helper could start (no Python to run, no processes left)
                        unsent = chunk
                        break
                else:  # the helpers are not there yet (or cannot start): the same work on a thread here
                    fut = threads.submit(_stage_chunk, root, tag, jobs, stopping)
                pending.append((chunk, prepared, fut, size))
                inflight += size
            if not pending:
                break  # done, or the rest goes on threads (unsent)
            chunk, prepared, fut, size = pending[0]
            try:
                raw = _wait(fut, stop)
            except BrokenProcessPool:
                pending.popleft()
                redo = chunk
                break
            if raw is None:
                return  # stopped: the task goes with the others still pending (see finally)
            pending.popleft()
            inflight -= size
            got = results(prepared, raw)
            received.update(r[1] for r in got if isinstance(r, tuple))
            if ready:
                now = time.monotonic()
                if not since:
                    since = now
                else:
                    paced += len(chunk)
                    if now - since > 0.2:  # the helpers' pace: paced / (now - since) pictures a second
                        per_task = int(min(_PROCESS_CHUNK_MOST, max(
                            _PROCESS_CHUNK_LEAST, _TASK_SECONDS * paced / (now - since) / workers)))
            yield from _handed_out(project, chunk, got)
    finally:
        stopping.set()  # nothing more is taken from the tasks under way (done, stopped, or redone on threads)
        for event in helpers_stopping:
            with contextlib.suppress(Exception):
                event.set()
        for *_, f, _ in pending:
            f.cancel()
        for chunk, prepared, f, _ in pending:  # staged and not taken (a stop), or to do again (a helper died)
            if not f.cancelled():
                with contextlib.suppress(Exception):
                    _discard_written(project, results(prepared, f.result()))
        if redo is not None or unsent:
            redo = (redo or []) + [e for chunk, *_ in pending for e in chunk] + unsent
        threads.shutdown()
        starter.join()
        for pool in ready:
            pool.shutdown()
    if redo is not None:
        # What the helpers staged and never handed over (a helper died, the others were stopped).
        for f in project.tmp_dir.glob(f"{tag}-*.part"):
            if str(f) not in received:
                f.unlink(missing_ok=True)
        yield from _by_threads(project, itertools.chain(redo, entries), workers, _CHUNK, folders, stop)


def _helpers_may_start() -> bool:
    """Whether helper processes may be started from this process.

    Not from a daemon process (Python forbids it), and not when the program's main script would
    run again in each helper: a helper runs the main script again before it takes work, which is
    harmless only when the script keeps its work under ``if __name__ == "__main__"`` (the app's
    own fronts do; a package's ``__main__``, ``python -c`` and notebooks are never run again).
    Otherwise the import decodes on threads.
    """
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return False
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    path = getattr(main, "__file__", None)
    if path is None or name == "__main__" or name.endswith(".__main__") or Path(path).stem == "__main__":
        return True
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""", text, re.MULTILINE) is not None


def import_files(project: Project, sources: Iterable[str | Path], *, label: Optional[str] = None,
                 loose_label: Optional[str] = None, names: Optional[dict[str, str]] = None,
                 progress: ProgressFn = no_progress, stop: Optional[StopToken] = None,
                 workers: Optional[int] = None, processes: Optional[bool] = None) -> ImportReport:
    """Import folders, zip files and image files into ``project``.

    :func:`plan_import` with the same arguments tells in advance what this will do.

    Args:
        label: the class for every file; without it, sub-folders (of a folder
            or a zip) name the classes.
        loose_label: the class for pictures outside every sub-folder (single
            files, a zip or folder of loose pictures); without it they take the
            zip's or folder's name, and single files are refused.
        names: display names for files (uploads arrive under temporary names),
            keyed by path; used in messages and as the recorded source.
        workers: how many pictures are decoded at once (default: one per core, at most 4).
        processes: decode on ``workers`` helper processes rather than threads (when helpers may
            start here, see :func:`_helpers_may_start`). By default, from :data:`_PROCESSES_FROM`
            files on, with two workers or more: threads share one Python, whose lock lets only
            one of them run Python code at a time, and at 96 px a picture's Python code (Pillow's
            header parsing, the checks) costs as much as its decoding.
    Returns:
        An :class:`ImportReport`; refused files are listed with their reason.
    """
    if label is not None:
        label = validate_label(label)
    if loose_label is not None:
        loose_label = validate_label(loose_label)
    names = names or {}
    report = ImportReport()
    entries = list(_entries(sources, label, loose_label))
    total = report.files = len(entries)
    classes_before = {n.casefold() for n in project.labels()}
    progress(Progress(0, total, "Reading images"))

    def flush(batch: list) -> None:
        """On the adding thread: add a batch's pictures in one transaction, then count what became of
        each entry of the batch (pictures, and files refused while it was gathered), in order."""
        pictures = [x for x in batch if x[0] is not None]
        results = iter(adding.add([NewImage(img, e.label, source=names.get(e.name, e.name), staged=tmp)
                                   for e, (img, tmp) in pictures]) if pictures else ())
        for e, got in batch:
            if e is None:  # a file refused before it was added: (None, Rejected)
                report.rejected.append(got)
                continue
            res = next(results)
            if res.error is not None:
                report.rejected.append(Rejected(names.get(e.name, e.name), str(res.error)))
            elif res.duplicate:
                report.duplicates += 1
                old = res.item
                if (old is not None and old.status == "active"
                        and old.label.casefold() != validate_label(e.label).casefold()):
                    report.elsewhere[old.id] = project.find_label(e.label) or validate_label(e.label)
                    report.elsewhere_from[old.id] = old.label
            else:
                report.imported += 1
                report.items.append(res.item.id)

    adder = ThreadPoolExecutor(max_workers=1)  # one thread: the connection of ``adding`` stays on it
    in_flight: list = []  # the batch being added, at most one

    def hand_over(batch: list) -> None:
        """Give ``batch`` to the adding thread (after the one before it is in), and start a new one."""
        if in_flight:
            in_flight.pop().result()  # raises what failed there
        if batch:
            in_flight.append(adder.submit(flush, list(batch)))
            batch.clear()

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    done = failed = 0
    batch: list = []  # (entry, (image, staged file)) or (None, Rejected), in the order the files were read
    pictures = 0  # in ``batch``
    limit = 8
    started = time.monotonic()
    adding = project.adding()  # opened before any picture is written (see SyncPoint)
    folders = _Folders(project)
    if processes is None:
        processes = total >= _PROCESSES_FROM
    if processes and workers > 1 and _helpers_may_start():
        decoded = _by_processes(project, iter(entries), workers, folders, stop)
    else:  # tasks of a few files (fewer hand-overs between threads), yet enough tasks for every thread
        decoded = _by_threads(project, iter(entries), workers, max(1, min(_CHUNK, total // (workers * 8))),
                              folders, stop)
    # Its mark is there before any picture is written in place (see Project.importing), and goes after.
    with project.importing():
        try:
            # The files are decoded and staged by the workers, the batches added on the adding thread (its
            # waits for the disk and the database overlap the decoding), and this thread hands them on.
            for e, result in decoded:
                shown = names.get(e.name, e.name)
                if isinstance(result, (ImageRejected, InvalidLabel)):
                    failed += 1
                    batch.append((None, Rejected(shown, result.reason if isinstance(result, ImageRejected)
                                                 else str(result))))
                else:
                    batch.append((e, result))
                    pictures += 1
                    # One transaction per batch: a commit per picture cost more than decoding it. Batches
                    # start small and double, so the first pictures are in the project at once; while the
                    # batch before is still being added, this one grows (up to _BATCH_MOST pictures).
                    if ((pictures >= limit or time.monotonic() - started > _BATCH_SECONDS)
                            and (not in_flight or in_flight[0].done() or pictures >= _BATCH_MOST)):
                        hand_over(batch)
                        pictures = 0
                        started = time.monotonic()
                        limit = min(_BATCH, limit * 2)
                done += 1
                report.read = done
                progress(Progress(done, total, shown, failed=failed))
                if stop is not None and stop.is_set() and done < total:
                    break
            if stop is not None and stop.is_set() and done < total:  # also when a task under way was left
                report.stopped = True
            hand_over(batch)  # what was decoded before a stop is kept
            hand_over([])
        finally:
            with contextlib.suppress(Exception):  # the error that ended the import is already on its way
                for f in in_flight:
                    f.result()
            # After the last batch is in: a picture written in place and not taken is removed unless that
            # batch put the same picture there (see Project.discard).
            decoded.close()  # pictures written meanwhile are not kept
            _discard_written(project, [r for e, r in batch if e is not None])  # a batch that failed to go in
            adder.submit(adding.close).result()
            adder.shutdown()
            folders.close()
    if report.stopped and report.items:
        # What a stopped import keeps is one step of the history: Undo takes it out again.
        n = len(report.items)
        project.record_added(report.items, f"imported {n} picture{'s' if n != 1 else ''} before the import was "
                             "stopped", new_labels=[c for c in project.labels() if c.casefold() not in classes_before])
    report.labels = project.label_counts()
    return report
