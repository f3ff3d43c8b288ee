"""Quick mode: features computed once per picture, a linear head trained on them in seconds.

The pretrained body, frozen and in eval mode, turns each picture (resized,
no augmentation) into a feature vector (max and average pooling of its last
feature map, as the fine-tuning head sees it). Vectors are cached per content
hash, architecture, image size and weights, so curating the dataset only
computes what changed. The head is a softmax regression fitted with L-BFGS in
plain numpy (on the rows' principal axes, one BLAS thread): retraining on cached
features imports neither torch, fastai nor scipy, and takes about a second.

The body's weights are stored once per architecture and weights in
``PROJECT/models/bodies/<sha256>.safetensors``; a quick run's model file holds
only the head and names the body by its hash, and loading checks both.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .compute import one_blas_thread
from .errors import Stopped, TLError
from .jobs import StopToken, TimeLeft
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
            con.execute("CREATE TABLE IF NOT EXISTS meta(tag TEXT PRIMARY KEY, value TEXT)")

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get(self, shas: list[str], tag: str, *, dtype: str = "float32") -> dict:
        """Vectors per content hash (those stored); ``dtype="float16"`` keeps them as stored (half the memory)."""
        import numpy as np

        out = {}
        con = self._con()
        try:
            for i in range(0, len(shas), 500):
                chunk = shas[i:i + 500]
                q = f"SELECT sha256, vec FROM features WHERE tag=? AND sha256 IN ({','.join('?' * len(chunk))})"
                for sha, blob in con.execute(q, [tag, *chunk]):
                    v = np.frombuffer(blob, dtype=np.float16)
                    out[sha] = v if dtype == "float16" else v.astype(dtype)
        finally:
            con.close()
        return out

    def get_meta(self, tag: str):
        """A small JSON value recorded with a tag's features (None when there is none)."""
        con = self._con()
        try:
            row = con.execute("SELECT value FROM meta WHERE tag=?", (tag,)).fetchone()
        finally:
            con.close()
        return None if row is None else json.loads(row[0])

    def put_meta(self, tag: str, value) -> None:
        con = self._con()
        try:
            with con:
                con.execute("INSERT OR REPLACE INTO meta(tag, value) VALUES(?,?)", (tag, json.dumps(value)))
        finally:
            con.close()

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
def compute_features(body, pixels, *, batch_size: int = 32, mean=None, std=None, device=None,
                     stop: Optional[StopToken] = None, events: EventFn = _no_events, stages: bool = False):
    """Concat-pooled body features (N, 2*channels) for uint8 pictures (N, S, S, 3), in eval mode.

    ``pixels`` is an array or :class:`~tl_app.features.Pictures` (streamed from disk, batch by batch).
    With ``stages``, ``(features, stage_features, widths)``: the rows of :class:`~tl_app.features.StagePool`
    (version 3, "layers") from the same pass too (the none-of-these features), and each layer's width in them.
    """
    import contextlib

    import numpy as np
    import torch

    from . import config

    device = device or torch.device("cpu")
    mean = torch.tensor(mean or config.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std or config.IMAGENET_STD, device=device).view(1, 3, 1, 1)
    body = _folded_copy(body, len(pixels) and pixels.shape[1]).to(device).to(memory_format=torch.channels_last)
    from .features import Rows, StagePool, batches_of, channel_stats, network_input

    n, done = len(pixels), 0
    out, staged, widths = Rows(n), Rows(n), []
    left = TimeLeft()
    hooks = StagePool(body) if stages else contextlib.nullcontext()
    with torch.inference_mode(), hooks:
        for batch in batches_of(pixels, batch_size):
            if stop is not None and stop.is_set():
                raise Stopped("Stopped while computing features.")
            xb = network_input(torch.from_numpy(batch).to(device), mean, std)
            fm = body(xb)
            out.put(done, torch.cat(channel_stats(fm), 1).float().cpu().numpy())
            if stages:
                staged.put(done, hooks.take().to(torch.float16).cpu().numpy())  # as the bank stores them
                widths = hooks.widths
            done += len(batch)
            eta = left.update(done, n)
            events({"type": "phase", "phase": "features", "done": done, "total": n,
                    "eta": None if eta is None else round(eta, 1)})
    empty = np.zeros((0, 0), np.float32)
    feats = out.array if out.array is not None else empty
    if stages:
        return feats, (staged.array if staged.array is not None else empty), list(widths)
    return feats


def inference_batch(size: int, device, asked: int) -> int:
    """Pictures per batch for a pass without gradients (quick mode's features).

    On a CPU, about 262,144 pixels a batch (64 at 64 px, 16 at 128 px, 8 at 224 px): what fits the
    processor's caches. Measured on 2 cores with resnet18: 64 at 64 px is 1.1x as fast as 32, while
    at 224 px 64 is 0.75x as fast as 8 to 32. Elsewhere (a GPU) ``asked``, the run's batch size.
    """
    import math

    if getattr(device, "type", str(device)) != "cpu":
        return asked
    return max(8, min(64, 2 ** round(math.log2(262_144 / max(1, size) ** 2))))


def _folded_copy(body, size: int):
    """A copy of a (frozen) body in eval mode with its batch norms folded into the convolutions
    (:func:`tl_app.models.fold_batchnorm`: the same features to 1e-5, a pass over the activations
    fewer per norm). The caller's body is left as it is: its weights are what a run records."""
    import copy
    from types import SimpleNamespace

    from .models import fold_batchnorm

    body = body.eval()
    if not size or any(p.device.type != "cpu" for p in body.parameters()):
        return body  # the check runs on the CPU
    return fold_batchnorm(copy.deepcopy(body), SimpleNamespace(size=int(size)))[0]


# --- the head: softmax regression -----------------------------------------------------------------
#: L2 strengths tried for the head (on standardised features), strongest first.
L2_GRID = (1.0, 1e-1, 1e-2, 1e-3)


@dataclass
class LinearHead:
    """``probs = softmax(x @ W + b)`` on raw (unstandardised) features."""

    W: object
    b: object

    def probs(self, X):
        return _softmax(X @ self.W + self.b)


@dataclass
class HeadFit:
    """A quick run's head, the L2 strength chosen for it, and out-of-fold probabilities for every row."""

    head: LinearHead
    l2: float
    oof: object
    trace: list = field(default_factory=list)


def _softmax(z):
    import numpy as np

    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def lbfgs(f, x0, *, max_iter: int = 500, memory: int = 10, gtol: float = 1e-5, ftol: float = 2.2e-9,
          callback=None):
    """Minimise a smooth convex ``f(x) -> (value, gradient)`` with L-BFGS and a backtracking line search.

    The stopping rules are scipy's L-BFGS-B defaults (largest gradient entry below ``gtol``, or a
    relative decrease below ``ftol``). Plain numpy, so that retraining a head needs no scipy import
    (about a second on a small machine) and no torch. ``callback(x)`` sees every iterate.
    """
    import numpy as np

    x = np.array(x0, dtype=np.float64)
    fx, g = f(x)
    hist: list[tuple] = []  # (s, y, 1 / s.y), oldest first
    for _ in range(max_iter):
        if np.abs(g).max() <= gtol:
            break
        q = g.copy()
        alphas = []
        for s, yv, rho in reversed(hist):
            a = rho * (s @ q)
            q -= a * yv
            alphas.append(a)
        if hist:
            s, yv, _ = hist[-1]
            q *= (s @ yv) / (yv @ yv)
        for (s, yv, rho), a in zip(hist, reversed(alphas)):
            q += s * (a - rho * (yv @ q))
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction (rounding): start again from the gradient
            hist.clear()
            d, slope = -g, -(g @ g)
        step = 1.0 if hist else min(1.0, 1.0 / max(np.linalg.norm(g), 1e-12))
        while True:  # Armijo backtracking
            xn = x + step * d
            fn, gn = f(xn)
            if fn <= fx + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return x
        s, yv = xn - x, gn - g
        sy = s @ yv
        if sy > 1e-12:
            hist.append((s, yv, 1.0 / sy))
            del hist[:-memory]
        done = (fx - fn) <= ftol * max(abs(fx), abs(fn), 1.0)
        x, fx, g = xn, fn, gn
        if callback is not None:
            callback(x)
        if done:
            break
    return x


class _Problem:
    """One softmax regression: standardised features rotated onto their principal axes.

    With an L2 penalty on the weights the optimum lies in the span of the training rows (the
    gradient of the data term is a combination of them), so fitting on the coordinates ``F = Z V``
    (``V``: the right singular vectors of ``Z``) gives exactly the model that fitting on ``Z`` gives,
    with ``min(n, d)`` instead of ``d`` weights per class: 312 instead of 1024 for resnet18 on 390
    pictures. The rotation leaves the penalty unchanged, and the singular values give L-BFGS a
    diagonal preconditioner (4 to 8 times fewer iterations).
    """

    def __init__(self, X, y, n_classes: int):
        import numpy as np

        # One float64 copy of the rows, standardised in place, then rotated: at 50,000 pictures each
        # copy of the features is 400 MB, so none is kept that the fit does not need.
        Z = np.array(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.int64)
        self.k = n_classes
        self.mu = Z.mean(0)
        Z -= self.mu
        self.sd = np.sqrt(np.einsum("ij,ij->j", Z, Z) / max(1, len(Z))) + 1e-6  # Z.std(0), without a copy of Z
        Z /= self.sd
        n, d = Z.shape
        if n <= d:
            U, s, Vt = np.linalg.svd(Z, full_matrices=False)
            del Z
            U *= s
            F, V = U, Vt.T
        else:
            ev, V = np.linalg.eigh(Z.T @ Z)
            s = np.sqrt(np.clip(ev, 0, None))
            for i in range(0, n, 4096):  # F = Z V, rotated in place a block of rows at a time (no second copy)
                Z[i:i + 4096] = Z[i:i + 4096] @ V
            F = Z
            del Z
        keep = s > s.max() * 1e-10 if len(s) and s.max() > 0 else np.zeros(len(s), bool)
        if not keep.any():  # every row alike: only the class balance can be learned
            keep[:1] = True
        self.F = F if keep.all() else np.ascontiguousarray(F[:, keep])
        self.V, self.s = V[:, keep], s[keep]

    def fit(self, l2: float, *, start=None, max_iter: int = 500, watch=None):
        """``(A, b)``: weights on the rotated axes and biases; ``start`` is a previous fit's ``(A, b)``.

        ``watch(A, b)`` sees the weights after every iteration (each one a pass over all rows).
        """
        import numpy as np

        F, y, k = self.F, self.y, self.k
        m, r = F.shape
        Y = np.zeros((m, k))
        Y[np.arange(m), y] = 1.0
        # Solve for C = A / p, p scaling each axis by the inverse square root of its curvature
        # (about s^2/4m from the data, plus l2).
        p = 1.0 / np.sqrt(0.25 * self.s ** 2 / m + l2)
        # (F p) C == F (p C): the scaled rows are never formed (one copy of F fewer in memory).

        def f(theta):
            C = theta[: r * k].reshape(r, k)
            b = theta[r * k:]
            A = C * p[:, None]
            P = _softmax(F @ A + b)
            loss = -np.log(P[np.arange(m), y] + 1e-12).mean() + 0.5 * l2 * (A * A).sum()
            G = (P - Y) / m
            return loss, np.concatenate([((F.T @ G + l2 * A) * p[:, None]).ravel(), G.sum(0)])

        theta0 = np.zeros(r * k + k)
        if start is not None:
            theta0[: r * k] = (start[0] / p[:, None]).ravel()
            theta0[r * k:] = start[1]
        cb = None
        if watch is not None:
            def cb(x):
                watch(x[: r * k].reshape(r, k) * p[:, None], x[r * k:])
        x = lbfgs(f, theta0, max_iter=max_iter, callback=cb)
        C = x[: r * k].reshape(r, k)
        return C * p[:, None], x[r * k:]

    def head(self, A, b) -> LinearHead:
        """The weights on raw features: ``((x - mu) / sd) @ V @ A + b == x @ W + b'``."""
        import numpy as np

        Wz = self.V @ A
        return LinearHead((Wz / self.sd[:, None]).astype(np.float32),
                          np.asarray(b - (self.mu / self.sd) @ Wz, dtype=np.float32))


def fit_head(X, y, n_classes: int, *, l2: float = 1e-2) -> LinearHead:
    """Multinomial logistic regression with L2, on standardised features; folded back to raw ones."""
    with one_blas_thread():
        prob = _Problem(X, y, n_classes)
        return prob.head(*prob.fit(l2))


def choose_l2(X, y, n_classes: int, grid=L2_GRID, folds: int = 3, seed: int = 0) -> float:
    """The L2 strength with the lowest cross-validated loss on ``X`` (a few fits of milliseconds)."""
    import numpy as np

    X, y = np.asarray(X), np.asarray(y)
    fold_of = _folds(y, folds, seed)
    if fold_of is None:
        return 1e-2
    losses: dict[float, list[float]] = {l2: [] for l2 in grid}
    with one_blas_thread():
        for k in range(folds):
            tr, te = fold_of != k, fold_of == k
            if not te.any() or len(np.unique(y[tr])) < 2:
                continue
            prob, start = _Problem(X[tr], y[tr], n_classes), None
            for l2 in sorted(grid, reverse=True):  # strongest first; each fit starts from the previous
                start = prob.fit(l2, start=start)
                P = prob.head(*start).probs(X[te])
                losses[l2].append(float(-np.log(P[np.arange(te.sum()), y[te]] + 1e-12).mean()))
    scored = [(float(np.mean(v)), l2) for l2, v in losses.items() if v]
    return min(scored)[1] if scored else 1e-2


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

    X, y = np.asarray(X), np.asarray(y)
    counts = np.bincount(y, minlength=n_classes)
    k = min(folds, max(2, int(counts[counts > 0].min())))
    fold_of = _folds(y, k, seed)
    if fold_of is None:
        return fit_head(X, y, n_classes, l2=l2).probs(X)
    P = np.zeros((len(y), n_classes))
    with one_blas_thread():
        for f in range(k):
            tr, te = fold_of != f, fold_of == f
            if te.any():
                P[te] = fit_head(X[tr], y[tr], n_classes, l2=l2).probs(X[te])
    return P


def _trace_fit(X, y, n_classes: int, train_idx, valid_idx, l2: float, points: int = 40):
    """Fit the head on the training rows, recording losses and validation accuracy along the way.

    The head is trained on all its rows at once, so every L-BFGS iteration is a pass over the
    training data: an epoch. Returns the head and at most ``points`` evenly spaced records.
    """
    import numpy as np

    prob = _Problem(X[train_idx], y[train_idx], n_classes)
    Fv = ((np.asarray(X[valid_idx], dtype=np.float64) - prob.mu) / prob.sd) @ prob.V
    yt, yv = np.asarray(y)[train_idx], np.asarray(y)[valid_idx]
    trace: list[dict] = []

    def nll(P, t):
        return float(-np.log(P[np.arange(len(t)), t] + 1e-12).mean()) if len(t) else None

    def watch(A, b):
        Pt, Pv = _softmax(prob.F @ A + b), _softmax(Fv @ A + b)
        trace.append({"epoch": len(trace) + 1, "train_loss": nll(Pt, yt), "valid_loss": nll(Pv, yv),
                      "accuracy": float((Pv.argmax(1) == yv).mean()) if len(yv) else None})

    head = prob.head(*prob.fit(l2, watch=watch))
    if len(trace) > points:
        keep = sorted(set(np.linspace(0, len(trace) - 1, points).round().astype(int).tolist()))
        trace = [trace[i] for i in keep]
    return head, trace


def fit_quick_head(X, y, n_classes: int, train_idx, valid_idx=(), *, seed: int = 0, folds: int = 5) -> HeadFit:
    """Everything quick mode fits on cached features: about a second for a few hundred pictures.

    The L2 strength is chosen by 3-fold cross-validation on the training rows only (the validation
    accuracy stays honest), the head is fitted on the training rows (``trace``: losses and validation
    accuracy per pass), and every row gets out-of-fold probabilities (``folds``-fold over all rows)
    for Review.
    """
    import numpy as np

    X, y = np.asarray(X), np.asarray(y)
    train_idx, valid_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(valid_idx, dtype=np.int64)
    l2 = choose_l2(X[train_idx], y[train_idx], n_classes, seed=seed)
    with one_blas_thread():
        head, trace = _trace_fit(X, y, n_classes, train_idx, valid_idx, l2)
    return HeadFit(head, l2, out_of_fold_probs(X, y, n_classes, l2=l2, folds=folds, seed=seed), trace)


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
    """Quick mode needs a body whose features mean something: pretrained or the user's own weights."""
    if not pretrained and not weights:
        raise TLError("Quick mode trains only the last layer, on the features of a pretrained network; with random "
                      "weights those features mean nothing. Keep 'Pretrained weights' ticked (or give your own "
                      "weights file, --weights), or choose full fine-tuning (train without --quick) to train the "
                      "whole network from scratch.")


def timed() -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
