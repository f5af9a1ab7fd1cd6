"""Key hashing and its bit fields (docs/format/hashing.md), computed by the C core.

`digest` is the key's 128-bit MurmurHash3 (seeded by the store's hash seed), `fields` its
placement fields, `trie_digit` a trie child, `crc32c` the checksum of every format. The tests
check them against an independent pure-Python model of the spec (tests/formatlib.py, with mmh3).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _binding as b
from ._packing import check_bytes, pack

TRIE_LEVELS = 12
_MASK32 = 0xFFFFFFFF


class HashFields(NamedTuple):
    h1: int
    h2: int
    trie_path: int  # h1[63:28], 36 bits
    bucket: int  # bucket index for the given bucket count
    rank: int  # rank in that bucket (rotated by the bucket index)
    bloom: int  # seed of the Bloom probes


def _seed(seed: int) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MASK32:
        raise ValueError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    return seed


def _buckets(buckets: int) -> int:
    if not isinstance(buckets, int) or isinstance(buckets, bool) or not 1 <= buckets <= 65535:
        raise ValueError(f"buckets must be an integer in 1..65535, got {buckets!r}")
    return buckets


def digest(key, seed: int = 0) -> bytes:
    """MurmurHash3 x64_128 of key: h1 then h2, little-endian (equal to mmh3.hash_bytes)."""
    key = check_bytes(key, "key")
    out = b.ffi.new("uint8_t[16]")
    b.lib.ltr_murmur3_128(b.ffi.from_buffer(key), len(key), _seed(seed), out)
    return bytes(out)


def digest_many(keys, seed: int = 0) -> np.ndarray:
    """Digests of a batch of keys in one C call: an (n, 16) uint8 array."""
    p = pack(keys, "keys")
    out = np.empty((p.n, 16), dtype=np.uint8)
    b.check(b.lib.ltr_hash_many(b.ptr_u8(p.data), b.ptr_i64(p.offsets), p.n, p.data.size,
                                _seed(seed), b.ptr_u8(out)))
    return out


def fields(key, seed: int = 0, buckets: int = b.lib.LTR_DEFAULT_BUCKETS) -> HashFields:
    """All placement fields of key for a table of `buckets` buckets."""
    d = digest(key, seed)
    f = b.ffi.new("ltr_hash_fields *")
    b.check(b.lib.ltr_hash_fields_of(d, _buckets(buckets), f))
    return HashFields(f.h1, f.h2, f.trie_path, f.bucket, f.rank, f.bloom)


def trie_digit(d: bytes, depth: int) -> int:
    """The trie child (0..7) of a key with digest d at depth (0 = the root's children)."""
    if not 0 <= depth < TRIE_LEVELS:
        raise ValueError(f"depth must be 0..{TRIE_LEVELS - 1}")
    return b.lib.ltr_trie_digit(d, depth)


def crc32c(data, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of data, continuing from crc."""
    data = check_bytes(data, "data")
    return b.lib.ltr_crc32c(crc, b.ffi.from_buffer(data), len(data))
