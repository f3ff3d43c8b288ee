"""The image pipeline: what it refuses (and says why), and what every accepted file becomes."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

import hostile
import imagegen
from tl_app import config
from tl_app.errors import ImageRejected
from tl_app.images import normalize, open_rgb, sniff

HOSTILE = hostile.hostile()
AWKWARD = hostile.awkward()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_with_a_reason_that_names_the_problem(name):
    data, words = HOSTILE[name]
    with pytest.raises(ImageRejected) as e:
        normalize(data)
    reason = e.value.reason
    assert any(w.lower() in reason.lower() for w in words), f"{name}: {reason!r} should mention one of {words}"


def test_bomb_is_a_real_image_that_pillow_would_open_without_the_limit(monkeypatch):
    """The refusal above is the guard working, not the file being broken."""
    data = hostile.png_bomb()
    assert len(data) < 200_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
        assert im.size == (20_000, 20_000)
        im.verify()  # every chunk and CRC is valid


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [20_000, 10_000])
def test_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch, side):
    """10000 x 10000 lies between Pillow's limit and twice it, where Image.open only warns:
    the app's own check must stop it before decoding."""
    def no_load(self, *a, **kw):
        raise AssertionError("pixels decoded")

    data = hostile.png_bomb(side, side)
    monkeypatch.setattr(Image.Image, "load", no_load)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(ImageRejected, match="too many pixels"):
        normalize(data)


def test_bomb_is_refused_cleanly_when_warnings_are_errors():
    """Under ``python -W error`` Pillow raises its warning: still a refusal, not a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRejected, match="too many pixels"):
            normalize(hostile.png_bomb(10_000, 10_000))


def test_file_over_the_size_limit_is_refused_without_decoding():
    data = hostile.png(seed=1)
    with pytest.raises(ImageRejected, match="too large"):
        open_rgb(data, max_bytes=len(data) - 1)
    assert open_rgb(data, max_bytes=len(data))[0].size == (64, 64)


def test_pillow_safety_settings_are_kept():
    normalize(hostile.png(seed=2))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


@pytest.mark.parametrize("fmt", ["TIFF", "EPS", "ICO", "PPM", "TGA", "PCX"])
def test_formats_outside_the_allow_list_are_refused(fmt):
    data = imagegen.encode(hostile.picture(seed=3), fmt)
    with Image.open(io.BytesIO(data)) as check:  # Pillow itself would open every one of them
        assert check.format == fmt
    with pytest.raises(ImageRejected):
        normalize(data)


def test_pdf_is_refused_as_a_document():
    data = imagegen.encode(hostile.picture(seed=3), "PDF")
    with pytest.raises(ImageRejected, match="PDF"):
        normalize(data)


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_valid_file_becomes_an_upright_8bit_rgb_jpeg(name):
    case = AWKWARD[name]
    out = normalize(case.data)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
        assert im.size == case.size == (out.width, out.height)
        im.load()
        for xy, want in case.pixels.items():
            got = im.getpixel(xy)
            assert hostile.close(got, want), f"{name}: pixel {xy} is {got}, expected about {want}"


def test_sixteen_bit_grey_keeps_its_range_instead_of_clipping():
    ramp = (np.arange(64, dtype=np.uint32)[None, :].repeat(64, 0) * 1040).astype("<u2")  # 0 .. 65520
    data = imagegen.encode(Image.frombytes("I;16", (64, 64), ramp.tobytes()), "PNG")
    with Image.open(io.BytesIO(normalize(data).data)) as im:
        row = np.asarray(im.convert("L"))[32]
    assert row[0] < 10 and row[-1] > 245
    assert np.all(np.diff(row.astype(int)) >= -3)  # a ramp, not a wall of white
    assert len(set(row.tolist())) > 40


def test_exif_rotation_swaps_stored_width_and_height():
    case = AWKWARD["rotated6.jpg"]
    with Image.open(io.BytesIO(case.data)) as raw:
        assert raw.size == (80, 40)
    out = normalize(case.data)
    assert (out.width, out.height) == (40, 80)
    assert out.original_size == (80, 40)


@pytest.mark.parametrize("fmt, kw", [
    ("PNG", {"exif": hostile._exif(6)}),  # an eXIf chunk
    ("JPEG", {"xmp": b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
                     b'syntax-ns#"><rdf:Description xmlns:tiff="urn:tiff" tiff:Orientation="6"/>'
                     b'</rdf:RDF></x:xmpmeta>'}),  # an orientation in XMP only (Pillow reads tiff:Orientation by its name)
])
def test_an_orientation_outside_a_jpeg_exif_block_is_applied_too(fmt, kw):
    buf = io.BytesIO()
    Image.new("RGB", (80, 40), (200, 30, 30)).save(buf, format=fmt, **kw)
    out = normalize(buf.getvalue())
    assert (out.width, out.height) == (40, 80) and out.original_size == (80, 40)


def test_large_picture_is_scaled_to_the_stored_side():
    data = imagegen.encode(imagegen.noisy((90, 90, 90), (2400, 1200), seed=4), "JPEG")
    out = normalize(data)
    assert max(out.width, out.height) == config.MAX_STORED_SIDE
    assert (out.width, out.height) == (1024, 512)
    assert out.original_size == (2400, 1200)


def test_same_pixels_in_any_format_give_identical_bytes_and_hash():
    im = hostile.picture(seed=5)
    outs = [normalize(imagegen.encode(im, fmt)) for fmt in ("PNG", "BMP", "WEBP")]
    # WEBP is stored lossless only with lossless=True; PNG and BMP hold the same pixels exactly.
    assert outs[0].data == outs[1].data and outs[0].sha256 == outs[1].sha256
    lossless = normalize(imagegen.encode(im, "WEBP", lossless=True))
    assert lossless.sha256 == outs[0].sha256


def test_every_source_kind_is_accepted(tmp_path):
    data = hostile.png(seed=6)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    results = [normalize(data), normalize(path), normalize(str(path)), normalize(io.BytesIO(data))]
    assert len({r.sha256 for r in results}) == 1


def test_missing_file_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ImageRejected, match="cannot be read"):
        normalize(tmp_path / "nope.jpg")


@pytest.mark.parametrize("head, expected", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"<html><body>hi</body></html>", "web page"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    (b"%PDF-1.7\n", "PDF"),
    (b"PK\x03\x04\x14\x00", "zip"),
    (b'{"error": "rate limited"}', "JSON"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
    (b"\x89PNG\r\n\x1a\n", "truncated"),
    (b"GIF89a\x40\x00", "truncated"),
    (b"BM\x36\x30\x00\x00\x00\x00\x00\x00\x36\x00", "truncated"),
    (b"BMW owners club newsletter", "text"),  # "BM" alone must not read as a bitmap
    (b"a" + "é".encode() * 300, "text"),  # a UTF-8 character cut at byte 512 is still text
    (bytes(range(256)) * 2, None),
])
def test_sniff_names_what_a_refused_file_looks_like(head, expected):
    got = sniff(head)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected.lower() in got.lower(), got


def test_mutated_images_never_crash_the_pipeline():
    """Random damage to valid files gives a picture or a refusal, never another exception."""
    im = hostile.picture(seed=8, size=(48, 40))
    seeds = [imagegen.encode(im, "JPEG"), imagegen.encode(im, "JPEG", progressive=True),
             imagegen.encode(im, "PNG"), imagegen.encode(im.convert("P"), "GIF"),
             imagegen.encode(im, "BMP"), imagegen.encode(im, "WEBP")]
    rng = random.Random(1234)
    accepted = refused = 0
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice((1, 3, 8))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            out = normalize(bytes(data))
        except ImageRejected as e:
            assert e.reason
            refused += 1
        else:
            with Image.open(io.BytesIO(out.data)) as check:
                assert check.mode == "RGB"
            accepted += 1
    assert accepted and refused
