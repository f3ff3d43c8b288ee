"""Copies of the same picture: found whatever was done to them, and distinct pictures never called copies."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

import imagegen
from tl_app import dupes
from tl_app.images import normalize
from tl_app.importer import import_files


def stored(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """A picture as the app stores it (through the import pipeline)."""
    return normalize(imagegen.encode(im, fmt, **kw)).data


def fp(im: Image.Image, fmt: str = "PNG", **kw) -> dupes.Fingerprint:
    return dupes.fingerprint_stored(io.BytesIO(stored(im, fmt, **kw)))


def crop(im, l, t, r, b):
    w, h = im.size
    return im.crop((round(l * w), round(t * h), round(w - r * w), round(h - b * h)))


def caption(im, text="© pics.com"):
    im = im.copy()
    ImageDraw.Draw(im).text((im.width // 2, im.height - 16), text, fill=(255, 255, 255), anchor="mm",
                            font_size=max(10, im.height // 12))
    return im


COPIES = {
    "re-encoded at JPEG 30": lambda im: (im, {"fmt": "JPEG", "quality": 30}),
    "a quarter of the size": lambda im: (im.resize((im.width // 4, im.height // 4), Image.Resampling.LANCZOS), {}),
    "four times larger": lambda im: (im.resize((im.width * 4, im.height * 4), Image.Resampling.BICUBIC), {}),
    "10% cut off one side": lambda im: (crop(im, 0.1, 0, 0, 0), {"fmt": "JPEG", "quality": 70}),
    "cropped on every side": lambda im: (crop(im, 0.06, 0.08, 0.04, 0.07), {"fmt": "JPEG", "quality": 80}),
    "a thin white frame": lambda im: (ImageOps.expand(im, 6, fill=(255, 255, 255)), {}),
    "a thin coloured frame": lambda im: (ImageOps.expand(im, 4, fill=(200, 30, 30)), {"fmt": "JPEG", "quality": 60}),
    "a caption written on it": lambda im: (caption(im), {"fmt": "JPEG", "quality": 85}),
}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("seed", [1, 2])
def test_a_copy_is_found_whatever_was_done_to_it(how, seed):
    original = imagegen.scene(seed)
    copy, kw = COPIES[how](original)
    m = dupes.compare(fp(original), fp(copy, **kw))
    assert m is not None and m.is_copy, (how, m)
    # The same picture whole (another size or quality) is "identical", as placeholders need; a crop or
    # a caption is not (a frame, trimmed away, may be either).
    if how in ("re-encoded at JPEG 30", "a quarter of the size", "four times larger"):
        assert m.identical
    elif "frame" not in how:
        assert not m.identical


def test_a_perceptual_hash_misses_cropped_copies_that_the_finder_confirms():
    import imagehash

    original = imagegen.scene(3)
    copy = crop(original, 0.1, 0.02, 0.0, 0.08)
    a, b = stored(original), stored(copy, "JPEG", quality=70)
    ph = [imagehash.phash(Image.open(io.BytesIO(x)).convert("L")) for x in (a, b)]
    assert ph[0] - ph[1] > 6  # the old rule: not even a candidate
    assert dupes.find_matches([dupes.fingerprint_stored(io.BytesIO(x)) for x in (a, b)])[0].kind == dupes.SAME


def test_distinct_digit_scans_are_never_copies():
    import imagehash
    from sklearn.datasets import load_digits

    scans = [Image.fromarray((img / 16 * 255).astype(np.uint8), "L").resize((64, 64), Image.Resampling.BILINEAR)
             .convert("RGB") for img in load_digits().images[:600]]
    data = [stored(im) for im in scans]
    ph = np.array([int(str(imagehash.phash(Image.open(io.BytesIO(d)).convert("L"))), 16) for d in data],
                  dtype=np.uint64)
    close = sum(int((np.bitwise_count(ph[:i] ^ ph[i]) <= 6).sum()) for i in range(len(ph)))
    assert close > 20  # what the old rule would have flagged
    matches = dupes.find_matches([dupes.fingerprint_stored(io.BytesIO(d)) for d in data])
    assert not [m for m in matches if m.is_copy]


def test_flat_drawings_that_differ_only_in_colour_are_not_copies():
    import badserver

    data = [normalize(badserver.drawing_bytes(n)).data for n in range(48)]
    matches = dupes.find_matches([dupes.fingerprint_stored(io.BytesIO(d)) for d in data])
    assert not [m for m in matches if m.is_copy]


def test_similar_textures_are_at_most_possible_near_copies():
    # Noise pictures of one colour look alike at any small size; their detail never matches.
    prints = [fp(imagegen.noisy(imagegen.COLOURS["red"], seed=i)) for i in range(16)]
    matches = dupes.find_matches(prints)
    assert matches and all(m.kind == dupes.POSSIBLE for m in matches)


def test_a_mirrored_copy_is_reported_as_mirrored_and_only_when_asked():
    original = imagegen.scene(4)
    a, b = fp(original), fp(ImageOps.mirror(original), "JPEG", quality=80)
    assert dupes.compare(a, b) is None or not dupes.compare(a, b).is_copy
    m = dupes.compare(a, b, mirrored=True)
    assert m is not None and m.kind == dupes.MIRRORED and not m.is_copy
    others = [fp(imagegen.scene(50 + i)) for i in range(6)]
    assert not [x for x in dupes.find_matches([a, b, *others]) if (x.a, x.b) == (0, 1)]
    assert [x.kind for x in dupes.find_matches([a, b, *others], mirrored=True) if (x.a, x.b) == (0, 1)] == ["mirrored"]
    # A download would not refuse it.
    index = dupes.CopyIndex({"orig": a})
    assert index.find(b) is None


def test_the_index_finds_copies_among_many():
    prints = {f"p{i}": fp(imagegen.scene(100 + i)) for i in range(30)}
    index = dupes.CopyIndex(prints)
    hit = index.find(fp(crop(imagegen.scene(117), 0.05, 0.05, 0.08, 0.0), "JPEG", quality=60))
    assert hit is not None and hit[0] == "p17" and hit[1].is_copy
    assert index.find(fp(imagegen.scene(999))) is None
    index.add("new", fp(imagegen.scene(999)))
    assert index.find(fp(imagegen.scene(999), "JPEG", quality=50))[0] == "new"


def test_groups_join_copies_of_copies():
    ms = [dupes.Match(0, 1, "same", 0.01), dupes.Match(1, 4, "overlay", 0.01), dupes.Match(2, 3, "possible", 0.03)]
    assert dupes.groups(5, ms) == [[0, 1, 4]]
    assert sorted(dupes.groups(5, ms, ("same", "overlay", "possible"))) == [[0, 1, 4], [2, 3]]


def test_fingerprints_of_another_version_are_computed_again(project, tmp_path):
    im = imagegen.scene(7)
    (tmp_path / "a.png").write_bytes(imagegen.encode(im, "PNG"))
    import_files(project, [tmp_path / "a.png"], label="x")
    [it] = project.items()
    first = dupes.item_fingerprints(project)[it.id]
    # A row written by an older version (a blank thumbnail) must not be served.
    with sqlite3.connect(project.cache_dir / "fingerprints.db") as con:
        con.execute("UPDATE prints SET version=?, thumb=?", (dupes.VERSION - 1, bytes(len(first.thumb))))
    assert dupes.item_fingerprints(project)[it.id] == first
