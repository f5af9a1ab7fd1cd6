"""Key hashing and its bit fields (docs/format/hashing.md).

The pure-Python functions (`digest`, `fields`, `trie_digit`, `bloom_probes`) follow the spec
with `mmh3`; the `native_*` functions and `crc32c` call the C core. The tests cross-check them.
"""

from __future__ import annotations

from typing import NamedTuple

import mmh3
import numpy as np

from . import _binding as b
from ._packing import check_bytes, pack

TRIE_LEVELS = 12
_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


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
    """MurmurHash3 x64_128 of key: h1 then h2, little-endian, as mmh3.hash_bytes."""
    return mmh3.hash_bytes(bytes(check_bytes(key, "key")), _seed(seed))


def _rotl32(x: int, r: int) -> int:
    r &= 31
    return ((x << r) | (x >> (32 - r))) & _MASK32 if r else x


def fields_of_digest(d: bytes, buckets: int = 8191) -> HashFields:
    h1 = int.from_bytes(d[:8], "little")
    h2 = int.from_bytes(d[8:16], "little")
    bucket = ((h1 & 0x0FFFFFFF) * _buckets(buckets)) >> 28
    return HashFields(h1, h2, h1 >> 28, bucket, _rotl32(h2 >> 32, bucket % 32), h2 & _MASK32)


def fields(key, seed: int = 0, buckets: int = 8191) -> HashFields:
    """All placement fields of key, computed in Python."""
    return fields_of_digest(digest(key, seed), buckets)


def trie_digit(d: bytes, depth: int) -> int:
    """The trie child (0..7) of a key at depth (0 = the root's children)."""
    if not 0 <= depth < TRIE_LEVELS:
        raise ValueError(f"depth must be 0..{TRIE_LEVELS - 1}")
    return (int.from_bytes(d[:8], "little") >> (61 - 3 * depth)) & 7


def _splitmix(s: int) -> tuple[int, int]:
    s = (s + 0x9E3779B97F4A7C15) & _MASK64
    z = s
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return s, z ^ (z >> 31)


def bloom_probes(bloom: int, k: int, m_bits: int) -> list[int]:
    """The k bit positions a key with this bloom field sets in a filter of m_bits bits."""
    out, s = [], bloom
    while len(out) < k:
        s, z = _splitmix(s)
        out.append(((z & _MASK32) * m_bits) >> 32)
        if len(out) < k:
            out.append(((z >> 32) * m_bits) >> 32)
    return out


# ---- the C core ----


def native_digest(key, seed: int = 0) -> bytes:
    key = check_bytes(key, "key")
    out = b.ffi.new("uint8_t[16]")
    b.lib.ltr_murmur3_128(b.ffi.from_buffer(key), len(key), _seed(seed), out)
    return bytes(out)


def native_digest_many(keys, seed: int = 0) -> np.ndarray:
    """Digests of a batch of keys in one C call: an (n, 16) uint8 array."""
    p = pack(keys, "keys")
    out = np.empty((p.n, 16), dtype=np.uint8)
    b.check(b.lib.ltr_hash_many(b.ptr_u8(p.data), b.ptr_i64(p.offsets), p.n, p.data.size,
                                _seed(seed), b.ptr_u8(out)))
    return out


def native_fields(key, seed: int = 0, buckets: int = 8191) -> HashFields:
    d = native_digest(key, seed)
    f = b.ffi.new("ltr_hash_fields *")
    b.check(b.lib.ltr_hash_fields_of(d, _buckets(buckets), f))
    return HashFields(f.h1, f.h2, f.trie_path, f.bucket, f.rank, f.bloom)


def native_trie_digit(d: bytes, depth: int) -> int:
    if not 0 <= depth < TRIE_LEVELS:
        raise ValueError(f"depth must be 0..{TRIE_LEVELS - 1}")
    return b.lib.ltr_trie_digit(d, depth)


def crc32c(data, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of data, continuing from crc."""
    data = check_bytes(data, "data")
    return b.lib.ltr_crc32c(crc, b.ffi.from_buffer(data), len(data))
