"""The batch pHash must equal imagehash.phash bit for bit, for every kind of input."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from app.imaging import resample
from app.imaging.decode import ImageDecodeError, decode_grayscale
from app.imaging.phash import bits_to_hex, hex_to_bytes, phash_batch
from app.imaging.resample import lanczos_resize_batch
from tests.imagegen import encode, perturbed_copy, phantom

MAX_PIXELS = 50_000_000


def varied_images() -> list[bytes]:
    """Several hundred encoded images: phantoms, noise, flat, gradients, odd sizes, modes."""
    rng = np.random.default_rng(2023)
    out: list[bytes] = []
    for i in range(120):
        size = int(rng.choice([64, 100, 128, 256]))
        img = phantom(i, size)
        out.append(encode(img))
        out.append(encode(perturbed_copy(img, i)))
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(9, 320, 2))
        out.append(encode(rng.integers(0, 256, (h, w), dtype=np.uint8)))
    for value in (0, 1, 127, 128, 254, 255):  # flat images: every DCT coefficient ties
        out.append(encode(np.full((64, 64), value, np.uint8)))
        out.append(encode(np.full((256, 256), value, np.uint8)))
    for i in range(20):  # gradients and stripes: symmetric, tie-prone spectra
        h, w = (int(v) for v in rng.integers(20, 300, 2))
        grad = (np.add.outer(np.arange(h), np.arange(w)) * (i + 1) % 256).astype(np.uint8)
        out.append(encode(grad))
        stripes = np.zeros((h, w), np.uint8)
        stripes[:, :: i % 7 + 2] = 255
        out.append(encode(stripes))
    for i in range(20):  # colour and other modes go through Pillow's own conversion
        rgb = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
        out.append(encode(Image.fromarray(rgb)))
        out.append(encode(Image.fromarray(rgb), "JPEG", quality=90))
        out.append(encode(Image.fromarray(phantom(i, 96)), "BMP"))
        out.append(encode(Image.fromarray(phantom(i + 50, 128)), "TIFF"))
        out.append(encode(Image.fromarray(rgb).convert("P")))
        rgba = np.dstack([rgb, rng.integers(0, 256, (96, 80), dtype=np.uint8)])
        out.append(encode(Image.fromarray(rgba)))
        out.append(encode(Image.fromarray(phantom(i, 64)).convert("LA")))
        wide = (phantom(i, 128).astype(np.uint16) * 257).astype(np.uint16)
        out.append(encode(Image.fromarray(wide)))
    return out


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return varied_images()


@pytest.mark.parametrize("hash_size", [8, 16])
def test_batch_phash_is_bit_identical_to_imagehash(images, hash_size):
    assert len(images) >= 400
    expected = [str(imagehash.phash(Image.open(io.BytesIO(b)), hash_size)) for b in images]
    pixels = [decode_grayscale(b, MAX_PIXELS) for b in images]
    got = bits_to_hex(phash_batch(pixels, hash_size))
    mismatches = [i for i, (e, g) in enumerate(zip(expected, got, strict=True)) if e != g]
    assert mismatches == []


def test_decode_matches_pillow_convert_l(images):
    for data in images[:200]:
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        assert np.array_equal(decode_grayscale(data, MAX_PIXELS), expected)


@pytest.mark.parametrize("seed", range(6))
def test_resize_equals_pillow_lanczos_for_any_shape(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        h, w = (int(v) for v in rng.integers(5, 400, 2))
        out_h, out_w = (int(v) for v in rng.integers(4, 90, 2))
        batch = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        expected = np.stack(
            [
                np.asarray(Image.fromarray(b).resize((out_w, out_h), Image.Resampling.LANCZOS))
                for b in batch
            ]
        )
        assert np.array_equal(lanczos_resize_batch(batch, out_w, out_h), expected), (h, w)


def test_hex_round_trip():
    bits = np.random.default_rng(1).random((5, 256)) > 0.5
    hexes = bits_to_hex(bits)
    assert all(len(h) == 64 for h in hexes)
    assert np.array_equal(np.unpackbits(hex_to_bytes(hexes, 16), axis=1).astype(bool), bits)


def test_unsupported_hash_size():
    with pytest.raises(ValueError, match="hash_size"):
        phash_batch([np.zeros((8, 8), np.uint8)], 12)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (encode(phantom(1))[:300], "truncated"),
        (encode(Image.new("L", (8, 8)), "GIF"), "unsupported image format GIF"),
    ],
)
def test_decode_rejects_bad_input_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_grayscale(data, MAX_PIXELS)


def test_decode_rejects_oversized_image():
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        decode_grayscale(encode(phantom(1, 128)), max_pixels=100 * 100)


@pytest.mark.parametrize("seed", range(3))
def test_resize_exact_fallback_alone_equals_pillow(monkeypatch, seed):
    """The float32 products are only trusted away from rounding boundaries; force every
    output through the exact float64 recomputation and it must still equal Pillow."""
    monkeypatch.setattr(resample, "_FORCE_EXACT", True)
    rng = np.random.default_rng(100 + seed)
    for _ in range(8):
        h, w = (int(v) for v in rng.integers(5, 300, 2))
        out_h, out_w = (int(v) for v in rng.integers(4, 70, 2))
        batch = rng.integers(0, 256, (2, h, w), dtype=np.uint8)
        expected = np.stack(
            [
                np.asarray(Image.fromarray(b).resize((out_w, out_h), Image.Resampling.LANCZOS))
                for b in batch
            ]
        )
        assert np.array_equal(resample.lanczos_resize_batch(batch, out_w, out_h), expected)


def test_phash_with_exact_resize_fallback_everywhere(monkeypatch, images):
    monkeypatch.setattr(resample, "_FORCE_EXACT", True)
    sample = images[::8]
    pixels = [decode_grayscale(b, MAX_PIXELS) for b in sample]
    for hash_size in (8, 16):
        expected = [str(imagehash.phash(Image.open(io.BytesIO(b)), hash_size)) for b in sample]
        assert bits_to_hex(phash_batch(pixels, hash_size)) == expected


def test_float32_error_bound_covers_observed_error():
    """The per-output bound must exceed the float32 error actually seen on extreme inputs."""
    rng = np.random.default_rng(7)
    for in_size, out_size in ((256, 64), (256, 32), (300, 17), (64, 90)):
        plan = resample.axis_plan(in_size, out_size)
        x = np.concatenate(
            [
                rng.integers(0, 256, (200, in_size)),
                np.full((1, in_size), 255),
                rng.choice([0, 255], (200, in_size)),
            ]
        ).astype(np.float32)
        approx = (x @ plan.scaled_t).astype(np.float64)
        exact = (x.astype(np.float64) @ plan.matrix.T) / float(1 << resample.PRECISION_BITS)
        assert (np.abs(approx - exact) <= plan.tolerance).all()
