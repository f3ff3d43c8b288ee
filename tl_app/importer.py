"""Import images from folders, zip files and single files into a project.

Every file goes through :func:`tl_app.images.normalize`; a refused file gets a
reason in the report and the import goes on. Decoding runs on a small thread
pool (Pillow releases the GIL while it decodes); the database writes stay on
the calling thread.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from . import config
from .errors import ImageRejected, InvalidLabel, TLError
from .images import normalize
from .jobs import Progress, ProgressFn, StopToken, no_progress
from .project import Project, validate_label

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
    """What an import did. ``labels`` holds the project's image count per class afterwards."""

    imported: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)
    stopped: bool = False

    def to_dict(self) -> dict:
        return {"imported": self.imported, "duplicates": self.duplicates,
                "rejected": [{"file": r.file, "reason": r.reason} for r in self.rejected],
                "labels": dict(self.labels)}

    def summary(self) -> str:
        parts = [f"{self.imported} imported"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate{'s' if self.duplicates != 1 else ''} skipped")
        if self.rejected:
            parts.append(f"{len(self.rejected)} refused")
        if self.stopped:
            parts.append("stopped")
        return ", ".join(parts)


@dataclass
class _Entry:
    name: str                      # shown in messages and kept as the source
    label: Optional[str]
    read: Callable[[], bytes | Path]
    reason: str = ""               # set when the entry is refused before reading


def _is_junk(name: str) -> bool:
    n = name.lower()
    return n in _JUNK or n.startswith(".") or n.startswith("._")


def _unsafe_member(name: str) -> bool:
    n = name.replace("\\", "/")
    return n.startswith("/") or ".." in n.split("/") or (len(n) > 1 and n[1] == ":")


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        for fn in sorted(filenames):
            if not _is_junk(fn):
                yield Path(dirpath) / fn


def _folder_entries(folder: Path, label: Optional[str]) -> Iterator[_Entry]:
    """A folder: sub-folders are classes; files directly inside take the folder's own name."""
    if label is not None:
        for f in _walk_files(folder):
            yield _Entry(str(f), label, lambda f=f: f)
        return
    for child in sorted(folder.iterdir()):
        if _is_junk(child.name):
            continue
        if child.is_dir():
            for f in _walk_files(child):
                yield _Entry(str(f), child.name, lambda f=f: f)
        elif child.is_file():
            yield _Entry(str(child), folder.name, lambda f=child: f)


def _zip_entries(path: Path, label: Optional[str]) -> Iterator[_Entry]:
    """A zip file: its top-level folders are classes (a single wrapping folder is skipped)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        yield _Entry(str(path), label, lambda: b"", reason=f"not a readable zip file ({e})")
        return
    infos = []
    for i in zf.infolist():
        if i.is_dir():
            continue
        if _unsafe_member(i.filename):  # never extracted, but say so rather than drop it as "hidden"
            yield _Entry(f"{path.name}!{i.filename}", label, lambda: b"",
                         reason="its path inside the zip leads outside the archive (unsafe zip)")
        elif not any(_is_junk(p) for p in i.filename.replace("\\", "/").split("/")):
            infos.append(i)
    parts = [i.filename.replace("\\", "/").strip("/").split("/") for i in infos]
    # "dataset/cat/1.jpg, dataset/dog/2.jpg": drop the wrapping folder (a README beside
    # the class folders must not turn the wrapper itself into the only class).
    while (parts and len({p[0] for p in parts}) == 1 and all(len(p) > 1 for p in parts)
           and any(len(p) > 2 for p in parts)):
        parts = [p[1:] for p in parts]
    total = 0
    for info, p in zip(infos, parts):
        name = f"{path.name}!{info.filename}"
        lab = label if label is not None else (p[0] if len(p) > 1 else path.stem)
        total += info.file_size
        if info.file_size > config.MAX_IMPORT_BYTES:
            yield _Entry(name, lab, lambda: b"", reason=f"the file is too large ({info.file_size / 1e6:.0f} MB)")
            continue
        if total > config.MAX_ZIP_TOTAL_BYTES:
            yield _Entry(name, lab, lambda: b"", reason="the zip file unpacks to more than the import limit")
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

        yield _Entry(name, lab, read)


def _entries(sources: Iterable[str | Path], label: Optional[str]) -> Iterator[_Entry]:
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            yield from _folder_entries(p, label)
        elif p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            yield from _zip_entries(p, label)
        elif p.is_file():
            yield _Entry(str(p), label, lambda p=p: p,
                         reason="" if label is not None else "no class given for this file (choose a class, or --label NAME)")
        else:
            yield _Entry(str(p), label, lambda: b"", reason="no such file or folder")


def import_files(project: Project, sources: Iterable[str | Path], *, label: Optional[str] = None,
                 names: Optional[dict[str, str]] = None, progress: ProgressFn = no_progress,
                 stop: Optional[StopToken] = None, workers: Optional[int] = None) -> ImportReport:
    """Import folders, zip files and image files into ``project``.

    Args:
        label: the class for every file; without it, sub-folders (of a folder
            or a zip) name the classes.
        names: display names for files (uploads arrive under temporary names),
            keyed by path; used in messages and as the recorded source.
    Returns:
        An :class:`ImportReport`; refused files are listed with their reason.
    """
    if label is not None:
        label = validate_label(label)
    names = names or {}
    report = ImportReport()
    entries = list(_entries(sources, label))
    total = len(entries)
    progress(Progress(0, total, "Reading images"))

    def work(e: _Entry):
        if e.reason:
            return ImageRejected(e.reason)
        try:
            if e.label is not None:
                validate_label(e.label)
            return normalize(e.read())
        except (ImageRejected, InvalidLabel) as err:
            return err
        except (OSError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as err:
            return ImageRejected(f"cannot be read ({err})")

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Submit in small windows so that Stop takes effect quickly and memory stays bounded.
        window = workers * 4
        it = iter(entries)
        pending: list = []
        while True:
            while len(pending) < window:
                e = next(it, None)
                if e is None:
                    break
                pending.append((e, pool.submit(work, e)))
            if not pending:
                break
            e, fut = pending.pop(0)
            result = fut.result()
            shown = names.get(e.name, e.name)
            if isinstance(result, (ImageRejected, InvalidLabel)):
                reason = result.reason if isinstance(result, ImageRejected) else str(result)
                report.rejected.append(Rejected(shown, reason))
            else:
                try:
                    res = project.add_image(result, e.label, source=shown)
                except TLError as err:
                    report.rejected.append(Rejected(shown, str(err)))
                else:
                    if res.duplicate:
                        report.duplicates += 1
                    else:
                        report.imported += 1
                        report.items.append(res.item.id)
            done += 1
            progress(Progress(done, total, shown, failed=len(report.rejected)))
            if stop is not None and stop.is_set():
                report.stopped = True
                for _, f in pending:
                    f.cancel()
                break
    report.labels = project.label_counts()
    return report
