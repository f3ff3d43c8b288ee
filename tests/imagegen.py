"""Small seeded images for tests: learnable classes, and files of every awkward kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

#: A colour per class: a network from scratch separates these in one or two epochs.
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 180, 40)}


def noisy(colour, size=(64, 64), seed=0) -> Image.Image:
    """An RGB picture of one colour with noise (so no two are identical)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def class_folder(root: Path, per_class: int = 12, classes=("red", "blue"), size=(64, 64), fmt="PNG",
                 seed: int = 0) -> Path:
    """root/<class>/<n>.png for each class; returns root."""
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy(COLOURS[name], size, seed=seed * 10_000 + ci * 1000 + i).save(
                root / name / f"{i}.{fmt.lower()}", format=fmt)
    return root


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def scene(seed: int, size=(240, 180)) -> Image.Image:
    """A photo-like picture: a sky and a ground with blotchy texture and a few coloured objects."""
    from PIL import ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    horizon = int(h * rng.uniform(0.35, 0.65))
    rows = np.arange(h)[:, None, None]
    img = np.where(rows < horizon, rng.uniform(0.4, 1, 3), rng.uniform(0, 0.6, 3)) * np.ones((h, w, 3))
    small = rng.normal(size=(12, 16, 3))
    tex = Image.fromarray(((small - small.min()) / np.ptp(small) * 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    img = np.clip(img * 0.7 + np.asarray(tex, dtype=np.float32) / 255 * 0.4 - 0.1, 0, 1)
    im = Image.fromarray((img * 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        c = tuple(int(x) for x in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((x, y, x + w // 5, y + h // 5), fill=c)
    return im


def slow_pictures(folder: Path, n: int, side: int = 3500) -> Path:
    """``n`` large PNG files that decode to the same picture (a smooth gradient) but differ in their bytes.

    Each takes a noticeable time to decode and shrink (about 0.2 s on one core here), so an import of a few
    dozen lasts seconds: long enough to see its progress and to stop it. Written cheaply: the
    picture is encoded once, and each copy gets its own text chunk. After the first, an import
    reports them as duplicates (the same pixels), having read every one.
    """
    import struct
    import zlib

    folder.mkdir(parents=True, exist_ok=True)
    x = np.linspace(0, 255, side)
    arr = np.stack([np.add.outer(x, x) / 2, np.add.outer(x, -x) / 2 + 128, np.full((side, side), 90.0)], -1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    head, rest = data[:33], data[33:]  # the signature and IHDR, then the rest
    for i in range(n):
        body = b"Comment\x00" + f"copy {i}".encode()
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        (folder / f"big-{i:03d}.png").write_bytes(head + chunk + rest)
    return folder


def shape(kind: str, rgb, seed: int = 0, size: int = 64) -> Image.Image:
    """A filled shape ("circle", "square" or "triangle") in ``rgb`` at a random size and place on a dark,
    noisy background."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 70, 3)
    im = Image.fromarray(np.clip(bg + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8), "RGB")
    r = float(rng.uniform(0.2, 0.4) * size)
    cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
    draw, fill = ImageDraw.Draw(im), tuple(int(c) for c in rgb)
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + 0.87 * r, cy + 0.5 * r), (cx - 0.87 * r, cy + 0.5 * r)], fill=fill)
    return im
