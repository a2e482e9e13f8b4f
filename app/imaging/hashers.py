"""Fingerprint kinds: one small class per kind and one registry entry, as imagededup's
``Hashing._hash_algo`` does it. A real set stores the kind it was hashed with
(``RealSet.hash_kind``); everything that hashes pixels asks :func:`get_hasher` for it.

A hasher turns a batch of 2-D uint8 grayscale images (any sizes) into bits, one row per image,
row-major as imagehash prints them; the rest of the service (hex storage, packed Hamming search,
calibration) only sees those bits. To add a kind: subclass :class:`Hasher`, add an instance to
:data:`HASHERS`, and give it oracle tests like tests/imaging/test_phash.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from app.imaging.phash import SUPPORTED_HASH_SIZES, bits_to_hex, phash_batch


class UnknownHashKind(ValueError):
    """No hasher is registered under this name."""


class Hasher(ABC):
    """A fingerprint: its name, the hash sizes it supports and how it hashes a batch."""

    #: Name stored in ``hash_kind`` columns and accepted by the API.
    kind: ClassVar[str]
    #: Accepted ``hash_size`` values, smallest first.
    sizes: ClassVar[tuple[int, ...]]
    default_size: ClassVar[int]

    def check_size(self, hash_size: int) -> None:
        """Raise ValueError unless this kind supports ``hash_size``."""
        if hash_size not in self.sizes:
            raise ValueError(f"{self.kind}: hash_size must be one of {self.sizes}")

    def bits_per_hash(self, hash_size: int) -> int:
        """Length of one hash in bits (a multiple of 64, as the packed search needs)."""
        return hash_size * hash_size

    @abstractmethod
    def hash_bits(self, images: Sequence[np.ndarray], hash_size: int) -> np.ndarray:
        """Bits of 2-D uint8 grayscale images: bool array (n, bits_per_hash(hash_size))."""

    def hash_hex(self, images: Sequence[np.ndarray], hash_size: int) -> list[str]:
        """Hex strings as stored (row-major, big-endian, like imagehash's ``str(hash)``)."""
        self.check_size(hash_size)
        return bits_to_hex(self.hash_bits(images, hash_size))


class PHash(Hasher):
    """The seed paper's fingerprint, bit-identical to ``imagehash.phash(image, hash_size)``."""

    kind = "phash"
    sizes = SUPPORTED_HASH_SIZES
    default_size = 16

    def hash_bits(self, images: Sequence[np.ndarray], hash_size: int) -> np.ndarray:
        return phash_batch(images, hash_size)


#: Every fingerprint kind by name; the first is the default.
HASHERS: dict[str, Hasher] = {hasher.kind: hasher for hasher in (PHash(),)}
HASH_KINDS: tuple[str, ...] = tuple(HASHERS)
DEFAULT_HASH_KIND = HASH_KINDS[0]


def get_hasher(kind: str) -> Hasher:
    """The registered hasher called ``kind``."""
    try:
        return HASHERS[kind]
    except KeyError:
        raise UnknownHashKind(f"hash_kind must be one of {HASH_KINDS}, not {kind!r}") from None
