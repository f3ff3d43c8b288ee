"""Turning pictures into what a network sees: decoded pixels, pooled features, logits.

One module that training, prediction, Review and the none-of-these score all
import, so that none of them has to import another for it (train -> review ->
predict -> train was a circle). Torch and Pillow are imported inside the
functions: importing this module is cheap.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Callable, Iterable, Iterator, Optional, Sequence

from .errors import Stopped
from .jobs import StopToken, TimeLeft, stop_requested
from .models import ModelSpec, resize_for

EventFn = Callable[[dict], None]


def _no_events(_: dict) -> None:
    pass


def load_image_for_model(src, size: int):
    """Decode a stored image and resize it for the network (the one path for training and prediction)."""
    from PIL import Image

    with Image.open(src, formats=["JPEG"]) as im:
        im.draft("RGB", (size, size))
        rgb = im.convert("RGB")
    return resize_for(rgb, size)


def freeze_loaded_objects() -> None:
    """Take the objects this process holds now out of the garbage collector's passes (``gc.freeze``).

    Call it once a front has loaded its modules and built what it keeps for the process's life
    (the served app: Gradio's page; the command line: before its command). Python's full
    collections otherwise walk every object the process holds, each time, and long work that
    makes many objects (an import, a training) triggers them again and again: with Gradio,
    torch and fastai loaded (about 600,000 objects), an import of 20,000 pictures ran at 8,813/s
    and spent 40 µs of the importing process's processor time a picture, against 10,073/s and 24 µs
    with those objects frozen. What is frozen is still freed when nothing refers to it; only a
    cycle among them would wait (none is expected among loaded modules and a built page).
    """
    import gc

    gc.collect()  # what is garbage now goes first, so that nothing frozen is already garbage
    gc.freeze()


def keep_freed_memory() -> bool:
    """Let this process keep the memory a forward pass frees for the next one (glibc only).

    By default glibc hands large freed blocks back to the kernel and maps fresh ones for the next
    pass: one picture through resnet18 at 224 px then takes about 10,000 new pages from the
    kernel, about 20 ms of system time on this 2-core machine (a third of the forward's CPU).
    With blocks of up to 32 MB served from the heap, and its top handed back only past 256 MB,
    the same forward takes none. For a long-running server (the app): its memory stays near its
    peak instead of shrinking after each picture. The command line sets it too: quick mode's
    features at 64 px in batches of 64 ran 15% slower without it. Returns whether the setting applies (False
    with another C library or system: nothing changes).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # glibc's malloc.h
    # One arena: a thread's own arena grows in heaps of at most 64 MB and frees a heap as soon as it
    # is empty, whatever the thresholds, so a forward in a server's worker thread took fresh pages anyway.
    return (bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))
            and bool(mallopt(m_arena_max, 1)))


# --- streaming pictures ---------------------------------------------------------------------
#: Decoded pictures a :class:`Pictures` keeps for the next pass, at most (MB): a small dataset is
#: then decoded once per run as when it was held in one array (400 pictures at 224 px), a large one
#: streams from disk.
PICTURE_CACHE_MB = 64
#: Batches decoded ahead of the one the network works on.
READ_AHEAD = 2


def decode_workers() -> int:
    """Threads that decode pictures (Pillow releases the GIL while it decodes and resizes)."""
    return max(1, min(4, os.cpu_count() or 1))


def read_ahead(fn: Callable, chunks: Iterable[Sequence], *, workers: Optional[int] = None,
               ahead: int = READ_AHEAD) -> Iterator[list]:
    """``[fn(x) for x in chunk]`` for each chunk, in order, computed on a thread pool.

    At most ``ahead`` chunks beyond the one being consumed are in flight, so memory
    stays bounded by the chunk size however many chunks there are.
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = iter(chunks)
    with ThreadPoolExecutor(max_workers=workers or decode_workers()) as pool:
        pending: deque = deque()

        def submit() -> bool:
            chunk = next(chunks, None)
            if chunk is None:
                return False
            pending.append([pool.submit(fn, x) for x in chunk])
            return True

        for _ in range(ahead + 1):
            if not submit():
                break
        try:
            while pending:
                futs = pending.popleft()
                out = [f.result() for f in futs]
                submit()
                yield out
        finally:  # a consumer that stops early (Stop, an error) leaves nothing running
            for futs in pending:
                for f in futs:
                    f.cancel()


class Pictures:
    """A dataset's pictures as the network sees them, decoded from disk when they are needed.

    Stands in for a uint8 array (N, size, size, 3): ``len``, ``shape``, ``pics[i]`` (one
    picture), ``pics[a:b]`` or ``pics[[i, j]]`` (a stacked batch) and :meth:`batches`
    (in order, decoded ahead on a thread pool). Decoding is :func:`load_image_for_model`,
    so results are the same as from the array it replaces; memory is bounded by the
    batches in flight plus a cache of at most ``cache_mb`` MB, whatever the number of
    pictures. ``fallback(i)`` gives where picture ``i`` is now if its file has moved
    (relabelled or deleted since the list was made).
    """

    def __init__(self, paths: Sequence, size: int, *, fallback: Optional[Callable[[int], object]] = None,
                 cache_mb: Optional[float] = None):
        self.paths = list(paths)
        self.size = int(size)
        self.fallback = fallback
        budget = PICTURE_CACHE_MB if cache_mb is None else cache_mb
        self._room = int(budget * 1024 * 1024) // (self.size * self.size * 3)  # pictures the cache may hold
        self._cache: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        return (len(self.paths), self.size, self.size, 3)

    def load(self, i: int):
        """Picture ``i`` as a uint8 array (size, size, 3)."""
        import numpy as np

        i = int(i)
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        try:
            arr = np.array(load_image_for_model(self.paths[i], self.size))  # writable, as torch wants
        except FileNotFoundError:
            if self.fallback is None:
                raise
            arr = np.array(load_image_for_model(self.fallback(i), self.size))
        with self._lock:
            if len(self._cache) < self._room:
                self._cache[i] = arr
        return arr

    def _indices(self, key) -> list[int]:
        if isinstance(key, slice):
            return list(range(*key.indices(len(self))))
        return [int(k) for k in key]

    def __getitem__(self, key):
        import numpy as np

        if isinstance(key, (int, np.integer)):
            return self.load(key)
        idxs = self._indices(key)
        if not idxs:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return np.stack(next(read_ahead(self.load, [idxs], ahead=0)))

    def batches(self, batch_size: int) -> Iterator:
        """Consecutive batches (uint8, (b, size, size, 3)) in order, the next ones decoding meanwhile."""
        import numpy as np

        n = len(self)
        chunks = (range(s, min(n, s + batch_size)) for s in range(0, n, batch_size))
        for out in read_ahead(self.load, chunks):
            yield np.stack(out)


def batches_of(pixels, batch_size: int) -> Iterator:
    """Consecutive batches of a uint8 array (N, S, S, 3) or of :class:`Pictures`."""
    if isinstance(pixels, Pictures):
        yield from pixels.batches(batch_size)
        return
    for s in range(0, len(pixels), batch_size):
        yield pixels[s:s + batch_size]


# --- the layers' pooled outputs (the none-of-these features) --------------------------------
#: How many of a body's last stages :class:`StagePool` pools for a version-2 rule ("stages").
OPEN_SET_STAGES = 4
#: What :class:`StagePool` takes: "layers" (version 3: the stem and every stage, each as max, mean
#: and standard deviation per channel) or "stages" (version 2: the last four stages, max and mean).
POOL_KINDS = ("layers", "stages")


def stage_modules(body, n: Optional[int] = OPEN_SET_STAGES) -> list:
    """The body's last ``n`` stages (all with ``n=None``): resnet's layer1..layer4, timm's ``stages``
    (or ``blocks``).

    A top-level child with sub-modules is a stage (resnet's conv1, bn1, relu and maxpool have none).
    """
    import torch.nn as nn

    for name in ("stages", "blocks"):
        m = getattr(body, name, None)
        if isinstance(m, nn.Sequential) and len(m):
            found = list(m)
            break
    else:
        found = [m for m in body.children() if next(m.children(), None) is not None]
    return found if n is None else found[-n:]


def channel_stats(fm, *, std: bool = False) -> list:
    """Each channel's max and mean (and standard deviation) over the positions of feature maps
    (N, C, H, W): float32 tensors (N, C).

    Reduced over the positions as a pass lays them out (channels last: a picture's rows are
    (position, channel)), the deviation from the mean of squares: 4.6x faster than ``torch.amax``,
    ``torch.mean`` and ``torch.std`` over (2, 3) (the none-of-these features took 1.5 ms a picture
    at 224 px, a sixth of a forward); the figures agree to a millionth.
    """
    fm = fm.float()
    n, c = fm.shape[:2]
    flat = fm.permute(0, 2, 3, 1).reshape(n, -1, c)
    stats = [flat.amax(1), flat.mean(1)]
    if std:
        stats.append((flat * flat).mean(1).sub_(stats[1] * stats[1]).clamp_(min=0).sqrt_())
    return stats


class StagePool:
    """Forward hooks on a body's layers that keep each batch's pooled outputs (the none-of-these features).

    ``kind="layers"`` (version 3): the stem's output (what enters the first stage) and every stage's
    output, each pooled per channel as max, mean and standard deviation (first and second moments,
    the per-layer feature statistics of Lee et al., NeurIPS 2018); each statistic scaled to unit
    length, the layer's block to unit length. The stem and first stage keep colour and local texture,
    which the last stage pools away. :attr:`widths` gives each layer's width (the blocks side by side).

    ``kind="stages"`` (version 2): the last four stages, max and average pooled, each scaled to unit
    length, the whole row to unit length.

    Use as a context manager around the forward passes; :meth:`take` returns the rows of the batches
    since the last call (float32 tensor).
    """

    def __init__(self, body, n: int = OPEN_SET_STAGES, *, kind: str = "layers"):
        if kind not in POOL_KINDS:
            raise ValueError(f"kind: one of {POOL_KINDS}")
        self.kind = kind
        self.modules = stage_modules(body, None if kind == "layers" else n)
        self.widths: list[int] = []
        self._got: list = []
        self._handles: list = []

    def _pool(self, out) -> None:
        import torch

        F = torch.nn.functional
        if self.kind == "stages":
            self._got.append(F.normalize(torch.cat(channel_stats(out), 1), dim=1))
            return
        stats = channel_stats(out, std=True)
        self._got.append(torch.cat([F.normalize(v, dim=1) for v in stats], 1) / (len(stats) ** 0.5))

    def _hook(self, _module, _inputs, out) -> None:
        self._pool(out)

    def _pre_hook(self, _module, inputs) -> None:
        self._pool(inputs[0])

    def __enter__(self) -> "StagePool":
        if self.kind == "layers" and self.modules:
            self._handles.append(self.modules[0].register_forward_pre_hook(self._pre_hook))
        self._handles += [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def take(self):
        import torch

        got, self._got = self._got, []
        if self.kind == "layers":
            self.widths = [g.shape[1] for g in got]
            return torch.cat(got, 1)
        return torch.cat(got, 1) / (max(1, len(got)) ** 0.5)


def network_input(batch, mean, std):
    """A uint8 batch (N, H, W, 3) tensor as the network's input: scaled, normalised, channels last.

    Converted to float in its own layout, then viewed as (N, 3, H, W): those are channels-last
    strides already, so no copy reorders it (converting the permuted view first cost a twentieth
    of quick mode's feature pass at 64 px)."""
    import torch

    return ((batch.float().div_(255).permute(0, 3, 1, 2) - mean) / std).contiguous(memory_format=torch.channels_last)


def embed_logits(model, pixels, spec: ModelSpec, *, batch_size: int = 64, device=None,
                 stop: Optional[StopToken] = None, events: EventFn = _no_events, phase: str = "scoring"):
    """``(logits, features)`` for uint8 images (N, S, S, 3) in one clean pass (eval mode, no augmentation).

    ``pixels`` is an array or :class:`Pictures` (streamed from disk, batch by batch).

    ``features`` are the pooled body outputs the head starts from (the space
    Review looks for neighbours, duplicates and outliers in), as float32; ``logits``
    the head's raw outputs (the energy score needs them; softmax loses their scale).
    """
    logits, feats, _ = _embed(model, pixels, spec, batch_size=batch_size, device=device, stop=stop,
                              events=events, phase=phase, stages=False)
    return logits, feats


def embed_with_stages(model, pixels, spec: ModelSpec, *, batch_size: int = 64, device=None,
                      stop: Optional[StopToken] = None, events: EventFn = _no_events, phase: str = "scoring",
                      kind: str = "layers", widths_out: Optional[list] = None):
    """``(logits, features, stage_features)``: :func:`embed_logits` plus the rows of
    :class:`StagePool` (of ``kind``) from the same pass (what the none-of-these score measures distances in).
    ``widths_out`` is filled with each layer's width in those rows."""
    return _embed(model, pixels, spec, batch_size=batch_size, device=device, stop=stop, events=events,
                  phase=phase, stages=kind, widths_out=widths_out)


class Rows:
    """Rows for ``n`` pictures, written a batch at a time into one array made at the first batch (its
    width and type are that batch's). A small array kept per batch, between a pass's large short-lived
    blocks, fragmented the heap once freed memory is kept (:func:`keep_freed_memory`): a 224 px pass over
    50,000 pictures peaked at 17.8 GB for 0.5 GB of features."""

    def __init__(self, n: int):
        self.n, self.array = n, None

    def put(self, at: int, rows) -> None:
        import numpy as np

        if self.array is None:
            self.array = np.empty((self.n, *rows.shape[1:]), rows.dtype)
        self.array[at:at + len(rows)] = rows


def _embed(model, pixels, spec: ModelSpec, *, batch_size: int, device, stop, events: EventFn, phase: str,
           stages, widths_out: Optional[list] = None):
    import contextlib

    import numpy as np
    import torch

    device = device or torch.device("cpu")
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    model.eval()
    body, pool, rest = model[0], model[1][:2], model[1][2:]
    n, done = len(pixels), 0
    logits, feats, staged = Rows(n), Rows(n), Rows(n)
    left = TimeLeft()
    hooks = StagePool(body, kind=stages) if stages else contextlib.nullcontext()
    with torch.inference_mode(), hooks:
        for batch in batches_of(pixels, batch_size):
            if (stop is not None and stop.is_set()) or stop_requested():
                raise Stopped("Stopped while scoring images.")
            f = pool(body(network_input(torch.from_numpy(batch).to(device), mean, std))).float()
            logits.put(done, rest(f).float().cpu().numpy())
            feats.put(done, f.cpu().numpy())
            if stages:
                # Version 3's layer features as its bank stores them (float16): half the memory of a run's
                # last pass over 50,000 pictures; version 2's stay float32, as its rules were fitted.
                staged.put(done, (hooks.take().to(torch.float16) if stages == "layers" else hooks.take()).cpu().numpy())
                if widths_out is not None:
                    widths_out[:] = hooks.widths
            done += len(batch)
            eta = left.update(done, n)
            events({"type": "phase", "phase": phase, "done": done, "total": n,
                    "eta": None if eta is None else round(eta, 1)})
    if logits.array is None:
        empty = np.zeros((0, 0), np.float32)
        return np.zeros((0, len(spec.vocab)), np.float32), empty, (empty if stages else None)
    return logits.array, feats.array, (staged.array if stages else None)


def softmax(logits):
    """Row-wise softmax of a numpy array, as float32."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def embed_pixels(model, pixels, spec: ModelSpec, **kw):
    """``(probs, features)`` for uint8 images (N, S, S, 3): :func:`embed_logits` with probabilities."""
    logits, feats = embed_logits(model, pixels, spec, **kw)
    return softmax(logits), feats


def predict_pixels(model, pixels, spec: ModelSpec, **kw):
    """Class probabilities for a uint8 array of images (N, S, S, 3), without augmentation."""
    return embed_pixels(model, pixels, spec, **kw)[0]
