"""Quick mode: features computed once per picture, a linear head trained on them in seconds.

The pretrained body, frozen and in eval mode, turns each picture (resized,
no augmentation) into a feature vector (max and average pooling of its last
feature map, as the fine-tuning head sees it). Vectors are cached per content
hash, architecture, image size and weights, so curating the dataset only
computes what changed. The head is a softmax regression fitted with L-BFGS in
numpy/scipy: retraining on cached features imports neither torch nor fastai.

The body's weights are stored once per architecture and weights in
``PROJECT/models/bodies/<sha256>.safetensors``; a quick run's model file holds
only the head and names the body by its hash, and loading checks both.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import Stopped, TLError
from .jobs import StopToken
from .project import Project, inside

EventFn = Callable[[dict], None]


def _no_events(_: dict) -> None:
    pass


# --- the weights a body starts from ------------------------------------------------------
def weights_id(arch: str, pretrained: bool, weights: Optional[str]) -> str:
    """Names the body's weights: the pretrained release, a user file's hash, or 'scratch'."""
    if weights:
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            while b := f.read(1 << 20):
                h.update(b)
        return f"file-{h.hexdigest()[:16]}"
    if pretrained:
        from .models import get_arch

        a = get_arch(arch)
        return f"pre-{a.tv_weights or a.timm_name}"
    return "scratch"


# --- feature cache ------------------------------------------------------------------------
class FeatureStore:
    """Feature vectors per (content hash, tag) in ``cache/features.db`` (safe to delete)."""

    def __init__(self, project: Project):
        self.path = project.cache_dir / "features.db"
        project.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._con() as con:
            con.execute("CREATE TABLE IF NOT EXISTS features(sha256 TEXT, tag TEXT, dim INTEGER, vec BLOB,"
                        " PRIMARY KEY(sha256, tag))")

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get(self, shas: list[str], tag: str) -> dict:
        import numpy as np

        out = {}
        con = self._con()
        try:
            for i in range(0, len(shas), 500):
                chunk = shas[i:i + 500]
                q = f"SELECT sha256, vec FROM features WHERE tag=? AND sha256 IN ({','.join('?' * len(chunk))})"
                for sha, blob in con.execute(q, [tag, *chunk]):
                    out[sha] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        finally:
            con.close()
        return out

    def put(self, tag: str, rows: list) -> None:
        import numpy as np

        con = self._con()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO features(sha256, tag, dim, vec) VALUES(?,?,?,?)",
                                [(sha, tag, len(v), np.asarray(v, dtype=np.float16).tobytes()) for sha, v in rows])
        finally:
            con.close()


def feature_tag(arch: str, size: int, wid: str) -> str:
    return f"{arch}|{size}|{wid}"


# --- bodies ---------------------------------------------------------------------------------
def bodies_dir(project: Project) -> Path:
    return project.root / "models" / "bodies"


def _body_table(project: Project) -> None:
    with project._write() as con:
        con.execute("CREATE TABLE IF NOT EXISTS bodies(tag TEXT PRIMARY KEY, sha256 TEXT NOT NULL)")


def stored_body(project: Project, tag: str) -> Optional[tuple[str, str]]:
    """``(relative file, sha256)`` of the stored body for a weights tag, if its file is there."""
    _body_table(project)
    with project._read() as con:
        row = con.execute("SELECT sha256 FROM bodies WHERE tag=?", (tag,)).fetchone()
    if row is None:
        return None
    rel = f"models/bodies/{row['sha256']}.safetensors"
    return (rel, row["sha256"]) if (project.root / rel).is_file() else None


def store_body(project: Project, tag: str, body) -> tuple[str, str]:
    """Write a body's weights once (named by their hash) and remember them for ``tag``."""
    from safetensors.torch import save_file

    d = bodies_dir(project)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".body.{os.getpid()}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()}, str(tmp))
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    sha = h.hexdigest()
    dest = d / f"{sha}.safetensors"
    os.replace(tmp, dest)
    with project._write() as con:
        con.execute("INSERT OR REPLACE INTO bodies(tag, sha256) VALUES(?, ?)", (tag, sha))
    return f"models/bodies/{sha}.safetensors", sha


def body_path(project_root: Path, rel: str) -> Path:
    return inside(project_root, rel)


# --- features ----------------------------------------------------------------------------------
def compute_features(body, pixels, *, batch_size: int = 32, mean=None, std=None,
                     stop: Optional[StopToken] = None, events: EventFn = _no_events):
    """Concat-pooled body features (N, 2*channels) for uint8 pictures (N, S, S, 3)."""
    import numpy as np
    import torch

    from . import config

    mean = torch.tensor(mean or config.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(std or config.IMAGENET_STD).view(1, 3, 1, 1)
    body = body.eval().to(memory_format=torch.channels_last)
    out = []
    n = len(pixels)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            if stop is not None and stop.is_set():
                raise Stopped("Stopped while computing features.")
            xb = torch.from_numpy(pixels[s:s + batch_size]).permute(0, 3, 1, 2).float().div_(255)
            xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
            fm = body(xb)
            feats = torch.cat([torch.amax(fm, dim=(2, 3)), torch.mean(fm, dim=(2, 3))], 1)
            out.append(feats.float().numpy())
            events({"type": "phase", "phase": "features", "done": min(n, s + batch_size), "total": n})
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --- the head: softmax regression -----------------------------------------------------------------
@dataclass
class LinearHead:
    """``probs = softmax(x @ W + b)`` on raw (unstandardised) features."""

    W: object
    b: object

    def probs(self, X):
        return _softmax(X @ self.W + self.b)


def _softmax(z):
    import numpy as np

    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_head(X, y, n_classes: int, *, l2: float = 1e-2, max_iter: int = 300, sample_weight=None) -> LinearHead:
    """Multinomial logistic regression with L2, on standardised features; folded back to raw ones."""
    import numpy as np
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, d = X.shape
    mu = X.mean(0)
    sd = X.std(0) + 1e-6
    Z = (X - mu) / sd
    Y = np.zeros((n, n_classes))
    Y[np.arange(n), y] = 1.0
    w_s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w_s = w_s / w_s.sum()

    def f(theta):
        W = theta[: d * n_classes].reshape(d, n_classes)
        b = theta[d * n_classes:]
        P = _softmax(Z @ W + b)
        loss = -(w_s * np.log(P[np.arange(n), y] + 1e-12)).sum() + 0.5 * l2 * (W * W).sum()
        G = (P - Y) * w_s[:, None]
        gW = Z.T @ G + l2 * W
        gb = G.sum(0)
        return loss, np.concatenate([gW.ravel(), gb])

    theta0 = np.zeros(d * n_classes + n_classes)
    res = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    W = res.x[: d * n_classes].reshape(d, n_classes)
    b = res.x[d * n_classes:]
    # Fold the standardisation into the weights: (x - mu) / sd @ W + b == x @ W' + b'.
    W_raw = W / sd[:, None]
    b_raw = b - (mu / sd) @ W
    return LinearHead(W_raw.astype(np.float32), b_raw.astype(np.float32))


def choose_l2(X, y, n_classes: int, grid=(1e-3, 1e-2, 1e-1, 1.0), folds: int = 3, seed: int = 0) -> float:
    """The L2 strength with the lowest cross-validated loss on ``X`` (a few fits of milliseconds)."""
    import numpy as np

    y = np.asarray(y)
    fold_of = _folds(y, folds, seed)
    if fold_of is None:
        return 1e-2
    best, best_loss = grid[0], float("inf")
    for l2 in grid:
        losses = []
        for k in range(folds):
            tr, te = fold_of != k, fold_of == k
            if not te.any() or len(np.unique(y[tr])) < 2:
                continue
            P = fit_head(X[tr], y[tr], n_classes, l2=l2).probs(X[te])
            losses.append(-np.log(P[np.arange(te.sum()), y[te]] + 1e-12).mean())
        if losses and np.mean(losses) < best_loss:
            best, best_loss = l2, float(np.mean(losses))
    return best


def _folds(y, k: int, seed: int):
    """A stratified fold number per row, or None when a class has too few rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < 2:
            return None
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % k
    return fold_of


def out_of_fold_probs(X, y, n_classes: int, *, l2: float, folds: int = 5, seed: int = 0):
    """Probabilities for every row from a head that never saw that row (k-fold)."""
    import numpy as np

    y = np.asarray(y)
    k = min(folds, max(2, int(np.bincount(y, minlength=n_classes)[np.bincount(y, minlength=n_classes) > 0].min())))
    fold_of = _folds(y, k, seed)
    P = np.zeros((len(y), n_classes))
    if fold_of is None:
        return fit_head(X, y, n_classes, l2=l2).probs(X)
    for f in range(k):
        tr, te = fold_of != f, fold_of == f
        if te.any():
            P[te] = fit_head(X[tr], y[tr], n_classes, l2=l2).probs(X[te])
    return P


# --- saving a quick model ---------------------------------------------------------------------------
def save_quick_model(folder: Path, spec, head: LinearHead) -> str:
    """Write the head's tensors (safetensors, numpy only) and model.json; return the weights' sha256."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # create_head("linear") is Sequential(pool, flatten, Linear): its Linear is "1.2" inside the model.
    tensors = {"1.2.weight": np.ascontiguousarray(head.W.T.astype(np.float32)),
               "1.2.bias": np.ascontiguousarray(head.b.astype(np.float32))}
    tmp = folder / f".model.{os.getpid()}.tmp"
    save_file(tensors, str(tmp), metadata={"arch": spec.arch, "head": "linear"})
    h = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, folder / "model.safetensors")
    tmpj = folder / f".model.{os.getpid()}.json.tmp"
    tmpj.write_text(spec.to_json(), encoding="utf-8")
    os.replace(tmpj, folder / "model.json")
    return h


def check_quick_possible(pretrained: bool, weights: Optional[str]) -> None:
    if not pretrained and not weights:
        raise TLError("Quick mode trains on features of a pretrained network; with random weights those features "
                      "mean nothing. Tick 'Pretrained weights' (or give --weights), or use full training.")


def timed() -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
