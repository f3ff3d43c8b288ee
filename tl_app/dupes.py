"""Copies of the same picture: found by a colour fingerprint, confirmed by aligning the two pictures.

A perceptual hash (a 32x32 grey DCT) calls many different pictures "the same":
365 pairs among scikit-learn's 1,797 distinct digits, half of a set of flat
drawings that differ only in colour, and it misses most copies cropped by a few
percent. Here a hit is only ever a *candidate*:

1. **Fingerprint** (once per picture, cached per content hash): a 32x32 colour
   thumbnail and a 64x64 grey one of the picture with any thin plain border
   trimmed away, and the size of what is left (for the aspect ratio and for
   how much real detail the grey thumbnail holds).
2. **Candidates**: the few pictures whose 8x8 colour descriptors correlate best
   with each picture's, and with its middle (copies cropped a little), as
   nearest neighbours (no distance threshold for a similar-looking corpus to
   flood), shortlisted by how well 16 crops of one fit the other whole.
3. **Alignment**: each shortlisted pair is aligned as a crop of one another
   (left, top, right, bottom margins, same scale both ways) by Gauss-Newton
   steps on 16 and 32 px grey thumbnails, starting from the best-fitting crop,
   the picture that shows more being the one cropped. Pairs are judged in
   rounds, most alike first; a pair whose pictures are already joined through
   confirmed copies is not judged at all.
4. **Coarse verdict**: the colour difference of the aligned pair on a 16x16
   grid (outer ring left out). The same picture re-encoded, resized, cropped up
   to about 10% a side or with a thin border differs little everywhere; a short
   text overlay differs in one band of rows while the rest matches and holds
   most of the picture's detail. The low-frequency colour must agree too: the
   mean colour of each quarter-by-quarter block (a caption's band left out)
   within a few levels where the picture is smooth, more where its colour
   changes fast (misalignment moves colour only there). Two sunsets of other
   sky colours, or with a disc or band of another size, can be aligned as a
   crop close enough on the grid, but not that close. Close without passing:
   a *possible* near copy.
5. **Fine verdict**: smooth pictures of the same colours (skies, seas, pages,
   textures) pass the coarse grid; they differ in thin lines and small marks.
   The band-pass detail of the two grey thumbnails, at the finest scale both
   pictures hold, is compared in blocks of 8x8 pixels (aligned again on the
   detail when it differs): a copy's detail agrees in nearly every block that
   has any and correlates over all of them, a caption's band aside; else the
   pair is at most a possible near copy, or different pictures. A left-right
   flip is a *mirrored* copy (every copy found is also compared flipped).
   Possible and mirrored copies are shown only in Review's loose view, never
   refused at download.

The thresholds come from ``bench/dupes.py`` (distinct digits, flat drawings,
similar photo-like scenes, skies, pages, sketches and sunset-like horizons;
copies made with every transformation above; the README's demo pictures held out), which prints the
false-duplicate rate per corpus, copy recall and time per picture against the
perceptual hash alone.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .errors import Stopped
from .jobs import step_progress, stop_requested

#: Side of the stored colour thumbnail, of the grey one kept for fine detail, and the least a stored
#: JPEG is decoded at to make them.
THUMB = 32
FINE = 64
DECODE_SIDE = 64
#: Bump when the fingerprint or the verdict changes: cached fingerprints of another version are recomputed.
VERSION = 3
#: Nearest neighbours (by fingerprint) checked per picture, and those checked for a mirrored copy.
NEIGHBOURS = 6
MIRROR_NEIGHBOURS = 2
#: Nearest neighbours of each picture's middle (copies cropped a little), and the search's shortcut:
#: similarities first on this many main components of the descriptors, this many more kept.
CROP_NEIGHBOURS = 3
SEARCH_DIMS = 48
SEARCH_EXTRA = 8
#: Stored pictures from which a :class:`CopyIndex` bounds correlations on the main components (fewer: a scan).
INDEX_FROM = 2048
#: Fingerprint correlation under which two pictures are never compared (copies measured at >= 0.83).
MIN_SIMILARITY = 0.75
#: Of a picture's neighbours, the few most alike once crops are allowed (16 crops each way) are aligned.
SHORTLIST = 3
SHORTLIST_SIMILARITY = 0.8
#: Gauss-Newton steps of the alignment at 8 px (both directions) and at 16 px.
STEPS_COARSE = 1
STEPS_FINE = 2
#: Largest margin (fraction of a side) a crop may remove, and how far an alignment may reach outside.
MAX_CROP = 0.14
MAX_OUTSIDE = 0.03
#: A thin border: a plain band on all four sides, at most this fraction of the side.
BORDER_MAX = 0.08
#: How far (mean, 0-255) a line of the band may stray from its colour: JPEG bleeds colour into a thin band.
BORDER_PLAIN = 16

# Verdict thresholds (colour difference 0-1, on the aligned 16x16 grid; see bench/dupes.py).
SAME_MEAN = 0.02          # mean difference of the same picture
SAME_PEAK = 0.12          # 98th percentile of the cell differences
OVERLAY_MEAN = 0.018      # the same outside the band that differs most (a text overlay)
OVERLAY_PEAK = 0.05
OVERLAY_DETAIL = 0.6      # share of the picture's detail that must lie outside that band
OVERLAY_ROWS = 3          # height of the band, in rows of the 14-row interior
IDENTICAL_MEAN = 0.02     # "photo unavailable" placeholders: the whole picture, nothing cropped
IDENTICAL_CROP = 0.04      # (the alignment of two sizes of one picture may be off by 3%)
MIRROR_MARGIN = 0.004     # a mirrored copy fits flipped better by this much (mean colour difference) at least
POSSIBLE_MEAN = 0.03      # closer than this but not confirmed: a possible near copy
POSSIBLE_REST = 0.025
# Low-frequency colour (see _verdict_features): the mean colour of each quarter-by-quarter block of the
# aligned grid (the band a caption may cover left out) must agree within LOW_LEVELS + LOW_SLOPE x the block's
# mean colour gradient (levels per cell: misalignment moves colour only where it changes) for a copy; a
# pair beyond LOW_POSSIBLE times that is not even a possible near copy.
LOW_LEVELS = 3.0
LOW_SLOPE = 0.1
LOW_SAME = 1.5
LOW_POSSIBLE = 2.5
# Fine detail, on the grey 64 px thumbnails (see _detail_kind): blocks of 8x8 pixels hold detail when its
# mean square is at least DETAIL_ENERGY; the two pictures share it when it correlates at DETAIL_AGREE.
DETAIL_ENERGY = 0.00003
DETAIL_AGREE = 0.4
DETAIL_BLOCKS = 2         # this many blocks with detail are evidence enough...
DETAIL_SAME = 0.15        # ...a copy differs in at most this share of them...
DETAIL_POSSIBLE = 0.4     # ...a possible near copy in at most this (more: different pictures)
DETAIL_CORR = 0.4         # ...and a copy's detail correlates at least this much over all those blocks
CAPTION_BESIDE = 4        # a band left out as a caption needs this many blocks with detail beside it
CAPTION_ONE_SIDED = 0.8   # a caption: the differing blocks of one band, this share with detail on one side,
CAPTION_ENERGY = 0.001    # ...and at least three of them with this much (lettering)
FINE_COVER = 0.75          # share of the compared region that must lie inside the picture
FINE_CHUNK = 32            # pairs compared at once: small enough to stay in the processor's cache
REALIGN_BLUR = ((3.0, 3), (1.5, 1))  # pairs whose detail differs are aligned again on it, blurred this much (px)

#: Verdicts, strongest first. ``same`` and ``overlay`` are copies; the others are only shown in Review.
SAME, OVERLAY, MIRRORED, POSSIBLE = "same", "overlay", "mirrored", "possible"
COPY_KINDS = (SAME, OVERLAY)


@dataclass(frozen=True)
class Fingerprint:
    """A picture's 32x32 colour and 64x64 grey thumbnails (plain border trimmed) and the size of what it shows.

    The colour thumbnail finds and aligns candidates; the grey one holds the thin
    lines and small marks that tell apart two pictures of the same smooth sky,
    sea or page. ``width`` and ``height`` are in pixels of the decoded picture:
    they say how much real detail the grey thumbnail holds.
    """

    thumb: bytes          # THUMB * THUMB * 3 bytes, RGB
    width: float
    height: float
    grey: bytes           # FINE * FINE bytes

    def array(self):
        import numpy as np

        return np.frombuffer(self.thumb, dtype=np.uint8).reshape(THUMB, THUMB, 3)

    @property
    def blob(self) -> bytes:
        """Both thumbnails in one value, as the caches store them."""
        return self.thumb + self.grey

    @classmethod
    def from_blob(cls, blob: bytes, width: float, height: float) -> "Fingerprint":
        """The fingerprint stored as :attr:`blob` (raises ValueError for a blob of another version)."""
        n = THUMB * THUMB * 3
        if len(blob) != n + FINE * FINE:
            raise ValueError("a fingerprint of another version")
        return cls(bytes(blob[:n]), float(width), float(height), bytes(blob[n:]))


@dataclass(frozen=True)
class Match:
    """Two pictures (by index) judged copies of one another, or possibly so.

    ``kind`` is one of ``same``, ``overlay`` (the same picture with a short text
    or mark on it), ``mirrored`` or ``possible``. ``identical`` means the whole
    picture matched (no crop, nothing added): what placeholder detection needs.
    ``difference`` is the mean colour difference after alignment (0-1).
    """

    a: int
    b: int
    kind: str
    difference: float
    identical: bool = False

    @property
    def is_copy(self) -> bool:
        return self.kind in COPY_KINDS


# --- fingerprints -------------------------------------------------------------------------------
def _border(a) -> Optional[tuple[int, int, int, int]]:
    """``(left, top, right, bottom)`` pixels of a thin plain border on all four sides of ``a`` (H,W,3), or None.

    A band counts when each of its lines is nearly one colour, the same colour
    on every side, and no wider than :data:`BORDER_MAX` of the side (wider, it
    is the picture's own background and stays).
    """
    import numpy as np

    h, w = a.shape[:2]
    if h < 8 or w < 8:
        return None
    corners = a[[0, 0, -1, -1], [0, -1, 0, -1]].astype(np.int16)
    if int((corners.max(0) - corners.min(0)).max()) > 40:  # most pictures: not one colour at the corners
        return None
    c = corners.mean(0).astype(np.int16)
    ly, lx = max(1, int(BORDER_MAX * h)), max(1, int(BORDER_MAX * w))
    # Quick answer for the usual case, a plain background: still plain past a border's width.
    for line in (a[ly], a[h - 1 - ly], a[:, lx], a[:, w - 1 - lx]):
        d = np.abs(line.astype(np.int16) - c).max(1)
        if d.mean() <= 10 and d.max() <= 50:
            return None
    # The lines of the four strips, outermost first: top, bottom (W long), left, right (H long).
    rows = np.concatenate([a[:ly + 1], a[::-1][:ly + 1]]).astype(np.int16)
    cols = np.concatenate([a[:, :lx + 1], a[:, ::-1][:, :lx + 1]], axis=1).astype(np.int16)
    dr = np.abs(rows - c).max(2)
    dc = np.abs(cols - c).max(2)
    plain_r = (dr.mean(1) <= BORDER_PLAIN) & (dr.max(1) <= 50)
    plain_c = (dc.mean(0) <= BORDER_PLAIN) & (dc.max(0) <= 50)
    runs = []
    for plain, limit in ((plain_c[:lx + 1], lx), (plain_r[:ly + 1], ly), (plain_c[lx + 1:], lx),
                         (plain_r[ly + 1:], ly)):
        if plain.all() or not plain[0]:  # the picture's own background, or no band at all
            return None
        runs.append(int(np.argmin(plain)))
    return tuple(runs)  # type: ignore[return-value]


def fingerprint(im) -> Fingerprint:
    """The fingerprint of a PIL image (any mode, any size)."""
    import numpy as np
    from PIL import Image

    rgb = im if im.mode == "RGB" else im.convert("RGB")
    small = rgb.reduce(max(1, max(rgb.size) // 256)) if max(rgb.size) > 512 else rgb
    box = (0.0, 0.0, float(rgb.width), float(rgb.height))
    w, h = small.size
    corners = [small.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    plain_corners = max(max(c) - min(c) for c in zip(*corners)) <= 40
    border = _border(np.asarray(small)) if plain_corners else None  # most pictures stop here
    if border is not None:
        sx, sy = rgb.width / small.width, rgb.height / small.height
        # One line more: the line where the border meets the picture is a blend of both.
        left, top, right, bottom = (b + 1 for b in border)
        box = (left * sx, top * sy, rgb.width - right * sx, rgb.height - bottom * sy)
    fine = rgb.resize((FINE, FINE), Image.Resampling.BOX, box=box)
    thumb = fine.reduce(FINE // THUMB)  # 2x2 averages: the same as from the picture
    return Fingerprint(thumb.tobytes(), box[2] - box[0], box[3] - box[1], fine.convert("L").tobytes())


def fingerprint_stored(src) -> Fingerprint:
    """Fingerprint of a stored JPEG (a path or a file object), decoded at a reduced size."""
    from PIL import Image

    with Image.open(src, formats=["JPEG"]) as im:
        im.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
        return fingerprint(im)


# --- the arrays every comparison works on ---------------------------------------------------------
class _Prints:
    """Fingerprints as arrays: thumbnails (uint8), content sizes and 8x8 descriptors for candidates."""

    def __init__(self, prints: Sequence[Fingerprint]):
        import numpy as np

        n = len(prints)
        self.thumbs = (np.frombuffer(b"".join(p.thumb for p in prints), dtype=np.uint8).reshape(n, THUMB, THUMB, 3)
                       if n else np.zeros((0, THUMB, THUMB, 3), np.uint8))
        self.greys = (np.frombuffer(b"".join(p.grey for p in prints), dtype=np.uint8).reshape(n, FINE, FINE)
                      if n else np.zeros((0, FINE, FINE), np.uint8))
        self.sizes = np.array([(p.width, p.height) for p in prints], dtype=np.float32).reshape(n, 2)
        self.desc = _descriptors(self.thumbs)
        self._levels: dict = {}

    def __len__(self) -> int:
        return len(self.thumbs)

    def levels(self, flip: bool = False):
        """``(x16, g, g16, g8)`` of every picture (see :func:`_levels`), made once."""
        if flip not in self._levels:
            self._levels[flip] = _levels(self.thumbs, flip=flip)[1:]
        return self._levels[flip]

    def desc_of(self, idx, flip: bool = False):
        """Descriptors of the pictures ``idx`` (of their left-right flips with ``flip``)."""
        return _descriptors(self.thumbs[idx], flip=True) if flip else self.desc[idx]

    def colour(self, idx, flip: bool = False):
        """Colour thumbnails (P,3,32,32) in 0-1 of the pictures ``idx``."""
        import numpy as np

        if not hasattr(self, "_chw"):
            self._chw = np.ascontiguousarray(self.thumbs.transpose(0, 3, 1, 2))
        x = self._chw[idx].astype(np.float32)
        x *= 1 / 255.0
        return np.ascontiguousarray(x[..., ::-1]) if flip else x

    def fine(self, idx, flip: bool = False):
        """Grey 64x64 thumbnails (P,1,64,64) in 0-1 of the pictures ``idx``."""
        import numpy as np

        x = self.greys[idx][:, None].astype(np.float32)
        x *= 1 / 255.0
        return np.ascontiguousarray(x[..., ::-1]) if flip else x


def _half(x):
    """Box-average the last two axes to half their size."""
    return 0.25 * (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])


def _levels(thumbs, flip: bool = False):
    """Colour (N,3,32,32), colour at 16, grey at 32 and 16 (N,1,n,n) and grey at 8 (N,8,8), in 0-1."""
    import numpy as np

    x = np.ascontiguousarray(thumbs.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= 1 / 255.0
    if flip:
        x = np.ascontiguousarray(x[..., ::-1])
    x16 = _half(x)
    g = (x[:, :1] + x[:, 1:2] + x[:, 2:]) * (1 / 3)
    g16 = _half(g)
    return x, x16, g, g16, _half(g16)[:, 0]


def _descriptors(thumbs, flip: bool = False):
    """Zero-mean, unit-length 8x8 colour thumbnails (their dot product is a correlation)."""
    import numpy as np

    n = len(thumbs)
    x = thumbs.reshape(n, 8, 4, 96).sum(2, dtype=np.uint16)            # rows summed in fours: n,8,32*3
    x = x.reshape(n, 8, 8, 4, 3).sum(3).astype(np.float32)             # then columns: n,8,8,3
    if flip:
        x = x[:, :, ::-1]
    d = x.reshape(n, -1) * (1 / (16 * 255.0))
    d -= d.mean(1, keepdims=True)
    d /= np.sqrt(np.einsum("ij,ij->i", d, d))[:, None] + 1e-3
    return d


_VIEW_MATS: dict = {}


def _view_mats():
    """Sampling matrices (8x16) for the margins 0 and 10% on each side: 4 per axis, 16 views."""
    import numpy as np

    if not _VIEW_MATS:
        spans = [(lo, 1 - hi) for lo in (0.0, 0.1) for hi in (0.0, 0.1)]
        m, _ = _boxmats(8, 16, np.array([s[0] for s in spans], np.float32), np.array([s[1] for s in spans], np.float32))
        _VIEW_MATS["m"] = m  # (4, 8, 16)
    return _VIEW_MATS["m"]


def _view_margins():
    """(16, 4) margins (left, top, right, bottom) of the views :func:`_views` makes, in its order."""
    import numpy as np

    lo_hi = [(lo, hi) for lo in (0.0, 0.1) for hi in (0.0, 0.1)]
    return np.array([(lo_hi[x][0], lo_hi[y][0], lo_hi[x][1], lo_hi[y][1]) for y in range(4) for x in range(4)],
                    np.float32)


def _views(x16, flip: bool = False):
    """(N, 16, 192) descriptors of 16 crops of each picture (margins of 0 or 10% a side), from its colour
    thumbnail at 16 px (N,3,16,16 in 0-1, :meth:`_Prints.levels`)."""
    import numpy as np

    m = _view_mats()                                                    # 4 spans, 8 out, 16 in
    mm = np.ascontiguousarray(m.transpose(2, 0, 1).reshape(16, 32))     # 16 in -> 4 spans x 8 out
    x = x16[..., ::-1] if flip else x16
    n = len(x)
    # Two plain matrix products (columns, then rows) rather than many small ones.
    v = np.ascontiguousarray(x).reshape(-1, 16) @ mm                    # N*3*16(y), 4x*8
    v = v.reshape(n, 3, 16, 32).transpose(0, 1, 3, 2).reshape(-1, 16) @ mm  # N*3*32, 4y*8
    v = v.reshape(n, 3, 4, 8, 4, 8).transpose(0, 4, 2, 5, 3, 1).reshape(n, 16, -1)  # N, y, x, 8, 8, colour
    v -= v.mean(2, keepdims=True)
    v /= np.sqrt(np.einsum("nvk,nvk->nv", v, v))[..., None] + 1e-3
    return v


def _neighbours(queries, base, k: int, *, exclude_self: bool):
    """``(query, base)`` index pairs: each query's ``k`` most similar base rows (at least MIN_SIMILARITY).

    Many against many, the similarities are first taken on the descriptors'
    main components (:data:`SEARCH_DIMS` of 192) and a few more than ``k``
    kept, which are then measured in full: nearly the same neighbours in half
    the time.
    """
    import numpy as np

    n, m = len(queries), len(base)
    k = min(k, m - (1 if exclude_self else 0))
    if n == 0 or k <= 0:
        return np.zeros((0, 2), np.int64)
    reduce = n * m > 4_000_000 and m > k + SEARCH_EXTRA + 1
    if reduce:
        _, vec = np.linalg.eigh(base.T @ base)
        proj = np.ascontiguousarray(vec[:, ::-1][:, :SEARCH_DIMS])
        qs, bs, kk = queries @ proj, base @ proj, k + SEARCH_EXTRA
    else:
        qs, bs, kk = queries, base, k
    width = 64
    pad = (-m) % width

    def chunk(s: int):
        sim = np.empty((min(256, n - s), m + pad), np.float32)
        np.matmul(qs[s:s + 256], bs.T, out=sim[:, :m])
        sim[:, m:] = -9.0
        if exclude_self:
            sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -9.0
        # The kk best of a row lie in the kk blocks of columns whose best are best: pick those blocks,
        # then the kk best within them (two small selections instead of one over every column).
        blocks = sim.reshape(len(sim), -1, width)
        bmax = blocks
        while bmax.shape[2] > 1:  # halving: much quicker than max() over the last axis
            half = bmax.shape[2] // 2
            bmax = np.maximum(bmax[:, :, :half], bmax[:, :, half:])
        top = np.argpartition(-bmax[:, :, 0], min(kk, blocks.shape[1]) - 1, axis=1)[:, :kk]
        within = np.take_along_axis(blocks, top[:, :, None], 1).reshape(len(sim), -1)
        pick = np.argpartition(-within, kk - 1, axis=1)[:, :kk]
        cols = (np.take_along_axis(top, pick // width, 1) * width + pick % width)
        rows = np.repeat(np.arange(len(sim)), kk)
        cols = cols.ravel()
        val = (np.einsum("ij,ij->i", queries[s + rows], base[np.minimum(cols, m - 1)]) if reduce
               else sim[rows, cols])
        val[cols >= m] = -9.0
        if exclude_self:
            val[s + rows == cols] = -9.0
        val = val.reshape(len(sim), kk)
        best = np.argpartition(-val, k - 1, axis=1)[:, :k]
        cols = np.take_along_axis(cols.reshape(len(sim), kk), best, 1).ravel()
        val = np.take_along_axis(val, best, 1).ravel()
        rows = np.repeat(np.arange(s, s + len(sim)), k)
        keep = val >= MIN_SIMILARITY
        return np.stack([rows[keep], cols[keep]], 1)

    out = _chunked(chunk, range(0, n, 256))
    return np.concatenate(out).astype(np.int64)


def _chunked(fn, starts):
    """``[fn(s) for s in starts]``, on two threads when there are many: NumPy lets go of the GIL in
    its matrix products and array operations, so a 50,000-picture search takes both cores (the
    results are the same, in the same order)."""
    starts = list(starts)
    if len(starts) < 8:
        return [fn(s) for s in starts]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, starts))


def _central(x16):
    """Descriptors of each picture's middle (5% off each side): close to a copy cropped by up to 10% a side.

    Made from the colour thumbnails at 16 px (N,3,16,16 in 0-1, :meth:`_Prints.levels`).
    """
    import numpy as np

    m, _ = _boxmats(8, 16, np.array([0.05], np.float32), np.array([0.95], np.float32))
    m = np.ascontiguousarray(m[0].T)                                     # 16 in -> 8 out
    n = len(x16)
    x = (x16.reshape(-1, 16) @ m).reshape(n, 3, 16, 8)                   # across
    x = (x.transpose(0, 1, 3, 2).reshape(-1, 16) @ m).reshape(n, 3, 8, 8)  # down: N,3,x,y
    d = x.transpose(0, 3, 2, 1).reshape(n, -1)                           # N, y, x, colour
    d -= d.mean(1, keepdims=True)
    d /= np.sqrt(np.einsum("ij,ij->i", d, d))[:, None] + 1e-3
    return d


def _shortlist(x16, desc, cand, keep: int, *, flip: bool = False, base_desc=None):
    """Of candidate pairs ``(query, base)``, the ``keep`` best per query by crop-tolerant similarity.

    The similarity of a pair is the best correlation between the base picture
    whole and one of 16 crops of the query (margins of 0 or 10% a side); when
    the pair is listed both ways, both directions count. Computed per query row
    (its crops against its candidates' descriptors), so nothing large is gathered.

    Returns every listed pair, the best crop of each query (its index in
    :func:`_view_margins`), that crop's own similarity, and which pairs are kept.
    """
    import numpy as np

    if not len(cand):
        return cand, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)
    base_desc = desc if base_desc is None else base_desc
    order = np.argsort(cand[:, 0], kind="stable")
    cand = cand[order]
    q = cand[:, 0]
    starts = np.r_[0, np.nonzero(np.diff(q))[0] + 1]
    counts = np.diff(np.r_[starts, len(q)])
    width = int(counts.max())
    rows = q[starts]
    slot = np.arange(len(q)) - np.repeat(starts, counts)
    table = np.full((len(rows), width), -1, np.int64)
    table[np.repeat(np.arange(len(rows)), counts), slot] = cand[:, 1]
    sim = np.full(table.shape, -9.0, np.float32)
    view = np.zeros(table.shape, np.int64)

    def chunk(s: int) -> None:  # rows s.. of view and sim: the chunks write apart
        r = slice(s, s + 2048)
        v = _views(x16[rows[r]], flip=flip)                        # R,16,192
        d = base_desc[np.maximum(table[r], 0)]                    # R,W,192
        m = np.matmul(v, d.transpose(0, 2, 1))                    # R,16,W
        view[r] = m.argmax(1)
        sim[r] = np.take_along_axis(m, view[r][:, None, :], 1)[:, 0]

    _chunked(chunk, range(0, len(rows), 2048))
    sim[table < 0] = -9.0
    at = (np.repeat(np.arange(len(rows)), counts), slot)
    own, views = sim[at], view[at]
    pair_sim = own
    if not flip:  # a pair listed both ways: the better direction counts for both
        key = np.minimum(cand[:, 0], cand[:, 1]) * (len(x16) + 1) + np.maximum(cand[:, 0], cand[:, 1])
        uniq, inv = np.unique(key, return_inverse=True)
        best = np.full(len(uniq), -9.0, np.float32)
        np.maximum.at(best, inv, pair_sim)
        pair_sim = best[inv]
    o = np.lexsort((-pair_sim, cand[:, 0]))
    cand, pair_sim, own, views = cand[o], pair_sim[o], own[o], views[o]
    first = np.r_[0, np.nonzero(np.diff(cand[:, 0]))[0] + 1]
    rank = np.arange(len(cand)) - np.repeat(first, np.diff(np.r_[first, len(cand)]))
    ok = (rank < keep) & (pair_sim >= SHORTLIST_SIMILARITY)
    return cand, views, own, ok


# --- alignment ----------------------------------------------------------------------------------
def _boxmats(n_out: int, n_in: int, a, b):
    """Area-average sampling of ``[a, b]`` (fractions of ``n_in`` pixels) into ``n_out`` cells, per pair.

    Returns ``(P, n_out, n_in)`` weights and the share of each cell that lies
    inside the picture (parts outside are left out, not padded).
    """
    import numpy as np

    p = len(a)
    step = (b - a) * (n_in / n_out)
    lo = (a * n_in)[:, None] + step[:, None] * np.arange(n_out, dtype=np.float32)[None]
    hi = lo + step[:, None]
    reach = int(np.ceil(float(step.max()))) + 1 if p else 1
    if n_in < 48 or reach * 3 > n_in:
        # Overlap of [lo, hi] with every pixel [i, i + 1].
        i = np.arange(n_in, dtype=np.float32)
        m = np.minimum(hi[..., None], i + 1) - np.maximum(lo[..., None], i)
        np.maximum(m, 0, out=m)
    else:
        # Large grids: each cell overlaps only the few pixels from floor(lo) on; the rest are zeros.
        idx = np.floor(lo).astype(np.int64)[..., None] + np.arange(reach)
        fi = idx.astype(np.float32)
        v = np.minimum(hi[..., None], fi + 1) - np.maximum(lo[..., None], fi)
        np.maximum(v, 0, out=v)
        m = np.zeros((p, n_out, n_in + 1), np.float32)
        np.put_along_axis(m, np.where((idx >= 0) & (idx < n_in), idx, n_in), v, axis=2)  # outside: a spare column
        m = m[:, :, :n_in]
    s = m.sum(2)
    m *= (1.0 / np.maximum(s, 1e-6))[..., None]
    return m, np.minimum(s / np.maximum(step, 1e-6)[:, None], 1.0)


def _sample(img, prm, size: int, separable: bool = False):
    """The region ``prm`` = (left, top, right, bottom margins) of each image (P,C,n,n), at ``size``.

    Also returns the share of each cell inside the image (P,size,size), or with
    ``separable`` its two factors, down (P,size) and across (P,size).
    """
    import numpy as np

    n = img.shape[-1]
    my, vy = _boxmats(size, n, prm[:, 1], 1 - prm[:, 3])
    mx, vx = _boxmats(size, n, prm[:, 0], 1 - prm[:, 2])
    out = np.matmul(np.matmul(my[:, None], img), mx.transpose(0, 2, 1)[:, None])
    return out, ((vy, vx) if separable else vy[:, :, None] * vx[:, None, :])


def _keep_aspect(prm, k, tol: float = 0.03):
    """Crops keep the scale equal both ways: region height = ``k`` x region width (within ``tol``)."""
    import numpy as np

    wf = 1 - prm[:, 0] - prm[:, 2]
    hf = 1 - prm[:, 1] - prm[:, 3]
    want = k * wf
    target = np.clip(hf / np.maximum(want, 1e-6), 1 - tol, 1 + tol) * want
    d = (hf - target) * 0.5
    prm = prm.copy()
    prm[:, 1] += d
    prm[:, 3] += d
    return prm


def _refine(a, b, prm, k, iters: int, mask=None):
    """Gauss-Newton steps moving the region ``prm`` of grey ``a`` (P,1,n,n) onto grey ``b`` (P,S,S).

    ``mask`` (P,S,S), if given, weighs the pixels of ``b`` (0: left out).
    Returns the best margins seen and their squared error. The normal
    equations are assembled from sums along rows and columns (the four
    margins act on x or y only), which keeps each step to a few passes.
    """
    import numpy as np

    p, size = len(a), b.shape[-1]
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    uv = np.stack([1 - u, -u], 1)  # d(position)/d(left or top), d/d(right or bottom)
    gyb, gxb = np.gradient(b, axis=(1, 2))
    best, best_e = prm.copy(), np.full(p, np.inf, np.float32)
    eye = np.eye(4, dtype=np.float32)
    for it in range(iters + 1):
        s, w = _sample(a, prm, size)
        if mask is not None:
            w = w * mask
        s = s[:, 0]
        r = s - b
        e = (w * r * r).sum((1, 2)) / np.maximum(w.sum((1, 2)), 1e-6)
        better = e < best_e
        best[better], best_e[better] = prm[better], e[better]
        if it == iters:
            break
        gy, gx = np.gradient(s, axis=(1, 2))
        gx = (gx + gxb) * (0.5 * size / np.maximum(1 - prm[:, 0] - prm[:, 2], 0.5))[:, None, None]
        gy = (gy + gyb) * (0.5 * size / np.maximum(1 - prm[:, 1] - prm[:, 3], 0.5))[:, None, None]
        wgx, wgy = w * gx, w * gy
        hxx = np.einsum("ps,si,sj->pij", (wgx * gx).sum(1), uv, uv)
        hyy = np.einsum("ps,si,sj->pij", (wgy * gy).sum(2), uv, uv)
        hxy = np.matmul(np.matmul(uv.T[None], (wgx * gy).transpose(0, 2, 1)), uv[None])
        g_x = (wgx * r).sum(1) @ uv
        g_y = (wgy * r).sum(2) @ uv
        h = np.empty((p, 4, 4), np.float32)  # parameter order: left, top, right, bottom
        xi, yi = (0, 2), (1, 3)
        for i in range(2):
            for j in range(2):
                h[:, xi[i], xi[j]] = hxx[:, i, j]
                h[:, yi[i], yi[j]] = hyy[:, i, j]
                h[:, xi[i], yi[j]] = hxy[:, i, j]
                h[:, yi[j], xi[i]] = hxy[:, i, j]
        g = np.stack([g_x[:, 0], g_y[:, 0], g_x[:, 1], g_y[:, 1]], 1)[..., None]
        h += (1e-2 * np.trace(h, axis1=1, axis2=2) / 4 + 1e-4)[:, None, None] * eye
        step = -np.linalg.solve(h, g)[..., 0]
        prm = np.clip(prm + np.clip(step, -0.05, 0.05), -MAX_OUTSIDE, MAX_CROP)
        prm = _keep_aspect(prm, k)
    return best, best_e


class _Judged:
    """Judged pairs (``ia`` in one set of prints, ``ib`` in another) and what their verdicts rest on."""

    def __init__(self, parts: list):
        import numpy as np

        def cat(i, dtype=None):
            return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype)

        self.ia, self.ib, self.back = cat(0, np.int64), cat(1, np.int64), cat(2, bool)
        self.prm = np.concatenate([p[3] for p in parts]) if parts else np.zeros((0, 4), np.float32)
        self.k, self.mean = cat(4, np.float32), cat(5, np.float32)
        self.kinds: list = [k for p in parts for k in p[6]]
        self.whole = np.zeros(len(self.ia), bool)  # fine detail checked and alike everywhere
        self.flip = parts[0][7] if parts else False

    def __len__(self) -> int:
        return len(self.ia)

    def check(self, pr: "_Prints", qr: "_Prints", idx) -> None:
        """Apply the fine-detail verdict (:func:`_detail_kind`) to the pairs ``idx``."""
        import numpy as np

        idx = np.asarray(idx, np.int64)
        idx = idx[[self.kinds[i] is not None for i in idx]] if len(idx) else idx
        if not len(idx):
            return
        rows = _fine_measure(pr, qr, self.ia[idx], self.ib[idx], self.back[idx], self.flip, self.prm[idx],
                             self.k[idx])
        for i, row in zip(idx, rows):
            self.kinds[i] = _detail_kind(self.kinds[i], row)
            self.whole[i] = row[2] == 0 and row[3] >= 0  # no block differs, no caption left out

    def results(self, idx=None) -> list[tuple[int, int, str, float, bool]]:
        """``(a, b, kind, difference, identical)`` of the pairs ``idx`` (all) that have a verdict."""
        import numpy as np

        out = []
        for i in range(len(self)) if idx is None else idx:
            kind = self.kinds[i]
            if kind is None:
                continue
            if self.flip and kind not in (POSSIBLE, MIRRORED):
                kind = MIRRORED
            identical = (kind == SAME and not self.flip and self.mean[i] <= IDENTICAL_MEAN and self.whole[i]
                         and float(np.abs(self.prm[i]).max()) <= IDENTICAL_CROP)
            out.append((int(self.ia[i]), int(self.ib[i]), kind, round(float(self.mean[i]), 4), bool(identical)))
        return out


def _judge(pr: "_Prints", qr: "_Prints", ia, ib, *, flip: bool = False, start=None, fine: bool = True
           ) -> _Judged:
    """Align and judge pairs (``ia`` in ``pr``, ``ib`` in ``qr``).

    With ``start`` (a crop index per pair, from :func:`_shortlist`), the region of
    ``ia`` is aligned onto ``ib`` from that crop; without, both directions are tried.
    With ``fine``, every pair that passes is checked on its fine detail too; else
    the caller chooses which to check (:meth:`_Judged.check`).
    """
    parts = []
    for s in range(0, len(ia), 4096):  # bounded memory
        parts.append(_judge_chunk(pr, qr, ia[s:s + 4096], ib[s:s + 4096], flip,
                                  None if start is None else start[s:s + 4096]))
    judged = _Judged(parts)
    if fine:
        judged.check(pr, qr, range(len(judged)))
    return judged


def _judge_chunk(pr, qr, ia, ib, flip: bool, start):
    """The coarse verdict (16x16 colour grid) of a chunk of pairs, with the alignment it rests on."""
    import numpy as np

    n = len(ia)
    if n == 0:
        return (ia, ib, np.zeros(0, bool), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                np.zeros(0, np.float32), [], flip)
    _, _, g16a, g8a = pr.levels()
    _, _, g16b, g8b = qr.levels(flip)
    k = (pr.sizes[ia, 0] * qr.sizes[ib, 1]) / np.maximum(pr.sizes[ia, 1] * qr.sizes[ib, 0], 1e-6)
    if start is None:
        # Both directions: the picture that shows more (the original of a crop, the copy with a border
        # left on) is the one whose region is aligned onto the other; the better fit says which. Each
        # starts from the crop (of 16: margins of 0 or 10% a side) whose descriptor fits the other best.
        va, vb = _views(pr.levels()[0][ia]), _views(qr.levels()[0][ib], flip=flip)
        first = np.concatenate([np.matmul(va, qr.desc_of(ib, flip)[:, :, None])[..., 0].argmax(1),
                                np.matmul(vb, pr.desc[ia][:, :, None])[..., 0].argmax(1)])
        kk = np.concatenate([k, 1 / np.maximum(k, 1e-6)])
        prm, e = _refine(np.concatenate([g16a[ia], g16b[ib]]), np.concatenate([g8b[ib], g8a[ia]]),
                         _view_margins()[first], kk, STEPS_COARSE)
        back = e[n:] < e[:n]
        prm, k = np.where(back[:, None], prm[n:], prm[:n]), np.where(back, kk[n:], k)
    else:
        back = np.zeros(n, bool)
        prm, _ = _refine(g16a[ia], g8b[ib], _view_margins()[start], k, STEPS_COARSE)
    # The rest per direction, on the pictures' own arrays (no selecting between two gathered sets).
    f = {key: np.zeros(n, np.float32) for key in ("mean", "peak", "rest", "rest_peak", "detail_out", "low")}
    for way in (False, True):
        at = np.nonzero(back == way)[0]
        if not len(at):
            continue
        (rs, rf, ri), (qs, qf, qi) = ((qr, flip, ib[at]), (pr, False, ia[at])) if way else \
            ((pr, False, ia[at]), (qr, flip, ib[at]))
        r_x16, r_g, r_g16, _ = rs.levels(rf)
        q_x16, q_g, q_g16, _ = qs.levels(qf)
        prm[at], _ = _refine(r_g[ri], q_g16[qi][:, 0], prm[at], k[at], STEPS_FINE)
        sm, w = _sample(rs.colour(ri, rf), prm[at], 16)
        for key, v in _verdict_features(sm, q_x16[qi], w).items():
            f[key][at] = v
    kinds = [_kind(f, i) for i in range(n)]
    # A mirrored copy of a simple picture can pass for a crop of it (a shape off the middle moves), and
    # one of a page of text for the page itself (lines of text look alike either way). Every copy is
    # compared flipped as well, whole: if that fits clearly better, it is a mirrored copy (never refused
    # at download, only shown in Review's loose view).
    found = np.array([i for i in range(n) if kinds[i] in COPY_KINDS and not flip], np.int64)
    if len(found):
        a16, b16 = pr.levels()[0][ia[found]], qr.levels()[0][ib[found]][..., ::-1]
        mirror = np.abs(a16 - b16).mean(1)[:, 1:-1, 1:-1].mean((1, 2))  # flipped, whole, no crop
        for i, d in zip(found, mirror):
            if d < 0.8 * f["mean"][i] and f["mean"][i] - d > MIRROR_MARGIN:
                kinds[i] = MIRRORED
    return ia, ib, back, prm.astype(np.float32), k.astype(np.float32), f["mean"], kinds, flip


# --- fine detail ----------------------------------------------------------------------------------
def _band(x):
    """Fine detail of grey grids (P,n,n): 3x3 mean minus 9x9 mean, on the (P,n-8,n-8) interior.

    Thin lines and small marks stand out; smooth gradients and flat colour give
    about 0 whatever their level. (Sums of shifted slices: a few passes, each
    cheap while a chunk of pairs stays in the processor's cache.)
    """
    r3 = x[:, :-2] + x[:, 1:-1]
    r3 += x[:, 2:]                                  # rows i..i+2
    r9 = r3[:, :-6] + r3[:, 3:-3]
    r9 += r3[:, 6:]                                 # rows i..i+8
    y = r3[:, 3:-3]                                 # rows centred as r9's
    b3 = y[:, :, 3:-5] + y[:, :, 4:-4]
    b3 += y[:, :, 5:-3]
    t = r9[:, :, :-2] + r9[:, :, 1:-1]
    t += r9[:, :, 2:]
    b9 = t[:, :, :-6] + t[:, :, 3:-3]
    b9 += t[:, :, 6:]
    b3 *= 1 / 9.0
    b9 *= 1 / 81.0
    b3 -= b9
    return b3


def _blur(x, sigma: float):
    """Gaussian blur of grids (P,n,n), by a matrix on each side."""
    import numpy as np

    n = x.shape[-1]
    key = (n, round(sigma, 3))
    if key not in _BLURS:
        i = np.arange(n, dtype=np.float32)
        m = np.exp(-0.5 * ((i[:, None] - i[None]) / sigma) ** 2)
        _BLURS[key] = (m / m.sum(1, keepdims=True)).astype(np.float32)
    b = _BLURS[key]
    return np.matmul(np.matmul(b, x), b.T)


_BLURS: dict = {}


def _detail_kind(kind: Optional[str], row) -> Optional[str]:
    """The verdict ``kind`` of the coarse grid, once the fine detail ``row`` (see :func:`_fine_measure`) is seen.

    Two skies, seas or pages of the same colours (or two textures) look alike on
    the 16x16 grid; they differ in thin lines and small marks. Each pair is
    compared on the grey 64 px thumbnails at the finest scale both pictures
    really hold (the smaller side of the aligned region and of the other
    picture, at most 64 px: a copy at a quarter of the size has lost detail its
    original still shows), in blocks of 8x8 pixels: a copy's detail agrees in
    nearly every block that has any and correlates over all of them; a possible
    near copy's in most; different pictures' do not (:func:`_block_verdict`).
    A pair only close on the coarse grid stays a possible copy only if its
    detail agrees. Pairs whose detail differs are first aligned again on that
    detail (:func:`_fine_chunk`): a smooth picture pins the alignment only one
    way, its marks the other.
    """
    share, blocks, share_all, blocks_all, cover, corr = row
    if kind is None:
        return None
    if cover < FINE_COVER:  # aligned to a region well outside the picture: not a crop of it
        return None
    if blocks >= DETAIL_BLOCKS:  # detail beside any caption: it decides
        if (share_all > max(share, DETAIL_SAME) and kind != OVERLAY and blocks_all >= 0
                and blocks < CAPTION_BESIDE):
            # A band left out as a caption that neither grid confirmed, and little detail beside it to
            # go on: a few different marks look just like that.
            return POSSIBLE
        if share > (DETAIL_SAME if kind == POSSIBLE else DETAIL_POSSIBLE):
            return None  # a pair only close on the grid must match in detail to stay a possible copy
        return POSSIBLE if share > DETAIL_SAME or corr < DETAIL_CORR else kind
    if share_all > DETAIL_SAME and kind != OVERLAY and blocks_all >= 0:
        # Too little detail beside one band where the two differ, and no clear caption there (nor one
        # the 16x16 grid saw): different marks, or a faint caption. Not confirmed either way.
        return POSSIBLE
    return kind


def _fine_measure(pr, qr, ia, ib, back, flip: bool, prm, k):
    """Per pair (rows): share of differing blocks and blocks with detail beside a caption's band, the same
    over the whole picture, and the share of the compared region inside the picture (see :func:`_detail_kind`)."""
    import numpy as np

    n = len(ia)
    out = np.zeros((n, 6), np.float32)
    for way in (False, True):
        at = np.nonzero(back == way)[0]
        if not len(at):
            continue
        (rs, rf, ri), (qs, qf, qi) = ((qr, flip, ib[at]), (pr, False, ia[at])) if way else \
            ((pr, False, ia[at]), (qr, flip, ib[at]))
        p, kk = prm[at], k[at]
        region = rs.sizes[ri] * np.stack([1 - p[:, 0] - p[:, 2], 1 - p[:, 1] - p[:, 3]], 1)
        side = np.minimum(region.min(1), qs.sizes[qi].min(1))
        size = np.clip((side // 8) * 8, 24, FINE).astype(np.int64)
        for sz in np.unique(size):
            for c in np.array_split(np.nonzero(size == sz)[0], max(1, int((size == sz).sum()) // FINE_CHUNK)):
                out[at[c]] = _fine_chunk(rs.fine(ri[c], rf)[:, 0], qs.fine(qi[c], qf)[:, 0], p[c], kk[c], int(sz))
    return out


def _fine_chunk(ref, qry, prm, k, size: int):
    """:func:`_fine_measure` of a few pairs: ``ref`` (P,64,64) is the picture whose region ``prm`` is
    compared with the whole of ``qry`` (P,64,64), both at ``size`` px."""
    import numpy as np

    t = qry if size == FINE else _sample(qry[:, None], np.zeros((len(qry), 4), np.float32), size)[0][:, 0]
    bt = _band(t)
    s, w = _sample(ref[:, None], prm, size, separable=True)
    res = np.stack(_block_verdict(_block_stats(_band(s[:, 0]), bt, w)) + (_cover(w),), 1)
    score = np.where(res[:, 1] >= DETAIL_BLOCKS, res[:, 0], res[:, 2])
    again = np.nonzero(score > DETAIL_SAME)[0]
    if len(again) and REALIGN_BLUR:
        # Aligned again on the detail alone, blurred (wide reach) and then sharper, without the band of
        # rows that differs most (a caption would pull the alignment its way).
        ra = _band(np.pad(ref[again], ((0, 0), (4, 4), (4, 4)), mode="edge"))
        ta = _band(np.pad(t[again], ((0, 0), (4, 4), (4, 4)), mode="edge"))
        bs = (size - 8) // 8
        rows = np.arange(size)[None]
        top = 4 + res[again, 4][:, None].astype(np.int64) * bs
        mask = np.broadcast_to((~((rows >= top) & (rows < top + 2 * bs)))[:, :, None],
                               (len(again), size, size)).astype(np.float32)
        pa = prm[again]
        for sigma, steps in REALIGN_BLUR:  # on half grids (the blurred detail needs no more), then whole
            if sigma >= 2:
                pa, _ = _refine(_half(_blur(ra, sigma))[:, None], _half(_blur(ta, sigma * size / FINE)), pa,
                                k[again], steps, mask=_half(mask))
            else:
                pa, _ = _refine(_blur(ra, sigma)[:, None], _blur(ta, sigma * size / FINE), pa, k[again], steps,
                                mask=mask)
        s2, w2 = _sample(ref[again][:, None], pa, size, separable=True)
        res2 = np.stack(_block_verdict(_block_stats(_band(s2[:, 0]), bt[again], w2)) + (_cover(w2),), 1)
        score2 = np.where(res2[:, 1] >= DETAIL_BLOCKS, res2[:, 0], res2[:, 2])
        better = (score2 < score[again]) & (res2[:, 6] >= 0.9)  # a region that still lies inside the picture
        res[again[better]] = res2[better]
    return res[:, [0, 1, 2, 3, 6, 5]]


def _cover(w):
    """Share of a sampled grid inside the picture, from :func:`_sample`'s separable shares."""
    return (w[0] > 0.99).mean(1) * (w[1] > 0.99).mean(1)


def _block_stats(a, b, w):
    """Per block (8x8 grid) of detail maps (P,n,n): ``(P,4,8,8)`` sums of a², b², ab and pixels inside.

    ``w`` is the share inside the picture of each cell of the grid the maps
    were made from (:func:`_sample`, separable), 4 cells wider on each side.
    Only pixels inside the picture count, away from the region's edge by the
    reach of the 9x9 mean, and off the outer ring.
    """
    import numpy as np

    p, sz = a.shape[0], a.shape[-1]

    def inside(v):  # (P, sz + 8) -> (P, sz)
        ok = v > 0.99
        near = np.lib.stride_tricks.sliding_window_view(ok, 9, axis=1).all(2)  # the 9x9 mean's reach
        near[:, :2] = near[:, -2:] = False
        return near.astype(np.float32)

    iy, ix = inside(w[0]), inside(w[1])
    bs = sz // 8
    n_in = iy.reshape(p, 8, bs).sum(2)[:, :, None] * ix.reshape(p, 8, bs).sum(2)[:, None, :]
    m = iy[:, :, None] * ix[:, None, :]
    a, b = a * m, b * m

    ones = np.kron(np.eye(8, dtype=np.float32), np.ones((1, bs), np.float32))  # (8, sz): sums of blocks

    def bsum(x):  # two small matrix products: much quicker than sum() over the blocks' axes
        return np.matmul(np.matmul(ones, x), ones.T)

    return np.stack([bsum(a * a), bsum(b * b), bsum(a * b), n_in], 1)


def _block_verdict(stats):
    """Share of blocks whose fine detail differs and how many blocks have any, beside a caption's band and
    over the whole picture (see :func:`_detail_kind`); and the first of the two rows that differ most.

    A block has detail when either picture's mean square there reaches
    :data:`DETAIL_ENERGY`, and the two agree there when their detail correlates
    at :data:`DETAIL_AGREE`. The two rows of blocks that differ most are left
    out when they look like a caption: detail added to one picture only
    (different pictures differ both ways).
    """
    import numpy as np

    ea, eb, eab, n_in = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    bs2 = n_in.max((1, 2), keepdims=True)
    marked = (np.maximum(ea, eb) >= DETAIL_ENERGY * n_in) & (n_in >= 0.5 * bs2)
    bad = marked & (eab < DETAIL_AGREE * np.sqrt(ea * eb + 1e-12))
    rows = bad.sum(2)
    band = (rows[:, :-1] + rows[:, 1:]).argmax(1)
    r = np.arange(8)[None]
    inband = ((r == band[:, None]) | (r == band[:, None] + 1))[:, :, None]
    more_a, more_b = (bad & inband & (ea > eb)).sum((1, 2)), (bad & inband & (eb >= ea)).sum((1, 2))
    caption = np.maximum(more_a, more_b) >= CAPTION_ONE_SIDED * (more_a + more_b)
    out = ~(inband & caption[:, None, None])
    blocks, blocks_all = (marked & out).sum((1, 2)), marked.sum((1, 2))
    # A clear caption: a few blocks of strong detail (lettering), not a faint mark or two.
    strong = (bad & inband & (np.maximum(ea, eb) >= CAPTION_ENERGY * n_in)).sum((1, 2))
    clear = caption & (strong >= 3)
    sel = marked & out
    corr = (eab * sel).sum((1, 2)) / np.sqrt((ea * sel).sum((1, 2)) * (eb * sel).sum((1, 2)) + 1e-12)
    return ((bad & out).sum((1, 2)) / np.maximum(blocks, 1), blocks,
            bad.sum((1, 2)) / np.maximum(blocks_all, 1), np.where(clear, -1, blocks_all), band, corr)


def _verdict_features(s, t, w) -> dict:
    """Differences of aligned colour grids ``s``, ``t`` (P,3,16,16) over the interior (outer ring left out)."""
    import numpy as np

    p = len(s)
    e = np.abs(s - t).mean(1)[:, 1:-1, 1:-1]
    w = w[:, 1:-1, 1:-1]
    wsum = np.maximum(w.sum((1, 2)), 1e-6)
    mean = (e * w).sum((1, 2)) / wsum
    cells = np.where(w > 0.5, e, 0).reshape(p, -1)
    q = max(1, int(round(0.02 * cells.shape[1])))
    peak = -np.partition(-cells, q - 1, axis=1)[:, q - 1]  # about the 98th percentile
    rows = (e * w).sum(2) / np.maximum(w.sum(2), 1e-6)
    cs = np.concatenate([np.zeros((p, 1), np.float32), np.cumsum(rows, 1)], 1)
    band = (cs[:, OVERLAY_ROWS:] - cs[:, :-OVERLAY_ROWS]).argmax(1)
    r = np.arange(e.shape[1])[None]
    outside = ~((r >= band[:, None]) & (r < band[:, None] + OVERLAY_ROWS))
    wo = w * outside[:, :, None]
    rest = (e * wo).sum((1, 2)) / np.maximum(wo.sum((1, 2)), 1e-6)
    cells_o = np.where((wo > 0.5), e, 0).reshape(p, -1)
    q_o = max(1, int(round(0.02 * outside.sum(1).max() * e.shape[2])))
    rest_peak = -np.partition(-cells_o, q_o - 1, axis=1)[:, q_o - 1]

    def detail(x):
        gy, gx = np.gradient(x.mean(1), axis=(1, 2))
        return np.hypot(gx, gy)[:, 1:-1, 1:-1]

    d = np.maximum(detail(s), detail(t))
    detail_out = (d * outside[:, :, None]).sum((1, 2)) / np.maximum(d.sum((1, 2)), 1e-6)
    return {"mean": mean, "peak": peak, "rest": rest, "rest_peak": rest_peak, "detail_out": detail_out,
            "low": _low_colour(s, t, w, outside)}


def _low_colour(s, t, w, outside):
    """How far the aligned grids ``s``, ``t`` (P,3,16,16) differ in their low-frequency colour.

    A copy (re-encoded, resized, cropped, framed) keeps the mean colour of each
    4x4-cell block within a few levels of 255 wherever the colour is smooth;
    misalignment moves colour only where it changes. Two sunsets, seas or skies
    of different colours, or with a disc or band of another size, differ by
    more in some block even once aligned as a crop. Returns, per pair, the
    largest block difference (per channel, signed mean, 0-255) over its
    tolerance ``LOW_LEVELS + LOW_SLOPE x gradient``: at most 1 is a copy's.
    ``w`` and ``outside`` are the interior's weights and rows outside the band
    a caption may cover (from :func:`_verdict_features`); the outer ring and
    that band are left out, and blocks with less than half their cells.
    """
    import numpy as np

    p = len(s)
    m = np.zeros((p, 16, 16), np.float32)
    m[:, 1:-1, 1:-1] = w * outside[:, :, None]
    diff = ((s - t) * m[:, None]).reshape(p, 3, 4, 4, 4, 4).sum((3, 5))
    cells = m.reshape(p, 4, 4, 4, 4).sum((2, 4))
    gy, gx = np.gradient(np.concatenate([s, t], 1), axis=(2, 3))   # both pictures in one pass
    g = np.sqrt(gx * gx + gy * gy).max(1) * m
    grad = g.reshape(p, 4, 4, 4, 4).sum((2, 4)) / np.maximum(cells, 1e-6) * 255
    block = np.abs(diff).max(1) / np.maximum(cells, 1e-6) * 255
    ratio = block / (LOW_LEVELS + LOW_SLOPE * grad)
    return np.where(cells >= 8, ratio, 0).reshape(p, -1).max(1)


def _kind(f: dict, i: int) -> Optional[str]:
    if f["low"][i] > LOW_POSSIBLE:  # colours that differ where the picture is smooth: different pictures
        return None
    if f["low"][i] > LOW_SAME:
        return POSSIBLE if f["mean"][i] <= POSSIBLE_MEAN else None
    if f["mean"][i] <= SAME_MEAN and f["peak"][i] <= SAME_PEAK:
        return SAME
    if f["rest"][i] <= OVERLAY_MEAN and f["rest_peak"][i] <= OVERLAY_PEAK and f["detail_out"][i] >= OVERLAY_DETAIL:
        return OVERLAY
    if f["mean"][i] <= POSSIBLE_MEAN or (f["rest"][i] <= POSSIBLE_REST and f["detail_out"][i] >= 0.4):
        return POSSIBLE
    return None


# --- the public comparisons ----------------------------------------------------------------------
def find_matches(prints: Sequence[Fingerprint], *, mirrored: bool = False) -> list[Match]:
    """Pairs of pictures judged copies, as :class:`Match` with ``a < b``: enough to make every group.

    Each picture's :data:`NEIGHBOURS` most similar others are shortlisted by a
    crop-tolerant similarity; the :data:`SHORTLIST` best are aligned and judged
    (:func:`_check_spanning`: a pair already joined through other confirmed
    copies is not judged again). With ``mirrored`` (Review's loose view), also
    mirrored copies, found by doing the same for each picture's left-right
    flip, and possible near copies; a pair found both ways keeps the stronger
    verdict.

    Runs on one BLAS thread: its matrix products are small, and several
    threads only wait on one another, twice as long on a busy machine.
    """
    from .compute import one_blas_thread

    with one_blas_thread():
        return _find_matches(prints, mirrored)


def _find_matches(prints: Sequence[Fingerprint], mirrored: bool) -> list[Match]:
    import numpy as np

    pr = _Prints(prints)
    if len(pr) < 2:
        return []
    cand = _neighbours(pr.desc, pr.desc, NEIGHBOURS, exclude_self=True)
    # The middle of each picture finds its copies cropped by a few percent, which whole it may not.
    crops = _neighbours(_central(pr.levels()[0]), pr.desc, CROP_NEIGHBOURS, exclude_self=True)
    cand = np.unique(np.concatenate([cand, cand[:, ::-1], crops, crops[:, ::-1]]), axis=0)  # on both lists, once
    short, views, own, ok = _shortlist(pr.levels()[0], pr.desc, cand, SHORTLIST)
    # Each kept pair once, aligned from the picture whose crop fitted the other best (it shows more):
    # both listings of a pair were measured, whichever of the two kept it.
    key = np.minimum(short[:, 0], short[:, 1]) * (len(pr) + 1) + np.maximum(short[:, 0], short[:, 1])
    listed = np.isin(key, key[ok])
    order = np.nonzero(listed)[0][np.argsort(-own[listed], kind="stable")]
    _, first = np.unique(key[order], return_index=True)
    pick = order[first]
    pick = pick[np.argsort(-own[pick], kind="stable")]  # most alike first
    found = {}
    for a, b, kind, diff, ident in _settle(pr, short[pick, 0], short[pick, 1], views[pick], loose=mirrored):
        if mirrored or kind in COPY_KINDS:
            key2 = (min(a, b), max(a, b))
            found[key2] = Match(key2[0], key2[1], kind, diff, ident)
    if mirrored:
        cand = _neighbours(_descriptors(pr.thumbs, flip=True), pr.desc, NEIGHBOURS, exclude_self=False)
        cand = cand[cand[:, 0] != cand[:, 1]]
        mp, _, _, keep = _shortlist(pr.levels()[0], None, cand, MIRROR_NEIGHBOURS, flip=True, base_desc=pr.desc)
        mp = mp[keep]
        for a, b, kind, diff, ident in _judge(pr, pr, mp[:, 1], mp[:, 0], flip=True).results():
            key = (min(a, b), max(a, b))
            old = found.get(key)
            if old is None or _strength(kind) > _strength(old.kind):
                found[key] = Match(key[0], key[1], kind, diff, False)
    return sorted(found.values(), key=lambda m: (m.a, m.b))


def _settle(pr: "_Prints", ia, ib, start, *, loose: bool) -> list[tuple[int, int, str, float, bool]]:
    """Judge just enough of the candidate pairs (most alike first) to settle every group of copies.

    A pair whose two pictures are already joined through confirmed copies
    changes no group, so it is not judged (and not reported): the copies of
    one picture make many candidate pairs, of which a few settle the group.
    Each round judges a forest of the pairs still open (no two of them closing
    a loop); a pair that fails leaves its pictures apart for the next round.
    With ``loose``, possible and mirrored pairs between groups are all judged
    too. Returns the results of :meth:`_Judged.results`.
    """
    import numpy as np

    parent = list(range(len(pr)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = list(zip(ia.tolist(), ib.tolist()))
    open_ = list(range(len(pairs)))
    out: list = []
    waiting: list = []  # judged pairs that are neither copies nor different: possible, mirrored
    while open_:
        tentative: dict = {}

        def troot(x: int) -> int:
            x = root(x)
            while x in tentative:
                x = tentative[x]
            return x

        batch, rest = [], []
        for i in open_:
            a, b = pairs[i]
            if root(a) == root(b):
                continue  # joined meanwhile: never judged
            ra, rb = troot(a), troot(b)
            if ra != rb:
                tentative[max(ra, rb)] = min(ra, rb)
                batch.append(i)
            else:
                rest.append(i)
        if not batch:
            break
        idx = np.array(batch)
        judged = _judge(pr, pr, ia[idx], ib[idx], start=start[idx], fine=False)
        judged.check(pr, pr, [j for j in range(len(judged)) if judged.kinds[j] in COPY_KINDS])
        for j in range(len(judged)):
            kind = judged.kinds[j]
            if kind in COPY_KINDS:
                ra, rb = root(int(judged.ia[j])), root(int(judged.ib[j]))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                out += judged.results([j])
        if loose:
            waiting.append((judged, [j for j in range(len(judged)) if judged.kinds[j] not in COPY_KINDS]))
        open_ = rest
    for judged, idx in waiting:  # the near copies between groups, checked on their fine detail too
        idx = [j for j in idx if root(int(judged.ia[j])) != root(int(judged.ib[j]))]
        judged.check(pr, pr, idx)
        out += judged.results(idx)
    return out


def _strength(kind: str) -> int:
    return {SAME: 3, OVERLAY: 2, MIRRORED: 1, POSSIBLE: 0}[kind]


def compare(a: Fingerprint, b: Fingerprint, *, mirrored: bool = False) -> Optional[Match]:
    """The verdict on two pictures (indices 0 and 1), or None when they are different pictures."""
    pr = _Prints([a, b])
    import numpy as np

    res = _judge(pr, pr, np.array([0]), np.array([1])).results()
    if mirrored and (not res or res[0][2] == POSSIBLE):
        flip = _judge(pr, pr, np.array([0]), np.array([1]), flip=True).results()
        if flip and flip[0][2] == MIRRORED:
            res = flip
    if not res:
        return None
    _, _, kind, diff, ident = res[0]
    return Match(0, 1, kind, diff, ident)


def groups(n: int, matches: Iterable[Match], kinds: Sequence[str] = COPY_KINDS) -> list[list[int]]:
    """Pictures joined by matches of the given kinds, as lists of indices (groups of two or more)."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for m in matches:
        if m.kind in kinds:
            ra, rb = root(m.a), root(m.b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(root(i), []).append(i)
    return [g for g in out.values() if len(g) > 1]


class CopyIndex:
    """The fingerprints of a set of pictures, to ask "is this one a copy of one we have?".

    Thread-safe; used by downloads (one picture at a time against the project).

    The nearest neighbours of a new picture are exactly those a plain scan of
    every stored descriptor finds, without reading all 192 numbers of each:
    past :data:`INDEX_FROM` pictures the descriptors are also kept projected on
    their :data:`SEARCH_DIMS` main components, with the length of what the
    projection leaves out. The correlation of two unit descriptors is at most
    their projected product plus the product of those lengths (Cauchy-Schwarz),
    so one small matrix product bounds every stored picture's correlation, and
    only the few whose bound can still reach the best are measured in full.
    At 50,000 pictures that reads a quarter of the memory a scan reads.
    """

    def __init__(self, prints: Optional[dict[str, Fingerprint]] = None):
        import numpy as np

        self._lock = threading.Lock()
        self._ids: list[str] = list((prints or {}).keys())
        self._prints: list[Fingerprint] = list((prints or {}).values())
        n = len(self._ids)
        # Descriptors in a buffer that grows by doubling: adding a picture does not copy them all.
        self._desc = np.zeros((max(64, 2 * n), 64 * 3), np.float32)
        if n:
            self._desc[:n] = _Prints(self._prints).desc
        self._basis = None      # (192, SEARCH_DIMS) main components, once there are enough pictures
        self._proj = None       # (capacity, SEARCH_DIMS) descriptors projected on them
        self._rest = None       # (capacity,) length of what the projection leaves out
        self._basis_n = 0
        self._reindex()

    def __len__(self) -> int:
        return len(self._ids)

    def _reindex(self) -> None:
        """(Re)compute the main components and the projections; again each time the set doubles."""
        import numpy as np

        n = len(self._ids)
        if n < INDEX_FROM:
            self._basis = None
            return
        d = self._desc[:n]
        _, vec = np.linalg.eigh(d.T @ d)
        self._basis = np.ascontiguousarray(vec[:, ::-1][:, :SEARCH_DIMS])
        self._proj = np.zeros((len(self._desc), SEARCH_DIMS), np.float32)
        self._rest = np.zeros(len(self._desc), np.float32)
        self._proj[:n] = d @ self._basis
        self._rest[:n] = self._residual(d, self._proj[:n])
        self._basis_n = n

    @staticmethod
    def _residual(d, proj):
        import numpy as np

        return np.sqrt(np.maximum(np.einsum("ij,ij->i", d, d) - np.einsum("ij,ij->i", proj, proj), 0.0))

    def neighbours(self, fp: Fingerprint, k: int = NEIGHBOURS, *, scan: bool = False):
        """Positions of the ``k`` stored pictures whose descriptors correlate best with ``fp``'s
        (at least :data:`MIN_SIMILARITY`), and those correlations, best first.

        With ``scan``, every stored descriptor is read (what the index must agree with).
        """
        with self._lock:
            return self._neighbours(_Prints([fp]).desc[0], k, scan=scan)

    def _neighbours(self, q, k: int, *, scan: bool = False):
        import numpy as np

        n = len(self._ids)
        if self._basis is None or scan:
            sims = self._desc[:n] @ q
            cand = np.arange(n)
        else:
            qp = q @ self._basis
            qr = float(np.sqrt(max(float(q @ q) - float(qp @ qp), 0.0)))
            bound = self._proj[:n] @ qp
            bound += qr * self._rest[:n]
            bound += 1e-4  # rounding: a bound must never fall below the true value
            cand = np.nonzero(bound >= MIN_SIMILARITY)[0]
            if len(cand) > k:
                # The best bounds first; then every picture whose bound still beats the k-th correlation.
                first = cand[np.argpartition(-bound[cand], k - 1)[:k]]
                kth = np.sort(self._desc[first] @ q)[0]
                cand = cand[bound[cand] >= kth]
            sims = self._desc[cand] @ q
        keep = sims >= MIN_SIMILARITY
        cand, sims = cand[keep], sims[keep]
        order = np.lexsort((cand, -sims))[:k]  # ties: the earlier stored picture first
        return cand[order], sims[order]

    def find(self, fp: Fingerprint) -> Optional[tuple[str, Match]]:
        """The stored picture ``fp`` is a copy of (``same`` or ``overlay``), with the verdict; else None.

        In the returned match, ``a`` is the stored picture's position and ``b`` is -1.
        """
        import numpy as np

        with self._lock:
            if not self._ids:
                return None
            q = _Prints([fp])
            near, _ = self._neighbours(q.desc[0], NEIGHBOURS)
            if not len(near):
                return None
            base = _Prints([self._prints[j] for j in near])
            res = _judge(base, q, np.arange(len(base)), np.zeros(len(base), np.int64)).results()
            copies = [r for r in res if r[2] in COPY_KINDS]
            if not copies:
                return None
            i, _, kind, diff, ident = min(copies, key=lambda r: (-_strength(r[2]), r[3]))
            j = int(near[i])
            return self._ids[j], Match(j, -1, kind, diff, ident)

    def add(self, item_id: str, fp: Fingerprint) -> None:
        import numpy as np

        with self._lock:
            n = len(self._ids)
            if n == len(self._desc):
                self._desc = np.concatenate([self._desc, np.zeros_like(self._desc)])
                if self._basis is not None:
                    self._proj = np.concatenate([self._proj, np.zeros_like(self._proj)])
                    self._rest = np.concatenate([self._rest, np.zeros_like(self._rest)])
            d = _Prints([fp]).desc[0]
            self._desc[n] = d
            self._ids.append(item_id)
            self._prints.append(fp)
            if self._basis is None or n + 1 >= 2 * self._basis_n:
                if n + 1 >= INDEX_FROM and (self._basis is None or n + 1 >= 2 * self._basis_n):
                    self._reindex()
            else:
                self._proj[n] = d @ self._basis
                self._rest[n] = self._residual(d[None], self._proj[n][None])[0]


# --- the cache (derived data: cache/fingerprints.db, safe to delete) ----------------------------------
class FingerprintStore:
    """Fingerprints per content hash in ``cache/fingerprints.db``; rows of an older version are ignored."""

    def __init__(self, project):
        self.path = project.cache_dir / "fingerprints.db"
        project.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._con() as con:
            con.execute("CREATE TABLE IF NOT EXISTS prints(sha256 TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                        " width REAL NOT NULL, height REAL NOT NULL, thumb BLOB NOT NULL)")

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get(self, shas: Sequence[str]) -> dict[str, Fingerprint]:
        out: dict[str, Fingerprint] = {}
        con = self._con()
        try:
            for i in range(0, len(shas), 500):
                chunk = list(shas[i:i + 500])
                q = (f"SELECT sha256, width, height, thumb FROM prints WHERE version=? AND sha256 IN"
                     f" ({','.join('?' * len(chunk))})")
                for sha, w, h, blob in con.execute(q, [VERSION, *chunk]):
                    try:
                        out[sha] = Fingerprint.from_blob(blob, w, h)
                    except ValueError:  # a damaged row: computed again
                        pass
        finally:
            con.close()
        return out

    def put(self, rows: Iterable[tuple[str, Fingerprint]]) -> None:
        rows = [(sha, VERSION, fp.width, fp.height, fp.blob) for sha, fp in rows]
        if not rows:
            return
        con = self._con()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO prints(sha256, version, width, height, thumb)"
                                " VALUES(?,?,?,?,?)", rows)
        finally:
            con.close()


def item_fingerprints(project, items: Optional[Iterable] = None) -> dict[str, Fingerprint]:
    """Fingerprint per item id (active items by default), computing and caching the missing ones.

    An item whose file cannot be read is left out.
    """
    items = list(project.items() if items is None else items)
    store = FingerprintStore(project)
    known = store.get(sorted({it.sha256 for it in items}))
    out, new = {}, []
    missing = sum(1 for it in items if it.sha256 not in known)
    for it in items:
        fp = known.get(it.sha256)
        if fp is None:
            if len(new) % 50 == 0:
                step_progress(len(new), missing, "fingerprinting new pictures")
            if stop_requested():  # the step that asked (Review) was stopped: keep what was measured
                store.put(new)
                raise Stopped("Stopped while comparing pictures; the ones compared so far are remembered.")
            try:
                fp = fingerprint_stored(project.path_of(it))
            except (OSError, ValueError, SyntaxError):
                continue
            known[it.sha256] = fp
            new.append((it.sha256, fp))
        out[it.id] = fp
    store.put(new)
    return out
