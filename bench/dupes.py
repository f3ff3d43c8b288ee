"""Duplicates: the app's copy finder against the perceptual hash alone, on corpora made here.

Distinct pictures (none is a copy of another):
  digits    scikit-learn's 1,797 digit scans (8x8) upscaled to 64 px, as the issue measured them
  drawings  flat-colour drawings: one to three shapes in 12 colours on a plain background of another
  photos    photo-like scenes in families of four that share layout, sky, ground and colours but
            differ in texture and objects (similar, not copies)
  skies, pages, sketches  smooth backgrounds with thin lines or small marks
  horizons  sunset-like pictures: a smooth two-colour sky, a flat disc, a flat band, colours drawn
            around a few themes (the same layout, almost no detail)
  demo      the README's demo pictures (forests, seas, sunsets), held out: never tuned on
Copies, of a seeded sample of each corpus: re-encoded (JPEG 30-95), smaller (0.25-0.6x) and larger
(1.5-4x), cropped up to 10% a side (also then resized), a thin border (1-5% of the side, any
colour), a short text overlay (also then resized); every copy re-encoded at JPEG 30-95. Plus a
mirrored copy of each, which must be reported as a near copy in Review and never refused.
Every picture goes through the app's own import pipeline (``normalize``) first, as stored.

Printed for the app and for pHash alone (imagehash.phash, distance <= 6: the app's old rule),
measured in the same run on the same stored files:
  false duplicates  distinct pictures put in a group with another distinct picture (share of all)
  copy recall       copies grouped with their original
  time per picture  fingerprint (or hash) of every stored file + finding every pair, over pictures
                    (wall clock, best of three; processor time beside it)
  loose view        'possible' or 'mirrored' pairs of two different pictures in Review's loose view
Then: the precision of what Review flags as duplicates (a real project, ``review.rank``), and the
download path (each picture asked against the ones before it, as a download does).

Goals: false duplicates <= 0.5%, copy recall >= 0.95, time per picture <= 2x pHash alone.

    .venv/bin/python bench/dupes.py [--seed 1] [--sample 100] [--review 400]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tl_app import dupes  # noqa: E402
from tl_app.images import normalize  # noqa: E402

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (250, 250, 250), (20, 20, 20), (128, 128, 128), (170, 110, 40)]
TEXTS = ["© pics.com", "SAMPLE", "stock 123", "photo: J. Doe", "www.site.org"]
KINDS = ("reencode", "smaller", "larger", "crop", "crop-resize", "border", "text", "text-resize")


# --- distinct pictures ------------------------------------------------------------------------
def digits() -> list[Image.Image]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return [Image.fromarray((img / 16.0 * 255).astype(np.uint8), "L").resize((64, 64), Image.Resampling.BILINEAR)
            .convert("RGB") for img in d.images]


def drawing(seed: int, size=(320, 240)) -> Image.Image:
    """One to three flat shapes in palette colours on a plain background of another colour."""
    r = random.Random(seed)
    w, h = size
    bg = r.choice(PALETTE)
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    for _ in range(r.randint(1, 3)):
        c = r.choice([p for p in PALETTE if p != bg])
        sw, sh = r.randint(w // 8, w // 2), r.randint(h // 8, h // 2)
        x, y = r.randint(0, w - sw), r.randint(0, h - sh)
        k = r.random()
        if k < 0.4:
            d.rectangle((x, y, x + sw, y + sh), fill=c)
        elif k < 0.8:
            d.ellipse((x, y, x + sw, y + sh), fill=c)
        else:
            d.polygon([(x, y + sh), (x + sw // 2, y), (x + sw, y + sh)], fill=c)
    return im


def _field(rng, h: int, w: int, cells: int):
    small = rng.normal(size=(cells, max(2, round(cells * w / h))))
    im = Image.fromarray(((small - small.min()) / (np.ptp(small) + 1e-9) * 255).astype(np.uint8))
    return np.asarray(im.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255


def photo(family: int, variant: int, size=(480, 360)) -> Image.Image:
    """A photo-like scene; the four variants of a family share layout and colours, not texture or objects."""
    w, h = size
    fr, vr = np.random.default_rng(family), np.random.default_rng(family * 1000 + variant + 7)
    horizon = int(h * fr.uniform(0.35, 0.65))
    sky, ground = fr.uniform(0.3, 1, 3), fr.uniform(0, 0.7, 3)
    yy = np.linspace(0, 1, h)[:, None, None]
    img = np.where(np.arange(h)[:, None, None] < horizon, sky * (0.7 + 0.3 * yy), ground * (0.8 + 0.2 * (1 - yy)))
    img = np.broadcast_to(img, (h, w, 3)).copy()
    tex = np.stack([_field(vr, h, w, 10) for _ in range(3)], -1) * 0.35 + _field(vr, h, w, 40)[..., None] * 0.2
    img = np.clip(img * 0.7 + tex - 0.2, 0, 1)
    im = Image.fromarray((img * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(vr.integers(2, 5)):
        c = tuple(int(x) for x in vr.integers(0, 256, 3))
        sw, sh = int(vr.integers(w // 10, w // 3)), int(vr.integers(h // 10, h // 3))
        x, y = int(vr.integers(0, w - sw)), int(vr.integers(0, h - sh))
        (d.ellipse if vr.random() < 0.5 else d.rectangle)((x, y, x + sw, y + sh), fill=c)
    return im


# Smooth backgrounds with thin lines or small marks: skies, snow, pages, sketches. Two of them share
# their colours and light; what tells them apart is detail a 16 or 32 px thumbnail averages away.
SKIES = [((90, 150, 220), (190, 220, 250)),    # blue sky
         ((200, 215, 235), (245, 248, 252)),   # snow, white sky
         ((70, 70, 140), (240, 160, 110)),     # dusk
         ((150, 155, 160), (215, 218, 220))]   # fog
WORDS = "the of and a to in is was for on that with as by at from his her it an were which this be".split()


def _gradient(rng, w: int, h: int, top, bottom, jitter: int = 12) -> np.ndarray:
    """A smooth, slightly tilted two-colour gradient (H,W,3) in 0-255, with faint light variation."""
    top = np.clip(np.array(top) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    bottom = np.clip(np.array(bottom) + rng.integers(-jitter, jitter + 1, 3), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.clip(yy / (h - 1) + rng.uniform(-0.15, 0.15) * (xx / (w - 1) - 0.5), 0, 1)[..., None]
    img = top * (1 - t) + bottom * t
    light = _field(rng, h, w, 3)[..., None] * rng.uniform(0, 12)
    return np.clip(img + light, 0, 255)


def sky(seed: int) -> Image.Image:
    """A plain sky, snowfield or fog with thin marks: power lines, birds, a contrail, a few dots."""
    rng = np.random.default_rng(seed)
    w, h = (320, 240) if rng.random() < 0.7 else (240, 320)
    top, bottom = SKIES[int(rng.integers(len(SKIES)))]
    im = Image.fromarray(_gradient(rng, w, h, top, bottom).astype(np.uint8))
    d = ImageDraw.Draw(im)
    dark = tuple(int(x) for x in rng.integers(20, 70, 3))
    for _ in range(int(rng.integers(0, 3))):  # power lines: sagging curves across the picture
        y0, y1, sag = rng.uniform(0.1, 0.7) * h, rng.uniform(0.1, 0.7) * h, rng.uniform(5, 30)
        xs = np.linspace(-5, w + 5, 40)
        ys = y0 + (y1 - y0) * xs / w + sag * (1 - ((xs / w) * 2 - 1) ** 2)
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=dark, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(2, 9))):  # birds: small "v" marks
        x, y, s = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.8) * h, rng.uniform(3, 8)
        d.line([(x - s, y - s * 0.5), (x, y), (x + s, y - s * 0.6)], fill=dark, width=1)
    if rng.random() < 0.5:  # a contrail: a long light line
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h * 0.5)
        a = rng.uniform(-0.6, 0.6)
        d.line([(x0, y0), (x0 + w * 0.6, y0 + w * 0.6 * a)], fill=(250, 250, 250), width=int(rng.integers(2, 4)))
    for _ in range(int(rng.integers(0, 6))):  # specks: far birds, stars, dirt on the lens
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.8, 2)
        d.ellipse((x - r, y - r, x + r, y + r), fill=dark)
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))


@lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size)


def page(seed: int) -> Image.Image:
    """A page of small text on slightly shaded paper: paragraphs, sometimes a heading or a boxed figure."""
    rng = np.random.default_rng(seed)
    w, h = (240, 320) if rng.random() < 0.8 else (320, 240)
    paper = (int(rng.integers(230, 252)),) * 3
    im = Image.fromarray(_gradient(rng, w, h, paper, np.array(paper) - rng.integers(0, 20), jitter=4)
                         .astype(np.uint8))
    d = ImageDraw.Draw(im)
    ink = tuple(int(x) for x in rng.integers(10, 60, 3))
    left, right = int(w * rng.uniform(0.07, 0.12)), int(w * (1 - rng.uniform(0.07, 0.12)))
    y, size = int(h * rng.uniform(0.06, 0.1)), int(rng.integers(7, 10))
    if rng.random() < 0.5:
        d.text((left, y), " ".join(rng.choice(WORDS, 3)).title(), fill=ink, font=_font(size + 5))
        y += size + 12
    while y < h * 0.9:
        if rng.random() < 0.1 and y < h * 0.6:  # a figure: a thin frame with something in it
            fh = int(h * rng.uniform(0.15, 0.3))
            x0 = int(rng.uniform(left, (left + right) / 2))
            d.rectangle((x0, y, x0 + (right - left) // 2, y + fh), outline=ink, width=1)
            d.line([(x0 + 4, y + fh - 4), (x0 + (right - left) // 4, y + 6), (x0 + (right - left) // 2 - 4, y + fh // 2)],
                   fill=ink, width=1)
            y += fh + size
            continue
        for line in range(int(rng.integers(2, 8))):  # a paragraph
            x0 = left + (size * 2 if line == 0 else 0)
            end = right if rng.random() < 0.85 else int(rng.uniform(left + (right - left) * 0.3, right))
            words, x = [], x0
            while True:
                word = str(rng.choice(WORDS))
                x += d.textlength(word + " ", font=_font(size))
                if x > end:
                    break
                words.append(word)
            d.text((x0, y), " ".join(words), fill=ink, font=_font(size))
            y += int(size * 1.4)
            if y > h * 0.9:
                break
        y += int(size * 0.8)
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.6))))


def sketch(seed: int) -> Image.Image:
    """A line drawing on plain paper: a few thin smooth strokes and small marks."""
    rng = np.random.default_rng(seed)
    w, h = (320, 240) if rng.random() < 0.6 else (240, 320)
    paper = tuple(int(x) for x in rng.integers(232, 252, 3))
    im = Image.fromarray(_gradient(rng, w, h, paper, paper, jitter=6).astype(np.uint8))
    d = ImageDraw.Draw(im)
    ink = tuple(int(x) for x in rng.integers(10, 90, 3))
    for _ in range(int(rng.integers(3, 9))):  # strokes: smooth curves through a few points
        pts = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (int(rng.integers(3, 6)), 2))
        t = np.linspace(0, 1, 60)
        k = len(pts) - 1
        curve = sum(np.outer(_bernstein(k, i, t), pts[i]) for i in range(k + 1))
        d.line([tuple(c) for c in curve.tolist()], fill=ink, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 5))):  # small circles and hatches
        x, y, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, rng.uniform(2, 8)
        if rng.random() < 0.5:
            d.ellipse((x - r, y - r, x + r, y + r), outline=ink, width=1)
        else:
            for j in range(4):
                d.line([(x + j * 3, y), (x + j * 3 + r, y - r)], fill=ink, width=1)
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.6))))


def _bernstein(k: int, i: int, t):
    from math import comb

    return comb(k, i) * t ** i * (1 - t) ** (k - i)


# Sunsets, moons and deserts: a smooth two-colour sky, one flat disc and a flat band of ground or sea, in
# colours drawn around a few themes. Two of them differ in the sky's colours, the disc's size, place and
# colour and the band's height: plain to a person, but they share their layout and have almost no detail.
HORIZONS = [((230, 110, 50), (90, 30, 110), (255, 220, 90), (30, 20, 40)),     # sunset
            ((20, 30, 80), (70, 90, 150), (235, 235, 220), (15, 15, 25)),     # night, moon
            ((120, 170, 230), (230, 200, 150), (255, 250, 200), (190, 140, 80)),  # desert
            ((250, 180, 150), (150, 170, 210), (255, 240, 180), (40, 70, 90))]  # dawn over the sea


def horizon(seed: int) -> Image.Image:
    """A smooth sky (two colours), a flat disc (sun, moon) and a flat band of ground or sea across the bottom."""
    rng = np.random.default_rng(seed)
    w, h = [(240, 240), (320, 240), (240, 320)][int(rng.integers(3))]
    top, bottom, disc, ground = (np.clip(np.array(c) + rng.integers(-35, 36, 3), 0, 255)
                                 for c in HORIZONS[int(rng.integers(len(HORIZONS)))])
    im = Image.fromarray(_gradient(rng, w, h, top, bottom, jitter=0).astype(np.uint8))
    d = ImageDraw.Draw(im)
    s = min(w, h)
    r = s * rng.uniform(0.1, 0.22)
    cx, cy = rng.uniform(r, w - r), rng.uniform(0.25, 0.6) * h
    band = int(h * rng.uniform(0.6, 0.85))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(x) for x in disc))
    d.rectangle((0, band, w, h), fill=tuple(int(x) for x in ground))
    return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 0.8))))


def demo_pictures(n: int, first: int = 0) -> list[Image.Image]:
    """The README's demo pictures (scripts/screenshots: forests, seas, sunsets), ``n`` of each; held out.

    The thresholds are never tuned on these: they show how the finder does on
    pictures nobody looked at while choosing them.
    """
    text = (ROOT / "scripts" / "screenshots").read_text()
    start, end = "# --- demo pictures", "def demo_pictures"
    if start not in text or end not in text:
        raise SystemExit("scripts/screenshots no longer has its demo pictures section: update bench/dupes.py")
    ns = {"random": random}
    exec(text.split(start, 1)[1].split(end, 1)[0].split("\n", 1)[1], ns)  # the generator, as the script has it
    return [ns["picture"](label, i) for label in ("forest", "sea", "sunset") for i in range(first, first + n)]


# --- copies ---------------------------------------------------------------------------------------
def jpeg(im: Image.Image, q: int) -> Image.Image:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=q)
    b.seek(0)
    return Image.open(b).convert("RGB")


def resize(im: Image.Image, f: float) -> Image.Image:
    f = max(f, 32 / min(im.size))  # the app refuses pictures under 32 px
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                     Image.Resampling.LANCZOS if f < 1 else Image.Resampling.BICUBIC)


def crop(im: Image.Image, l: float, t: float, r: float, b: float) -> Image.Image:
    w, h = im.size
    return im.crop((round(l * w), round(t * h), round(w - r * w), round(h - b * h)))


def border(im: Image.Image, frac: float, colour) -> Image.Image:
    return ImageOps.expand(im, max(1, round(frac * min(im.size))), fill=colour)


def text(im: Image.Image, r: random.Random) -> Image.Image:
    im = im.copy()
    d = ImageDraw.Draw(im)
    fs = max(8, round(r.uniform(0.06, 0.12) * im.height))
    col = r.choice([(255, 255, 255), (0, 0, 0), (255, 255, 0)])
    d.text((r.uniform(0.3, 0.7) * im.width, r.choice([0.12, 0.5, 0.88]) * im.height), r.choice(TEXTS), fill=col,
           font_size=fs, anchor="mm")
    return im


def copies(im: Image.Image, seed: int) -> tuple[list[tuple[str, Image.Image]], Image.Image]:
    """The eight copies of a picture (named by transformation) and its mirrored copy."""
    r = random.Random(seed)

    def q() -> int:
        return r.randint(30, 95)

    def cr() -> list[float]:
        return [r.uniform(0, 0.1) for _ in range(4)]

    out = [("reencode", jpeg(im, q())),
           ("smaller", jpeg(resize(im, r.uniform(0.25, 0.6)), q())),
           ("larger", jpeg(resize(im, r.uniform(1.5, 4)), q())),
           ("crop", jpeg(crop(im, *cr()), q())),
           ("crop-resize", jpeg(resize(crop(im, *cr()), r.uniform(0.4, 2.5)), q())),
           ("border", jpeg(border(im, r.uniform(0.01, 0.05), r.choice(
               [(255, 255, 255), (0, 0, 0), tuple(r.randrange(256) for _ in range(3))])), q())),
           ("text", jpeg(text(im, r), q())),
           ("text-resize", jpeg(resize(text(im, r), r.uniform(0.4, 2.5)), q()))]
    return out, jpeg(ImageOps.mirror(im), q())


# --- the corpus --------------------------------------------------------------------------------------
#: The corpora of distinct pictures, in order; the last one is held out (never tuned on).
CORPORA = ("digits", "drawings", "photos", "skies", "pages", "sketches", "horizons")
HELD_OUT = "demo"


class Corpus:
    """Stored JPEG bytes of every picture, with what each one is."""

    def __init__(self, seed: int, sample: int, smooth: int = 400, demo: int = 100):
        rng = np.random.default_rng(seed)
        made = {"digits": digits,
                "drawings": lambda: [drawing(seed * 100_000 + i) for i in range(400)],
                "photos": lambda: [photo(seed * 1000 + f, v) for f in range(100) for v in range(4)],
                "skies": lambda: [sky(seed * 1_000_003 + i) for i in range(smooth)],
                "pages": lambda: [page(seed * 2_000_003 + i) for i in range(smooth)],
                "sketches": lambda: [sketch(seed * 3_000_017 + i) for i in range(smooth)],
                "horizons": lambda: [horizon(seed * 4_000_037 + i) for i in range(smooth)],
                # The README's own demo pictures with seed 1 (its screenshots use 0-35).
                HELD_OUT: lambda: demo_pictures(demo, (seed - 1) * demo)}
        self.names = (*CORPORA, HELD_OUT)
        dist = [(k, im) for k in self.names for im in made[k]()]
        self.kind = [k for k, _ in dist]
        self.n_distinct = len(dist)
        self.owner: list[int] = list(range(len(dist)))   # the distinct picture each one comes from
        self.copy: list[str] = [""] * len(dist)           # "" for distinct pictures, else the transformation
        images = [im for _, im in dist]
        starts = {k: self.kind.index(k) for k in self.names}
        counts = Counter(self.kind)
        for k in self.names:
            for i in rng.choice(counts[k], size=min(sample, counts[k]), replace=False):
                src = starts[k] + int(i)
                made_, mirrored = copies(images[src], seed * 7919 + src)
                for name, im in [*made_, ("mirror", mirrored)]:
                    images.append(im)
                    self.owner.append(src)
                    self.copy.append(name)
                    self.kind.append(k)
        self.data = []
        for im in images:
            b = io.BytesIO()
            im.save(b, "BMP")  # lossless and quick to write; the app re-encodes it as it stores it
            self.data.append(normalize(b.getvalue()).data)

    def __len__(self) -> int:
        return len(self.data)


# --- measuring ----------------------------------------------------------------------------------------
def components(n: int, pairs) -> np.ndarray:
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])


def score(c: Corpus, pairs) -> dict:
    """False-duplicate pictures and copy recall, per corpus and per transformation, for a set of pairs."""
    roots = components(len(c), pairs)
    per_root = Counter(roots[:c.n_distinct])
    false = [i for i in range(c.n_distinct) if per_root[roots[i]] > 1]
    false_by = Counter(c.kind[i] for i in false)
    rec, rec_corpus = defaultdict(list), defaultdict(list)
    for i in range(c.n_distinct, len(c)):
        if c.copy[i] != "mirror":
            found = roots[i] == roots[c.owner[i]]
            rec[c.copy[i]].append(found)
            rec_corpus[c.kind[i]].append(found)
    tuned = [v for i in range(c.n_distinct, len(c)) if c.copy[i] != "mirror" and c.kind[i] != HELD_OUT
             for v in [roots[i] == roots[c.owner[i]]]]
    every = [v for vs in rec.values() for v in vs]
    return {"false": len(false), "false_by": false_by, "recall": float(np.mean(every)),
            "recall_tuned": float(np.mean(tuned)),
            "recall_by": {k: float(np.mean(v)) for k, v in rec.items()},
            "recall_corpus": {k: float(np.mean(v)) for k, v in rec_corpus.items()},
            "mirror": float(np.mean([roots[i] == roots[c.owner[i]] for i in range(c.n_distinct, len(c))
                                     if c.copy[i] == "mirror"]))}


def run_phash(c: Corpus) -> tuple[dict, tuple[float, float], int]:
    import imagehash

    t, cpu = time.perf_counter(), time.process_time()
    hashes = []
    for d in c.data:
        with Image.open(io.BytesIO(d), formats=["JPEG"]) as im:
            im.draft("L", (64, 64))
            hashes.append(int(str(imagehash.phash(im.convert("L"))), 16))
    h = np.array(hashes, dtype=np.uint64)
    pairs = []
    for i in range(1, len(h)):
        close = np.nonzero(np.bitwise_count(h[:i] ^ h[i]) <= 6)[0]
        pairs += [(int(j), i) for j in close]
    seconds = (time.perf_counter() - t, time.process_time() - cpu)
    digit_pairs = sum(1 for a, b in pairs if b < c.n_distinct and c.kind[a] == c.kind[b] == "digits")
    return score(c, pairs), seconds, digit_pairs


def run_app(c: Corpus) -> tuple[dict, tuple[float, float], float]:
    """The app's path: fingerprint every stored file, find every pair (strict: copies only).

    Returns the scores, the seconds of that path (wall clock and processor
    time), and the seconds of Review's loose view (mirrored copies looked for
    too), timed separately.
    """
    t, cpu = time.perf_counter(), time.process_time()
    prints = [dupes.fingerprint_stored(io.BytesIO(d)) for d in c.data]
    matches = dupes.find_matches(prints)
    seconds = (time.perf_counter() - t, time.process_time() - cpu)
    res = score(c, [(m.a, m.b) for m in matches if m.is_copy])
    t = time.perf_counter()
    loose = dupes.find_matches(prints, mirrored=True)
    loose_seconds = time.perf_counter() - t
    pairs = {(m.a, m.b): m.kind for m in loose}
    res["mirror_reported"] = float(np.mean([(c.owner[i], i) in pairs for i in range(c.n_distinct, len(c))
                                            if c.copy[i] == "mirror"]))
    res["possible"] = sum(1 for k in pairs.values() if k == dupes.POSSIBLE)
    res["possible_right"] = sum(1 for (a, b), k in pairs.items() if k == dupes.POSSIBLE and c.owner[a] == c.owner[b])
    # What the loose view shows that is wrong: 'possible' or 'mirrored' pairs of two different pictures.
    res["loose_wrong_by"] = Counter(c.kind[a] for (a, b), k in pairs.items()
                                    if k in (dupes.POSSIBLE, dupes.MIRRORED) and c.owner[a] != c.owner[b])
    return res, seconds, loose_seconds


def colour_only_drawings() -> tuple[int, int, int]:
    """(pHash pairs, pictures in one, app copies) among the loopback server's 48 colour-only drawings."""
    import imagehash

    sys.path.insert(0, str(ROOT / "tests"))
    import badserver

    data = [normalize(badserver.drawing_bytes(n)).data for n in range(48)]
    h = [imagehash.phash(Image.open(io.BytesIO(d)).convert("L")) for d in data]
    pairs = [(i, j) for i in range(48) for j in range(i) if h[i] - h[j] <= 6]
    matches = dupes.find_matches([dupes.fingerprint_stored(io.BytesIO(d)) for d in data])
    return len(pairs), len({x for p in pairs for x in p}), sum(1 for m in matches if m.is_copy)


def download_path(c: Corpus, n: int, seed: int) -> dict:
    """Each picture against the ones before it, as a download asks: what is refused."""
    rng = np.random.default_rng(seed)
    distinct = [int(i) for i in rng.choice(c.n_distinct, size=min(n, c.n_distinct), replace=False)]
    chosen = set(distinct)
    extra = [i for i in range(c.n_distinct, len(c)) if c.owner[i] in chosen]
    order = distinct + extra
    index = dupes.CopyIndex()
    refused = Counter()
    t = time.perf_counter()
    for i in order:
        fp = dupes.fingerprint_stored(io.BytesIO(c.data[i]))
        hit = index.find(fp)
        if hit is None:
            index.add(str(i), fp)
            continue
        what = "distinct" if i < c.n_distinct else c.copy[i]
        right = i >= c.n_distinct and c.owner[int(hit[0])] == c.owner[i] and c.copy[i] != "mirror"
        refused[(what, right)] += 1
    seconds = time.perf_counter() - t
    copies_ = [i for i in extra if c.copy[i] != "mirror"]
    return {"pictures": len(order), "seconds": seconds,
            "false_refusals": sum(v for (w, ok), v in refused.items() if not ok and w != "mirror"),
            "distinct": len(distinct),
            "copies_refused": sum(v for (w, ok), v in refused.items() if ok), "copies": len(copies_),
            "mirrors_refused": sum(v for (w, _), v in refused.items() if w == "mirror"),
            "mirrors": sum(1 for i in extra if c.copy[i] == "mirror")}


def review_precision(c: Corpus, n: int, seed: int, corpora: tuple[str, ...]) -> dict:
    """Import ``n`` distinct pictures of ``corpora`` and their copies into a project (one class per corpus)
    and read Review's duplicate rows."""
    from tl_app import review
    from tl_app.importer import import_files
    from tl_app.project import Project

    rng = np.random.default_rng(seed + 1)
    pool = [i for i in range(c.n_distinct) if c.kind[i] in corpora]
    distinct = sorted(int(i) for i in rng.choice(pool, size=min(n, len(pool)), replace=False))
    chosen = set(distinct)
    order = distinct + [i for i in range(c.n_distinct, len(c)) if c.owner[i] in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for i in order:
            d = src / c.kind[i]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.jpg").write_bytes(c.data[i])
        project = Project.open(Path(tmp) / "proj", create=True)
        import_files(project, [src])
        index_of = {it.id: int(Path(it.source).stem) for it in project.items()}
        t = time.perf_counter()
        out = {}
        for mode in ("strict", "loose"):
            rows = review.rank(project, kind="duplicates", loose=(mode == "loose"))
            rows = [r for r in rows if review.flagged(r)] if mode == "strict" else rows
            right = sum(1 for r in rows if c.owner[index_of[r.item]] == c.owner[index_of[r.duplicate_of]])
            out[mode] = (len(rows), right)
        out["seconds"] = time.perf_counter() - t
        out["items"] = len(project.items())
        out["copies"] = sum(1 for i in order if i >= c.n_distinct and c.copy[i] != "mirror")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="corpus seed (the thresholds were tuned on seed 0)")
    ap.add_argument("--sample", type=int, default=100, help="pictures per corpus that get copies")
    ap.add_argument("--review", type=int, default=400, help="distinct pictures in the Review project")
    ap.add_argument("--download", type=int, default=600, help="distinct pictures in the download-path check")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    c = Corpus(args.seed, args.sample)
    n_copies = sum(1 for x in c.copy if x and x != "mirror")
    print(f"corpus: {c.n_distinct} distinct pictures ({', '.join(f'{k} {v}' for k, v in Counter(c.kind[:c.n_distinct]).items())}), "
          f"{n_copies} copies and {sum(1 for x in c.copy if x == 'mirror')} mirrored copies "
          f"(built in {time.perf_counter() - t:.0f} s)")

    ph, ph_s, digit_pairs = run_phash(c)
    app, app_s, loose_s = run_app(c)
    # More timings of each, alternating, so that a busy machine (others share it) favours neither side:
    # the best of three.
    ph_times, app_times = [ph_s], [app_s]
    for _ in range(2):
        app_times.append(run_app(c)[1])
        ph_times.append(run_phash(c)[1])
    ph_t, app_t = min(x[0] for x in ph_times) / len(c) * 1000, min(x[0] for x in app_times) / len(c) * 1000
    ph_cpu, app_cpu = min(x[1] for x in ph_times) / len(c) * 1000, min(x[1] for x in app_times) / len(c) * 1000

    print(f"\n{'':24}{'false duplicates':>26}{'copy recall':>18}   loose view: pairs of")
    print(f"{'':24}{'app':>12}{'pHash <= 6':>14}{'app':>8}{'pHash':>10}   different pictures")
    wrong = app["loose_wrong_by"]

    def line(name: str, false: int, ph_false: int, n: int, recall: float, ph_recall: float, loose: int) -> None:
        print(f"{name:24}{false:>5} ({100 * false / n:.2f}%){ph_false:>6} ({100 * ph_false / n:4.1f}%)"
              f"{recall:>8.3f}{ph_recall:>10.3f}{loose:>9}")

    for k in c.names:
        if k == HELD_OUT:
            print("  held out (never tuned on): the README's demo pictures, scripts/screenshots")
        n = c.kind[:c.n_distinct].count(k)
        line(f"  {k} ({n})", app["false_by"][k], ph["false_by"][k], n, app["recall_corpus"][k],
             ph["recall_corpus"][k], wrong[k])
    line(f"all ({c.n_distinct})", app["false"], ph["false"], c.n_distinct, app["recall"], ph["recall"],
         sum(wrong.values()))
    print(f"\ncopy recall by transformation{'':11}{'app':>8}{'pHash':>10}")
    for k in KINDS:
        print(f"{'  ' + k:40}{app['recall_by'][k]:>8.3f}{ph['recall_by'][k]:>10.3f}")
    print(f"{'time per picture (ms), wall clock':40}{app_t:>8.3f}{ph_t:>10.3f}   ratio {app_t / ph_t:.2f}")
    print(f"{'  processor time (ms)':40}{app_cpu:>8.3f}{ph_cpu:>10.3f}   ratio {app_cpu / ph_cpu:.2f}"
          f"   (numpy may use more than one core: wall clock is the goal's measure)")
    print(f"\npHash pairs among the distinct digits: {digit_pairs} (the issue measured 365)")
    discs = colour_only_drawings()
    print(f"48 discs that differ only in colour and place (tests/badserver.py): pHash pairs {discs[0]} of them "
          f"({discs[1]} of the 48 in a pair), the app {discs[2]}")
    print(f"Review's loose view (also mirrored copies, {loose_s / len(c) * 1000:.3f} ms per picture more): "
          f"mirrored copies reported {app['mirror_reported']:.3f}; pairs shown only as 'possible near copy' "
          f"{app['possible']} ({app['possible_right']} of them really copies)")

    d = download_path(c, args.download, args.seed)
    print(f"\ndownload path ({d['pictures']} pictures, each against those before it, "
          f"{d['seconds'] / d['pictures'] * 1000:.2f} ms per picture): "
          f"{d['false_refusals']} wrongly refused, {d['copies_refused']} of {d['copies']} copies refused, "
          f"{d['mirrors_refused']} of {d['mirrors']} mirrored copies refused")

    for what, corpora, n in (("all corpora but the held-out one", CORPORA, args.review),
                             ("the held-out demo pictures", (HELD_OUT,), args.review)):
        r = review_precision(c, n, args.seed, corpora)
        for mode in ("strict", "loose"):
            rows, right = r[mode]
            print(f"Review duplicates ({mode}), {what}: {rows} rows, {right} of them real copies: precision "
                  f"{right / max(rows, 1):.3f} ({r['copies']} copies among {r['items']} pictures)")

    each = all(app["false_by"][k] <= 0.005 * c.kind[:c.n_distinct].count(k) for k in c.names)
    ok = (app["false"] <= 0.005 * c.n_distinct and each and app["recall"] >= 0.95
          and min(app["recall_corpus"].values()) >= 0.95 and app_t <= 2 * ph_t)
    print(f"\ngoals (false <= 0.5% overall and per corpus, recall >= 0.95 overall and per corpus, "
          f"time <= 2x pHash): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
