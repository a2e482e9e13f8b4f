"""Bytes -> 8-bit grayscale pixels, exactly as Pillow's ``Image.open(...).convert("L")`` gives them.

8-bit grayscale PNGs (CT slices) take OpenCV's faster, lossless decoder; everything else goes
through Pillow so that colour conversion and JPEG decoding match ``imagehash`` bit for bit.
DICOM files and PNG/TIFF with more than 8 bits per pixel are windowed to 8 bits
(:func:`decode_image`, app.imaging.windowing), never clipped. Nothing here knows about HTTP
or the database.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from app.imaging.dicom import DicomError, looks_like_dicom, read_dicom
from app.imaging.windowing import AppliedWindow, Window, needs_window_reason

# OpenCV prints a warning line per undecodable buffer; we report our own reason instead.
with contextlib.suppress(AttributeError):  # older OpenCV builds lack cv2.utils.logging
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Formats accepted for real and generated images (and DICOM, recognised by its magic).
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF"})
#: Pillow modes of more than 8 bits per pixel: windowed to 8 bits, never clipped.
HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image in an accepted format; ``str(err)`` is the reason."""


@dataclass(frozen=True, slots=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


def read_png_header(data: bytes) -> PngHeader | None:
    """Parse the IHDR chunk, or return None if ``data`` does not start like a PNG."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type, _comp, _filter, interlace = struct.unpack(
        ">IIBBBBB", data[16:29]
    )
    return PngHeader(width, height, bit_depth, color_type, interlace)


@dataclass(frozen=True, slots=True)
class WindowedImage:
    """A DICOM file or high-bit-depth image brought to 8 bits: its frames and the window of
    each; ``multi_frame`` when the file has several frames (each one image)."""

    frames: list[np.ndarray]
    windows: list[AppliedWindow]
    multi_frame: bool = False


def decode_grayscale(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode ``data`` to a 2-D uint8 array equal to Pillow's ``convert("L")`` of the image,
    as imagehash sees it (so a 16-bit image is clipped as Pillow clips it: uploads go
    through :func:`decode_image`, which windows or refuses such images instead).

    Raises ImageDecodeError with a human-readable reason for empty, non-image, truncated,
    oversized or unsupported input.
    """
    return _decode(data, max_pixels, None, windowing=False)  # type: ignore[return-value]


def decode_image(data: bytes, max_pixels: int, window: Window | None) -> np.ndarray | WindowedImage:
    """8-bit images as :func:`decode_grayscale` gives them (``window`` is not used); DICOM
    and PNG/TIFF of more than 8 bits windowed to 8 bits with ``window`` (DICOM without one:
    see app.imaging.dicom; a 16-bit PNG/TIFF without one is refused with how to window it).
    """
    return _decode(data, max_pixels, window, windowing=True)


def _decode(
    data: bytes, max_pixels: int, window: Window | None, *, windowing: bool
) -> np.ndarray | WindowedImage:
    if not data:
        raise ImageDecodeError("empty file")
    header = read_png_header(data)
    if header is not None:
        if header.width == 0 or header.height == 0:
            raise ImageDecodeError("PNG header declares an empty image")
        if header.width * header.height > max_pixels:
            raise ImageDecodeError(
                f"image has {header.width}x{header.height} pixels, more than the limit of "
                f"{max_pixels}"
            )
        if header.bit_depth == 8 and header.color_type == 0:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if pixels is not None and pixels.shape == (header.height, header.width):
                return pixels
            # Fall through: Pillow gives the precise reason (truncated, bad CRC, ...).
    elif windowing and looks_like_dicom(data):
        try:
            dicom = read_dicom(data, max_pixels, window)
        except DicomError as exc:
            raise ImageDecodeError(str(exc)) from None
        return WindowedImage(dicom.frames, dicom.windows, dicom.multi_frame)
    return _decode_with_pillow(data, max_pixels, window, windowing)


def _decode_with_pillow(
    data: bytes, max_pixels: int, window: Window | None, windowing: bool
) -> np.ndarray | WindowedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise ImageDecodeError(
                    f"unsupported image format {image.format}; send PNG, JPEG, BMP or TIFF"
                )
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image has {width}x{height} pixels, more than the limit of {max_pixels}"
                )
            image.load()
            if windowing and image.mode in HIGH_DEPTH_MODES:
                return _window_high_depth(image, window)
            gray = image.convert("L")
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (PNG, JPEG, BMP or TIFF expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    pixels = np.asarray(gray, dtype=np.uint8)
    if pixels.ndim != 2 or pixels.size == 0:
        raise ImageDecodeError("image has no pixels")
    return pixels


def _window_high_depth(image: Image.Image, window: Window | None) -> WindowedImage:
    if window is None:
        raise ImageDecodeError(needs_window_reason(f"{image.format} {image.mode}"))
    values = np.asarray(image)
    if values.ndim != 2 or values.size == 0:
        raise ImageDecodeError("image has no pixels")
    applied = AppliedWindow("request", window.center, window.width)
    return WindowedImage([window.apply(values)], [applied])
