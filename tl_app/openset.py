"""None of these: how unlike every known class a picture is, and where "unknown" starts.

Version 3 (recorded by quick and full runs now). Its parts, each higher = less known:

- **k-NN distance per layer** (Sun et al., ICML 2022, "Out-of-distribution detection with deep
  nearest neighbors"): the distance from the picture to its nearest training picture (k = 1), in each
  layer of the network on its own: the stem (what enters the first stage) and every stage. A layer's
  features are its output pooled per channel as max, mean and standard deviation (first and second
  moments: the per-layer feature statistics that Lee et al., NeurIPS 2018, "A simple unified framework
  for detecting out-of-distribution samples and adversarial attacks", ensemble over layers), each
  statistic and the layer's block scaled to unit length (:class:`tl_app.features.StagePool`). The stem
  and first stage keep colour and local texture that the last stages pool away: a picture of a known
  shape in an unseen colour is near its class in the last stage and far from everything in the stem.
- **energy** (Liu et al., NeurIPS 2020): ``-logsumexp(logits)``; a confident answer has low energy.
  Max-softmax (``1 - max p``, Hendrycks & Gimpel 2017) is the bench's baseline.

Each part is z-normalised on the run's held-out known pictures (floored at ``Z_FLOOR``) and the score is
their weighted sum. Which layers tell unseen kinds apart depends on the network and the data (on the
bench, the stem for colour-coded shapes with a random body, the middle stages for digits), and the app
never has unknown pictures to tune on. Lee et al. fit their layer weights by logistic regression on
validation out-of-distribution samples; here the out-of-distribution samples are made from known ones,
as in leave-out-class validation (Vyas et al., ECCV 2018, "Out-of-distribution detection using an
ensemble of self supervised leave-out classifiers"): each known class in turn is left out of the bank
and of the logits, and its held-out pictures play an unseen kind (:func:`leave_class_out`). Negative
weights are dropped and the weights sum to 1. The threshold is set on the held-out pictures so that 95%
of new known pictures are accepted (:func:`threshold_for`); above it is "none of these".

Everything is recorded in the run's ``unknown.json`` (parts, normalisation, weights, layer widths,
threshold) and ``unknown_bank.npy`` (the training pictures' layer features, float16, named by its hash:
resnet18 has 3,072 values per picture, 6,144 bytes, about 307 MB for 50,000 training pictures; the
scorer reads the bank in chunks, never as a whole float32 copy). A run without it (trained before) makes
no claim. Runs recorded by earlier versions keep their rule and still make their claim: version 2 (one
k-NN distance in the last four stages, max and average pooled, plus energy, summed alike) and version 1
(the pooled last-stage features of ``embeddings.npy``, k of about 1% of the bank).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: Share of held-out known pictures the threshold accepts.
KNOWN_ACCEPTED = 0.95
#: Held-out pictures a run needs before the app says "none of these": the fewest for which the
#: conformal threshold exists at 95% (19). With fewer, about 1 new known picture in 4 was called
#: unknown (6 held out), so the app makes no claim rather than a wrong one.
MIN_HELD_OUT = 19
FILE = "unknown.json"
#: The k-NN bank of a version-2 or -3 rule: the training pictures' stage or layer features (float16).
BANK_FILE = "unknown_bank.npy"
#: Which features a rule measures distances in: "layers" (version 3, :class:`tl_app.features.StagePool`
#: of kind "layers"), "stages" (version 2, its kind "stages") or "pooled" (version 1: the head's input,
#: as stored in ``embeddings.npy``).
FEATURES = ("layers", "stages", "pooled")
VERSIONS = {1: "pooled", 2: "stages", 3: "layers"}
#: k of the k-NN distance (versions 2 and 3; version 3 supports only k = 1). On bench/unknown.py k = 1 did
#: best in every cell (digits and drawn shapes, quick and full runs, either features); banks hold 384-812 pictures.
DEFAULT_K = 1
#: Which signals a version-2 rule adds up (z-normalised); bench/unknown.py measures the others.
DEFAULT_PARTS = ("knn", "energy")
#: No part's z-score counts below this (see :meth:`OpenSet.combine`).
Z_FLOOR = -1.0
#: Parts the scorer knows (version 3 adds one k-NN part per layer, "knn:0" for the stem, see :func:`layer_parts`).
PARTS = ("knn", "energy", "msp")
#: Logistic regression's L2 strength for version 3's weights (as scikit-learn's ``C``).
WEIGHTS_C = 1.0


def layer_parts(n_layers: int) -> tuple:
    """Version 3's parts: the k-NN distance in each layer (``knn:0`` the stem, then each stage) and energy."""
    return tuple(f"knn:{i}" for i in range(n_layers)) + ("energy",)


def l2_normalise(X):
    """Rows scaled to unit length (float32); a zero row stays zero."""
    import numpy as np

    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def default_k(n_bank: int) -> int:
    """The first version's k for a bank of ``n_bank`` pictures (about 1% of it, 1 to 50); now :data:`DEFAULT_K`."""
    return int(max(1, min(50, round(n_bank / 100))))


def knn_distance(bank_n, query_n, k: int, *, chunk: int = 1024):
    """Distance from each (normalised) query row to its k-th nearest (normalised) bank row."""
    import numpy as np

    bank_n = np.asarray(bank_n, dtype=np.float32)
    query_n = np.asarray(query_n, dtype=np.float32)
    k = max(1, min(int(k), len(bank_n)))
    out = np.zeros(len(query_n), dtype=np.float64)
    for s in range(0, len(query_n), chunk):
        sim = query_n[s:s + chunk] @ bank_n.T
        # k-th largest similarity = k-th smallest distance (for unit vectors d^2 = 2 - 2 cos)
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
        out[s:s + chunk] = np.sqrt(np.clip(2.0 - 2.0 * kth, 0.0, None))
    return out


def energy(logits):
    """Energy score ``-logsumexp(logits)`` per row (higher: less like the classes)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    m = z.max(1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(1)))


def msp(logits):
    """``1 - max softmax`` per row (the max-softmax baseline, higher: less sure)."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return 1.0 - (e / e.sum(1, keepdims=True)).max(1)


def raw_parts(bank_n, feats, logits, k: int, parts=PARTS) -> dict:
    """Each signal's raw value for some pictures: ``{"knn": ..., "energy": ..., "msp": ...}``."""
    out = {}
    if "knn" in parts:
        out["knn"] = knn_distance(bank_n, l2_normalise(feats), k)
    if "energy" in parts:
        out["energy"] = energy(logits)
    if "msp" in parts:
        out["msp"] = msp(logits)
    return out


@dataclass
class OpenSet:
    """A run's none-of-these rule: the score's parts, their normalisation, and the threshold."""

    parts: tuple
    k: int
    norm: dict            # part -> (mean, std) on the held-out known pictures
    threshold: float
    held_out: int         # how many known pictures set it
    bank: int = 0         # training pictures in the k-NN bank
    accepted: float = KNOWN_ACCEPTED
    embeddings_sha256: str = ""   # version 1: the embeddings.npy its bank came from
    features: str = "stages"
    bank_sha256: str = ""         # versions 2 and 3: its unknown_bank.npy
    widths: tuple = ()            # version 3: each layer's width in the bank's rows
    weights: Optional[dict] = None  # version 3: part -> weight (set on held-out pictures); None: all 1

    @property
    def version(self) -> int:
        return {v: k for k, v in VERSIONS.items()}[self.features]

    def combine(self, raw: dict):
        """The score from the parts' raw values: the (weighted) sum of their z-scores, each at least ``Z_FLOOR``.

        The floor keeps one part from cancelling another: a network extrapolates to huge logits far
        from its training pictures (a very low energy, "surer than ever"), which must not hide that
        the picture is far from every training picture.
        """
        import numpy as np

        total = None
        for p in self.parts:
            mu, sd = self.norm[p]
            z = np.maximum((np.asarray(raw[p], dtype=np.float64) - mu) / sd, Z_FLOOR)
            if self.weights is not None:
                z = self.weights[p] * z
            total = z if total is None else total + z
        return total

    def to_dict(self) -> dict:
        d = {"version": self.version, "features": self.features,
             "parts": list(self.parts), "k": self.k,
             "norm": {p: [float(m), float(s)] for p, (m, s) in self.norm.items()},
             "threshold": float(self.threshold), "held_out": self.held_out, "bank": self.bank,
             "accepted": self.accepted}
        if self.features == "pooled":
            d["embeddings_sha256"] = self.embeddings_sha256
        else:
            d["bank_file"], d["bank_sha256"] = BANK_FILE, self.bank_sha256
        if self.features == "layers":
            d["widths"] = [int(w) for w in self.widths]
            d["weights"] = {p: float(self.weights[p]) for p in self.parts}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OpenSet":
        """A recorded rule: version 3 (every layer, weighted), 2 (last four stages) or 1 (pooled features)."""
        parts = tuple(d["parts"])
        features = VERSIONS.get(d.get("version"))
        if features is None or d.get("features", features) != features:
            raise ValueError("unknown none-of-these record")
        widths, weights = (), None
        if features == "layers":
            widths = tuple(int(w) for w in d["widths"])
            if not widths or min(widths) < 1 or parts != layer_parts(len(widths)):
                raise ValueError("unknown none-of-these record")
            weights = {p: float(d["weights"][p]) for p in parts}
        elif not parts or any(p not in PARTS for p in parts):
            raise ValueError("unknown none-of-these record")
        norm = {p: (float(d["norm"][p][0]), float(d["norm"][p][1])) for p in parts}
        t = float(d["threshold"])
        numbers = [v for mv in norm.values() for v in mv] + [t] + list((weights or {}).values())
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("non-finite none-of-these record")
        return cls(parts, int(d["k"]), norm, t, int(d.get("held_out", 0)), int(d.get("bank", 0)),
                   float(d.get("accepted", KNOWN_ACCEPTED)), str(d.get("embeddings_sha256", "")),
                   features, str(d.get("bank_sha256", "")), widths, weights)


def fit(train_feats, valid_feats, valid_logits, *, parts=DEFAULT_PARTS, k: Optional[int] = None,
        accepted: float = KNOWN_ACCEPTED, features: str = "stages") -> OpenSet:
    """Set the rule on a run's held-out known pictures, scored against its training pictures.

    ``train_feats`` are the bank (the pictures the head learned from), ``valid_feats`` and
    ``valid_logits`` the held-out pictures: they stand in for new pictures of known classes.
    ``features`` names what the rows are (see :data:`FEATURES`); nothing else depends on it here.
    """
    import numpy as np

    if features not in FEATURES:
        raise ValueError(f"features: one of {FEATURES}")
    bank_n = l2_normalise(train_feats)
    k = DEFAULT_K if k is None else int(k)
    raw = raw_parts(bank_n, valid_feats, valid_logits, k, parts)
    norm = {}
    for p in parts:
        v = np.asarray(raw[p], dtype=np.float64)
        mu, sd = float(v.mean()), float(v.std())
        norm[p] = (mu, sd if sd > 1e-6 else 1e-6)
    model = OpenSet(tuple(parts), k, norm, 0.0, len(valid_feats), len(bank_n), accepted, features=features)
    model.threshold = threshold_for(model.combine(raw), accepted)
    return model


def _layer_slices(widths) -> list:
    import numpy as np

    ends = np.cumsum([0, *widths])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


#: Largest float32 copy of a bank's layer blocks a :class:`Scorer` keeps (:func:`layer_blocks`): 512 MB, a
#: bank of about 43,000 training pictures (resnet18's 3,072 numbers each). Past it each query converts the
#: float16 bank a chunk at a time. The app keeps the scorers of up to 4 runs (:mod:`tl_app.predict`).
BLOCKS_MOST_BYTES = 512 << 20


def layer_blocks(bank, widths, most_bytes: int = BLOCKS_MOST_BYTES):
    """Each layer's block of a bank, scaled to unit length, float32: what :func:`nearest_by_class` otherwise
    computes from the float16 bank for every query (the same numbers), or None past ``most_bytes``.

    Made once when a run's scorer is loaded: converting and scaling the bank for each query cost one
    picture 35 ms with 4,000 training pictures and 0.4 s with 40,000, more than its forward pass.
    """
    import numpy as np

    if len(bank) * sum(widths) * 4 > most_bytes:
        return None
    return [np.ascontiguousarray(l2_normalise(np.asarray(bank[:, s], dtype=np.float32)))
            for s in _layer_slices(widths)]


def nearest_by_class(bank, query, widths, labels=None, n_classes: int = 1, *, chunk: int = 4096, blocks=None):
    """Cosine similarity of each query row to its nearest bank row, per layer and per class: (layers, queries,
    classes), -inf for a class with no bank row. ``labels=None``: one class (the nearest of all).

    Each layer's block is compared on its own (scaled to unit length). The bank is read ``chunk`` rows at a
    time and may stay float16: a large bank is never copied whole to float32. ``blocks``: the bank's
    :func:`layer_blocks`, when made once already (then the bank itself is not read).
    """
    import numpy as np

    sl = _layer_slices(widths)
    query = np.asarray(query, dtype=np.float32)
    qs = [l2_normalise(query[:, s]) for s in sl]
    best = np.full((len(sl), len(query), n_classes), -np.inf, dtype=np.float32)
    labels = None if labels is None else np.asarray(labels)
    # Each similarity block is (queries x chunk): at most 4M numbers (16 MB), however many pictures are held out.
    chunk = max(64, min(chunk, (1 << 22) // max(1, len(query))))
    n = len(blocks[0]) if blocks is not None else len(bank)
    for b0 in range(0, n, chunk):
        b = None if blocks is not None else np.asarray(bank[b0:b0 + chunk], dtype=np.float32)
        lab = None if labels is None else labels[b0:b0 + chunk]
        for li, s in enumerate(sl):
            sim = qs[li] @ (blocks[li][b0:b0 + chunk] if b is None else l2_normalise(b[:, s])).T
            if lab is None:
                np.maximum(best[li, :, 0], sim.max(1), out=best[li, :, 0])
                continue
            for c in np.unique(lab):
                np.maximum(best[li, :, c], sim[:, lab == c].max(1), out=best[li, :, c])
    return best


def _distance(sim):
    import numpy as np

    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(sim, dtype=np.float64), 0.0, None))


def _logistic_weights(X, y, C: float = WEIGHTS_C, iters: int = 50):
    """Coefficients of an L2-penalised, class-balanced logistic regression (Newton's method; intercept free)."""
    import numpy as np

    X = np.c_[np.asarray(X, dtype=np.float64), np.ones(len(X))]
    y = np.asarray(y, dtype=np.float64)
    sw = np.where(y == 1, len(y) / (2.0 * max(1, y.sum())), len(y) / (2.0 * max(1, len(y) - y.sum())))
    pen = np.r_[np.ones(X.shape[1] - 1), 0.0] / C
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
        g = X.T @ (sw * (p - y)) + pen * w
        H = (X * (sw * p * (1 - p))[:, None]).T @ X + np.diag(pen + 1e-9)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1]


def leave_class_out(sims, valid_labels, valid_logits, parts: tuple):
    """Pseudo-unknowns from known pictures: each class in turn is left out of the bank and of the logits,
    and its held-out pictures play the unknowns. Returns ``(X, y)``: every part's floored z-score (standardised
    on the other classes' held-out pictures) and 1 for a left-out picture; ``(None, None)`` when no class can
    be left out (fewer than two classes with held-out pictures)."""
    import numpy as np

    yv = np.asarray(valid_labels)
    logits = np.asarray(valid_logits, dtype=np.float64)
    n_classes = sims.shape[2]
    Xs, ys = [], []
    for c in range(n_classes):
        out, rest = yv == c, yv != c
        others = [i for i in range(n_classes) if i != c]
        if not out.any() or rest.sum() < 2 or not others or not np.isfinite(sims[:, :, others].max(2)).all():
            continue
        raw = [_distance(sims[li][:, others].max(1)) for li in range(sims.shape[0])]
        if "energy" in parts:
            raw.append(energy(logits[:, others]))
        R = np.stack(raw, 1)
        mu, sd = R[rest].mean(0), np.maximum(R[rest].std(0), 1e-6)
        Xs.append(np.maximum((R - mu) / sd, Z_FLOOR))
        ys.append(out.astype(np.int64))
    if len(Xs) < 2:
        return None, None
    return np.concatenate(Xs), np.concatenate(ys)


def fit_layers(train_feats, train_labels, valid_feats, valid_labels, valid_logits, widths, *,
               accepted: float = KNOWN_ACCEPTED) -> OpenSet:
    """Set a version-3 rule on a run's held-out known pictures: one k-NN part per layer, and energy.

    Each part is z-normalised on the held-out pictures. Their weights come from the held-out pictures
    too, never from unknown ones (the app has none): each known class in turn is left out of the bank
    and of the logits, its held-out pictures stand in for an unseen kind, and a logistic regression on
    the parts' z-scores says how much each part tells them apart (weights below zero are dropped; all
    parts count alike when no class can be left out). The threshold is the conformal one
    (:func:`threshold_for`) on the weighted score.
    """
    import numpy as np

    widths = tuple(int(w) for w in widths)
    parts = layer_parts(len(widths))
    yb, yv = np.asarray(train_labels), np.asarray(valid_labels)
    n_classes = int(max(yb.max(initial=0), yv.max(initial=0), np.asarray(valid_logits).shape[1] - 1)) + 1
    sims = nearest_by_class(train_feats, valid_feats, widths, yb, n_classes)
    raw = {p: _distance(sims[i].max(1)) for i, p in enumerate(parts[:-1])}
    raw["energy"] = energy(valid_logits)
    norm = {}
    for p in parts:
        v = np.asarray(raw[p], dtype=np.float64)
        norm[p] = (float(v.mean()), max(float(v.std()), 1e-6))
    X, y = leave_class_out(sims, yv, valid_logits, parts)
    w = np.ones(len(parts))
    if X is not None:
        fitted = np.clip(_logistic_weights(X, y), 0.0, None)
        if fitted.sum() > 1e-9:
            w = fitted
    w = w / w.sum()
    model = OpenSet(parts, 1, norm, 0.0, len(yv), len(yb), accepted, features="layers", widths=widths,
                    weights={p: float(x) for p, x in zip(parts, w)})
    model.threshold = threshold_for(model.combine(raw), accepted)
    return model


def layer_raw_parts(bank, feats, logits, rule: OpenSet, blocks=None) -> dict:
    """A version-3 rule's raw parts for some pictures (their layer features and logits); ``blocks``: the bank's
    :func:`layer_blocks` when made already."""
    sims = nearest_by_class(bank, feats, rule.widths, blocks=blocks)
    raw = {f"knn:{i}": _distance(sims[i, :, 0]) for i in range(len(rule.widths))}
    raw["energy"] = energy(logits)
    return raw


def threshold_for(known_scores, accepted: float = KNOWN_ACCEPTED) -> float:
    """The score under which a new known picture falls with probability ``accepted``.

    The split-conformal quantile: the ``ceil((n + 1) * accepted)``-th smallest of n held-out
    scores (a new exchangeable picture is at or under it with probability >= ``accepted``). The
    plain 95th percentile of a few held-out pictures sits too low: with 6 of them, new known
    pictures were refused 1 time in 4. Below 19 pictures the guarantee would need no threshold
    at all; the largest score is taken then (accepting about n/(n+1) of known pictures).
    """
    import numpy as np

    s = np.sort(np.asarray(known_scores, dtype=np.float64))
    r = min(len(s), int(math.ceil((len(s) + 1) * accepted)))
    return float(s[r - 1])


# --- with a run ------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def record(rdir: Path, train_stage_feats, valid_stage_feats, valid_logits, *, widths, train_labels,
           valid_labels, **kw) -> OpenSet:
    """Fit a version-3 rule on layer features (:class:`tl_app.features.StagePool`, "layers", whose layers are
    ``widths`` wide) and write it into the run's folder: the bank (``unknown_bank.npy``, float16, named by its
    hash) and ``unknown.json``. Labels are the class indices of the training and held-out pictures.

    The rule is fitted on the bank as stored (float16), so that scoring later measures the same distances.
    """
    import os

    import numpy as np

    from . import runs

    bank = np.asarray(train_stage_feats, dtype=np.float16)
    tmp = rdir / f".{BANK_FILE}.{os.getpid()}.npy"
    np.save(tmp, bank, allow_pickle=False)
    os.replace(tmp, rdir / BANK_FILE)
    model = fit_layers(bank, train_labels, valid_stage_feats, valid_labels, valid_logits, widths, **kw)
    model.bank_sha256 = file_sha256(rdir / BANK_FILE)
    runs.write_json(rdir, FILE, model.to_dict())
    return model


@dataclass
class Scorer:
    """A run's rule with its k-NN bank loaded: scores new pictures."""

    rule: OpenSet
    bank_n: object
    #: the largest float32 copy of a "layers" bank kept to score with (:func:`layer_blocks`)
    blocks_most_bytes: int = BLOCKS_MOST_BYTES

    def __post_init__(self):
        #: the bank's layer blocks, made once (None: other features, or past ``blocks_most_bytes``)
        self.blocks = (layer_blocks(self.bank_n, self.rule.widths, self.blocks_most_bytes)
                       if self.rule.features == "layers" else None)

    @property
    def features(self) -> str:
        """Which features :meth:`score` takes: "layers" or "stages" (:func:`tl_app.features.embed_with_stages`'
        third array, of that kind) or "pooled" (a version-1 rule: the head's input,
        :func:`~tl_app.features.embed_logits`)."""
        return self.rule.features

    def score(self, feats, logits):
        """``(scores, unknown)`` arrays for pictures' features (those :attr:`features` names) and logits.

        On one BLAS thread (:func:`tl_app.compute.one_blas_thread`): a few pictures against the bank are
        small products, and BLAS's own threads would spin on after them, beside the next decode or forward."""
        from .compute import one_blas_thread

        with one_blas_thread():
            if self.rule.features == "layers":
                raw = layer_raw_parts(self.bank_n, feats, logits, self.rule, self.blocks)
            else:
                raw = raw_parts(self.bank_n, feats, logits, self.rule.k, self.rule.parts)
        s = self.rule.combine(raw)
        return s, s > self.rule.threshold


def load_scorer(rdir: Path) -> Optional[Scorer]:
    """The run's scorer, or None when the run recorded no rule (trained before) or its files do not match.

    None means "no claim": the app then says nothing about unknown pictures.
    """
    import numpy as np

    f = rdir / FILE
    if not f.is_file():
        return None
    try:
        rule = OpenSet.from_dict(json.loads(f.read_text(encoding="utf-8")))
        if rule.held_out < MIN_HELD_OUT:  # too few held-out pictures to set the threshold: no claim
            return None
        if rule.features in ("layers", "stages"):
            bfile = rdir / BANK_FILE
            if not bfile.is_file() or file_sha256(bfile) != rule.bank_sha256:
                return None
            bank = np.load(bfile, allow_pickle=False)
            if bank.ndim != 2 or len(bank) != rule.bank or not len(bank):
                return None
            if rule.features == "layers":  # kept float16: nearest_by_class reads it a chunk at a time
                return Scorer(rule, bank) if bank.shape[1] == sum(rule.widths) else None
            return Scorer(rule, l2_normalise(bank))
        efile = rdir / "embeddings.npy"  # a version-1 rule: the training rows of the stored embeddings
        if not efile.is_file() or file_sha256(efile) != rule.embeddings_sha256:
            return None
        emb = np.load(efile, allow_pickle=False)
        snap = json.loads((rdir / "snapshot.json").read_text(encoding="utf-8"))
        rows = [i for i, it in enumerate(snap.get("items", [])) if not it.get("valid")]
        if len(snap.get("items", [])) != len(emb) or not rows:
            return None
        return Scorer(rule, l2_normalise(emb[rows]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
