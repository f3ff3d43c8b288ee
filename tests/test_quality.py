"""Poor pictures: judged on colour and structure, said in words, measured once (and again when the rule changes)."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import imagegen
from tl_app import quality, review
from tl_app.images import normalize
from tl_app.importer import import_files


def judged(im: Image.Image):
    data = normalize(imagegen.encode(im, "PNG")).data
    with Image.open(io.BytesIO(data)) as stored:
        w, h = stored.size
    return quality.judge(quality.measure(io.BytesIO(data)), w, h)


def disc(bg, fg, size=(240, 180)) -> Image.Image:
    im = Image.new("RGB", size, bg)
    ImageDraw.Draw(im).ellipse((60, 40, 180, 140), fill=fg)
    return im


@pytest.mark.parametrize("bg, fg", [((200, 60, 60), (60, 140, 60)),   # red and green of one brightness
                                    ((40, 40, 200), (140, 40, 40)),
                                    ((230, 230, 230), (250, 250, 200)),  # pale on pale
                                    ((20, 20, 20), (200, 30, 30))])    # a red disc on black
def test_a_coloured_shape_on_a_plain_background_is_a_clear_picture(bg, fg):
    assert judged(disc(bg, fg)) is None


@pytest.mark.parametrize("make", [lambda: imagegen.scene(1),
                                  lambda: Image.fromarray((np.asarray(imagegen.scene(2), dtype=np.float32) * 0.25
                                                           + 100).astype(np.uint8)),  # hazy, low contrast
                                  lambda: Image.fromarray((np.asarray(imagegen.scene(3), dtype=np.float32)
                                                           * np.r_[np.full(120, 0.05), np.ones(120)][None, :, None])
                                                          .astype(np.uint8))])  # half in deep shadow
def test_photos_with_dark_areas_or_little_contrast_are_clear(make):
    assert judged(make()) is None


def test_a_flat_picture_is_almost_a_single_flat_colour():
    rng = np.random.default_rng(0)
    flat = np.clip(np.full((180, 240, 3), 128.0) + rng.normal(0, 4, (180, 240, 3)), 0, 255).astype(np.uint8)
    p = judged(Image.fromarray(flat))
    assert p.kind == "flat" and p.detail.startswith("Almost a single flat colour (grey)")


def test_a_dark_picture_is_very_dark():
    dim = (np.asarray(imagegen.scene(5), dtype=np.float32) * 0.1).astype(np.uint8)
    p = judged(Image.fromarray(dim))
    assert p.kind == "dark" and p.detail.startswith("Very dark")


def test_a_blurred_picture_is_blurred_but_a_small_soft_one_is_not():
    p = judged(imagegen.scene(6).filter(ImageFilter.GaussianBlur(8)))
    assert p.kind == "blurred" and p.detail.startswith("Blurred")
    # A 64 px digit scan is soft by nature: not flagged as blurred.
    from sklearn.datasets import load_digits

    digit = Image.fromarray((load_digits().images[0] / 16 * 255).astype(np.uint8)).resize(
        (64, 64), Image.Resampling.BILINEAR).convert("RGB")
    assert judged(digit) is None


def test_tiny_and_broken_pictures():
    assert judged(imagegen.scene(7, size=(60, 45))).kind == "tiny"
    broken = quality.measure(io.BytesIO(b"\xff\xd8 not really a jpeg"))
    assert quality.judge(broken, 100, 100).kind == "broken" and "can no longer be read" in broken.error


def test_review_says_it_in_words_and_never_serves_a_stale_measure(project, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    disc((200, 60, 60), (60, 140, 60)).save(src / "disc.png")
    Image.new("RGB", (200, 150), (10, 10, 10)).save(src / "black.png")
    import_files(project, [src], label="things")
    rows = {r.name: r for r in review.rank(project, kind="outliers")}
    assert set(rows) == {"black.png"}
    assert rows["black.png"].detail.startswith("Almost a single flat colour (black)")
    # A value cached by an older rule (here: a spread of 0, "flat") is not used: it is measured again.
    with sqlite3.connect(project.cache_dir / "quality.db") as con:
        con.execute("UPDATE quality SET version=?, spread=0", (quality.VERSION - 1,))
    assert {r.name for r in review.rank(project, kind="outliers")} == {"black.png"}


def _measure_plainly(im) -> quality.Quality:
    """The measures as first written (np.pad and one sum): what the faster code must give to the bit."""
    im = im.convert("RGB")
    if max(im.size) > quality.SIDE:
        im = im.copy()
        im.thumbnail((quality.SIDE, quality.SIDE), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.float32)
    h, w = a.shape[:2]
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    smooth = sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
    med = np.median(smooth.reshape(-1, 3), axis=0)
    spread = float(np.percentile(np.sqrt(((smooth - med) ** 2).sum(2)), 99))
    bright = float(np.percentile(a @ np.array([0.299, 0.587, 0.114], np.float32), 98))
    gy, gx = np.gradient(a, axis=(0, 1))
    edge = float(np.percentile(np.sqrt((gx ** 2 + gy ** 2).sum(2)), 99.5))
    return quality.Quality(spread=round(spread, 3), bright=round(bright, 3), sharp=round(edge / max(spread, 1.0), 4),
                           colour=tuple(int(round(float(x))) for x in med))


def test_the_measures_are_those_of_the_plain_computation_to_the_last_digit():
    rng = np.random.default_rng(0)
    pictures = [imagegen.scene(i, size=(96, 72)) for i in range(60)]
    pictures += [imagegen.scene(i, size=s) for i, s in enumerate([(300, 200), (90, 68), (128, 128), (129, 40)])]
    pictures += [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(2, 2), (3, 7), (640, 480)]]
    pictures += [Image.new("L", (50, 40), 7), Image.new("RGBA", (60, 40), (1, 2, 3, 4)), disc((20, 20, 20), (200, 30, 30))]
    for im in pictures:
        assert quality.measure_image(im) == _measure_plainly(im), im.size


def test_measures_and_fingerprints_per_item_are_those_of_each_picture_and_cached(project, tmp_path):
    from tl_app import dupes

    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        imagegen.scene(i, size=(96, 72)).save(src / f"p{i}.png")
    import_files(project, [src], label="things")
    items = project.items()
    got_q = quality.item_quality(project, items)
    got_f = dupes.item_fingerprints(project, items)
    for it in items:
        assert got_q[it.id] == quality.measure(project.path_of(it))
        assert got_f[it.id] == dupes.fingerprint_stored(project.path_of(it))
    # A picture whose file went is broken, and has no fingerprint; the others are read from the caches.
    gone = items[3]
    project.path_of(gone).unlink()
    quality._MEMO.clear()
    (project.cache_dir / "quality.db").unlink()
    (project.cache_dir / "fingerprints.db").unlink()
    assert quality.item_quality(project, items)[gone.id].error == "its file is missing"
    assert gone.id not in dupes.item_fingerprints(project, items)
    assert len(dupes.item_fingerprints(project, items)) == len(items) - 1
