"""Poor pictures: broken, almost a single flat colour, very dark, blurred or tiny.

Judged on colour and structure, not on brightness alone: a red disc on a green
background has the same brightness everywhere yet is a perfectly clear picture.
Each stored picture is read once at a small size (at most 128 px a side) and
three measures are kept, per content hash, in ``cache/quality.db``:

- ``spread``: how far the picture strays from its own median colour (RGB
  distance, 99th percentile, after a 3x3 smoothing that averages sensor and
  JPEG noise away). Under :data:`FLAT_SPREAD`: almost a single flat colour.
- ``bright``: the 98th percentile of brightness. Under :data:`DARK_BRIGHT`:
  even its brightest parts are dark (a photo with dark areas has bright ones).
- ``sharp``: the strongest colour edges (99.5th percentile of the RGB gradient)
  over the picture's contrast. Under :data:`BLUR_SHARP`: blurred. Only judged on
  pictures of at least :data:`BLUR_MIN_SIDE` px, since small ones (digit scans,
  icons) are soft by nature.

The thresholds and their precision come from ``bench/quality.py``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable, Optional

from .errors import Stopped
from .jobs import step_progress, stop_requested

#: Bump when a measure changes: cached values of another version are measured again.
VERSION = 2
#: Side (px) the measures are taken at.
SIDE = 128
FLAT_SPREAD = 10.0
DARK_BRIGHT = 40.0
BLUR_SHARP = 0.2
BLUR_MIN_SIDE = 128
#: Stored pictures whose shorter side is under this many pixels are "tiny".
TINY_SIDE = 64


@dataclass
class Quality:
    """The measures of one stored picture, or why it cannot be read."""

    spread: float = 0.0
    bright: float = 0.0
    sharp: float = 0.0
    colour: tuple = (0, 0, 0)  # its median colour, to name a flat one
    error: str = ""


@dataclass
class Problem:
    """What is wrong with a picture: a kind, a score (higher: look sooner) and words for a person."""

    kind: str      # broken, flat, dark, blurred, tiny
    score: float
    detail: str


def measure_image(im) -> Quality:
    """The measures of a PIL image (any mode); the image is reduced to :data:`SIDE` first."""
    import numpy as np
    from PIL import Image

    im = im.convert("RGB")
    if max(im.size) > SIDE:
        im = im.copy()
        im.thumbnail((SIDE, SIDE), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.float32)
    h, w = a.shape[:2]
    # The picture with its edge pixels repeated once around it (np.pad's "edge" mode without its overhead),
    # then the mean of each 3x3 neighbourhood: the nine shifted copies added in the order np.pad's version
    # added them, so every value is the same to the last bit (checked on 2,000 pictures and odd sizes).
    p = np.empty((h + 2, w + 2, 3), np.float32)
    p[1:-1, 1:-1] = a
    p[0, 1:-1], p[-1, 1:-1] = a[0], a[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    smooth = p[0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            if dy or dx:
                smooth += p[dy:dy + h, dx:dx + w]
    smooth /= 9.0
    med = np.median(np.ascontiguousarray(smooth.reshape(-1, 3).T), axis=1)  # per channel, on contiguous rows
    spread = float(np.percentile(np.sqrt(((smooth - med) ** 2).sum(2)), 99))
    bright = float(np.percentile(a @ np.array([0.299, 0.587, 0.114], np.float32), 98))
    gy, gx = np.gradient(a, axis=(0, 1))
    edge = float(np.percentile(np.sqrt((gx ** 2 + gy ** 2).sum(2)), 99.5))
    return Quality(spread=round(spread, 3), bright=round(bright, 3), sharp=round(edge / max(spread, 1.0), 4),
                   colour=tuple(int(round(float(x))) for x in med))


def measure(path) -> Quality:
    """The measures of a stored picture (JPEG), read at a small size."""
    from PIL import Image

    try:
        with Image.open(path, formats=["JPEG"]) as im:
            im.draft("RGB", (SIDE, SIDE))
            return measure_image(im)
    except FileNotFoundError:
        return Quality(error="its file is missing")
    except (OSError, ValueError, SyntaxError) as e:
        return Quality(error=f"it can no longer be read ({type(e).__name__})")


def colour_name(rgb) -> str:
    """A plain name for a colour: black, white, grey, or its hue."""
    import colorsys

    r, g, b = (x / 255.0 for x in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.15:
        return "black"
    if s < 0.15:
        return "white" if v > 0.85 else "grey"
    hues = ["red", "orange", "yellow", "green", "green", "cyan", "blue", "blue", "purple", "pink", "red"]
    return hues[min(int(h * 10 + 0.5), 10)]


def judge(q: Quality, width: int, height: int) -> Optional[Problem]:
    """What is wrong with a picture of ``width`` x ``height`` px measured as ``q``; None when it is fine."""
    if q.error:
        return Problem("broken", 1.0, f"Broken picture: {q.error}.")
    if q.spread < FLAT_SPREAD:
        return Problem("flat", 0.9, f"Almost a single flat colour ({colour_name(q.colour)}): "
                                    "there is nothing to learn from it.")
    if q.bright < DARK_BRIGHT:
        return Problem("dark", 0.75, "Very dark: even its brightest parts are nearly black.")
    if min(width, height) >= BLUR_MIN_SIDE and q.sharp < BLUR_SHARP:
        return Problem("blurred", 0.65, "Blurred: no sharp edge anywhere in it.")
    if min(width, height) < TINY_SIDE:
        return Problem("tiny", 0.6, f"Tiny: {width}×{height} pixels; the network sees little detail.")
    return None


# --- the cache (derived data: cache/quality.db, safe to delete) ------------------------------------
class QualityStore:
    """Measures per content hash; rows of another :data:`VERSION` are ignored (measured again)."""

    def __init__(self, project):
        self.path = project.cache_dir / "quality.db"
        project.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._con() as con:
            con.execute("CREATE TABLE IF NOT EXISTS quality(sha256 TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                        " spread REAL, bright REAL, sharp REAL, r INTEGER, g INTEGER, b INTEGER)")

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get(self, shas: list[str]) -> dict[str, Quality]:
        out: dict[str, Quality] = {}
        con = self._con()
        try:
            for i in range(0, len(shas), 500):
                chunk = shas[i:i + 500]
                q = ("SELECT sha256, spread, bright, sharp, r, g, b FROM quality WHERE version=? AND sha256 IN"
                     f" ({','.join('?' * len(chunk))})")
                for sha, spread, bright, sharp, r, g, b in con.execute(q, [VERSION, *chunk]):
                    out[sha] = Quality(spread, bright, sharp, (r, g, b))
        finally:
            con.close()
        return out

    def put(self, rows: Iterable[tuple[str, Quality]]) -> None:
        rows = [(sha, VERSION, q.spread, q.bright, q.sharp, *q.colour) for sha, q in rows]
        if not rows:
            return
        con = self._con()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO quality VALUES(?,?,?,?,?,?,?,?)", rows)
        finally:
            con.close()


def item_quality(project, items: list) -> dict[str, Quality]:
    """Quality per item id, measured once per content hash (a failure is measured again next time)."""
    # Measures per content hash never change (a new VERSION is a new program), so they are also kept in memory:
    # Review asks for 50,000 of them several times per view.
    memo = _MEMO.setdefault(str(project.cache_dir), {})
    if all(it.sha256 in memo for it in items):
        return {it.id: memo[it.sha256] for it in items}
    store = QualityStore(project)
    known = store.get(sorted({it.sha256 for it in items} - memo.keys()))
    known.update(memo)
    out, new = {}, []
    missing = sum(1 for it in items if it.sha256 not in known)
    for it in items:
        q = known.get(it.sha256)
        if q is None:
            if len(new) % 50 == 0:
                step_progress(len(new), missing, "checking new pictures")
            if stop_requested():  # the step that asked (Review) was stopped: keep what was measured
                store.put(new)
                raise Stopped("Stopped while checking pictures; the ones checked so far are remembered.")
            q = measure(project.path_of(it))
            if not q.error:
                new.append((it.sha256, q))
                known[it.sha256] = q
        out[it.id] = q
    store.put(new)
    memo.update((sha, q) for sha, q in known.items() if not q.error)
    return out


_MEMO: dict[str, dict] = {}  # cache folder -> {sha256: Quality}, measures without an error


def problems(project, items: list) -> dict[str, Problem]:
    """The poor pictures among ``items``: item id -> :class:`Problem`."""
    q = item_quality(project, items)
    out = {}
    for it in items:
        p = judge(q[it.id], it.width, it.height)
        if p is not None:
            out[it.id] = p
    return out
