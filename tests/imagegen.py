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
