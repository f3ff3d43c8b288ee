"""Classify many pictures at once, hand the answers back as a table, a CSV or sorted folders,
and put a classified picture back into the dataset.

Bulk: dropped pictures, zip files and (on one's own computer) folders become one list of
:class:`Picture` (:func:`gather`; zip files are read with the import's checks: no member
outside the archive, a cap on what a zip unpacks to). :func:`classify_many` decodes each batch on
a thread pool, then scores it, through the same pipeline as a single picture
(:func:`tl_app.predict.picture_pixels`, :func:`tl_app.predict.score_pixels`), so a picture
gets the same answer alone or among a thousand. A file that is not a picture gets a row with
the reason; the rest go on.

Feedback: :func:`add_to_dataset` files one classified picture under a class (the predicted
one, another, or a new one) as one undoable action, recording that it came from Classify
and the file name it had.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from .errors import ImageRejected, InputError
from .images import normalize
from .importer import files_in
from .jobs import Progress, ProgressFn, StopToken, no_progress
from .predict import Prediction, model_for, picture_pixels, score_pixels
from .project import Action, Project, validate_label

#: The folder of the sorted zip that holds pictures the model calls none of its classes.
UNKNOWN_FOLDER = "none of these"
#: Columns of the CSV, in order (``unknown`` and ``unknown_score`` stay empty when the run has no such rule).
CSV_COLUMNS = ["file", "label", "confidence", "unknown", "unknown_score", "top3", "error"]
#: Where provenance is recorded in an added picture's ``meta``.
PROVENANCE = "classified"

_READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, SyntaxError, zipfile.BadZipFile)


@dataclass
class Picture:
    """One file to classify: the name a person knows it by, how to read it, or why it is refused unread."""

    name: str
    read: Callable[[], "bytes | Path"]
    reason: str = ""


def _nothing() -> bytes:
    return b""


def gather(sources: Iterable[str | Path], *, names: Optional[dict[str, str]] = None,
           folders: bool = True) -> list[Picture]:
    """The pictures that files, zip files and folders hold, in the order given.

    ``names`` maps an uploaded path to the name the user gave it (uploads arrive under
    temporary folders). ``folders=False`` refuses folders (a shared server never reads
    its own disk for a visitor). Folder pictures are named ``folder/sub/1.jpg``, zip
    members ``pets.zip!cat/1.jpg``.
    """
    names = names or {}
    out: list[Picture] = []
    for src in sources:
        p = Path(src).expanduser()
        shown = names.get(str(src)) or p.name or str(p)
        if p.is_dir():
            if not folders:
                out.append(Picture(shown, _nothing, "a folder: only the owner may classify folders, on their own "
                                                    "computer"))
                continue
            before = len(out)
            for name, read, reason in files_in(p):
                try:
                    name = f"{p.name}/{Path(name).relative_to(p).as_posix()}"
                except ValueError:
                    pass
                out.append(Picture(name, read, reason))
            if len(out) == before:
                out.append(Picture(f"{shown}/", _nothing, "the folder holds no files"))
            continue
        before = len(out)
        for name, read, reason in files_in(p):
            if name.startswith(p.name + "!"):
                name = shown + name[len(p.name):]
            elif name == str(p):
                name = shown
            out.append(Picture(name, read, reason))
        if len(out) == before:
            out.append(Picture(shown, _nothing, "the zip file holds no files"))
    return out


def _top3(p: Prediction) -> str:
    return "; ".join(f"{k} {v:.0%}" for k, v in p.top(3).items())


@dataclass
class BulkResult:
    """The answer for every picture of a bulk classification, in the order given.

    ``predictions[i]`` answers ``pictures[i]``; ``error`` is set on refused files.
    ``run`` names the model that answered.
    """

    predictions: list[Prediction]
    pictures: list[Picture] = field(repr=False)
    run: str = ""
    seconds: float = 0.0
    stopped: bool = False

    @property
    def classified(self) -> list[Prediction]:
        return [p for p in self.predictions if not p.error]

    @property
    def refused(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error]

    def per_class(self) -> dict[str, int]:
        """Pictures per answer, largest first (pictures called none of the classes under their own key)."""
        c = Counter(UNKNOWN_FOLDER if getattr(p, "unknown", None) else p.label for p in self.classified)
        return dict(c.most_common())

    def summary(self) -> str:
        """One sentence: how many pictures, in how long, per class, how many refused."""
        n = len(self.classified)
        text = f"Classified {n} picture{'s' if n != 1 else ''} in {self.seconds:.1f} s"
        if n:
            text += ": " + ", ".join(f"{k} {v}" for k, v in self.per_class().items())
        bad = len(self.refused)
        if bad:
            text += f"; {bad} file{'s' if bad != 1 else ''} not classified (the table says why)"
        if self.stopped:
            text += "; stopped before the end"
        return text + "."

    def rows(self) -> list[dict]:
        """One dict per picture with the :data:`CSV_COLUMNS` (what the CSV and the JSON output hold)."""
        out = []
        for p in self.predictions:
            unknown = getattr(p, "unknown", None)
            score = getattr(p, "unknown_score", None)
            out.append({"file": p.file, "label": p.label or "", "confidence": "" if p.confidence is None else
                        round(p.confidence, 4), "unknown": "" if unknown is None else str(bool(unknown)).lower(),
                        "unknown_score": "" if score is None else score, "top3": "" if p.error else _top3(p),
                        "error": p.error})
        return out


def classify_many(project: Project, pictures: list[Picture], *, run_id: Optional[str] = None,
                  batch_size: int = 32, workers: Optional[int] = None, progress: ProgressFn = no_progress,
                  stop: Optional[StopToken] = None) -> BulkResult:
    """Classify every picture with the model in use (or ``run_id``'s); refused files get ``error``.

    Each batch of ``batch_size`` pictures is decoded ``workers`` at a time, then scored, so memory
    stays bounded whatever the number of pictures. ``stop`` ends the work between
    batches; the pictures not reached are listed as not classified.
    """
    import numpy as np

    t0 = time.perf_counter()
    _, spec, run = model_for(project, run_id)
    preds = [Prediction(file=p.name, error=p.reason) for p in pictures]
    todo = [i for i, p in enumerate(pictures) if not p.reason]
    chunks = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]

    stored = project.stored_shas()  # one query, not a connection per picture (0.6 ms of its 4.5)

    def decode(i: int):
        try:
            return picture_pixels(project, pictures[i].read(), spec.size, stored=stored)
        except ImageRejected as e:
            return e
        except _READ_ERRORS as e:
            return ImageRejected(f"cannot be read ({e})")

    stopped, done = False, 0
    progress(Progress(0, len(todo), "Reading pictures"))
    with ThreadPoolExecutor(max_workers=workers or max(1, min(4, os.cpu_count() or 1))) as pool:
        for k, chunk in enumerate(chunks):
            # Decoded while the network waits, not during its pass: both use every core, and decoding
            # beside the pass slowed the pass by more than it saved (73 against 79 pictures/s, 2 cores).
            decoded = list(pool.map(decode, chunk))
            good, pixels = [], []
            for i, r in zip(chunk, decoded):
                if isinstance(r, ImageRejected):
                    preds[i].error = r.reason
                else:
                    good.append(preds[i])
                    pixels.append(r)
            if good:
                score_pixels(project, good, np.stack(pixels), run_id=run.id)
            done += len(chunk)
            progress(Progress(done, len(todo), pictures[chunk[-1]].name,
                              failed=sum(1 for i in chunk if preds[i].error)))
            if stop is not None and stop.is_set() and k + 1 < len(chunks):
                for later in chunks[k + 1:]:
                    for i in later:
                        preds[i].error = "not classified: stopped before this picture"
                stopped = True
                break
    from .runs import run_names, list_runs

    name = run_names(list_runs(project)).get(run.id, run.name)
    return BulkResult(preds, pictures, run=name, seconds=time.perf_counter() - t0, stopped=stopped)


def write_csv(result: BulkResult, path: str | Path) -> Path:
    """Write the result as CSV (:data:`CSV_COLUMNS`, one row per file, refused files with their reason)."""
    path = Path(path)
    path.write_text(csv_text(result), encoding="utf-8", newline="")
    return path


def csv_text(result: BulkResult) -> str:
    """The CSV of a result as text."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(result.rows())
    return buf.getvalue()


def _base_name(name: str, i: int) -> str:
    base = name.replace("\\", "/").rsplit("!", 1)[-1].rsplit("/", 1)[-1].strip()
    return base if base and base not in (".", "..") else f"picture-{i + 1}"


def write_sorted_zip(result: BulkResult, path: str | Path) -> Path:
    """A zip with a folder per class holding the classified files as they were given, and the CSV.

    Pictures the model calls none of its classes go to :data:`UNKNOWN_FOLDER`; refused files
    are left out (the CSV lists them). Files keep their names; a second ``1.jpg`` in a
    folder becomes ``1 (2).jpg``.
    """
    path = Path(path)
    used: set[str] = set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("classified.csv", csv_text(result))
        for i, (pic, p) in enumerate(zip(result.pictures, result.predictions)):
            if p.error:
                continue
            folder = UNKNOWN_FOLDER if getattr(p, "unknown", None) else p.label
            base = _base_name(pic.name, i)
            stem, dot, ext = base.rpartition(".")
            stem, ext = (stem, "." + ext) if dot and stem else (base, "")
            arc, n = f"{folder}/{base}", 1
            while arc.casefold() in used:
                n += 1
                arc = f"{folder}/{stem} ({n}){ext}"
            used.add(arc.casefold())
            try:
                src = pic.read()
                data = src.read_bytes() if isinstance(src, Path) else src
            except (ImageRejected, *_READ_ERRORS):
                continue  # read a moment ago: gone since; the CSV still has its row
            zf.writestr(arc, data)
    return path


# --- feedback: a classified picture goes into the dataset ------------------------------------------
def add_to_dataset(project: Project, src: "str | Path | bytes", label: str, *, name: str,
                   prediction: Optional[Prediction] = None) -> Action:
    """File a classified picture under ``label`` (an existing class or a new one) as one undoable action.

    The picture goes through the import's pipeline; the item records its provenance
    (``meta["provenance"] == "classified"``), the file name it had (``meta["name"]``, also its
    source) and what the model said of it. Undo (``Project.undo``) moves it to the trash
    and removes a class it created. Raises :class:`InputError` for a bad class name or a
    picture already in the dataset, :class:`ImageRejected` for a file that is not a picture.
    """
    if not isinstance(label, str) or not label.strip():
        raise InputError("Choose the class to add the picture to, or type a new class name.")
    label = validate_label(label)
    raw = Path(src).read_bytes() if isinstance(src, (str, Path)) else bytes(src)
    old = project.find_sha(hashlib.sha256(raw).hexdigest())
    if old is not None and old.status == "active":  # one of the dataset's own files, byte for byte
        raise InputError(f"This picture is already in the dataset, in '{old.label}'.")
    image = normalize(raw)
    meta = {"provenance": PROVENANCE, "name": name}
    if prediction is not None and prediction.label:
        meta.update(predicted=prediction.label, confidence=prediction.confidence)
        if getattr(prediction, "unknown", None) is not None:
            meta["unknown"] = bool(prediction.unknown)
    return project.add_undoable(image, label, source=name, meta=meta)
