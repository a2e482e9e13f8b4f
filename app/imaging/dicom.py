"""DICOM files to windowed 8-bit frames: rescale to modality values (HU for CT), window,
invert MONOCHROME1; every frame of a multi-frame file is one image.

Only the pixel data and the attributes that decide the pixels are read here; no tag value
(patient name, id, dates) leaves this module, not even in a rejection reason.
pydicom is imported on first use so the 8-bit PNG path never pays for it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from app.imaging.windowing import LUNG_WINDOW, AppliedWindow, Window, min_max_window

#: Offset of the "DICM" magic after the 128-byte preamble of a DICOM Part 10 file.
DICM_OFFSET = 128
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
#: A RescaleIntercept this low on a file without Modality means stored HU (CT's -1024).
HU_INTERCEPT = -1000.0


class DicomError(ValueError):
    """Not a usable DICOM image; ``str(err)`` is the reason (never a tag value)."""


@dataclass(frozen=True, slots=True)
class DicomFrames:
    """The 8-bit frames of one file and the window of each; ``multi_frame`` is True when
    the file declares NumberOfFrames > 1 (each frame is then named ``file#0001`` ...)."""

    frames: list[np.ndarray]
    windows: list[AppliedWindow]
    multi_frame: bool


def looks_like_dicom(data: bytes) -> bool:
    return data[DICM_OFFSET : DICM_OFFSET + 4] == b"DICM"


def read_dicom(data: bytes, max_pixels: int, window: Window | None) -> DicomFrames:
    """Decode, rescale, window (``window`` if given, else the lung window for CT, else the
    file's own window, else each frame's range) and invert MONOCHROME1."""
    with warnings.catch_warnings():
        # pydicom warns about odd values quoting them; tag values must not reach the logs.
        warnings.simplefilter("ignore")
        try:
            return _read(data, max_pixels, window)
        except DicomError:
            raise
        except Exception as exc:  # a hostile file must give a reason, not kill the worker
            # The message may quote a tag value: only the kind of failure is reported.
            raise DicomError(f"corrupt or unreadable DICOM file ({type(exc).__name__})") from None


def _read(data: bytes, max_pixels: int, window: Window | None) -> DicomFrames:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    rows, columns, frames = _geometry(ds, max_pixels)
    stored = _pixel_array(ds).reshape(frames, rows, columns)
    invert = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    ct = _is_ct(ds)
    own = _own_window(ds)
    out, windows = [], []
    for index in range(frames):
        slope, intercept = _rescale(ds, index)
        values = stored[index].astype(np.float64) * slope + intercept
        applied = _choose_window(window, ct, own, values)
        pixels = Window(applied.center, applied.width).apply(values)
        out.append(255 - pixels if invert else pixels)
        windows.append(applied)
    return DicomFrames(out, windows, multi_frame=frames > 1)


def _geometry(ds, max_pixels: int) -> tuple[int, int, int]:
    if "PixelData" not in ds:
        raise DicomError("DICOM file has no pixel data (not an image: e.g. a report)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GRAYSCALE or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(
            f"DICOM PhotometricInterpretation {photometric or 'missing'}: only grayscale "
            "(MONOCHROME1, MONOCHROME2) images are read"
        )
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise DicomError("DICOM file declares an empty image")
    if rows * columns * frames > max_pixels:
        raise DicomError(
            f"DICOM file has {frames} frame(s) of {columns}x{rows} pixels, more than the "
            f"limit of {max_pixels}"
        )
    return rows, columns, frames


def _pixel_array(ds) -> np.ndarray:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            decoder = None
        if decoder is None or not decoder.is_available:
            raise DicomError(
                f"DICOM transfer syntax {syntax.name} ({syntax}) cannot be decoded here "
                "(it needs pylibjpeg or GDCM); send it uncompressed, e.g. converted with "
                "`gdcmconv --raw in.dcm out.dcm` or `dcmdjpeg in.dcm out.dcm`"
            )
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many kinds; none may crash the worker
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DicomError(f"DICOM pixel data cannot be decoded: {message}") from None


def _rescale(ds, index: int) -> tuple[float, float]:
    """RescaleSlope/RescaleIntercept of one frame: its per-frame functional group, the
    shared one (enhanced multi-frame), or the top-level attributes (default 1, 0)."""
    for groups, item in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        sequence = ds.get(groups)
        if sequence is not None and len(sequence) > item:
            transform = sequence[item].get("PixelValueTransformationSequence")
            if transform:
                return _slope_intercept(transform[0])
    return _slope_intercept(ds)


def _slope_intercept(item) -> tuple[float, float]:
    slope = item.get("RescaleSlope")
    intercept = item.get("RescaleIntercept")
    pair = (
        float(slope) if slope not in (None, "") else 1.0,
        float(intercept) if intercept not in (None, "") else 0.0,
    )
    if not all(np.isfinite(pair)) or pair[0] == 0:
        raise DicomError("DICOM RescaleSlope/RescaleIntercept is not a usable number")
    return pair


def _is_ct(ds) -> bool:
    """CT: Modality CT, RescaleType HU, or no Modality but HU-style stored values."""
    modality = str(ds.get("Modality", "") or "").upper()
    if modality == "CT" or str(ds.get("RescaleType", "") or "").upper() == "HU":
        return True
    return not modality and _slope_intercept(ds)[1] <= HU_INTERCEPT


def _own_window(ds) -> Window | None:
    """The file's first WindowCenter/WindowWidth pair, if it has a usable one."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center = float(center[0] if _is_multi(center) else center)
        width = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return Window(center, width) if width > 0 and np.isfinite(center) else None


def _is_multi(value) -> bool:
    return not isinstance(value, str | bytes | int | float) and hasattr(value, "__getitem__")


def _choose_window(
    requested: Window | None, ct: bool, own: Window | None, values: np.ndarray
) -> AppliedWindow:
    if requested is not None:
        return AppliedWindow("request", requested.center, requested.width)
    if ct:
        return AppliedWindow("ct-lung", LUNG_WINDOW.center, LUNG_WINDOW.width)
    if own is not None:
        return AppliedWindow("dicom", own.center, own.width)
    window = min_max_window(values)
    return AppliedWindow("min-max", window.center, window.width)
