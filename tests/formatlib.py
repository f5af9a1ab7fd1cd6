"""Independent pure-Python model of the HTable format (docs/format/htable.md, hashing.md).

Nothing here uses the C core except, optionally, ``lsmtrie.hashing.crc32c`` as a fast checksum
(``crc32c_py`` is the pure-Python reference; ``test_crc32c.py`` cross-checks the two). Digests come
from ``mmh3`` directly, as hashing.md defines them.

Contents:
- hashing: ``digest``, ``split``, ``bucket_of``, ``rank_in``, ``trie_digit``, ``bloom_probes``
- encoding: ``varint``, ``encode_item``, ``encode_layout``, ``encode_table`` (no migration)
- decoding: ``parse`` -> ``Table`` (footer, trailer sections, buckets with CRC check, overflow)
- ``Table.lookup``: a lookup that follows the migration rules, ``Table.filter_maybe``
- ``check_layout``: every structural rule of htable.md checked on a decoded table
- ``reencode``: rebuild the exact bytes of a decoded table from its logical content
- value logs (docs/format/vlog.md): ``Pointer`` (the item kind of version-2 tables and the log),
  ``Table.blob_refs`` (the version-2 trailer's value-log references), ``read_vlog`` (a value
  log's records, checked), ``vlog_record``
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

import mmh3

BUCKET_SIZE = 4096
PAYLOAD = 4080
FOOTER_SIZE = 104
MAGIC = b"LTRHTBL1"
FORMAT_VERSION = 1
FORMAT_VERSION_BLOBS = 2  # a table holding pointers into value logs (and their list)
VFIELD_POINTER = 0x0FFFFFFF  # an item's value field for a pointer (htable.md "Item record")
POINTER_SIZE = 20
BLOB_REF_SIZE = 16
VLOG_MAGIC = b"LTRVLOG1"
VLOG_HEADER_SIZE = 16
MAX_HOPS = 4

ABSENT, FOUND, DELETED = 0, 1, 2

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

# footer layout, htable.md "Footer"
FOOTER_FMT = "<8sHHIIIIIQQQQQIIIIQII"
assert struct.calcsize(FOOTER_FMT) == FOOTER_SIZE
FOOTER_FIELDS = (
    "magic format_version footer_size bucket_size buckets hash_seed bloom_bits_per_key "
    "bloom_probes items tombstones data_bytes overflow_offset overflow_bytes overflow_items "
    "records cached_records reserved trailer_offset trailer_crc footer_crc"
).split()
# byte offset of each footer field inside the footer
FOOTER_OFFSETS = {}
_o = 0
for _name, _c in zip(FOOTER_FIELDS, ["8s", "H", "H", "I", "I", "I", "I", "I", "Q", "Q", "Q", "Q",
                                     "Q", "I", "I", "I", "I", "Q", "I", "I"]):
    FOOTER_OFFSETS[_name] = (_o, "<" + _c)
    _o += struct.calcsize("<" + _c)
assert _o == FOOTER_SIZE

BUCKET_FOOTER_FMT = "<HHHHII"  # count used target flags hashmark crc, at offset 4080


# --------------------------------------------------------------------------------------------
# CRC32C

def _make_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_table()


def crc32c_py(data, crc=0):
    """Bitwise-table CRC32C (Castagnoli, reflected polynomial 0x82F63B78), chainable."""
    c = crc ^ M32
    t = _CRC_TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ M32


try:  # the C implementation is only a speed-up here; tests cross-check it against crc32c_py
    from lsmtrie.hashing import crc32c as _crc_fast  # type: ignore
except Exception:  # pragma: no cover - implementation not built yet
    _crc_fast = None


def crc32c(data, crc=0):
    if _crc_fast is not None:
        return _crc_fast(bytes(data), crc)
    return crc32c_py(data, crc)


# --------------------------------------------------------------------------------------------
# hashing.md

def digest(key, seed=0):
    return mmh3.hash_bytes(bytes(key), seed)


def split(d):
    return int.from_bytes(d[0:8], "little"), int.from_bytes(d[8:16], "little")


def h1h2(key, seed=0):
    return split(digest(key, seed))


def bucket_of(h1, buckets):
    return ((h1 & 0x0FFFFFFF) * buckets) >> 28


def rotl32(x, r):
    r %= 32
    return ((x << r) | (x >> (32 - r))) & M32 if r else x


def rank_in(h2, b):
    return rotl32(h2 >> 32, b % 32)


def trie_digit(h1, depth):
    return (h1 >> (61 - 3 * depth)) & 7


def bloom_probes(bloom, k, m):
    """Probe positions per hashing.md (SplitMix64 pairs)."""
    out = []
    s = bloom & M64
    for j in range((k + 1) // 2):
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z = z ^ (z >> 31)
        out.append(((z & M32) * m) >> 32)
        if 2 * j + 1 < k:
            out.append(((z >> 32) * m) >> 32)
    return out


@dataclass(frozen=True)
class KeyHash:
    key: bytes
    h1: int
    h2: int
    home: int

    def rank(self, b):
        return rank_in(self.h2, b)

    @property
    def bloom(self):
        return self.h2 & M32


def key_hash(key, seed, buckets):
    h1, h2 = h1h2(key, seed)
    return KeyHash(bytes(key), h1, h2, bucket_of(h1, buckets))


# --------------------------------------------------------------------------------------------
# items

def varint(n):
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, pos, end):
    """LEB128 of a 64-bit value: at most ten bytes, the tenth 0 or 1 (longer forms than needed
    are accepted)."""
    n = 0
    for i in range(10):
        if pos >= end:
            raise FormatError(f"varint runs past {end}")
        b = buf[pos]
        pos += 1
        if i == 9 and b > 1:
            raise FormatError("varint holds more than 64 bits")
        n |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return n, pos
    raise FormatError("varint longer than 10 bytes")


@dataclass(frozen=True)
class Pointer:
    """A pointer item's value (htable.md "Item record", vlog.md "Pointer"): the value lies in
    value log `file`, its record at `offset`, `vlen` bytes long."""
    file: int
    offset: int
    vlen: int

    def pack(self):
        return struct.pack("<QQI", self.file, self.offset, self.vlen)

    @classmethod
    def unpack(cls, raw):
        assert len(raw) == POINTER_SIZE
        return cls(*struct.unpack("<QQI", bytes(raw)))


def encode_item(key, value):
    """value None = tombstone (vfield 0); a Pointer = pointer item (vfield 0x0FFFFFFF)."""
    key = bytes(key)
    if value is None:
        return varint(len(key)) + b"\x00" + key
    if isinstance(value, Pointer):
        return varint(len(key)) + varint(VFIELD_POINTER) + key + value.pack()
    value = bytes(value)
    return varint(len(key)) + varint(len(value) + 1) + key + value


def encoded_size(key, value):
    klen = len(key)
    if value is None:
        return len(varint(klen)) + 1 + klen
    if isinstance(value, Pointer):
        return len(varint(klen)) + len(varint(VFIELD_POINTER)) + klen + POINTER_SIZE
    return len(varint(klen)) + len(varint(len(value) + 1)) + klen + len(value)


def decode_item(buf, pos, end):
    """Returns (key, value|None|Pointer, new_pos)."""
    klen, pos = read_varint(buf, pos, end)
    vfield, pos = read_varint(buf, pos, end)
    if klen > 65535:
        raise FormatError(f"klen {klen} over the limit")
    if vfield == VFIELD_POINTER:
        if pos + klen + POINTER_SIZE > end:
            raise FormatError("pointer item runs past its container")
        key = bytes(buf[pos:pos + klen])
        return key, Pointer.unpack(buf[pos + klen:pos + klen + POINTER_SIZE]), \
            pos + klen + POINTER_SIZE
    vlen = 0 if vfield == 0 else vfield - 1
    if vlen > 16 * 1024 * 1024:
        raise FormatError(f"vlen {vlen} over the limit")
    if pos + klen + vlen > end:
        raise FormatError("item runs past its container")
    key = bytes(buf[pos:pos + klen])
    pos += klen
    value = None if vfield == 0 else bytes(buf[pos:pos + vlen])
    pos += vlen
    return key, value, pos


# --------------------------------------------------------------------------------------------
# decoded structures

class FormatError(Exception):
    pass


@dataclass
class Footer:
    magic: bytes
    format_version: int
    footer_size: int
    bucket_size: int
    buckets: int
    hash_seed: int
    bloom_bits_per_key: int
    bloom_probes: int
    items: int
    tombstones: int
    data_bytes: int
    overflow_offset: int
    overflow_bytes: int
    overflow_items: int
    records: int
    cached_records: int
    reserved: int
    trailer_offset: int
    trailer_crc: int
    footer_crc: int

    @property
    def blob_refs(self):
        """Version 2: the count of value-log references (the field at offset 84, reserved and 0
        in version 1)."""
        return self.reserved

    def pack(self):
        return struct.pack(FOOTER_FMT, *(getattr(self, f) for f in FOOTER_FIELDS))

    @classmethod
    def unpack(cls, raw):
        return cls(*struct.unpack(FOOTER_FMT, raw))


@dataclass
class Bucket:
    index: int
    items: list  # [(key, value|None, offset_in_bucket)]
    count: int
    used: int
    target: int
    flags: int
    hashmark: int
    crc: int
    crc_ok: bool
    padding_zero: bool


@dataclass
class Record:
    source: int
    target: int
    hashmark: int
    flow: int


@dataclass
class OverflowEntry:
    h2: int
    offset: int
    length: int


@dataclass
class OverflowItem:
    offset: int
    length: int
    key: bytes
    value: bytes | None
    crc_ok: bool


@dataclass
class Table:
    data: bytes
    footer: Footer
    records: list
    overflow_index: list
    filter_offsets: list
    filter_bytes: bytes
    buckets: list = field(default_factory=list)
    blob_refs: list = field(default_factory=list)  # [(file, value bytes)], version 2
    overflow: list = field(default_factory=list)

    # -- convenience ------------------------------------------------------------------------
    @property
    def nbuckets(self):
        return self.footer.buckets

    @property
    def seed(self):
        return self.footer.hash_seed

    def kh(self, key):
        return key_hash(key, self.seed, self.nbuckets)

    def record_map(self):
        if getattr(self, "_rec", None) is None or len(self._rec) != len(self.records):
            self._rec = {r.source: r for r in self.records}
        return self._rec

    def bucket(self, i):
        if self.buckets:
            return self.buckets[i]
        return parse_bucket(self.data, i)

    def filter_of(self, b):
        return self.filter_bytes[self.filter_offsets[b]:self.filter_offsets[b + 1]]

    def filter_maybe(self, key):
        """True if the home bucket's filter may contain key (always True without filters)."""
        if self.footer.bloom_bits_per_key == 0:
            return True
        kh = self.kh(key)
        f = self.filter_of(kh.home)
        m = 8 * len(f)
        if m == 0:
            return False
        for p in bloom_probes(kh.bloom, self.footer.bloom_probes, m):
            if not f[p >> 3] & (1 << (p & 7)):
                return False
        return True

    def path(self, key):
        """Buckets visited by a lookup of key, following the migration records."""
        kh = self.kh(key)
        rec = self.record_map()
        cur = kh.home
        visited = [cur]
        while cur in rec and kh.rank(cur) >= rec[cur].hashmark:
            cur = rec[cur].target
            visited.append(cur)
            if len(visited) > self.nbuckets + 1:
                raise FormatError("migration records loop")
        return visited

    def lookup(self, key, use_filter=True):
        """(status, value) following htable.md's lookup rule; overflow index checked too."""
        key = bytes(key)
        if use_filter and not self.filter_maybe(key):
            return ABSENT, None
        kh = self.kh(key)
        for e in self.overflow_index:
            if e.h2 == kh.h2:
                k, v, _ = decode_item(self.data, e.offset + 4, e.offset + e.length)
                if k == key:
                    return (DELETED, None) if v is None else (FOUND, v)
        last = self.path(key)[-1]
        for k, v, _ in self.bucket(last).items:
            if k == key:
                return (DELETED, None) if v is None else (FOUND, v)
        return ABSENT, None

    def all_items(self):
        """[(key, value, where)] where = bucket index or 'overflow'."""
        out = []
        for b in self.buckets:
            for k, v, _ in b.items:
                out.append((k, v, b.index))
        for o in self.overflow:
            out.append((o.key, o.value, "overflow"))
        return out


# --------------------------------------------------------------------------------------------
# parsing

def parse_footer(data):
    if len(data) < BUCKET_SIZE + FOOTER_SIZE:
        raise FormatError("file shorter than one bucket plus the footer")
    raw = data[-FOOTER_SIZE:]
    f = Footer.unpack(raw)
    if f.magic != MAGIC:
        raise FormatError("bad magic")
    if crc32c(raw[:100]) != f.footer_crc:
        raise FormatError("footer crc")
    if f.format_version not in (FORMAT_VERSION, FORMAT_VERSION_BLOBS):
        raise FormatError("version")
    if (f.format_version == FORMAT_VERSION) != (f.reserved == 0):
        raise FormatError("blob_refs: 0 in version 1, at least 1 in version 2")
    return f


def parse_bucket(data, i):
    off = i * BUCKET_SIZE
    raw = bytes(data[off:off + BUCKET_SIZE])
    count, used, target, flags, hashmark, crc = struct.unpack(BUCKET_FOOTER_FMT, raw[PAYLOAD:])
    crc_ok = crc32c(struct.pack("<I", i) + raw[:4092]) == crc
    if used > PAYLOAD:
        raise FormatError(f"bucket {i}: used {used} > {PAYLOAD}")
    items = []
    pos = 0
    for _ in range(count):
        start = pos
        k, v, pos = decode_item(raw, pos, used)
        items.append((k, v, start))
    if pos != used:
        raise FormatError(f"bucket {i}: items end at {pos}, used says {used}")
    padding_zero = raw[used:PAYLOAD] == bytes(PAYLOAD - used)
    return Bucket(i, items, count, used, target, flags, hashmark, crc, crc_ok, padding_zero)


def parse(data, buckets=True):
    """Decode a whole table. Raises FormatError on any structural problem (not on bucket CRC
    mismatches: those are reported by Bucket.crc_ok / OverflowItem.crc_ok)."""
    data = bytes(data)
    f = parse_footer(data)
    size = len(data)
    if f.footer_size != FOOTER_SIZE or f.bucket_size != BUCKET_SIZE:
        raise FormatError("footer_size/bucket_size")
    if not 1 <= f.buckets <= 65535:
        raise FormatError("buckets out of range")
    if f.overflow_offset != f.buckets * BUCKET_SIZE:
        raise FormatError("overflow_offset")
    if f.trailer_offset != f.overflow_offset + f.overflow_bytes:
        raise FormatError("trailer_offset")
    end = size - FOOTER_SIZE
    if f.trailer_offset > end:
        raise FormatError("trailer past the footer")
    if crc32c(data[f.trailer_offset:end]) != f.trailer_crc:
        raise FormatError("trailer crc")
    pos = f.trailer_offset
    records = []
    for _ in range(f.records):
        if pos + 12 > end:
            raise FormatError("records past end")
        s, t, hm, flow = struct.unpack_from("<HHII", data, pos)
        records.append(Record(s, t, hm, flow))
        pos += 12
    index = []
    for _ in range(f.overflow_items):
        if pos + 20 > end:
            raise FormatError("overflow index past end")
        h2, off, ln = struct.unpack_from("<QQI", data, pos)
        index.append(OverflowEntry(h2, off, ln))
        pos += 20
    if pos + 4 * (f.buckets + 1) > end:
        raise FormatError("filter offsets past end")
    offs = list(struct.unpack_from(f"<{f.buckets + 1}I", data, pos))
    pos += 4 * (f.buckets + 1)
    nrefs = f.blob_refs if f.format_version == FORMAT_VERSION_BLOBS else 0
    refs_at = end - BLOB_REF_SIZE * nrefs
    if refs_at < pos:
        raise FormatError("value-log references past end")
    refs = [struct.unpack_from("<QQ", data, refs_at + BLOB_REF_SIZE * j) for j in range(nrefs)]
    if any(r[0] == 0 for r in refs) or any(a[0] >= b[0] for a, b in zip(refs, refs[1:])):
        raise FormatError("value-log references not ascending file numbers")
    fbytes = data[pos:refs_at]
    if offs[0] != 0 or any(a > b for a, b in zip(offs, offs[1:])) or offs[-1] != len(fbytes):
        raise FormatError("filter offsets")
    for r in records:
        if r.source >= f.buckets or r.target >= f.buckets:
            raise FormatError("record bucket id out of range")
    for e in index:
        if e.offset < f.overflow_offset or e.offset + e.length > f.trailer_offset or e.length < 6:
            raise FormatError("overflow index entry outside the overflow area")
    t = Table(data, f, records, index, offs, fbytes, blob_refs=refs)
    if buckets:
        t.buckets = [parse_bucket(data, i) for i in range(f.buckets)]
        for e in index:
            rec = data[e.offset:e.offset + e.length]
            (crc,) = struct.unpack_from("<I", rec, 0)
            k, v, p = decode_item(rec, 4, len(rec))
            if p != len(rec):
                raise FormatError(f"overflow record at {e.offset}: item shorter than length")
            t.overflow.append(OverflowItem(e.offset, e.length, k, v, crc32c(rec[4:]) == crc))
    return t


def parse_file(path, buckets=True):
    with open(path, "rb") as fh:
        return parse(fh.read(), buckets=buckets)


# --------------------------------------------------------------------------------------------
# encoding

def default_probes(bits_per_key):
    """The conventional k = round(bits * ln 2) clamped to 1..30 (0 without filters). htable.md
    only bounds k; tests take the k a file records when comparing against the C builder."""
    if bits_per_key == 0:
        return 0
    return max(1, min(30, int(round(bits_per_key * math.log(2)))))


def build_filters(all_items, buckets, seed, bits_per_key, k):
    """Filter offsets and bytes per htable.md section 3/4 (items = every key in the table)."""
    per = [[] for _ in range(buckets)]
    for key in all_items:
        kh = key_hash(key, seed, buckets)
        per[kh.home].append(kh)
    offs = [0]
    out = bytearray()
    for b in range(buckets):
        nbytes = (len(per[b]) * bits_per_key + 7) // 8 if bits_per_key else 0
        f = bytearray(nbytes)
        m = 8 * nbytes
        if m:
            for kh in per[b]:
                for p in bloom_probes(kh.bloom, k, m):
                    f[p >> 3] |= 1 << (p & 7)
        out += f
        offs.append(len(out))
    return offs, bytes(out)


def encode_bucket(index, items, target=None, flags=0, hashmark=0):
    """items: [(key, value|None)] in physical order."""
    payload = b"".join(encode_item(k, v) for k, v in items)
    if len(payload) > PAYLOAD:
        raise ValueError("bucket payload over 4080 bytes")
    if target is None:
        target = index
    body = payload + bytes(PAYLOAD - len(payload))
    body += struct.pack("<HHHHI", len(items), len(payload), target, flags, hashmark)
    crc = crc32c(struct.pack("<I", index) + body)
    return body + struct.pack("<I", crc)


def encode_layout(*, buckets, seed, bits_per_key, k, contents, records, cached_records,
                  overflow, version=FORMAT_VERSION):
    """Exact bytes of a table from its logical layout.

    contents: list (len buckets) of [(key, value|None)] in physical order
    records: [Record] in trailer order (the encoder writes them as given)
    overflow: [(key, value|None)] in overflow-area order
    Buckets with a record get flags=1, target, hashmark from it; others target=self, flags=0,
    hashmark=0.
    """
    rec = {r.source: r for r in records}
    out = bytearray()
    for b in range(buckets):
        r = rec.get(b)
        if r is None:
            out += encode_bucket(b, contents[b])
        else:
            out += encode_bucket(b, contents[b], r.target, 1, r.hashmark)
    overflow_offset = len(out)
    index = []
    for key, value in overflow:
        item = encode_item(key, value)
        index.append((h1h2(key, seed)[1], len(out), 4 + len(item)))
        out += struct.pack("<I", crc32c(item)) + item
    trailer_offset = len(out)
    index.sort(key=lambda e: (e[0], e[1]))
    trailer = bytearray()
    for r in records:
        trailer += struct.pack("<HHII", r.source, r.target, r.hashmark, r.flow)
    for h2, off, ln in index:
        trailer += struct.pack("<QQI", h2, off, ln)
    all_keys = [k_ for c in contents for k_, _ in c] + [k_ for k_, _ in overflow]
    all_items = [(k_, v_) for c in contents for k_, v_ in c] + list(overflow)
    offs, fbytes = build_filters(all_keys, buckets, seed, bits_per_key, k)
    trailer += struct.pack(f"<{buckets + 1}I", *offs) + fbytes
    refs = {}  # a table holding pointers is version 2 and lists their value logs
    for _, v_ in all_items:
        if isinstance(v_, Pointer):
            refs[v_.file] = refs.get(v_.file, 0) + v_.vlen
    for file, nbytes in sorted(refs.items()):
        trailer += struct.pack("<QQ", file, nbytes)
    if refs:
        version = FORMAT_VERSION_BLOBS
    out += trailer
    f = Footer(
        magic=MAGIC, format_version=version, footer_size=FOOTER_SIZE, bucket_size=BUCKET_SIZE,
        buckets=buckets, hash_seed=seed, bloom_bits_per_key=bits_per_key, bloom_probes=k,
        items=len(all_items), tombstones=sum(1 for _, v in all_items if v is None),
        data_bytes=sum(encoded_size(k_, v_) for k_, v_ in all_items),
        overflow_offset=overflow_offset, overflow_bytes=trailer_offset - overflow_offset,
        overflow_items=len(overflow), records=len(records), cached_records=cached_records,
        reserved=len(refs), trailer_offset=trailer_offset, trailer_crc=crc32c(bytes(trailer)),
        footer_crc=0)
    raw = f.pack()
    f.footer_crc = crc32c(raw[:100])
    out += f.pack()
    return bytes(out)


def dedupe(items):
    """Later duplicates replace earlier ones; keeps the position of the first occurrence."""
    d = {}
    for k, v in items:
        d[bytes(k)] = None if v is None else bytes(v)
    return list(d.items())


def encode_table(items, *, buckets, seed=0, bits_per_key=16, k=None):
    """Encoder for the simple case without migration: every item of encoded size <= 4080 sits in
    its home bucket in insertion order, larger ones go to the overflow area in insertion order.
    Raises ValueError if a bucket would be overloaded (this encoder does not migrate)."""
    if k is None:
        k = default_probes(bits_per_key)
    contents = [[] for _ in range(buckets)]
    overflow = []
    for key, value in dedupe(items):
        if encoded_size(key, value) > PAYLOAD:
            overflow.append((key, value))
        else:
            contents[key_hash(key, seed, buckets).home].append((key, value))
    for b, c in enumerate(contents):
        if sum(encoded_size(k_, v_) for k_, v_ in c) > PAYLOAD:
            raise ValueError(f"bucket {b} overloaded: needs migration")
    return encode_layout(buckets=buckets, seed=seed, bits_per_key=bits_per_key, k=k,
                         contents=contents, records=[], cached_records=0, overflow=overflow)


def reencode(t):
    """Bytes a spec-following writer produces for the decoded layout of t (same physical item
    order, same records, same overflow order, same k)."""
    f = t.footer
    contents = [[(k, v) for k, v, _ in b.items] for b in t.buckets]
    overflow_by_offset = sorted(t.overflow, key=lambda o: o.offset)
    return encode_layout(buckets=f.buckets, seed=f.hash_seed, bits_per_key=f.bloom_bits_per_key,
                         k=f.bloom_probes, contents=contents, records=t.records,
                         cached_records=f.cached_records,
                         overflow=[(o.key, o.value) for o in overflow_by_offset])


# --------------------------------------------------------------------------------------------
# value logs (docs/format/vlog.md)

def vlog_header():
    h = VLOG_MAGIC + struct.pack("<HH", 1, 0)
    return h + struct.pack("<I", crc32c(h))


def vlog_record(key, value):
    """A record's bytes: crc32c of [4, len), varint klen, varint vlen, key, value."""
    body = varint(len(key)) + varint(len(value)) + bytes(key) + bytes(value)
    return struct.pack("<I", crc32c(body)) + body


def read_vlog(data):
    """The records of a value log's bytes: {offset: (key, value)}, and where the whole, checked
    records end (a torn or damaged record ends the list). Raises FormatError on a bad header."""
    data = bytes(data)
    if len(data) < VLOG_HEADER_SIZE:
        raise FormatError("value log shorter than its header")
    magic, version, reserved, crc = struct.unpack_from("<8sHHI", data, 0)
    if magic != VLOG_MAGIC or version != 1 or reserved != 0 or crc != crc32c(data[:12]):
        raise FormatError("value log header")
    out, pos = {}, VLOG_HEADER_SIZE
    while pos + 6 <= len(data):
        try:
            klen, p = read_varint(data, pos + 4, len(data))
            vlen, p = read_varint(data, p, len(data))
        except FormatError:
            break
        end = p + klen + vlen
        if klen > 65535 or vlen > 16 * 1024 * 1024 or end > len(data):
            break
        if struct.unpack_from("<I", data, pos)[0] != crc32c(data[pos + 4:end]):
            break
        out[pos] = (data[p:p + klen], data[p + klen:end])
        pos = end
    return out, pos


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------------------------
# corruption helpers

def reseal(data):
    """Recompute trailer_crc and footer_crc of a (possibly edited) table image."""
    data = bytearray(data)
    f = Footer.unpack(bytes(data[-FOOTER_SIZE:]))
    end = len(data) - FOOTER_SIZE
    if f.trailer_offset <= end:
        f.trailer_crc = crc32c(bytes(data[f.trailer_offset:end]))
    raw = f.pack()
    f.footer_crc = crc32c(raw[:100])
    data[-FOOTER_SIZE:] = f.pack()
    return bytes(data)


def reseal_bucket(data, i):
    """Recompute the CRC of bucket i of a table image (after editing it)."""
    data = bytearray(data)
    off = i * BUCKET_SIZE
    crc = crc32c(struct.pack("<I", i) + bytes(data[off:off + 4092]))
    struct.pack_into("<I", data, off + 4092, crc)
    return bytes(data)


def set_footer_field(data, name, value, reseal_crc=True):
    data = bytearray(data)
    off, fmt = FOOTER_OFFSETS[name]
    struct.pack_into(fmt, data, len(data) - FOOTER_SIZE + off, value)
    if reseal_crc:
        f = Footer.unpack(bytes(data[-FOOTER_SIZE:]))
        raw = f.pack()
        struct.pack_into("<I", data, len(data) - 4, crc32c(raw[:100]))
    return bytes(data)


# --------------------------------------------------------------------------------------------
# structural checks

def check_layout(t, expected=None, max_cached_records=2048):
    """Assert every rule htable.md states about a decoded table. expected: optional dict
    key -> value|None the table must hold exactly. Returns a dict of derived facts."""
    f = t.footer
    B = f.buckets
    assert f.magic == MAGIC and f.footer_size == 104 and f.bucket_size == 4096
    pointers = {}  # value-log file -> the value bytes the table's pointers lead to there
    for k, v, _ in t.all_items():
        if isinstance(v, Pointer):
            pointers[v.file] = pointers.get(v.file, 0) + v.vlen
    if pointers:  # version 2, listing exactly the value logs its pointers lead into
        assert f.format_version == FORMAT_VERSION_BLOBS and f.blob_refs == len(t.blob_refs)
        assert t.blob_refs == sorted(pointers.items()), (t.blob_refs, pointers)
    else:
        assert f.format_version == FORMAT_VERSION and f.reserved == 0 and not t.blob_refs
    assert f.overflow_offset == B * 4096
    assert f.trailer_offset == f.overflow_offset + f.overflow_bytes
    assert len(t.data) == f.trailer_offset + 12 * f.records + 20 * f.overflow_items + \
        4 * (B + 1) + len(t.filter_bytes) + BLOB_REF_SIZE * len(t.blob_refs) + FOOTER_SIZE
    if f.bloom_bits_per_key == 0:
        assert f.bloom_probes == 0
        assert set(t.filter_offsets) == {0}
    else:
        assert 1 <= f.bloom_probes <= 30

    # buckets
    for b in t.buckets:
        assert b.crc_ok, f"bucket {b.index} crc"
        assert b.padding_zero, f"bucket {b.index} padding not zero"
        assert b.used <= PAYLOAD
        assert b.flags in (0, 1), f"bucket {b.index} flags {b.flags}"

    # overflow area: records back to back, exactly covering it, crc ok
    pos = f.overflow_offset
    for o in sorted(t.overflow, key=lambda o: o.offset):
        assert o.offset == pos, "overflow records not back to back"
        assert o.crc_ok, f"overflow record at {o.offset}: crc"
        assert o.length == 4 + encoded_size(o.key, o.value)
        pos += o.length
    assert pos == f.trailer_offset
    keys_idx = [(e.h2, e.offset) for e in t.overflow_index]
    assert keys_idx == sorted(keys_idx), "overflow index not sorted by (h2, offset)"
    for e, o in zip(t.overflow_index, t.overflow):
        assert e.h2 == h1h2(o.key, f.hash_seed)[1], "overflow index h2 is not the key's h2"

    # records: sorted, consistent with bucket footers
    assert [(-r.flow, r.source) for r in t.records] == sorted((-r.flow, r.source)
                                                              for r in t.records)
    rec = t.record_map()
    assert len(rec) == len(t.records), "a bucket is a source more than once"
    for b in t.buckets:
        r = rec.get(b.index)
        if r is None:
            assert b.flags == 0 and b.target == b.index, f"bucket {b.index}: stray record"
        else:
            assert b.flags == 1 and b.target == r.target and b.hashmark == r.hashmark, \
                f"bucket {b.index}: footer record differs from the trailer"
            assert r.target != r.source
            assert r.flow > 0
    assert 0 <= f.cached_records <= f.records
    assert f.cached_records <= max_cached_records

    # every item where the lookup rule finds it
    items = t.all_items()
    seen = {}
    for k, v, where in items:
        assert k not in seen, f"key {k!r} stored twice"
        seen[k] = v
    assert f.items == len(items)
    assert f.tombstones == sum(1 for _, v, _ in items if v is None)
    assert f.data_bytes == sum(encoded_size(k, v) for k, v, _ in items)
    assert f.overflow_items == len(t.overflow)
    if expected is not None:
        assert seen == {bytes(k): v for k, v in expected.items()}

    flow = {s: 0 for s in rec}
    moved = {s: [] for s in rec}         # (rank in source, size) of items moved out
    stayed_over = {}                     # bucket -> [(rank, size)] small items overflowed there
    hops_max = 0
    for k, v, where in items:
        assert t.filter_maybe(k), f"false negative in the filter for {k!r}"
        if encoded_size(k, v) > PAYLOAD:
            # larger than a bucket: straight to the overflow area, never part of a bucket's
            # load, so it is not among the items a record moved
            assert where == "overflow", f"key {k!r}: item over 4080 bytes inside a bucket"
            continue
        kh = t.kh(k)
        p = t.path(k)
        hops_max = max(hops_max, len(p) - 1)
        for s in p[:-1]:
            flow[s] += 1
            moved[s].append((kh.rank(s), encoded_size(k, v)))
        if where == "overflow":
            stayed_over.setdefault(p[-1], []).append((kh.rank(p[-1]), encoded_size(k, v)))
        else:
            assert where == p[-1], (f"key {k!r} sits in bucket {where} but the lookup rule "
                                    f"ends at {p[-1]} (path {p})")
    assert hops_max <= MAX_HOPS

    for s, r in rec.items():
        assert flow[s] == r.flow, f"record {s}: flow {r.flow} but {flow[s]} items pass it"
        ranks = [x for x, _ in moved[s]]
        assert min(ranks) == r.hashmark, f"record {s}: hashmark is not the lowest moved rank"
        bk = t.buckets[s]
        assert all(kh_rank < r.hashmark for kh_rank in
                   (t.kh(k).rank(s) for k, _, _ in bk.items)), "item at or above hashmark stayed"
        # fewest items: putting back the lowest-rank group would overload the source again
        group = sum(sz for x, sz in moved[s] if x == r.hashmark)
        assert bk.used + group > PAYLOAD, f"record {s}: moved more than needed"
    for b, lst in stayed_over.items():
        assert b not in rec
        lo = min(x for x, _ in lst)
        bk = t.buckets[b]
        assert all(t.kh(k).rank(b) < lo for k, _, _ in bk.items), \
            f"bucket {b}: an overflowed item ranks below one that stayed"
        group = sum(sz for x, sz in lst if x == lo)
        assert bk.used + group > PAYLOAD, f"bucket {b}: overflowed more than needed"

    # longest structural chain
    def depth(b, seen_=()):
        assert b not in seen_, "records loop"
        r = rec.get(b)
        return 0 if r is None else 1 + depth(r.target, seen_ + (b,))
    chain = max((depth(b) for b in range(B)), default=0)
    assert chain <= MAX_HOPS

    home_load = [0] * B
    for k, v, _ in items:
        sz = encoded_size(k, v)
        if sz <= PAYLOAD:
            home_load[t.kh(k).home] += sz
    return {
        "items": seen,
        "flows": [r.flow for r in t.records],
        "migrated_items": sum(flow.values()),
        "max_chain": chain,
        "max_hops": hops_max,
        "overloaded_buckets": sum(1 for x in home_load if x > PAYLOAD),
        "bucket_items": len(items) - len(t.overflow),
    }


# --------------------------------------------------------------------------------------------
# record logs and the manifest (docs/format/log.md, docs/format/manifest.md), written and read
# independently of the C core

LOG_BATCH, MF_OPTIONS, MF_EDIT = 1, 16, 17
OP_ADD_TABLE, OP_REMOVE_TABLE, OP_LOG_FLOOR, OP_NEXT_FILE, OP_COUNTERS, OP_SET_CLUSTER, \
    OP_LOG_OFFSET = range(1, 8)
N_COUNTERS = 23  # 9 kinds, compaction bytes into each of 12 levels, the loader's, the value logs'
OP_SET_DEPTH, OP_SET_CLUSTER_AT = 8, 9  # (manifest version 2: a growing trie)
_OP_ARGS = {OP_ADD_TABLE: 2, OP_REMOVE_TABLE: 2, OP_LOG_FLOOR: 1, OP_NEXT_FILE: 1,
            OP_SET_CLUSTER: 3, OP_LOG_OFFSET: 1, OP_SET_DEPTH: 1, OP_SET_CLUSTER_AT: 4}


def log_record(rtype, payload):
    """One framed record: crc u32, length u32, type u8, payload."""
    body = struct.pack("<IB", len(payload), rtype) + bytes(payload)
    return struct.pack("<I", crc32c(body)) + body


def read_log_records(data):
    """[(type, payload)] of the whole records of a record log, and where the good prefix ends."""
    out, pos = [], 0
    while pos + 9 <= len(data):
        crc, n, rtype = struct.unpack_from("<IIB", data, pos)
        end = pos + 9 + n
        if end > len(data) or crc32c(data[pos + 4:end]) != crc:
            break
        out.append((rtype, bytes(data[pos + 9:end])))
        pos = end
    return out, pos


def manifest_options(*, table_buckets=64, fill=0.95, levels=3, node_tables=8, bloom_bits=16,
                     memtable_bytes=None, hash_seed=0, gc_threshold=0.5, elsewhere=False,
                     value_format=0):
    if memtable_bytes is None:  # one table's capacity, the store's default
        memtable_bytes = int(fill * table_buckets * PAYLOAD)
    return (b"LTRMANI1" + struct.pack("<H", 1) + varint(table_buckets) + struct.pack("<d", fill)
            + varint(levels) + varint(node_tables) + varint(bloom_bits) + varint(memtable_bytes)
            + varint(hash_seed) + struct.pack("<d", gc_threshold) + bytes([bool(elsewhere)])
            + (varint(value_format) if value_format else b""))


def manifest_edit(ops):
    """ops: [(op, args...)]; COUNTERS as (OP_COUNTERS, [values])."""
    out = bytearray()
    for op, *args in ops:
        out += varint(op)
        if op == OP_COUNTERS:
            values = args[0]
            out += varint(len(values)) + b"".join(varint(v) for v in values)
        else:
            out += b"".join(varint(a) for a in args)
    return bytes(out)


def write_manifest(directory, options, edits, number=1):
    """A store directory holding only MANIFEST-<number> (options, then the edits) and CURRENT."""
    name = "MANIFEST-%08d" % number
    with open(f"{directory}/{name}", "wb") as f:
        f.write(log_record(MF_OPTIONS, options))
        for e in edits:
            f.write(log_record(MF_EDIT, e))
    with open(f"{directory}/CURRENT", "w") as f:
        f.write(name + "\n")


def read_manifest_ops(data):
    """Replays a manifest: (options payload, [[(op, args)] per edit]), good prefix length."""
    recs, good = read_log_records(data)
    if not recs or recs[0][0] != MF_OPTIONS:
        raise FormatError("no options record")
    edits = []
    for rtype, p in recs[1:]:
        if rtype != MF_EDIT:
            raise FormatError(f"record type {rtype}")
        pos, ops = 0, []
        while pos < len(p):
            op, pos = read_varint(p, pos, len(p))
            if op == OP_COUNTERS:
                n, pos = read_varint(p, pos, len(p))
                vals = []
                for _ in range(n):
                    v, pos = read_varint(p, pos, len(p))
                    vals.append(v)
                ops.append((op, vals))
            elif op in _OP_ARGS:
                args = []
                for _ in range(_OP_ARGS[op]):
                    a, pos = read_varint(p, pos, len(p))
                    args.append(a)
                ops.append((op, *args))
            else:
                raise FormatError(f"op {op}")
        edits.append(ops)
    return recs[0][1], edits, good
