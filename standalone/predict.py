"""Classify pictures with the exported model, exactly as the app that trained it does.

Needs only onnxruntime, Pillow and numpy (``pip install onnxruntime pillow numpy``):

    python predict.py IMAGE... [--json] [--top K]

With ``--json`` it prints ``[{"file", "label", "confidence", "probs"}]`` (and ``"error"``
for a file that is not a usable picture). From Python::

    from predict import load
    model = load()                      # model.onnx and model.json next to this file
    model.predict(["cat.jpg"])          # the same list of dicts

Every picture goes through the app's own pipeline for a picture it is given: opened
with only the JPEG/PNG/WEBP/GIF/BMP parsers, turned upright (EXIF), first frame, 8-bit
RGB (transparency on white), scaled down to at most ``max_side`` and re-encoded as
JPEG, then decoded for the network and resized, the whole picture squished to the
input size (bilinear), and normalised with the model's mean and std. The settings
come from ``model.json``; nothing here is guessed. A picture the app already stored
(its sha256 is listed in ``pictures.sha256``) is read as stored, not re-encoded,
as the app does with the pictures of its project.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

HERE = Path(__file__).resolve().parent
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


class Refused(Exception):
    """A file that is not a usable picture; the message says why."""


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white (as the app does)."""
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
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0
        elif mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else arr * 0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")


class Classifier:
    """The exported model: ``model.onnx`` on onnxruntime, with the app's preprocessing from ``model.json``."""

    def __init__(self, folder: Path | str = HERE, *, providers=None):
        import onnxruntime as ort

        folder = Path(folder)
        spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        export = (spec.get("extra") or {}).get("export") or {}
        if spec.get("resize") != "squish":
            raise ValueError(f"model.json asks for resize '{spec.get('resize')}', which this file does not do")
        self.outputs: list[str] = list(spec["vocab"])  # the class of each output (merged classes repeat a name)
        self.classes: list[str] = list(dict.fromkeys(self.outputs))
        self.size = int(spec["size"])
        self.mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 3, 1, 1)
        pipe = export.get("pipeline") or {}
        self.formats = list(pipe.get("formats") or ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
        self.min_side = int(pipe.get("min_side", 32))
        self.max_side = int(pipe.get("max_side", 1024))
        self.max_bytes = int(pipe.get("max_bytes", 50 * 1024 * 1024))
        self.quality = int(pipe.get("jpeg_quality", 92))
        self.resample = _RESAMPLE[pipe.get("resample", "bilinear")]
        self.input = export.get("input", "pixels")
        listed = folder / export.get("stored", "pictures.sha256")
        self.stored = set()
        if listed.is_file():
            self.stored = {ln.strip() for ln in listed.read_text(encoding="ascii").splitlines()
                           if ln.strip() and not ln.startswith("#")}
        self.session = ort.InferenceSession(str(folder / export.get("onnx", "model.onnx")),
                                            providers=providers or ["CPUExecutionProvider"])

    # --- the picture, as the app stores it, then as the network sees it -------------------------
    def _read(self, src) -> bytes:
        if isinstance(src, bytes):
            data = src
        else:
            p = Path(src)
            try:
                size = p.stat().st_size
            except OSError as e:
                raise Refused(f"cannot be read ({e.strerror or e})") from None
            if size > self.max_bytes:
                raise Refused(f"the file is too large ({size / 1e6:.0f} MB; the limit is {self.max_bytes / 1e6:.0f} MB)")
            data = p.read_bytes()
        if not data:
            raise Refused("the file is empty")
        return data

    def stored_jpeg(self, src) -> bytes:
        """The JPEG bytes the app would store for this picture (upright, RGB, at most ``max_side``)."""
        data = self._read(src)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        if not Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = 89_478_485
        try:
            im = Image.open(io.BytesIO(data), formats=self.formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Refused("the image has too many pixels (a possible decompression bomb)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
            raise Refused("not a JPEG, PNG, WEBP, GIF or BMP image") from None
        w, h = im.size
        if w * h > Image.MAX_IMAGE_PIXELS:
            raise Refused(f"the image has too many pixels ({w}x{h}; a possible decompression bomb)")
        if w < self.min_side or h < self.min_side:
            raise Refused(f"the image is too small ({w}x{h}; at least {self.min_side} px a side is needed)")
        try:
            if im.format == "JPEG":
                im.draft("RGB", (self.max_side, self.max_side))
            im.load()
        except Image.DecompressionBombError:
            raise Refused("the image has too many pixels (a possible decompression bomb)") from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, ZeroDivisionError):
            raise Refused("the file is truncated or damaged") from None
        try:
            im = ImageOps.exif_transpose(im) or im
        except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the picture
            pass
        rgb = _to_rgb(im)
        if max(rgb.size) > self.max_side:
            rgb.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=self.quality)
        return out.getvalue()

    def pixels_of_stored(self, jpeg: bytes | Path | str) -> np.ndarray:
        """A stored JPEG decoded and resized for the network: uint8 (size, size, 3)."""
        src = io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg
        with Image.open(src, formats=["JPEG"]) as im:
            im.draft("RGB", (self.size, self.size))
            rgb = im.convert("RGB")
        if rgb.size != (self.size, self.size):
            rgb = rgb.resize((self.size, self.size), self.resample)
        return np.asarray(rgb, dtype=np.uint8)

    def prepare(self, src) -> np.ndarray:
        """One picture (a path or its bytes) as the network's uint8 input; :class:`Refused` if unusable."""
        data = self._read(src)
        if self.stored and hashlib.sha256(data).hexdigest() in self.stored:
            try:  # one of the app's own stored pictures: the app reads it as stored
                return self.pixels_of_stored(data)
            except (OSError, ValueError, SyntaxError):
                pass
        return self.pixels_of_stored(self.stored_jpeg(data))

    # --- the network ------------------------------------------------------------------------------
    def probs(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities (N, classes) for uint8 pictures (N, size, size, 3)."""
        out = []
        for s in range(0, len(pixels), batch_size):
            x = pixels[s:s + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
            x = np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)
            out.append(self.session.run(None, {self.input: x})[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.outputs)), np.float32)

    def predict(self, files, names: dict | None = None) -> list[dict]:
        """``[{"file", "label", "confidence", "probs"}]`` per file, in order; ``"error"`` for a refused file."""
        names = names or {}
        rows, good = [], []
        for f in files:
            row = {"file": names.get(str(f), str(f)), "label": None, "confidence": None, "probs": {}}
            try:
                good.append((len(rows), self.prepare(f)))
            except Refused as e:
                row["error"] = str(e)
            rows.append(row)
        if good:
            for (i, _), pr in zip(good, self.probs(np.stack([g[1] for g in good]))):
                d: dict = {}
                for c, x in zip(self.outputs, pr):
                    d[c] = d.get(c, 0.0) + float(x)
                d = {c: round(x, 6) for c, x in d.items()}
                best = max(d, key=d.get)
                rows[i].update(label=best, confidence=d[best], probs=d)
        return rows


def load(folder: Path | str = HERE) -> Classifier:
    """The model in ``folder`` (default: the folder of this file)."""
    return Classifier(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Classify pictures with the exported model.")
    ap.add_argument("images", nargs="+", metavar="IMAGE")
    ap.add_argument("--json", action="store_true", help="Print one JSON list: file, label, confidence, probs.")
    ap.add_argument("--top", type=int, default=3, help="Classes shown per picture without --json (default 3).")
    ap.add_argument("--model", default=str(HERE), help="Folder with model.onnx and model.json (default: here).")
    args = ap.parse_args(argv)
    rows = load(args.model).predict(args.images)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        for r in rows:
            if "error" in r:
                print(f"{r['file']}: refused: {r['error']}")
            else:
                top = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:args.top]
                print(f"{r['file']}: " + ", ".join(f"{k} {v:.1%}" for k, v in top))
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
