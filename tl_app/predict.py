"""Classify images with a model the project recorded.

Images go through the same pipeline as imported ones (normalise, re-encode,
decode, resize) so that a picture gets the same pixels here as in training.
Models are loaded only from recorded runs, after checking their hash; loaded
models (with their none-of-these scorer) are kept per run and model hash in a
small cache. What can change between two calls is read again on every call, on
one database connection: which run is in use and what its classes are called now.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from . import config, openset, runs
from .compute import on_compute_thread
from .errors import ImageRejected, RunNotFound
from .images import normalize
from .models import ModelSpec, fold_batchnorm, load_model
from .project import Project

_cache: dict[tuple[str, str], tuple[object, ModelSpec, object]] = {}
_cache_lock = threading.Lock()


@dataclass
class Prediction:
    """Top label and probabilities for one image; ``error`` is set when the image was refused."""

    file: str
    label: Optional[str] = None
    confidence: Optional[float] = None
    probs: dict[str, float] = field(default_factory=dict)
    error: str = ""
    #: None of the classes? True above the run's threshold; None when the run recorded none (no claim).
    unknown: Optional[bool] = None
    #: How unlike every known class it is (higher: less like them); see :mod:`tl_app.openset`.
    unknown_score: Optional[float] = None

    def to_dict(self) -> dict:
        d = {"file": self.file, "label": self.label, "confidence": self.confidence, "probs": self.probs,
             "unknown": self.unknown, "unknown_score": self.unknown_score}
        if self.error:
            d["error"] = self.error
        return d

    def top(self, k: int = 3) -> dict[str, float]:
        return dict(sorted(self.probs.items(), key=lambda kv: -kv[1])[:k])


def _loaded_run(project: Project, run_id: Optional[str]):
    """``(model, spec, scorer, run)``: the run (default: the one in use) read now, its model from the cache."""
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None:
        raise RunNotFound("No trained model yet: train one in the Train tab (or `python -m tl_app train`).")
    if not run.has_model:
        raise RunNotFound(f"Run {run.id} has no model ({run.status}).")
    # The recorded hash is part of the key: a model file recorded anew is loaded anew, never served stale.
    key = (str(project.root), run.id, run.model_sha256)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None:
            # On the thread its passes will run on (see tl_app.compute): folding checks the answers with a pass.
            model, spec = on_compute_thread(_load_folded, runs.run_dir(project, run.id), run.model_sha256,
                                            project.root)
            if len(_cache) >= 4:
                _cache.pop(next(iter(_cache)))
            _cache[key] = hit = (model, spec, openset.load_scorer(runs.run_dir(project, run.id)))
    return hit[0], hit[1], hit[2], run


def _load_folded(folder: Path, sha256: str, root: Path):
    model, spec = load_model(folder, sha256, root)
    fold_batchnorm(model, spec)  # only ever used for inference here
    return model, spec


def model_for(project: Project, run_id: Optional[str] = None):
    """``(model, spec, run)`` for a run (default: the active run), loaded once per process."""
    model, spec, _, run = _loaded_run(project, run_id)
    return model, spec, run


def open_set_for(project: Project, run_id: str):
    """The none-of-these scorer of a run, loaded with its model (None: the run recorded no rule)."""
    return _loaded_run(project, run_id)[2]


@dataclass
class Scoring:
    """What scoring pictures with a run needs, read once for a call: the model, its none-of-these
    scorer, the run, and its classes as the project names them now (see :func:`scoring`)."""

    model: object
    spec: ModelSpec
    scorer: object
    run: object
    classes: object


def scoring(project: Project, run_id: Optional[str] = None) -> Scoring:
    """The run in use (or ``run_id``) ready to score pictures, read on one database connection.

    The model and scorer come from the cache; which run is in use and what its classes are called
    are read now, so a new run or a renamed class shows in the very next answer.
    """
    from .class_map import class_map

    with project.reading():
        model, spec, scorer, run = _loaded_run(project, run_id)
        classes = class_map(project, run, spec.vocab)  # renamed, merged or deleted since the run: named as now
    return Scoring(model, spec, scorer, run, classes)


def _pixels_from_bytes(data: bytes, size: int):
    import numpy as np

    from .features import load_image_for_model

    return np.asarray(load_image_for_model(io.BytesIO(data), size))


def _as_stored(project: Project, src: Path | bytes, stored: Optional[set[str]] = None) -> bytes:
    """The JPEG bytes the project would store for this file (or does store, byte for byte).

    ``stored``: the project's :meth:`~tl_app.project.Project.stored_shas`, when the caller read them
    once for many pictures (else each picture's hash is looked up on its own).
    """
    def is_stored(raw: bytes) -> bool:
        sha = hashlib.sha256(raw).hexdigest()
        return sha in stored if stored is not None else project.find_sha(sha) is not None

    if isinstance(src, (bytes, bytearray)):
        raw = bytes(src)
        if len(raw) <= config.MAX_IMPORT_BYTES and is_stored(raw):
            return raw
        return normalize(raw).data
    path = src
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageRejected(f"cannot be read ({e.strerror or e})") from None
    if path.is_dir():
        raise ImageRejected("a folder, not a picture")
    if size <= config.MAX_IMPORT_BYTES:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ImageRejected(f"cannot be read ({e.strerror or e})") from None
        if is_stored(raw):
            return raw  # already a stored picture: re-encoding it would change its pixels
        if len(raw) <= config.MAX_IMPORT_BYTES:  # (a file that grew since its size was read: normalize reads it)
            return normalize(raw).data  # the bytes just read: not read a second time
    return normalize(path).data


def picture_pixels(project: Project, src: Path | bytes, size: int, *, stored: Optional[set[str]] = None):
    """A picture (a file, or a file's bytes) as the network sees it: uint8 (size, size, 3).

    The same pixels the picture would have once imported (see :func:`_as_stored`, and its
    ``stored``); raises :class:`ImageRejected` naming why a file is not a usable picture.
    """
    return _pixels_from_bytes(_as_stored(project, src, stored), size)


def predict_files(project: Project, files: Iterable[str | Path], *, run_id: Optional[str] = None,
                  names: Optional[dict[str, str]] = None) -> list[Prediction]:
    """Predict every file; a file that is not a usable image gets ``error`` and the rest go on.

    Classes are named as the project names them now (see :mod:`tl_app.class_map`): a class
    renamed since training answers with its new name, merged classes as one (probabilities
    summed), a deleted one as "deleted class 'x'".
    """
    names = names or {}
    return _predict(project, [(names.get(str(f), str(f)), Path(f)) for f in files], run_id)


def predict_bytes(project: Project, data: bytes, name: str, *, run_id: Optional[str] = None) -> Prediction:
    """One picture's bytes (what a program sends over HTTP), answered as :func:`predict_files` answers a
    file named ``name``: a refused picture gets ``error`` (why), not an exception."""
    [p] = _predict(project, [(name, bytes(data))], run_id)
    return p


def _predict(project: Project, pictures: list[tuple[str, Path | bytes]], run_id: Optional[str]) -> list[Prediction]:
    """``(shown name, file or bytes)`` pairs, predicted in one pass."""
    import numpy as np

    preds: list[Prediction] = []
    good: list[tuple[int, object]] = []
    with project.reading():  # one database connection for the whole call
        with_run = scoring(project, run_id)
        for shown, src in pictures:
            p = Prediction(file=shown)
            try:
                good.append((len(preds), _pixels_from_bytes(_as_stored(project, src), with_run.spec.size)))
            except ImageRejected as e:
                p.error = e.reason
            preds.append(p)
    if good:
        score_pixels(project, [preds[i] for i, _ in good], np.stack([g[1] for g in good]), scored_by=with_run)
    return preds


def score_pixels(project: Project, preds: list[Prediction], pixels, *, run_id: Optional[str] = None,
                 scored_by: Optional[Scoring] = None) -> None:
    """Fill the label, confidence, probabilities and none-of-these of ``preds`` from their decoded pictures.

    ``pixels`` is uint8 (N, S, S, 3) at the model's size, in the order of ``preds``: the one
    scoring step that :func:`predict_files` and bulk classification (:mod:`tl_app.classify`) share.
    Classes are named as the project names them now (:mod:`tl_app.class_map`). ``scored_by`` is
    :func:`scoring`'s answer when the caller already read it (else it is read for ``run_id``). The
    logits and the none-of-these features come from one forward pass.
    """
    from .features import embed_logits, embed_with_stages, softmax

    s = scored_by or scoring(project, run_id)
    model, spec, classes, scorer = s.model, s.spec, s.classes, s.scorer

    def forward():
        if scorer is not None and scorer.features in ("layers", "stages"):
            logits, _, stage_feats = embed_with_stages(model, pixels, spec, kind=scorer.features)
            return (logits, *scorer.score(stage_feats, logits))
        logits, feats = embed_logits(model, pixels, spec)
        if scorer is not None:  # a version-1 rule: distances in the pooled features
            return (logits, *scorer.score(feats, logits))
        return logits, None, None

    logits, scores, unknown = on_compute_thread(forward)
    for j, (p, pr) in enumerate(zip(preds, softmax(logits))):
        d = classes.as_dict(pr)
        best = max(d, key=d.get)
        p.label, p.confidence, p.probs = best, d[best], d
        if scorer is not None:
            p.unknown, p.unknown_score = bool(unknown[j]), round(float(scores[j]), 4)


def probs_for_files(project: Project, files: Iterable[str | Path], *, run_id: Optional[str] = None):
    """Unrounded probabilities (files x vocab) and the vocab, by Classify's own path; a refused file raises.

    What an export's parity check compares against (:mod:`tl_app.share.bundle`).
    """
    import numpy as np

    from .features import predict_pixels

    model, spec, _ = model_for(project, run_id)
    pixels = [_pixels_from_bytes(_as_stored(project, Path(f)), spec.size) for f in files]
    if not pixels:
        return np.zeros((0, len(spec.vocab)), np.float32), spec.vocab
    return predict_pixels(model, np.stack(pixels), spec), spec.vocab


def _item_pixels(project: Project, item_ids: list[str], size: int):
    """The items' pictures for the network, streamed from disk in batches (not all held at once)."""
    from .features import Pictures

    return Pictures([project.path_of(project.item(i)) for i in item_ids], size)


def predict_items(project: Project, item_ids: list[str], *, run_id: Optional[str] = None):
    """Probabilities for items already in the project (array in ``item_ids`` order) and the model's own vocab
    (its names when trained; :func:`tl_app.class_map.class_map` says what they are called now)."""
    from .features import predict_pixels

    model, spec, _ = model_for(project, run_id)
    return predict_pixels(model, _item_pixels(project, item_ids, spec.size), spec), spec.vocab


def embed_items(project: Project, item_ids: list[str], *, run_id: Optional[str] = None):
    """``(probs, features, vocab)`` for items already in the project: what Review needs of new items."""
    from .features import embed_pixels

    model, spec, _ = model_for(project, run_id)
    probs, emb = embed_pixels(model, _item_pixels(project, item_ids, spec.size), spec)
    return probs, emb, spec.vocab
