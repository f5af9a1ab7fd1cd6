"""Turning the batch forms users pass into one packed (data, offsets) pair for the C core.

Accepted forms, for keys and for values alike:
- a list or tuple of bytes-like objects (bytes, bytearray, byte-format memoryview);
- a 2-D ``uint8`` numpy array, one row per record (fixed width);
- a pair ``(data, offsets)``: a 1-D ``uint8`` array and an ``int64`` array of n + 1 offsets.
No form costs a Python loop per item: lists are joined and measured by C-level iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_BYTES_LIKE = (bytes, bytearray, memoryview)


class Packed(NamedTuple):
    data: np.ndarray  # uint8, C-contiguous
    offsets: np.ndarray  # int64, n + 1 entries
    n: int


def check_bytes(obj, what: str) -> bytes | bytearray | memoryview:
    """Single key or value: bytes-like or TypeError."""
    if not isinstance(obj, _BYTES_LIKE):
        raise TypeError(f"{what} must be bytes-like, not {type(obj).__name__}")
    if isinstance(obj, memoryview) and (obj.format not in ("B", "b", "c") or not obj.contiguous):
        obj = obj.tobytes()
    return obj


def pack_one(obj, what: str) -> Packed:
    obj = check_bytes(obj, what)
    data = np.frombuffer(obj, dtype=np.uint8) if len(obj) else np.zeros(0, np.uint8)
    return Packed(data, np.array([0, data.size], dtype=np.int64), 1)


def _pack_array(a: np.ndarray, what: str) -> Packed:
    if a.dtype.kind in "SU":
        raise TypeError(
            f"{what}: numpy {a.dtype} arrays drop trailing NUL bytes; pass a 2-D uint8 array "
            "(e.g. arr.view(np.uint8).reshape(len(arr), -1)) or (data, offsets)"
        )
    if a.dtype != np.uint8 or a.ndim != 2:
        raise TypeError(f"{what}: expected a 2-D uint8 array, got {a.ndim}-D {a.dtype}")
    n, width = a.shape
    data = np.ascontiguousarray(a).reshape(-1)
    return Packed(data, np.arange(n + 1, dtype=np.int64) * width, n)


def _pack_pair(data, offsets, what: str) -> Packed:
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"{what}: data must be a 1-D uint8 array, got {data.ndim}-D {data.dtype}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise TypeError(f"{what}: offsets must be a 1-D integer array")
    if offsets.size < 1:
        raise ValueError(f"{what}: offsets must have n + 1 >= 1 entries")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets[0] < 0 or offsets[-1] > data.size or np.any(np.diff(offsets) < 0):
        raise ValueError(
            f"{what}: offsets must be non-decreasing, start at >= 0 and end at <= {data.size}"
        )
    return Packed(np.ascontiguousarray(data), offsets, offsets.size - 1)


def _pack_sequence(items, what: str) -> Packed:
    try:
        data = b"".join(items)
    except TypeError as exc:
        raise TypeError(f"{what} must all be bytes-like: {exc}") from None
    n = len(items)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=n), out=offsets[1:])
    if offsets[-1] != len(data):  # memoryviews of wider formats: len() counts elements
        return _pack_sequence([check_bytes(x, what) for x in items], what)
    return Packed(np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8), offsets, n)


def pack(items, what: str = "keys") -> Packed:
    """Packs a batch of keys or values (see the module docstring)."""
    if isinstance(items, np.ndarray):
        return _pack_array(items, what)
    if (
        isinstance(items, tuple)
        and len(items) == 2
        and isinstance(items[0], np.ndarray)
        and isinstance(items[1], np.ndarray)
    ):
        return _pack_pair(items[0], items[1], what)
    if isinstance(items, (str, *_BYTES_LIKE)):
        raise TypeError(f"{what} must be a sequence of byte strings, not a single {type(items).__name__}")
    if not isinstance(items, (list, tuple)):
        try:
            items = list(items)
        except TypeError:
            raise TypeError(f"{what} must be a sequence of byte strings, not {type(items).__name__}") from None
    return _pack_sequence(items, what)


def pack_mask(mask, n: int) -> np.ndarray | None:
    """The optional `deleted` mask: None, or n truthy values, as uint8."""
    if mask is None:
        return None
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool), dtype=np.uint8)
    if m.ndim != 1 or m.size != n:
        raise ValueError(f"deleted must have one entry per item ({n}), got shape {m.shape}")
    return m
