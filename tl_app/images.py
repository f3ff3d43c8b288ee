"""The one image pipeline: open safely, validate, normalise, re-encode, hash.

Every image that enters a project (import, upload, web download) and every
image a user asks to classify goes through :func:`normalize` or
:func:`open_rgb`, so training, review and prediction all see the same pixels:
EXIF orientation applied, first frame only, 8-bit RGB.

Safety: only the parsers of :data:`config.ALLOWED_FORMATS` ever run; the
decompression-bomb limit stays at Pillow's default and is enforced before any
pixel is decoded; truncated files are refused (Pillow's
``LOAD_TRUNCATED_IMAGES`` stays False).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import config
from .errors import ImageRejected

Source = Union[str, Path, bytes, BinaryIO]


@dataclass(frozen=True, slots=True)
class NormalizedImage:
    """An accepted image, re-encoded as JPEG under a name the app will choose."""

    data: bytes
    width: int
    height: int
    sha256: str
    original_format: str
    original_size: tuple[int, int]


def _looks_like(head: bytes) -> str | None:
    """The supported format whose signature ``head`` starts with, if any."""
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and b"\x00" in head[2:14]:  # "BM" alone also starts plain text
        return "BMP"
    return None


def sniff(head: bytes) -> str | None:
    """Name what a refused file looks like, from its first bytes (for messages)."""
    h = head.lstrip()[:512].lower()
    if not h:
        return "the file is empty"
    if h.startswith(b"<svg") or (h.startswith(b"<?xml") and b"<svg" in h):
        return "an SVG drawing, not a photo (SVG is not supported)"
    if h.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in h:
        return "a web page (HTML), not an image"
    if h.startswith(b"%pdf"):
        return "a PDF document, not an image"
    if h.startswith(b"pk\x03\x04"):
        return "a zip archive, not an image"
    if h.startswith((b"{", b"[")):
        return "a JSON/text file, not an image"
    # The start of a supported image that Pillow could not open: cut short or corrupted,
    # not "not an image" (a header-only download looks like this).
    fmt = _looks_like(head)
    if fmt:
        return f"the file is truncated or damaged (it starts like a {fmt} image)"
    chunk = head[:512]
    if b"\x00" in chunk:
        return None
    try:  # an incremental decoder does not fail on a character cut at byte 512
        codecs.getincrementaldecoder("utf-8")().decode(chunk, final=False)
    except UnicodeDecodeError:
        return None
    return "a text file, not an image"


def _read_file(path: str | Path, limit: int) -> bytes:
    """The bytes of a file of at most ``limit`` bytes (one open, its size from the open file)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # bytes as they are, on Windows too
    except OSError as e:
        raise ImageRejected(f"cannot be read ({e.strerror or e})") from None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ImageRejected(f"the file is too large ({size / 1e6:.0f} MB; the limit is {limit / 1e6:.0f} MB)")
        parts = []
        want = max(size + 1, 1 << 16)
        while block := os.read(fd, want):  # a file that grew meanwhile is read to its end
            parts.append(block)
            if len(block) == size and len(parts) == 1:  # the whole file at once, as long as it was: its end
                break                                    # (no second read to find it; one that grew gave more)
            if sum(map(len, parts)) > limit:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _read_source(src: Source, limit: int) -> bytes:
    if isinstance(src, bytes):
        data = src
    elif isinstance(src, (str, Path)):
        data = _read_file(src, limit)
    else:
        data = src.read(limit + 1)
    if len(data) > limit:
        raise ImageRejected(f"the file is too large (over {limit / 1e6:.0f} MB)")
    if not data:
        raise ImageRejected("the file is empty")
    return data


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "La", "RGBa", "RGBX"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit range to 8-bit
        elif mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else arr * 0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")


#: Where Pillow finds an EXIF or XMP orientation of a picture (the keys of its ``info`` that ``getexif`` reads).
_ORIENTATION_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def open_rgb(src: Source, *, max_side: int | None = None, min_side: int = config.MIN_SIDE,
             max_bytes: int = config.MAX_IMPORT_BYTES) -> tuple[Image.Image, str, tuple[int, int]]:
    """Open untrusted image bytes and return ``(rgb_image, original_format, original_size)``.

    Raises :class:`ImageRejected` with a plain reason for anything that is not
    a complete JPEG/PNG/WEBP/GIF/BMP image of at least ``min_side`` pixels a side.
    """
    data = _read_source(src, max_bytes)
    # These two are Pillow's safe defaults; restate them in case a library changed them.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if not Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = 89_478_485
    try:
        im = Image.open(io.BytesIO(data), formats=list(config.ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning, under -W error
        raise ImageRejected("the image has too many pixels (a possible decompression bomb)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        what = sniff(data)
        raise ImageRejected(what or "not a JPEG, PNG, WEBP, GIF or BMP image") from None
    fmt = im.format or "?"
    w, h = im.size
    if w * h > Image.MAX_IMAGE_PIXELS:
        raise ImageRejected(f"the image has too many pixels ({w}x{h}; a possible decompression bomb)")
    if w < min_side or h < min_side:
        raise ImageRejected(f"the image is too small ({w}x{h}; at least {min_side} px a side is needed)")
    try:
        if max_side and fmt == "JPEG" and min(w, h) >= 2 * max_side:
            # Decode big JPEGs at a reduced scale (1/2 to 1/8): much faster. Below twice the size
            # there is no scale to reduce by, and the call costs as much as a small picture's checks.
            im.draft("RGB", (max_side, max_side))
        im.load()
    except Image.DecompressionBombError:
        raise ImageRejected("the image has too many pixels (a possible decompression bomb)") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError) as e:
        msg = str(e).lower()
        if "truncated" in msg or "broken" in msg or "premature" in msg or isinstance(e, EOFError):
            raise ImageRejected("the file is truncated or damaged") from None
        raise ImageRejected(f"the image data cannot be decoded ({e})") from None
    # Where Pillow looks for an orientation (Image.getexif); a picture with none of them needs no turn,
    # and skipping the look costs less than it does for a small picture.
    if any(k in im.info for k in _ORIENTATION_KEYS) or hasattr(im, "tag_v2"):
        try:
            ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of a picture that needs no turn
        except Exception:  # a broken EXIF block must not cost the picture; keep it as stored
            pass
    rgb = _to_rgb(im)
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb, fmt, (w, h)


def encode_jpeg(im: Image.Image, quality: int = config.JPEG_QUALITY) -> bytes:
    """Encode an RGB image as JPEG bytes (deterministic for the same pixels)."""
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def normalize(src: Source, *, max_side: int = config.MAX_STORED_SIDE) -> NormalizedImage:
    """Validate and normalise one image for storage in a project.

    Returns the re-encoded JPEG bytes and their sha256; identical pictures give
    identical bytes, so the hash finds exact duplicates across formats.
    """
    rgb, fmt, size = open_rgb(src, max_side=max_side)
    data = encode_jpeg(rgb)
    return NormalizedImage(data=data, width=rgb.width, height=rgb.height,
                           sha256=hashlib.sha256(data).hexdigest(),
                           original_format=fmt, original_size=size)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
