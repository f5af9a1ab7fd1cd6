"""htable.md byte for byte: files written by the C builder, decoded by the independent formatlib."""

import os
import struct

import pytest

import formatlib as fl
from conftest import keys_in_bucket, make_items

GOLDEN_SEED = 0x1234
GOLDEN_BUCKETS = 64
GOLDEN_KEYS = [b"golden-%d" % i for i in
               [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21]]
# SHA-256 of formatlib.encode_table(golden_items(), k=11): pins formatlib itself against drift.
GOLDEN_SHA_K11 = "0d189862fc07f1d89a03f066efd7b236299f3eb9323dbb360d456418debe2909"


def golden_items():
    items = [(k, None if k == b"golden-5" else b"value-" + k * (j % 4))
             for j, k in enumerate(GOLDEN_KEYS)]
    items.append((b"", b"empty-key"))
    items.append((b"big", bytes(range(256)) * 20))  # encoded size > 4080: overflow area
    return items


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def write(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


def expect_status(t, key, value):
    from lsmtrie import htable

    st, v = t.lookup(key)
    if value is None:
        assert st == htable.Lookup.DELETED and v is None
        assert t.get(key, b"dflt") == b"dflt"
    else:
        assert st == htable.Lookup.FOUND and v == value
        assert t.get(key) == value


# ---------------------------------------------------------------------------------------------
# golden bytes


def test_golden_encoder_constant():
    """formatlib's encoder itself has not drifted (pure Python, no C involved)."""
    items = golden_items()
    # the golden keys really are one per bucket, so item order inside buckets is not a factor
    homes = [fl.key_hash(k, GOLDEN_SEED, GOLDEN_BUCKETS).home for k, _ in items[:-1]]
    assert len(set(homes)) == len(homes)
    data = fl.encode_table(items, buckets=GOLDEN_BUCKETS, seed=GOLDEN_SEED, bits_per_key=16,
                           k=11)
    assert fl.sha256(data) == GOLDEN_SHA_K11


def test_golden_file_sha256(build):
    items = golden_items()
    path, st = build(items, buckets=GOLDEN_BUCKETS, hash_seed=GOLDEN_SEED, bloom_bits_per_key=16)
    data = read(path)
    k = fl.Footer.unpack(data[-104:]).bloom_probes
    expected = fl.encode_table(items, buckets=GOLDEN_BUCKETS, seed=GOLDEN_SEED,
                               bits_per_key=16, k=k)
    if data != expected:  # give a precise first difference
        i = next((i for i, (a, b) in enumerate(zip(data, expected)) if a != b),
                 min(len(data), len(expected)))
        pytest.fail(f"file differs from the spec encoding at byte {i} "
                    f"(len {len(data)} vs {len(expected)}; bucket area ends at "
                    f"{GOLDEN_BUCKETS * 4096})")
    assert fl.sha256(data) == fl.sha256(expected)
    if k == 11:
        assert fl.sha256(data) == GOLDEN_SHA_K11
    assert st.file_bytes == len(data) == os.path.getsize(path)


def test_golden_file_no_filters(build):
    items = golden_items()
    path, _ = build(items, buckets=GOLDEN_BUCKETS, hash_seed=GOLDEN_SEED, bloom_bits_per_key=0)
    data = read(path)
    expected = fl.encode_table(items, buckets=GOLDEN_BUCKETS, seed=GOLDEN_SEED, bits_per_key=0,
                               k=0)
    assert data == expected


@pytest.mark.parametrize("bits", [1, 3, 8, 16, 23, 64])
def test_filter_sizes_and_bits(build, bits):
    items = make_items(bits, 300, vlen=(0, 20))
    path, _ = build(items, buckets=16, bloom_bits_per_key=bits, fill=0.5)
    t = fl.parse_file(path)
    f = t.footer
    assert f.bloom_bits_per_key == bits and 1 <= f.bloom_probes <= 30
    per = [0] * 16
    for k, _ in items:
        per[fl.key_hash(k, 0, 16).home] += 1
    for b in range(16):
        assert len(t.filter_of(b)) == (per[b] * bits + 7) // 8
    fl.check_layout(t, expected=dict(items))
    assert fl.reencode(t) == t.data


def test_probe_count_zero_without_filters(build):
    path, _ = build(make_items(1, 50), buckets=16, bloom_bits_per_key=0)
    t = fl.parse_file(path)
    assert t.footer.bloom_probes == 0 and t.footer.bloom_bits_per_key == 0
    assert t.filter_offsets == [0] * 17 and t.filter_bytes == b""


# ---------------------------------------------------------------------------------------------
# edge cases table of htable.md


def test_empty_table(build, htable):
    path, st = build([], buckets=16)
    data = read(path)
    assert len(data) == 16 * 4096 + 17 * 4 + 104
    t = fl.parse(data)
    for b in t.buckets:
        assert (b.count, b.used, b.target, b.flags, b.hashmark) == (0, 0, b.index, 0, 0)
        assert data[b.index * 4096:b.index * 4096 + 4080] == bytes(4080)
    f = t.footer
    assert (f.items, f.tombstones, f.data_bytes, f.overflow_bytes, f.overflow_items,
            f.records, f.cached_records) == (0, 0, 0, 0, 0, 0, 0)
    assert t.filter_offsets == [0] * 17
    fl.check_layout(t, expected={})
    assert data == fl.encode_table([], buckets=16, k=f.bloom_probes)
    assert (st.items, st.tombstones, st.data_bytes, st.records, st.overflow_items) == \
        (0, 0, 0, 0, 0)
    assert st.file_bytes == len(data)
    with htable.HTable(path) as tb:
        assert len(tb) == 0
        assert tb.get(b"x") is None and tb.get(b"") is None
        assert tb.lookup(b"abc") == (htable.Lookup.ABSENT, None)
        assert tb.get_many([b"a", b"b", b""]) == [None, None, None]
        assert list(tb.items()) == []
        rs = tb.read_stats()
        assert rs["lookups"] == 6 and rs["bucket_reads"] == 0 and rs["overflow_reads"] == 0


def test_one_item_exact_bytes(build):
    key, value = b"hello", b"world!"
    buckets = 16
    path, st = build([(key, value)], buckets=buckets, hash_seed=77)
    data = read(path)
    kh = fl.key_hash(key, 77, buckets)
    home = kh.home
    enc = fl.encode_item(key, value)
    assert enc == b"\x05\x07hello" + b"world!"
    raw = data[home * 4096:(home + 1) * 4096]
    assert raw[:len(enc)] == enc
    assert raw[len(enc):4080] == bytes(4080 - len(enc))
    count, used, target, flags, hashmark, crc = struct.unpack("<HHHHII", raw[4080:])
    assert (count, used, target, flags, hashmark) == (1, len(enc), home, 0, 0)
    assert crc == fl.crc32c_py(struct.pack("<I", home) + raw[:4092])
    for b in range(buckets):
        if b == home:
            continue
        other = data[b * 4096:(b + 1) * 4096]
        assert other[:4088] == bytes(4080) + struct.pack("<HHHH", 0, 0, b, 0)
        assert other[4088:4092] == bytes(4)
        assert struct.unpack("<I", other[4092:])[0] == \
            fl.crc32c_py(struct.pack("<I", b) + other[:4092])

    # trailer: no records, no overflow index, offsets, then one 2-byte filter
    footer = fl.Footer.unpack(data[-104:])
    k = footer.bloom_probes
    to = footer.trailer_offset
    assert to == buckets * 4096 == footer.overflow_offset
    offs = struct.unpack_from("<17I", data, to)
    assert offs == tuple([0] * (home + 1) + [2] * (buckets - home))
    filt = data[to + 68:to + 70]
    assert len(data) == to + 68 + 2 + 104
    bits = {i for i in range(16) if filt[i >> 3] & (1 << (i & 7))}
    assert bits == set(fl.bloom_probes(kh.bloom, k, 16))

    assert footer.magic == b"LTRHTBL1" == data[-104:-96]
    assert (footer.format_version, footer.footer_size, footer.bucket_size, footer.buckets,
            footer.hash_seed, footer.bloom_bits_per_key) == (1, 104, 4096, 16, 77, 16)
    assert (footer.items, footer.tombstones, footer.data_bytes) == (1, 0, len(enc))
    assert (footer.overflow_bytes, footer.overflow_items, footer.records,
            footer.cached_records, footer.reserved) == (0, 0, 0, 0, 0)
    assert footer.trailer_crc == fl.crc32c_py(data[to:-104])
    assert footer.footer_crc == fl.crc32c_py(data[-104:-4])
    assert data == fl.encode_table([(key, value)], buckets=buckets, seed=77, k=k)
    assert (st.items, st.data_bytes, st.file_bytes) == (1, len(enc), len(data))


def test_tombstone_encoding(build, htable):
    items = [(b"gone", None), (b"kept", b"v")]
    path, st = build(items, buckets=4)
    t = fl.parse_file(path)
    enc = {}
    for b in t.buckets:
        for k, v, off in b.items:
            enc[k] = t.data[b.index * 4096 + off:b.index * 4096 + off + 6]
    assert enc[b"gone"] == b"\x04\x00gone"
    assert enc[b"kept"][:2] == b"\x04\x02"
    assert t.footer.tombstones == 1 and t.footer.items == 2
    assert t.footer.data_bytes == 6 + 7
    assert st.tombstones == 1
    fl.check_layout(t, expected=dict(items))
    assert t.lookup(b"gone") == (fl.DELETED, None)
    with htable.HTable(path) as tb:
        expect_status(tb, b"gone", None)
        expect_status(tb, b"kept", b"v")
        assert sorted(tb.items()) == [(b"gone", None), (b"kept", b"v")]


def test_empty_key_and_empty_value(build, htable):
    items = [(b"", b""), (b"k", b""), (b"e", None)]
    path, _ = build(items, buckets=2)
    t = fl.parse_file(path)
    fl.check_layout(t, expected=dict(items))
    found = {k: t.data[b.index * 4096 + off:b.index * 4096 + off + 3]
             for b in t.buckets for k, v, off in b.items}
    assert found[b""][:2] == b"\x00\x01"          # klen 0, vfield 1 (empty value, not deleted)
    assert found[b"k"] == b"\x01\x01k"
    with htable.HTable(path) as tb:
        assert tb.lookup(b"") == (htable.Lookup.FOUND, b"")
        assert tb.lookup(b"k") == (htable.Lookup.FOUND, b"")
        assert tb.lookup(b"e") == (htable.Lookup.DELETED, None)
        assert tb.get(b"", b"d") == b""


def test_bucket_exactly_full_single_item(build, htable):
    key = b"K" * 16
    value = bytes(range(256)) * 15 + bytes(range(221))  # 4061 bytes
    assert fl.encoded_size(key, value) == 4080
    path, st = build([(key, value)], buckets=16)
    t = fl.parse_file(path)
    home = fl.key_hash(key, 0, 16).home
    b = t.buckets[home]
    assert (b.count, b.used, b.flags, b.target) == (1, 4080, 0, home)
    assert t.footer.records == 0 and t.footer.overflow_bytes == 0
    assert st.overflow_items == 0 and st.records == 0 and st.overloaded_buckets == 0
    fl.check_layout(t, expected={key: value})
    assert fl.reencode(t) == t.data
    with htable.HTable(path) as tb:
        expect_status(tb, key, value)


def test_bucket_exactly_full_two_items(build, htable):
    k1, k2 = keys_in_bucket(5, 16, 0, 2)
    v1 = b"a" * (2000 - 16 - 1 - 2)
    v2 = b"b" * (2080 - 16 - 1 - 2)
    assert fl.encoded_size(k1, v1) + fl.encoded_size(k2, v2) == 4080
    path, st = build([(k1, v1), (k2, v2)], buckets=16)
    t = fl.parse_file(path)
    b = t.buckets[5]
    assert b.used == 4080 and b.count == 2 and b.flags == 0
    assert t.footer.records == 0 and t.footer.overflow_items == 0
    assert st.overloaded_buckets == 0 and st.migrated_items == 0
    fl.check_layout(t, expected={k1: v1, k2: v2})
    assert fl.reencode(t) == t.data


def test_item_4081_goes_to_overflow(build, htable):
    key = b"K" * 16
    value = b"\x5a" * 4062
    assert fl.encoded_size(key, value) == 4081
    path, st = build([(key, value), (b"small", b"s")], buckets=16)
    data = read(path)
    t = fl.parse(data)
    f = t.footer
    assert f.overflow_items == 1 and st.overflow_items == 1
    assert f.overflow_bytes == 4 + 4081
    rec = data[f.overflow_offset:f.overflow_offset + 4085]
    assert rec[4:] == fl.encode_item(key, value)
    assert struct.unpack("<I", rec[:4])[0] == fl.crc32c_py(rec[4:])
    (e,) = t.overflow_index
    assert (e.h2, e.offset, e.length) == (fl.h1h2(key, 0)[1], f.overflow_offset, 4085)
    assert all(k != key for b in t.buckets for k, _, _ in b.items)
    home = fl.key_hash(key, 0, 16).home
    assert len(t.filter_of(home)) >= 2  # the overflowed item still counts in its home filter
    assert t.filter_maybe(key)
    fl.check_layout(t, expected={key: value, b"small": b"s"})
    assert fl.reencode(t) == data
    with htable.HTable(path) as tb:
        expect_status(tb, key, value)
        tb.reset_stats()
        assert tb.get(key) == value
        rs = tb.read_stats()
        assert rs["overflow_reads"] == 1 and rs["found"] == 1 and rs["lookups"] == 1
        assert tb.info["overflow_items"] == 1
        assert tb.info["overflow_index_bytes"] > 0


def test_item_4080_next_to_other_items(build, htable):
    # a bucket-sized item plus another item in the same home bucket: load 4080 + x must be
    # balanced (migration or overflow) and everything stays readable
    k1, k2, k3 = keys_in_bucket(3, 16, 0, 3)
    v1 = b"x" * 4061
    items = [(k1, v1), (k2, b"y" * 100), (k3, None)]
    path, st = build(items, buckets=16)
    t = fl.parse_file(path)
    fl.check_layout(t, expected=dict(items))
    assert st.overloaded_buckets == 1
    assert st.records + st.overflow_items >= 1
    with htable.HTable(path) as tb:
        for k, v in items:
            expect_status(tb, k, v)


def test_maximum_item_size(build, htable, lsm):
    key = bytes(range(256)) * 255 + bytes(range(255))  # 65535 bytes
    assert len(key) == lsm.MAX_KEY_BYTES == 65535
    value = (b"0123456789abcdef" * (1 << 20))  # 16 MiB
    assert len(value) == lsm.MAX_VALUE_BYTES
    key2 = b"\xff" * 65535
    items = [(key, value), (key2, None), (b"tiny", b"t")]
    path, st = build(items, buckets=4400, fill=1.0)
    enc = fl.encoded_size(key, value)
    assert enc == 3 + 4 + 65535 + 16 * 1024 * 1024
    t = fl.parse_file(path)
    assert t.footer.overflow_items == 2
    big = [o for o in t.overflow if o.key == key][0]
    assert big.length == 4 + enc and big.value == value
    fl.check_layout(t, expected=dict(items))
    assert st.data_bytes == enc + fl.encoded_size(key2, None) + fl.encoded_size(b"tiny", b"t")
    for use_mmap in (True, False):
        with htable.HTable(path, use_mmap=use_mmap) as tb:
            assert tb.get(key) == value
            assert tb.lookup(key2) == (htable.Lookup.DELETED, None)
            assert tb.get_many([key, b"tiny", key2]) == [value, b"t", None]
            assert dict(tb.items()) == dict(items)


# ---------------------------------------------------------------------------------------------
# migration


def fill_builder(htable, path, items, **opts):
    """Adds items until the builder refuses one; returns (stats, dict of what was taken)."""
    opts.setdefault("sync", False)
    taken = {}
    with htable.HTableBuilder(**opts) as b:
        for k, v in items:
            ok = b.add(k, v) if v is not None else b.delete(k)
            if not ok:
                break
            taken[k] = v
        st = b.finish(path)
    return st, taken


MIGRATION_CASES = [
    # (buckets, fill, seed, value length range)
    (16, 0.95, 1, (10, 60)),
    (16, 1.0, 2, (10, 60)),
    (64, 0.95, 3, (30, 200)),
    (64, 1.0, 4, (0, 400)),
    (128, 0.98, 5, (100, 900)),
    (512, 0.95, 6, (20, 100)),
]


@pytest.mark.parametrize("buckets,fill,seed,vlen", MIGRATION_CASES)
def test_migration_layout(tmp_path, htable, buckets, fill, seed, vlen):
    items = make_items(seed, 100000, klen=(4, 20), vlen=vlen)
    path = str(tmp_path / "m.htb")
    st, taken = fill_builder(htable, path, items, buckets=buckets, fill=fill, hash_seed=seed)
    assert len(taken) < len(items)  # the fill budget was reached
    t = fl.parse_file(path)
    facts = fl.check_layout(t, expected=taken)
    f = t.footer
    assert st.records == f.records > 0
    assert st.items == f.items == len(taken)
    assert st.data_bytes == f.data_bytes
    assert st.file_bytes == len(t.data)
    assert st.overflow_items == f.overflow_items
    assert st.cached_records == f.cached_records
    assert st.migrated_items == facts["migrated_items"] == sum(facts["flows"])
    assert st.max_chain == facts["max_chain"] <= 4
    assert st.overloaded_buckets == facts["overloaded_buckets"] > 0
    assert fl.reencode(t) == t.data
    # the pure-Python lookup finds everything
    for k, v in list(taken.items())[::7]:
        assert t.lookup(k) == ((fl.DELETED, None) if v is None else (fl.FOUND, v))
    with htable.HTable(path) as tb:
        got = tb.get_many(list(taken))
        assert got == list(taken.values())


def test_migration_hashmark_semantics(tmp_path, htable):
    """Every item with rank >= hashmark moved to the target; every other item stayed."""
    items = make_items(21, 20000, klen=(8, 8), vlen=(20, 80))
    path = str(tmp_path / "h.htb")
    st, taken = fill_builder(htable, path, items, buckets=64, fill=0.97)
    t = fl.parse_file(path)
    rec = t.record_map()
    assert rec
    where = {k: w for k, _, w in t.all_items()}
    checked_moved = checked_stayed = 0
    for k in taken:
        kh = t.kh(k)
        h = kh.home
        if h not in rec:
            continue
        r = rec[h]
        if kh.rank(h) >= r.hashmark:
            # it left the home bucket: it is in the target or further down the chain
            assert where[k] != h
            p = t.path(k)
            assert p[1] == r.target
            checked_moved += 1
        else:
            assert where[k] == h
            checked_stayed += 1
    assert checked_moved > 0 and checked_stayed > 0


def test_cached_records_rule(tmp_path, htable):
    items = make_items(31, 200000, klen=(8, 16), vlen=(10, 50))
    path = str(tmp_path / "c.htb")
    st, taken = fill_builder(htable, path, items, buckets=256, fill=0.95)
    t = fl.parse_file(path)
    f = t.footer
    assert f.overflow_items == 0 and f.records > 3
    flows = [r.flow for r in t.records]
    n = f.items - f.overflow_items
    c = f.cached_records
    # uncached records send at most 1% of the bucket items through an extra read ...
    assert 100 * sum(flows[c:]) <= n
    # ... and no record fewer would do
    if c > 0:
        assert 100 * sum(flows[c - 1:]) > n

    path2 = str(tmp_path / "c2.htb")
    st2, taken2 = fill_builder(htable, path2, items, buckets=256, fill=0.95,
                               max_cached_records=2)
    t2 = fl.parse_file(path2)
    assert taken2 == taken
    assert t2.footer.cached_records == min(2, c) == st2.cached_records
    assert [(r.source, r.target, r.hashmark, r.flow) for r in t2.records] == \
        [(r.source, r.target, r.hashmark, r.flow) for r in t.records]


def test_expected_and_measured_reads(tmp_path, htable):
    items = make_items(41, 200000, klen=(8, 16), vlen=(10, 50))
    path = str(tmp_path / "r.htb")
    st, taken = fill_builder(htable, path, items, buckets=256, fill=0.97)
    t = fl.parse_file(path)
    f = t.footer
    assert f.overflow_items == 0 and f.records > 0
    flows = [r.flow for r in t.records]
    n = len(taken)
    assert st.expected_reads == pytest.approx((n + sum(flows[f.cached_records:])) / n,
                                              rel=1e-9)
    keys = list(taken)
    for cached in (None, 0, 1, 5):
        with htable.HTable(path, max_cached_records=cached) as tb:
            c = f.cached_records if cached is None else min(cached, f.cached_records)
            assert tb.info["cached_records"] == c
            if c == 0:
                assert tb.info["cached_record_bytes"] == 0
            else:
                assert tb.info["cached_record_bytes"] > 0
            assert tb.get_many(keys) == list(taken.values())
            rs = tb.read_stats()
            assert rs["lookups"] == n and rs["found"] == n
            assert rs["bucket_reads"] == n + sum(flows[c:]), cached


# ---------------------------------------------------------------------------------------------
# corruption


def table_with_everything(tmp_path, htable, buckets=64, seed=51):
    """A table with migration records, overflow items and tombstones."""
    items = make_items(seed, 40000, klen=(4, 20), vlen=(10, 120))
    items = [(k, None if i % 17 == 0 else v) for i, (k, v) in enumerate(items)]
    bigs = [(b"big-%d" % i, bytes([i]) * (4100 + i)) for i in range(3)]
    path = str(tmp_path / "x.htb")
    st, taken = fill_builder(htable, path, bigs + items, buckets=buckets, fill=0.97)
    t = fl.parse_file(path)
    assert t.footer.records > 0 and t.footer.overflow_items >= 3
    return path, t, taken


def key_ending_in(t, taken, bucket, exclude_bucket=None):
    for k in taken:
        p = t.path(k)
        if p[-1] == bucket and (exclude_bucket is None or exclude_bucket not in p):
            if any(kk == k for kk, _, _ in t.buckets[bucket].items):
                return k
    raise AssertionError("no such key")


@pytest.mark.parametrize("use_mmap", [True, False])
@pytest.mark.parametrize("where", ["item", "padding", "footer", "crc"])
def test_bucket_checksum_mismatch(tmp_path, htable, lsm, use_mmap, where):
    path, t, taken = table_with_everything(tmp_path, htable)
    # a bucket without a record, with items and some padding
    b = next(b for b in t.buckets if b.count > 1 and b.flags == 0 and b.used < 4070)
    other = next(o for o in t.buckets if o.count > 0 and o.index != b.index and o.flags == 0)
    victim = key_ending_in(t, taken, b.index)
    safe = key_ending_in(t, taken, other.index, exclude_bucket=b.index)
    off = b.index * 4096 + {"item": b.items[0][2] + 1, "padding": 4070, "footer": 4082,
                            "crc": 4094}[where]
    data = bytearray(t.data)
    data[off] ^= 0x10
    write(path, data)
    with htable.HTable(path, use_mmap=use_mmap) as tb:  # buckets are not checked at open
        assert tb.get(safe) == taken[safe]
        with pytest.raises(lsm.CorruptionError) as ei:
            tb.get(victim)
        msg = str(ei.value)
        assert os.path.basename(path) in msg
        assert str(b.index * 4096) in msg or hex(b.index * 4096) in msg.lower()
        with pytest.raises(lsm.CorruptionError):
            tb.lookup(victim)
        with pytest.raises(lsm.CorruptionError):
            tb.get_many([safe, victim])
        with pytest.raises(lsm.CorruptionError):
            list(tb.items())
        # the table stays usable for the buckets that are fine
        assert tb.lookup(safe)[0] in (htable.Lookup.FOUND, htable.Lookup.DELETED)


def test_bucket_written_at_wrong_offset(tmp_path, htable, lsm):
    path, t, taken = table_with_everything(tmp_path, htable)
    a, b = [x for x in t.buckets if x.count > 0 and x.flags == 0][:2]
    ka = key_ending_in(t, taken, a.index)
    data = bytearray(t.data)
    ra = data[a.index * 4096:(a.index + 1) * 4096]
    rb = data[b.index * 4096:(b.index + 1) * 4096]
    data[a.index * 4096:(a.index + 1) * 4096] = rb
    data[b.index * 4096:(b.index + 1) * 4096] = ra
    write(path, data)
    with htable.HTable(path) as tb:
        with pytest.raises(lsm.CorruptionError):
            tb.get(ka)


@pytest.mark.parametrize("use_mmap", [True, False])
def test_overflow_record_checksum(tmp_path, htable, lsm, use_mmap):
    path, t, taken = table_with_everything(tmp_path, htable)
    o = t.overflow[0]
    data = bytearray(t.data)
    data[o.offset + o.length - 1] ^= 1
    write(path, data)
    with htable.HTable(path, use_mmap=use_mmap) as tb:
        other = next(x for x in t.overflow if x.offset != o.offset)
        assert tb.get(other.key) == other.value
        with pytest.raises(lsm.CorruptionError):
            tb.get(o.key)
        with pytest.raises(lsm.CorruptionError):
            list(tb.items())


def test_footer_byte_flips(tmp_path, htable, lsm):
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=61)
    size = len(t.data)
    for i in range(size - 104, size):
        data = bytearray(t.data)
        data[i] ^= 0x01
        write(path, data)
        field = i - (size - 104)
        errors = (lsm.CorruptionError, lsm.VersionError) if field in (8, 9) else \
            lsm.CorruptionError
        with pytest.raises(errors):
            htable.HTable(path)


def test_trailer_byte_flips(tmp_path, htable, lsm):
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=62)
    f = t.footer
    end = len(t.data) - 104
    positions = sorted({f.trailer_offset, f.trailer_offset + 5, f.trailer_offset + 13,
                        (f.trailer_offset + end) // 2, end - 1})
    for i in positions:
        data = bytearray(t.data)
        data[i] ^= 0x40
        write(path, data)
        with pytest.raises(lsm.CorruptionError):
            htable.HTable(path)


def resealed_variants(t):
    """(name, bytes) of footer/trailer edits that keep every CRC valid but break a rule of
    'Validation on open'."""
    f = t.footer
    d = t.data
    B = f.buckets
    out = []
    sf = fl.set_footer_field
    out.append(("magic", sf(d, "magic", b"LTRHTBL2")))
    out.append(("footer_size", sf(d, "footer_size", 100)))
    out.append(("bucket_size", sf(d, "bucket_size", 8192)))
    out.append(("buckets+1", sf(d, "buckets", B + 1)))
    out.append(("buckets-1", sf(d, "buckets", B - 1)))
    out.append(("buckets-1 consistent offsets",
                sf(sf(sf(d, "buckets", B - 1), "overflow_offset", (B - 1) * 4096),
                   "trailer_offset", (B - 1) * 4096 + f.overflow_bytes)))
    out.append(("buckets=0", sf(d, "buckets", 0)))
    out.append(("overflow_offset", sf(d, "overflow_offset", f.overflow_offset + 4096)))
    out.append(("overflow_bytes", sf(d, "overflow_bytes", f.overflow_bytes + 1)))
    out.append(("trailer_offset", sf(d, "trailer_offset", f.trailer_offset + 1)))
    out.append(("records+1", sf(d, "records", f.records + 1)))
    out.append(("overflow_items+1", sf(d, "overflow_items", f.overflow_items + 1)))
    out.append(("records-1", sf(d, "records", f.records - 1)))
    out.append(("huge records", sf(d, "records", 0xFFFFFFFF)))
    out.append(("huge trailer_offset", sf(d, "trailer_offset", 2**63)))
    out.append(("huge overflow_bytes", sf(d, "overflow_bytes", 2**64 - 4096)))
    out.append(("trailer_crc", sf(d, "trailer_crc", f.trailer_crc ^ 1)))
    out.append(("stale footer_crc", sf(d, "items", f.items + 1, reseal_crc=False)))

    to = f.trailer_offset
    rec0 = to
    idx0 = to + 12 * f.records
    offs0 = idx0 + 20 * f.overflow_items

    def edit(pos, fmt, value):
        x = bytearray(d)
        struct.pack_into(fmt, x, pos, value)
        return fl.reseal(x)

    out.append(("record source out of range", edit(rec0, "<H", B)))
    out.append(("record target out of range", edit(rec0 + 2, "<H", 0xFFFF)))
    out.append(("overflow entry offset past the file", edit(idx0 + 8, "<Q", len(d) + 10)))
    out.append(("overflow entry offset huge", edit(idx0 + 8, "<Q", 2**64 - 2)))
    out.append(("overflow entry length past the file", edit(idx0 + 16, "<I", 0xFFFFFFF0)))
    mid = offs0 + 4 * (B // 2)
    out.append(("filter offsets decreasing", edit(mid, "<I", 0xFFFFFFFF)))
    out.append(("filter offsets end short", edit(offs0 + 4 * B, "<I", t.filter_offsets[-1] - 1)))
    return out


def test_validation_on_open(tmp_path, htable, lsm):
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=63)
    failures = []
    for name, data in resealed_variants(t):
        write(path, data)
        try:
            tb = htable.HTable(path)
        except lsm.CorruptionError:
            continue
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        tb.close()
        failures.append(f"{name}: opened without error")
    assert not failures, failures


def test_version_bump(tmp_path, htable, lsm):
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=64)
    for v in (0, 3, 0xFFFF):
        write(path, fl.set_footer_field(t.data, "format_version", v))
        with pytest.raises(lsm.VersionError):
            htable.HTable(path)
    # version 2 is a table pointing into value logs: one that lists none is damage
    write(path, fl.set_footer_field(t.data, "format_version", 2))
    with pytest.raises(lsm.CorruptionError):
        htable.HTable(path)
    write(path, t.data)
    with htable.HTable(path) as tb:
        assert len(tb) == len(taken)


@pytest.mark.parametrize("cut", ["empty", 1, 103, 104, 4199, 4200, "half", "minus1",
                                 "minus104", "minus105", "plus1", "plus4096"])
def test_truncated_or_extended_file(tmp_path, htable, lsm, cut):
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=65)
    d = t.data
    data = {"empty": b"", "half": d[:len(d) // 2], "minus1": d[:-1], "minus104": d[:-104],
            "minus105": d[:-105], "plus1": d + b"\x00", "plus4096": d + bytes(4096)}.get(cut)
    if data is None:
        data = d[:cut]
    write(path, data)
    with pytest.raises(lsm.CorruptionError):
        htable.HTable(path)


def test_short_valid_looking_footer(tmp_path, htable, lsm):
    # a file of exactly footer size holding a real footer: still shorter than 4096 + 104
    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=66)
    write(path, t.data[-104:])
    with pytest.raises(lsm.CorruptionError):
        htable.HTable(path)


FUZZ_CHILD = r"""
import sys
import lsmtrie
from lsmtrie import htable
path, keyfile = sys.argv[1], sys.argv[2]
keys = open(keyfile, "rb").read().split(b"\\n")
keys = [bytes.fromhex(k.decode()) for k in keys if k]
n = 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    name = line.strip()
    print("variant", name, flush=True)
    for use_mmap in (True, False):
        try:
            with htable.HTable(path + "." + name, use_mmap=use_mmap) as t:
                try:
                    t.get_many(keys)
                except lsmtrie.Error:
                    pass
                for k in keys[:50]:
                    try:
                        t.lookup(k)
                    except lsmtrie.Error:
                        pass
                try:
                    for _ in t.items():
                        pass
                except lsmtrie.Error:
                    pass
        except lsmtrie.Error:
            pass
    n += 1
print("done", n, flush=True)
"""


def test_corrupt_files_never_crash(tmp_path, htable):
    """Damaged tables whose checksums were recomputed (so only structure checks can catch the
    damage) may raise lsmtrie.Error but must never crash the process or read out of bounds."""
    import random
    import subprocess
    import sys

    path, t, taken = table_with_everything(tmp_path, htable, buckets=32, seed=67)
    variants = {}
    for i, (name, data) in enumerate(resealed_variants(t)):
        variants[f"v{i}"] = data
    rng = random.Random(5)
    f = t.footer
    end = len(t.data) - 104
    for i in range(150):  # random trailer bytes, CRCs recomputed
        d = bytearray(t.data)
        for _ in range(rng.randint(1, 3)):
            d[rng.randrange(f.trailer_offset, end)] = rng.randrange(256)
        variants[f"tr{i}"] = fl.reseal(d)
    for i in range(150):  # random bucket footer fields, bucket CRC recomputed
        d = bytearray(t.data)
        b = rng.randrange(f.buckets)
        pos = b * 4096 + rng.randrange(4080, 4092)
        d[pos] = rng.randrange(256)
        if rng.random() < 0.3:  # also garble an item header
            d[b * 4096 + rng.randrange(0, 8)] = rng.randrange(256)
        variants[f"bk{i}"] = fl.reseal_bucket(bytes(d), b)
    for i in range(30):  # overflow record bytes with the record CRC recomputed
        d = bytearray(t.data)
        o = rng.choice(t.overflow)
        d[o.offset + 4 + rng.randrange(0, 4)] = rng.randrange(256)
        struct.pack_into("<I", d, o.offset, fl.crc32c(bytes(d[o.offset + 4:o.offset + o.length])))
        variants[f"ov{i}"] = bytes(d)
    for name, data in variants.items():
        write(f"{path}.{name}", data)
    keyfile = str(tmp_path / "keys")
    with open(keyfile, "wb") as fh:
        fh.write(b"\n".join(k.hex().encode() for k in list(taken)[:400] +
                            [o.key for o in t.overflow]))
    child = str(tmp_path / "child.py")
    write(child, FUZZ_CHILD.encode())
    proc = subprocess.run([sys.executable, child, path, keyfile], input="\n".join(variants),
                          capture_output=True, text=True, timeout=300)
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("variant")][-1:]
    assert proc.returncode == 0, (f"child died with {proc.returncode} at {last}: "
                                  f"{proc.stderr[-2000:]}")
    assert proc.stdout.splitlines()[-1] == f"done {len(variants)}"
