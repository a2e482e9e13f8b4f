"""Bringing DICOM and 16-bit pixel values to 8 bits with a window, and saying which window.

A fingerprint (pHash) sees 8-bit pixels; the window decides which 8-bit pixels a CT slice
becomes, so it is part of every windowed image's fingerprint and is stored with its set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Why an image got its window: the request's (or its set's) window, the lung window for CT,
#: the DICOM file's own WindowCenter/WindowWidth, or the image's own minimum to maximum.
WindowSource = Literal["request", "ct-lung", "dicom", "min-max"]


@dataclass(frozen=True, slots=True)
class Window:
    """A linear window: values at or below ``center - width/2`` become 0, at or above
    ``center + width/2`` become 255, linear between, rounded to the nearest integer."""

    center: float
    width: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        low = self.center - self.width / 2
        scaled = (values.astype(np.float64) - low) / self.width * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    def describe(self) -> str:
        return f"window center {self.center:g} width {self.width:g}"


#: The lung window (in Hounsfield units) used for CT when the request gives none.
LUNG_WINDOW = Window(-600.0, 1500.0)

#: How images are windowed when neither the request nor the set gives a window.
AUTOMATIC_WINDOWING = (
    "automatic windowing: CT DICOM gets the lung window (center -600, width 1500 HU), other "
    "DICOM its own WindowCenter/WindowWidth or else its minimum to maximum; 16-bit PNG/TIFF "
    "is refused"
)


@dataclass(frozen=True, slots=True)
class AppliedWindow:
    """The window one image was brought to 8 bits with, and why that one."""

    source: WindowSource
    center: float
    width: float


def min_max_window(values: np.ndarray) -> Window:
    """The image's own range (a constant image gets width 1)."""
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0))


def describe_windowing(window: Window | None) -> str:
    """A set's windowing in words (None: automatic)."""
    return AUTOMATIC_WINDOWING if window is None else window.describe()


def needs_window_reason(mode: str) -> str:
    """Why a high-bit-depth PNG/TIFF without a window is refused, and what to send instead."""
    return (
        f"{mode} image (more than 8 bits per pixel) and no window: memaudit will not clip it "
        "to 8 bits silently. Register the set with form fields window_center and window_width "
        "in the image's own pixel values (e.g. -F window_center=-600 -F window_width=1500 for "
        "a lung window on HU values); uploads to that set and /match against it then use the "
        "same window"
    )
