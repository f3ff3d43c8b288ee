"""Files a user (or the web) hands the app by mistake or on purpose, built in memory.

``HOSTILE`` maps a file name to ``(bytes, words)``: the pipeline must refuse the
bytes with a reason containing one of ``words``. ``awkward()`` builds valid
pictures in every awkward shape, each with what the stored copy must look like.
"""

from __future__ import annotations

import random
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import imagegen

# --- building blocks --------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A genuine 1-bit PNG of ``width`` x ``height`` black pixels, a few tens of kB on disk.

    The pixel stream is real (every row present, valid CRCs), so Pillow with its
    limit lifted opens it; decoding it would need width*height bytes of memory.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    co = zlib.compressobj(9)
    block = row * 1000
    parts = [co.compress(block) for _ in range(height // 1000)]
    parts.append(co.compress(row * (height % 1000)))
    parts.append(co.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def picture(seed: int = 0, size=(64, 64), colour=(200, 40, 40)) -> Image.Image:
    return imagegen.noisy(colour, size, seed=seed)


def jpeg(seed: int = 0, size=(64, 64), **kw) -> bytes:
    return imagegen.encode(picture(seed, size), "JPEG", **kw)


def png(seed: int = 0, size=(64, 64)) -> bytes:
    return imagegen.encode(picture(seed, size), "PNG")


def hostile() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """name -> (bytes, words one of which the refusal reason must contain)."""
    good_jpeg = jpeg(seed=101, size=(96, 96))
    good_png = png(seed=102, size=(96, 96))
    rnd = random.Random(7)
    return {
        "empty.jpg": (b"", ("empty",)),
        "notes.txt": ("Cats are great.\nThis is a shopping list, not a picture. é à ü\n".encode(), ("text",)),
        "page.jpg": (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                     b"<body>Sorry</body></html>", ("web page", "HTML")),
        "drawing.svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" '
                        b'height="100"><circle cx="50" cy="50" r="40"/></svg>', ("SVG",)),
        "cut.jpg": (good_jpeg[: len(good_jpeg) * 2 // 3], ("truncated",)),
        "cut.png": (good_png[: len(good_png) * 2 // 3], ("truncated",)),
        # Valid headers and nothing else: what a download cut after the first packet looks like.
        "header-only.png": (good_png[:33], ("truncated",)),  # signature + IHDR chunk
        "header-only.jpg": (good_jpeg[: good_jpeg.index(b"\xff\xdb")], ("truncated",)),
        "bomb.png": (png_bomb(), ("too many pixels",)),
        "noise.jpg": (bytes(rnd.randrange(256) for _ in range(5000)), ("not a JPEG",)),
        "tiny.png": (imagegen.encode(picture(103, (20, 20)), "PNG"), ("too small",)),
        "thin.png": (imagegen.encode(picture(104, (500, 31)), "PNG"), ("too small",)),
    }


# --- awkward but valid pictures ---------------------------------------------------------


@dataclass
class Awkward:
    """A valid file and what its stored copy must be: ``size`` and, optionally, pixels.

    ``pixels`` maps (x, y) in the stored picture to the expected RGB colour (within a
    JPEG tolerance).
    """

    data: bytes
    size: tuple[int, int]
    pixels: dict[tuple[int, int], tuple[int, int, int]]


def _halves(size=(80, 40), left=(0, 0, 255), right=(255, 0, 0)) -> Image.Image:
    im = Image.new("RGB", size, right)
    im.paste(left, (0, 0, size[0] // 2, size[1]))
    return im


def _exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def awkward() -> dict[str, Awkward]:
    """file name -> Awkward. Names include no extension, upper case, spaces and accents."""
    out: dict[str, Awkward] = {}
    red, blue, white, green, yellow = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 200, 0), (255, 255, 0)

    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    out["cmyk.jpg"] = Awkward(imagegen.encode(cmyk, "JPEG"), (64, 48), {(5, 5): red})

    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 255, 255, 255, 0] + [0] * 762)
    pal.paste(1, (32, 0, 64, 64))  # left blue, right yellow
    out["palette.png"] = Awkward(imagegen.encode(pal, "PNG"), (64, 64), {(5, 5): blue, (60, 60): yellow})
    out["palette-transparent.png"] = Awkward(imagegen.encode(pal, "PNG", transparency=0), (64, 64),
                                             {(5, 5): white, (60, 60): yellow})

    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent black must become white
    rgba.paste((0, 200, 0, 255), (32, 0, 64, 64))
    out["rgba.png"] = Awkward(imagegen.encode(rgba, "PNG"), (64, 64), {(5, 5): white, (60, 60): green})

    out["grey.png"] = Awkward(imagegen.encode(Image.new("L", (64, 64), 100), "PNG"), (64, 64),
                              {(30, 30): (100, 100, 100)})

    # 16-bit greyscale: left half 1/4 of full scale, right half 3/4 (must not clip to white).
    a16 = np.full((64, 64), 16384, dtype=np.uint16)
    a16[:, 32:] = 49151
    i16 = Image.frombytes("I;16", (64, 64), a16.astype("<u2").tobytes())
    out["deep-16bit.png"] = Awkward(imagegen.encode(i16, "PNG"), (64, 64),
                                    {(5, 5): (64, 64, 64), (60, 60): (191, 191, 191)})

    # Stored 80x40, left blue / right red. Orientation 6 = turn 90 deg clockwise to view:
    # left goes to the top. Orientation 8 = turn counter-clockwise: left goes to the bottom.
    out["rotated6.jpg"] = Awkward(imagegen.encode(_halves(), "JPEG", exif=_exif(6)), (40, 80),
                                  {(20, 5): blue, (20, 75): red})
    out["rotated8.jpg"] = Awkward(imagegen.encode(_halves(), "JPEG", exif=_exif(8)), (40, 80),
                                  {(20, 5): red, (20, 75): blue})

    frames = [Image.new("RGB", (64, 64), c) for c in (red, blue, green)]
    out["animated.gif"] = Awkward(imagegen.encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                                  duration=100, loop=0), (64, 64), {(30, 30): red})
    out["photo.webp"] = Awkward(imagegen.encode(_halves((64, 64)), "WEBP", quality=95), (64, 64),
                                {(5, 30): blue, (60, 30): red})
    out["photo.bmp"] = Awkward(imagegen.encode(_halves((64, 64)), "BMP"), (64, 64), {(5, 30): blue, (60, 30): red})
    out["progressive.jpg"] = Awkward(imagegen.encode(_halves((64, 64)), "JPEG", progressive=True), (64, 64),
                                     {(5, 30): blue, (60, 30): red})
    out["no_extension"] = Awkward(imagegen.encode(_halves((48, 48), left=green), "PNG"), (48, 48),
                                  {(5, 20): green, (44, 20): red})
    out["UPPER.JPG"] = Awkward(imagegen.encode(_halves((40, 56), left=red, right=blue), "JPEG"), (40, 56),
                               {(5, 20): red, (36, 20): blue})
    out["UPPER.PNG"] = Awkward(imagegen.encode(_halves((56, 40), left=green, right=blue), "PNG"), (56, 40),
                               {(5, 20): green, (52, 20): blue})
    out["chat noir é.png"] = Awkward(imagegen.encode(Image.new("RGB", (50, 70), (20, 20, 20)), "PNG"), (50, 70),
                                     {(25, 35): (20, 20, 20)})
    out["большой кот.jpeg"] = Awkward(imagegen.encode(Image.new("RGB", (2000, 500), blue), "JPEG"), (1024, 256),
                                      {(500, 100): blue})
    return out


def close(rgb, want, tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(rgb, want))


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def make_zip(path: Path, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return path


def corrupt_member(path: Path, member: str) -> None:
    """Overwrite the start of ``member``'s compressed data so that inflating it fails."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    off = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[off + 26: off + 30])
    start = off + 30 + name_len + extra_len
    raw[start: start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))


def encrypt_flag(path: Path, member: str) -> None:
    """Mark ``member`` as password-protected (the traditional encryption flag, in both headers)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw[info.header_offset + 6] |= 1
    name = member.encode()
    cd = raw.index(b"PK\x01\x02")
    while raw[cd + 46: cd + 46 + len(name)] != name:
        cd = raw.index(b"PK\x01\x02", cd + 4)
    raw[cd + 8] |= 1
    path.write_bytes(bytes(raw))


def files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def decode_fully(path: Path) -> tuple[str, str, tuple[int, int]]:
    """Open a stored file as training does, decode every pixel; return (format, mode, size)."""
    with Image.open(path, formats=["JPEG"]) as im:
        im.load()
        return im.format, im.mode, im.size


def stage_chunk_or_die(root: str, owner: str, jobs: list) -> list:
    """The import's helper-process task, except that a helper given a file named 'die.png' dies at once
    (as a decoder crash or the out-of-memory killer would end it)."""
    import os

    from tl_app import importer

    if any(isinstance(j, (str, Path)) and Path(j).name == "die.png" for j in jobs):
        os._exit(3)
    return importer._stage_chunk(root, owner, jobs)
