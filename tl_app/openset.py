"""None of these: how unlike every known class a picture is, and where "unknown" starts.

The score combines two signals the app already has (both: higher = less known):

- **k-NN distance** (Sun et al., ICML 2022): the distance from the picture's
  L2-normalised features to its k-th nearest training picture. The features are
  the pooled body outputs a run already stores for Review (``embeddings.npy``);
  the bank is the run's training rows (``snapshot.json`` says which).
- **energy** (Liu et al., NeurIPS 2020): ``-logsumexp(logits)``; a confident
  answer has low energy. Max-softmax (``1 - max p``) is its older cousin, kept
  as the bench's baseline.

Each is z-normalised on the run's held-out known pictures and the two are
summed. The threshold is set on those held-out pictures so that 95% of new known
pictures are accepted (:func:`threshold_for`); above it is "none of these".
Everything is recorded in the run's ``unknown.json`` when it trains; a run
without it (trained before) makes no claim.
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
#: Which signals the app's score adds up (z-normalised). bench/unknown.py measures the others.
DEFAULT_PARTS = ("knn", "energy")
#: No part's z-score counts below this (see :meth:`OpenSet.combine`).
Z_FLOOR = -1.0
#: Parts the scorer knows.
PARTS = ("knn", "energy", "msp")


def l2_normalise(X):
    """Rows scaled to unit length (float32); a zero row stays zero."""
    import numpy as np

    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def default_k(n_bank: int) -> int:
    """k for a bank of ``n_bank`` training pictures: about 1% of it, between 1 and 50.

    Sun et al. take k = 50 with all 50,000 CIFAR-10 pictures and note that k grows with
    the bank; on small banks a large k reaches into other classes.
    """
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
    embeddings_sha256: str = ""

    def combine(self, raw: dict):
        """The score from the parts' raw values: the sum of their z-scores, each at least ``Z_FLOOR``.

        The floor keeps one part from cancelling another: a network extrapolates to huge logits far
        from its training pictures (a very low energy, "surer than ever"), which must not hide that
        the picture is far from every training picture.
        """
        import numpy as np

        total = None
        for p in self.parts:
            mu, sd = self.norm[p]
            z = np.maximum((np.asarray(raw[p], dtype=np.float64) - mu) / sd, Z_FLOOR)
            total = z if total is None else total + z
        return total

    def to_dict(self) -> dict:
        return {"version": 1, "parts": list(self.parts), "k": self.k,
                "norm": {p: [float(m), float(s)] for p, (m, s) in self.norm.items()},
                "threshold": float(self.threshold), "held_out": self.held_out, "bank": self.bank,
                "accepted": self.accepted, "embeddings_sha256": self.embeddings_sha256}

    @classmethod
    def from_dict(cls, d: dict) -> "OpenSet":
        parts = tuple(d["parts"])
        if not parts or any(p not in PARTS for p in parts) or d.get("version") != 1:
            raise ValueError("unknown none-of-these record")
        norm = {p: (float(d["norm"][p][0]), float(d["norm"][p][1])) for p in parts}
        t = float(d["threshold"])
        if not all(math.isfinite(v) for mv in norm.values() for v in mv) or not math.isfinite(t):
            raise ValueError("non-finite none-of-these record")
        return cls(parts, int(d["k"]), norm, t, int(d.get("held_out", 0)), int(d.get("bank", 0)),
                   float(d.get("accepted", KNOWN_ACCEPTED)), str(d.get("embeddings_sha256", "")))


def fit(train_feats, valid_feats, valid_logits, *, parts=DEFAULT_PARTS, k: Optional[int] = None,
        accepted: float = KNOWN_ACCEPTED) -> OpenSet:
    """Set the rule on a run's held-out known pictures, scored against its training pictures.

    ``train_feats`` are the bank (the pictures the head learned from), ``valid_feats`` and
    ``valid_logits`` the held-out pictures: they stand in for new pictures of known classes.
    """
    import numpy as np

    bank_n = l2_normalise(train_feats)
    k = default_k(len(bank_n)) if k is None else int(k)
    raw = raw_parts(bank_n, valid_feats, valid_logits, k, parts)
    norm = {}
    for p in parts:
        v = np.asarray(raw[p], dtype=np.float64)
        mu, sd = float(v.mean()), float(v.std())
        norm[p] = (mu, sd if sd > 1e-6 else 1e-6)
    model = OpenSet(tuple(parts), k, norm, 0.0, len(valid_feats), len(bank_n), accepted)
    model.threshold = threshold_for(model.combine(raw), accepted)
    return model


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


def record(rdir: Path, train_feats, valid_feats, valid_logits, **kw) -> OpenSet:
    """Fit the rule and write it into the run's folder (``unknown.json``), naming the stored features."""
    from . import runs

    model = fit(train_feats, valid_feats, valid_logits, **kw)
    efile = rdir / "embeddings.npy"
    model.embeddings_sha256 = file_sha256(efile) if efile.is_file() else ""
    runs.write_json(rdir, FILE, model.to_dict())
    return model


@dataclass
class Scorer:
    """A run's rule with its k-NN bank loaded: scores new pictures."""

    rule: OpenSet
    bank_n: object

    def score(self, feats, logits):
        """``(scores, unknown)`` arrays for pictures' features and logits."""
        s = self.rule.combine(raw_parts(self.bank_n, feats, logits, self.rule.k, self.rule.parts))
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
        efile = rdir / "embeddings.npy"
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
