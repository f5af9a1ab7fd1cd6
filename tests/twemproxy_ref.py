"""An independent pure-Python reading of twemproxy 0.5.0's routing (src/hashkit, nc_server.c,
nc_conf.c), for tests/test_route.py to hold the C core (native/src/route.c, route_hash.c, md5.c)
against: the twelve hashes as its x86-64 build computes them (key bytes read as signed chars),
the hash tag, ketama's continuum and modula's table over the servers sorted by name.
Slow and plain on purpose; MD5 comes from hashlib, CRC-32 from zlib."""

import bisect
import hashlib
import math
import struct
import zlib

import numpy as np

M32 = 0xFFFFFFFF


def signed(b: int) -> int:
    """A key byte as `(uint32_t) key[i]` sees it where char is signed."""
    return (b - 256 if b >= 128 else b) & M32


def one_at_a_time(key: bytes) -> int:
    h = 0
    for b in key:
        h = (h + signed(b)) & M32
        h = (h + (h << 10)) & M32
        h ^= h >> 6
    h = (h + (h << 3)) & M32
    h ^= h >> 11
    return (h + (h << 15)) & M32


def md5(key: bytes) -> int:
    return struct.unpack("<I", hashlib.md5(key).digest()[:4])[0]


def _crc16_byte(crc: int, b: int) -> int:
    x = ((crc >> 8) ^ b) & 0xFF
    t = x << 8
    for _ in range(8):
        t = ((t << 1) ^ 0x1021) if t & 0x8000 else t << 1
    return ((crc << 8) ^ (t & 0xFFFF)) & M32


def crc16(key: bytes) -> int:
    crc = 0
    for b in key:
        crc = _crc16_byte(crc, b)
    return crc


def crc32(key: bytes) -> int:
    return (zlib.crc32(key) >> 16) & 0x7FFF


def crc32a(key: bytes) -> int:
    return zlib.crc32(key)


def fnv1_64(key: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in key:
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        h ^= (b - 256 if b >= 128 else b) & 0xFFFFFFFFFFFFFFFF
    return h & M32


def fnv1a_64(key: bytes) -> int:
    h = 0xCBF29CE484222325 & M32
    for b in key:
        h = ((h ^ signed(b)) * (0x100000001B3 & M32)) & M32
    return h


def fnv1_32(key: bytes) -> int:
    h = 2166136261
    for b in key:
        h = ((h * 16777619) & M32) ^ signed(b)
    return h


def fnv1a_32(key: bytes) -> int:
    h = 2166136261
    for b in key:
        h = ((h ^ signed(b)) * 16777619) & M32
    return h


def hsieh(key: bytes) -> int:
    if not key:
        return 0
    h, n = 0, len(key)
    g16 = lambda i: key[i] | key[i + 1] << 8  # noqa: E731
    i = 0
    for _ in range(n >> 2):
        h = (h + g16(i)) & M32
        tmp = ((g16(i + 2) << 11) ^ h) & M32
        h = ((h << 16) ^ tmp) & M32
        i += 4
        h = (h + (h >> 11)) & M32
    rem = n & 3
    if rem == 3:
        h = (h + g16(i)) & M32
        h ^= (h << 16) & M32
        h ^= (signed(key[i + 2]) << 18) & M32
        h = (h + (h >> 11)) & M32
    elif rem == 2:
        h = (h + g16(i)) & M32
        h ^= (h << 11) & M32
        h = (h + (h >> 17)) & M32
    elif rem == 1:
        h = (h + key[i]) & M32
        h ^= (h << 10) & M32
        h = (h + (h >> 1)) & M32
    for shift, add in ((3, False), (5, True), (4, False), (17, True), (25, False), (6, True)):
        h = (h + (h >> shift)) & M32 if add else h ^ ((h << shift) & M32)
    return h


def murmur(key: bytes) -> int:
    m, n = 0x5BD1E995, len(key)
    h = ((0xDEADBEEF * n) & M32) ^ n
    i = 0
    while n - i >= 4:
        k = (struct.unpack_from("<I", key, i)[0] * m) & M32
        k ^= k >> 24
        k = (k * m) & M32
        h = ((h * m) & M32) ^ k
        i += 4
    tail = key[i:]
    if tail:
        for j in reversed(range(len(tail))):
            h ^= tail[j] << (8 * j)
        h = (h * m) & M32
    h ^= h >> 13
    h = (h * m) & M32
    return h ^ (h >> 15)


def _rot(x, k):
    return ((x << k) | (x >> (32 - k))) & M32


def jenkins(key: bytes) -> int:
    n = len(key)
    a = b = c = (0xDEADBEEF + n + 13) & M32
    if n == 0:
        return c
    padded = key + bytes(-n % 12)
    blocks = [struct.unpack_from("<3I", padded, i) for i in range(0, len(padded), 12)]
    for x, y, z in blocks[:-1]:
        a, b, c = (a + x) & M32, (b + y) & M32, (c + z) & M32
        a = (a - c) & M32; a ^= _rot(c, 4); c = (c + b) & M32    # noqa: E702
        b = (b - a) & M32; b ^= _rot(a, 6); a = (a + c) & M32    # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 8); b = (b + a) & M32    # noqa: E702
        a = (a - c) & M32; a ^= _rot(c, 16); c = (c + b) & M32   # noqa: E702
        b = (b - a) & M32; b ^= _rot(a, 19); a = (a + c) & M32   # noqa: E702
        c = (c - b) & M32; c ^= _rot(b, 4); b = (b + a) & M32    # noqa: E702
    x, y, z = blocks[-1]
    a, b, c = (a + x) & M32, (b + y) & M32, (c + z) & M32
    c ^= b; c = (c - _rot(b, 14)) & M32   # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & M32   # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & M32   # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & M32   # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & M32    # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & M32   # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & M32   # noqa: E702
    return c


HASHES = {f.__name__: f for f in (one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64,
                                   fnv1_32, fnv1a_32, hsieh, murmur, jenkins)}


def tagged(key: bytes, tag: str | None) -> bytes:
    if not tag:
        return key
    t0, t1 = tag.encode()
    start = key.find(bytes([t0]))
    if start < 0:
        return key
    end = key.find(bytes([t1]), start + 1)
    return key[start + 1:end] if end > start + 1 else key


class Pool:
    """One pool, every server live: shard_of(key) is the index (in the given order) of the
    server the proxy picks."""

    def __init__(self, hash_name, dist, names, weights=None, tag=None):
        weights = weights or [1] * len(names)
        self.hash, self.dist, self.tag = HASHES[hash_name], dist, tag
        # the proxy's order: its configuration check sorts the servers by (length, bytes)
        self.order = sorted(range(len(names)), key=lambda i: (len(names[i].encode()), names[i].encode()))
        self.n = len(names)
        total = sum(weights)
        if dist == "modula":
            self.table = [i for i in self.order for _ in range(weights[i])]
        else:
            points = []  # (value, creation order, shard): a stable sort keeps equal values in order
            for i in self.order:
                share = np.float32(weights[i]) / np.float32(total)
                names_f = share * np.float32(160) / np.float32(4) * np.float32(self.n)
                count = int(math.floor(np.float32(float(names_f) + 0.0000000001)))
                for k in range(count):
                    d = hashlib.md5(f"{names[i]}-{k}".encode()[:272]).digest()
                    for w in range(4):
                        points.append((struct.unpack_from("<I", d, 4 * w)[0], len(points), i))
            points.sort()
            self.values = [p[0] for p in points]
            self.shards = [p[2] for p in points]

    def hash_of(self, key: bytes) -> int:
        part = tagged(key, self.tag)
        return self.hash(part) if part else 0

    def shard_of(self, key: bytes) -> int:
        if self.n == 1:
            return 0
        h = self.hash_of(key)
        if self.dist == "modula":
            return self.table[h % len(self.table)]
        at = bisect.bisect_left(self.values, h)
        return self.shards[at if at < len(self.values) else 0]
