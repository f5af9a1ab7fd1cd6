"""HTableBuilder / HTable behaviour through the Python API."""

import dataclasses
import os
import random
import re
import threading

import numpy as np
import pytest

import formatlib as fl
from conftest import make_items
from forked import isolated


def packed(items):
    """(data uint8, offsets int64) form of a list of bytes."""
    data = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(x) for x in items])
    return data, offs


def test_module_constants(lsm):
    assert lsm.BUCKET_SIZE == 4096
    assert lsm.BUCKET_PAYLOAD == 4080
    assert lsm.MAX_KEY_BYTES == 65535
    assert lsm.MAX_VALUE_BYTES == 16 * 1024 * 1024
    assert isinstance(lsm.__version__, str) and lsm.__version__


def test_error_hierarchy(lsm):
    assert issubclass(lsm.CorruptionError, lsm.Error)
    assert issubclass(lsm.VersionError, lsm.Error)
    assert issubclass(lsm.StorageError, lsm.Error) and issubclass(lsm.StorageError, OSError)
    assert issubclass(lsm.DiskFullError, lsm.StorageError)
    assert issubclass(lsm.ItemTooLargeError, lsm.Error)
    assert issubclass(lsm.ItemTooLargeError, ValueError)
    assert issubclass(lsm.ClosedError, lsm.Error)
    assert issubclass(lsm.LockError, lsm.Error)
    assert not issubclass(lsm.CorruptionError, OSError)


def test_lookup_enum(htable):
    assert int(htable.Lookup.ABSENT) == 0
    assert int(htable.Lookup.FOUND) == 1
    assert int(htable.Lookup.DELETED) == 2


def test_table_options_defaults_and_validation(htable):
    o = htable.TableOptions()
    assert (o.buckets, o.fill, o.bloom_bits_per_key, o.hash_seed, o.max_cached_records,
            o.sync) == (8191, 0.95, 16, 0, 2048, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.buckets = 3
    for bad in [dict(buckets=0), dict(buckets=65536), dict(buckets=-1), dict(fill=0),
                dict(fill=1.01), dict(fill=-0.5), dict(bloom_bits_per_key=65),
                dict(bloom_bits_per_key=-1), dict(hash_seed=-1), dict(hash_seed=2**32)]:
        with pytest.raises(ValueError):
            htable.TableOptions(**bad)
    for bad in [dict(buckets="16"), dict(buckets=16.0), dict(fill="0.5"),
                dict(bloom_bits_per_key=8.0), dict(hash_seed="1")]:
        with pytest.raises(TypeError):
            htable.TableOptions(**bad)
    ok = htable.TableOptions(buckets=65535, fill=1.0, bloom_bits_per_key=64,
                             hash_seed=2**32 - 1)
    assert ok.buckets == 65535
    with pytest.raises(ValueError):
        htable.HTableBuilder(buckets=0)


def test_options_object_and_kwargs(tmp_path, htable):
    opts = htable.TableOptions(buckets=32, hash_seed=9, sync=False)
    with htable.HTableBuilder(opts) as b:
        b.add(b"k", b"v")
        b.finish(str(tmp_path / "a"))
    with htable.HTableBuilder(options=opts) as b:
        b.add(b"k", b"v")
        b.finish(str(tmp_path / "b"))
    fa = fl.parse_file(str(tmp_path / "a")).footer
    assert (fa.buckets, fa.hash_seed) == (32, 9)
    assert open(tmp_path / "a", "rb").read() == open(tmp_path / "b", "rb").read()


# ---------------------------------------------------------------------------------------------
# round trips


def check_table(htable, path, expected):
    """expected: dict key -> value|None (tombstone)."""
    with htable.HTable(path) as t:
        assert len(t) == len(expected)
        for k, v in expected.items():
            st, got = t.lookup(k)
            if v is None:
                assert st == htable.Lookup.DELETED and got is None
            else:
                assert st == htable.Lookup.FOUND and got == v
        assert dict(t.items()) == expected


@pytest.mark.parametrize("form", ["list", "tuple", "bytearray", "memoryview", "packed"])
def test_round_trip_batch_forms(tmp_path, htable, form):
    items = make_items(7, 2000, klen=(0, 30), vlen=(0, 100))
    keys = [k for k, _ in items]
    vals = [v for _, v in items]
    conv = {"list": lambda x: list(x), "tuple": tuple,
            "bytearray": lambda x: [bytearray(y) for y in x],
            "memoryview": lambda x: [memoryview(y) for y in x],
            "packed": packed}[form]
    path = str(tmp_path / "t")
    st = htable.build_htable(path, conv(keys), conv(vals), buckets=128, sync=False)
    assert st.items == 2000
    check_table(htable, path, dict(items))
    with htable.HTable(path) as t:
        assert t.get_many(conv(keys)) == vals
        status, values = t.lookup_many(conv(keys))
        assert list(status) == [1] * len(keys) and values == vals


def test_round_trip_2d_numpy(tmp_path, htable):
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 256, size=(3000, 12), dtype=np.uint8)
    keys[:, 0] = np.arange(3000) % 256  # make rows distinct
    keys[:, 1] = np.arange(3000) // 256
    vals = rng.integers(0, 256, size=(3000, 20), dtype=np.uint8)
    path = str(tmp_path / "t")
    st = htable.build_htable(path, keys, vals, buckets=64, sync=False)
    assert st.items == 3000
    expected = {bytes(k): bytes(v) for k, v in zip(keys, vals)}
    check_table(htable, path, expected)
    with htable.HTable(path) as t:
        assert t.get_many(keys) == [bytes(v) for v in vals]
        # a non-contiguous view of the same keys
        wide = np.zeros((3000, 24), dtype=np.uint8)
        wide[:, ::2] = keys
        view = wide[:, ::2]
        assert not view.flags["C_CONTIGUOUS"]
        assert t.get_many(view) == [bytes(v) for v in vals]
        # zero-width rows: the empty key
        assert t.get_many(np.zeros((2, 0), dtype=np.uint8)) == [None, None]


def test_mixed_input_forms(tmp_path, htable):
    keys = [b"k%05d" % i for i in range(500)]
    vals = np.arange(500 * 4, dtype=np.uint32).view(np.uint8).reshape(500, 16)
    path = str(tmp_path / "t")
    htable.build_htable(path, packed(keys), vals, buckets=16, sync=False)
    check_table(htable, path, {k: bytes(v) for k, v in zip(keys, vals)})


def test_build_htable_with_deleted_mask(tmp_path, htable):
    keys = [b"a", b"b", b"c", b"d"]
    vals = [b"1", b"2", b"3", b"4"]
    path = str(tmp_path / "t")
    st = htable.build_htable(path, keys, vals, deleted=[False, True, False, True], buckets=4,
                             sync=False)
    assert st.tombstones == 2 and st.items == 4
    check_table(htable, path, {b"a": b"1", b"b": None, b"c": b"3", b"d": None})
    path2 = str(tmp_path / "t2")
    htable.build_htable(path2, keys, vals, deleted=np.array([1, 0, 0, 0], dtype=bool),
                        buckets=4, sync=False)
    check_table(htable, path2, {b"a": None, b"b": b"2", b"c": b"3", b"d": b"4"})


def test_build_htable_refuses_when_not_everything_fits(tmp_path, htable):
    keys = [b"%06d" % i for i in range(2000)]
    vals = [b"x" * 100 for _ in keys]
    path = str(tmp_path / "t")
    with pytest.raises(ValueError):
        htable.build_htable(path, keys, vals, buckets=4, sync=False)
    assert not os.path.exists(path)


def test_add_returns_false_when_full_and_nothing_is_lost(tmp_path, htable):
    path = str(tmp_path / "t")
    items = make_items(3, 10000, klen=(16, 16), vlen=(20, 20))  # encoded size 38 each
    taken = {}
    with htable.HTableBuilder(buckets=16, fill=0.9, sync=False) as b:
        cap = b.capacity
        assert abs(cap - 0.9 * 16 * 4080) <= 1
        refused = None
        for k, v in items:
            if b.add(k, v):
                taken[k] = v
                assert b.items == len(taken)
                assert b.data_bytes == 38 * len(taken)
            else:
                refused = k
                break
        assert refused is not None
        assert b.data_bytes <= cap < b.data_bytes + 38
        assert b.items == len(taken)
        b.finish(path)
    check_table(htable, path, taken)
    with htable.HTable(path) as t:
        assert t.get(refused) is None


def test_first_item_always_fits(tmp_path, htable, lsm):
    """htable.md: an empty builder accepts its first item whatever its size, so every valid
    item fits in some table; it then lives in the overflow area."""
    path = str(tmp_path / "first")
    big = bytes(range(256)) * (lsm.MAX_VALUE_BYTES // 256)
    with htable.HTableBuilder(buckets=2, sync=False) as b:
        assert b.capacity < len(big)
        assert b.add(b"huge", big) is True
        assert b.items == 1 and b.data_bytes > b.capacity
        assert b.add(b"next", b"x") is False  # the budget is now exceeded
        assert b.items == 1
        st = b.finish(path)
    assert st.overflow_items == 1
    with htable.HTable(path) as t:
        assert t.get(b"huge") == big and t.get(b"next") is None


def test_add_many_takes_a_prefix(tmp_path, htable):
    items = make_items(4, 5000, klen=(10, 10), vlen=(50, 50))
    keys = [k for k, _ in items]
    vals = [v for _, v in items]
    path = str(tmp_path / "t")
    with htable.HTableBuilder(buckets=16, sync=False) as b:
        n = b.add_many(keys, vals)
        assert 0 < n < len(keys)
        assert b.items == n
        assert b.data_bytes <= b.capacity < b.data_bytes + 62
        assert b.add_many(keys[n:], vals[n:]) == 0
        st = b.finish(path)
    assert st.items == n
    check_table(htable, path, dict(items[:n]))
    with htable.HTable(path) as t:
        assert t.get_many(keys[n:]) == [None] * (len(keys) - n)


def test_add_many_with_deleted(tmp_path, htable):
    keys = [b"k%d" % i for i in range(100)]
    vals = [b"v%d" % i for i in range(100)]
    deleted = [i % 3 == 0 for i in range(100)]
    path = str(tmp_path / "t")
    with htable.HTableBuilder(buckets=8, sync=False) as b:
        assert b.add_many(keys, vals, deleted=deleted) == 100
        st = b.finish(path)
    assert st.tombstones == 34
    check_table(htable, path, {k: (None if d else v) for k, v, d in zip(keys, vals, deleted)})


def test_later_duplicates_replace_earlier(tmp_path, htable):
    path = str(tmp_path / "t")
    with htable.HTableBuilder(buckets=8, sync=False) as b:
        b.add(b"a", b"1")
        b.add(b"a", b"2")
        b.add(b"b", b"1")
        b.delete(b"b")
        b.delete(b"c")
        b.add(b"c", b"back")
        b.add(b"d", b"x" * 500)
        b.add(b"d", b"")
        assert b.add_many([b"e", b"f", b"e"], [b"1", b"2", b"3"]) == 3
        st = b.finish(path)
    expected = {b"a": b"2", b"b": None, b"c": b"back", b"d": b"", b"e": b"3", b"f": b"2"}
    assert st.items == 6 and st.tombstones == 1
    assert st.data_bytes == sum(fl.encoded_size(k, v) for k, v in expected.items())
    check_table(htable, path, expected)
    fl.check_layout(fl.parse_file(path), expected=expected)


def test_tombstones_give_deleted(tmp_path, htable):
    path = str(tmp_path / "t")
    with htable.HTableBuilder(buckets=8, sync=False) as b:
        assert b.delete(b"gone")
        assert b.delete(b"")
        b.add(b"here", b"v")
        b.finish(path)
    with htable.HTable(path) as t:
        assert t.lookup(b"gone") == (htable.Lookup.DELETED, None)
        assert t.lookup(b"") == (htable.Lookup.DELETED, None)
        assert t.lookup(b"nothere") == (htable.Lookup.ABSENT, None)
        assert t.get(b"gone") is None and t.get(b"gone", b"d") == b"d"
        assert t.get(b"nothere", 5) == 5
        status, values = t.lookup_many([b"gone", b"here", b"nothere"])
        assert list(status) == [2, 1, 0] and values == [None, b"v", None]
        assert t.get_many([b"gone", b"here", b"nothere"]) == [None, b"v", None]
        assert sorted(t.items(), key=lambda kv: kv[0]) == [(b"", None), (b"gone", None),
                                                           (b"here", b"v")]
        rs = t.read_stats()
        assert rs["deleted"] == 6 and rs["found"] == 2


def test_get_many_order_and_duplicates(tmp_path, htable):
    items = make_items(8, 1000, vlen=(0, 40))
    path = str(tmp_path / "t")
    htable.build_htable(path, [k for k, _ in items], [v for _, v in items], buckets=32,
                        sync=False)
    rng = random.Random(9)
    d = dict(items)
    absent = [b"absent-%d" % i for i in range(200)]
    q = [k for k, _ in items] * 2 + absent
    rng.shuffle(q)
    with htable.HTable(path) as t:
        assert t.get_many(q) == [d.get(k) for k in q]
        status, values = t.lookup_many(q)
        assert isinstance(status, np.ndarray) and status.dtype == np.int8
        assert status.shape == (len(q),)
        assert list(status) == [1 if k in d else 0 for k in q]
        assert values == [d.get(k) for k in q]
        assert t.get_many([]) == []
        s0, v0 = t.lookup_many([])
        assert len(s0) == 0 and v0 == []
        # packed and 2-D query forms
        assert t.get_many(packed(q)) == [d.get(k) for k in q]


def test_items_yields_every_item_once(tmp_path, htable):
    items = make_items(10, 30000, klen=(1, 20), vlen=(0, 200))
    items = [(k, None if i % 11 == 0 else v) for i, (k, v) in enumerate(items)]
    items += [(b"big%d" % i, bytes([i]) * 9000) for i in range(5)]
    path = str(tmp_path / "t")
    taken = {}
    with htable.HTableBuilder(buckets=64, fill=1.0, sync=False) as b:
        for k, v in items[-5:] + items[:-5]:
            if not (b.add(k, v) if v is not None else b.delete(k)):
                break
            taken[k] = v
        st = b.finish(path)
    assert st.records > 0 and st.overflow_items >= 5
    with htable.HTable(path) as t:
        got = list(t.items())
        assert len(got) == len(taken) == len(t)
        assert len({k for k, _ in got}) == len(got)
        assert dict(got) == taken
        for k, v in got:
            assert isinstance(k, bytes) and (v is None or isinstance(v, bytes))
        # two scans in parallel are independent
        it1, it2 = t.items(), t.items()
        a = [next(it1) for _ in range(10)]
        b_ = list(it2)
        a += list(it1)
        assert dict(a) == taken and dict(b_) == taken


def test_info(tmp_path, htable):
    items = make_items(12, 3000, vlen=(0, 50))
    items += [(b"big", b"B" * 5000)]
    path = str(tmp_path / "t")
    st = htable.build_htable(path, [k for k, _ in items], [v for _, v in items],
                             deleted=[i % 5 == 0 and i < 3000 for i in range(len(items))], buckets=64,
                             hash_seed=1234, bloom_bits_per_key=10, sync=False)
    t_ = fl.parse_file(path)
    with htable.HTable(path) as t:
        info = t.info
        assert info["buckets"] == 64 and info["hash_seed"] == 1234
        assert info["bloom_bits_per_key"] == 10
        assert info["bloom_probes"] == t_.footer.bloom_probes
        assert info["items"] == len(items) == len(t)
        assert info["tombstones"] == st.tombstones == 600
        assert info["data_bytes"] == st.data_bytes == t_.footer.data_bytes
        assert info["file_bytes"] == os.path.getsize(path) == st.file_bytes
        assert info["overflow_items"] == 1
        assert info["records"] == t_.footer.records
        assert info["cached_records"] == t_.footer.cached_records
        assert info["filter_bytes"] >= len(t_.filter_bytes) > 0
        assert info["overflow_index_bytes"] > 0
    with htable.HTable(path, load_filters=False) as t:
        assert t.info["filter_bytes"] == 0


# ---------------------------------------------------------------------------------------------
# read statistics and open modes


def well_filled(tmp_path, htable, seed=13, buckets=128, fill=0.95):
    items = make_items(seed, 100000, klen=(8, 16), vlen=(10, 40))
    path = str(tmp_path / f"w{seed}")
    taken = {}
    with htable.HTableBuilder(buckets=buckets, fill=fill, sync=False) as b:
        n = b.add_many([k for k, _ in items], [v for _, v in items])
        st = b.finish(path)
    taken = dict(items[:n])
    return path, st, taken


def test_read_stats_counting(tmp_path, htable):
    path, st, taken = well_filled(tmp_path, htable)
    keys = list(taken)
    absent = [b"absent-%08d" % i for i in range(20000)]
    with htable.HTable(path) as t:
        assert t.read_stats() == dict.fromkeys(
            ["lookups", "found", "deleted", "bucket_reads", "overflow_reads",
             "filter_negatives", "filter_false_positives"], 0)
        assert t.get_many(keys) == list(taken.values())
        rs = t.read_stats()
        assert rs["lookups"] == len(keys) and rs["found"] == len(keys)
        assert rs["deleted"] == 0 and rs["filter_negatives"] == 0
        assert rs["filter_false_positives"] == 0
        assert len(keys) <= rs["bucket_reads"] <= 1.011 * len(keys)
        assert rs["bucket_reads"] / len(keys) == pytest.approx(st.expected_reads, abs=1e-9)
        t.reset_stats()
        assert t.read_stats()["lookups"] == 0 and t.read_stats()["bucket_reads"] == 0
        assert t.get_many(absent) == [None] * len(absent)
        rs = t.read_stats()
        assert rs["lookups"] == len(absent) and rs["found"] == 0
        assert rs["filter_negatives"] + rs["filter_false_positives"] == len(absent)
        assert rs["filter_negatives"] >= 0.99 * len(absent)
        assert rs["bucket_reads"] >= rs["filter_false_positives"]
        assert rs["bucket_reads"] <= 3 * rs["filter_false_positives"]
        t.reset_stats()
        t.get(keys[0])
        t.lookup(absent[0])
        t.lookup_many(keys[:10])
        rs = t.read_stats()
        assert rs["lookups"] == 12 and rs["found"] == 11


def test_filter_false_positives_match_python_model(tmp_path, htable):
    path, st, taken = well_filled(tmp_path, htable, seed=14, buckets=64)
    t_ = fl.parse_file(path)
    absent = [b"nope-%d" % i for i in range(5000)]
    model_fp = sum(t_.filter_maybe(k) for k in absent)
    with htable.HTable(path) as t:
        t.get_many(absent)
        rs = t.read_stats()
        assert rs["filter_false_positives"] == model_fp
        assert rs["filter_negatives"] == len(absent) - model_fp


@pytest.mark.parametrize("load_filters,use_mmap", [(False, True), (True, False), (False, False)])
def test_open_modes_give_identical_answers(tmp_path, htable, load_filters, use_mmap):
    path, st, taken = well_filled(tmp_path, htable, seed=15, buckets=64)
    keys = list(taken)
    q = keys + [b"no-%d" % i for i in range(3000)]
    random.Random(1).shuffle(q)
    with htable.HTable(path) as ref:
        want_s, want_v = ref.lookup_many(q)
        want_items = sorted(ref.items())
    with htable.HTable(path, load_filters=load_filters, use_mmap=use_mmap) as t:
        s, v = t.lookup_many(q)
        assert np.array_equal(s, want_s) and v == want_v
        assert [t.get(k) for k in q[:500]] == want_v[:500]
        assert sorted(t.items()) == want_items
        rs = t.read_stats()
        if not load_filters:
            assert rs["filter_negatives"] == 0
            assert t.info["filter_bytes"] == 0
            # every absent key now reads at least its home bucket
            assert rs["bucket_reads"] >= len(q)


@pytest.mark.parametrize("cached", [0, 1, 3])
def test_fewer_cached_records_still_correct(tmp_path, htable, cached):
    path, st, taken = well_filled(tmp_path, htable, seed=16, buckets=128, fill=0.98)
    t_ = fl.parse_file(path)
    assert t_.footer.records > 3 and t_.footer.cached_records > cached
    keys = list(taken)
    with htable.HTable(path) as ref:
        ref.get_many(keys)
        base = ref.read_stats()["bucket_reads"]
    with htable.HTable(path, max_cached_records=cached) as t:
        assert t.info["cached_records"] == min(cached, t_.footer.cached_records)
        assert t.get_many(keys) == list(taken.values())
        reads = t.read_stats()["bucket_reads"]
        flows = [r.flow for r in t_.records]
        assert reads == len(keys) + sum(flows[t.info["cached_records"]:])
        assert reads > base  # fewer records in memory cost extra bucket reads


def test_bits_per_key_zero_no_filters(tmp_path, htable):
    items = make_items(17, 2000)
    path = str(tmp_path / "t")
    htable.build_htable(path, [k for k, _ in items], [v for _, v in items], buckets=32,
                        bloom_bits_per_key=0, sync=False)
    absent = [b"zz-%d" % i for i in range(1000)]
    with htable.HTable(path) as t:
        assert t.info["bloom_bits_per_key"] == 0 and t.info["bloom_probes"] == 0
        assert t.get_many([k for k, _ in items]) == [v for _, v in items]
        t.reset_stats()
        assert t.get_many(absent) == [None] * 1000
        rs = t.read_stats()
        assert rs["filter_negatives"] == 0
        assert rs["bucket_reads"] >= 1000


def test_reopen_many_times_and_close_idempotent(tmp_path, htable):
    path, st, taken = well_filled(tmp_path, htable, seed=18, buckets=16)
    k = next(iter(taken))
    for _ in range(50):
        t = htable.HTable(path)
        assert t.get(k) == taken[k]
        t.close()
        t.close()


def test_thread_safety_concurrent_get_many(tmp_path, htable):
    path, st, taken = well_filled(tmp_path, htable, seed=19, buckets=256)
    keys = list(taken)
    absent = [b"t-absent-%d" % i for i in range(2000)]
    errors = []
    with htable.HTable(path, max_cached_records=None) as t:
        def worker(i):
            rng = random.Random(i)
            try:
                for _ in range(15):
                    q = rng.sample(keys, 3000) + rng.sample(absent, 300)
                    rng.shuffle(q)
                    got = t.get_many(q)
                    want = [taken.get(k) for k in q]
                    if got != want:
                        errors.append(f"thread {i}: wrong answers")
                        return
                    if i % 2 and t.get(q[0]) != taken.get(q[0]):
                        errors.append(f"thread {i}: wrong single answer")
                        return
            except Exception as e:  # noqa: BLE001
                errors.append(f"thread {i}: {e!r}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        rs = t.read_stats()
        assert rs["lookups"] == 6 * 15 * 3300 + 3 * 15
    assert not any(th.is_alive() for th in threads)


def test_thread_safety_pread(tmp_path, htable):
    path, st, taken = well_filled(tmp_path, htable, seed=20, buckets=64)
    keys = list(taken)
    results = {}
    with htable.HTable(path, use_mmap=False, load_filters=False) as t:
        def worker(i):
            q = keys[i::4]
            results[i] = t.get_many(q) == [taken[k] for k in q]

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert results == {0: True, 1: True, 2: True, 3: True}


def test_sync_true_writes_durably(tmp_path, htable):
    path = str(tmp_path / "durable")
    st = htable.build_htable(path, [b"a"], [b"b"], buckets=4)  # sync defaults to True
    assert os.path.exists(path) and not os.path.exists(path + ".tmp")
    assert st.file_bytes == os.path.getsize(path)
    with htable.HTable(path) as t:
        assert t.get(b"a") == b"b"


def test_finish_leaves_no_tmp_and_replaces(tmp_path, htable):
    path = str(tmp_path / "t")
    htable.build_htable(path, [b"a"], [b"1"], buckets=4, sync=False)
    htable.build_htable(path, [b"a"], [b"2"], buckets=4, sync=False)
    assert sorted(os.listdir(tmp_path)) == ["t"]
    with htable.HTable(path) as t:
        assert t.get(b"a") == b"2"


def test_path_like_objects(tmp_path, htable):
    p = tmp_path / "pathlike"
    htable.build_htable(p, [b"a"], [b"1"], buckets=4, sync=False)
    with htable.HTable(p) as t:
        assert t.get(b"a") == b"1"


@pytest.mark.parametrize("read", ["get", "lookup_many", "items"])
@isolated()
def test_mapped_table_cut_short_is_an_error_not_a_crash(tmp_path, htable, lsm, read):
    """A table opened with use_mmap=True whose file is cut short while mapped: touching the lost
    pages would raise SIGBUS and kill the interpreter; the read fails with CorruptionError
    instead (native/src/mapguard.c), and the process goes on."""
    items = make_items(11, 2000, klen=(4, 16), vlen=(0, 100))
    path = str(tmp_path / "t")
    htable.build_htable(path, [k for k, _ in items], [v for _, v in items], buckets=64)
    with htable.HTable(path, use_mmap=True) as t:
        assert t.get(items[0][0]) == items[0][1]
        os.truncate(path, 0)
        with pytest.raises(lsm.CorruptionError, match="cut short"):
            if read == "get":
                for k, _ in items:
                    t.get(k)
            elif read == "lookup_many":
                t.lookup_many([k for k, _ in items])
            else:
                list(t.items())


# ---- tables in an extent of a larger file (the store's segment files build on this) ----

def _fill_builder(htable, items, **opts):
    b = htable.HTableBuilder(sync=False, **opts)
    for k, v in items:
        assert b.add(k, v) if v is not None else b.delete(k)
    return b


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "pread"])
def test_tables_in_extents_of_one_file(tmp_path, htable, lsm, use_mmap):
    """Two tables written into one file, after and between other bytes, read back whole: their
    lookups, batches and scans see only their own items, and nothing around them changes."""
    path = str(tmp_path / "segment")
    junk = random.Random(3).randbytes(3 * 4096)
    with open(path, "wb") as f:
        f.write(junk)
    a = make_items(20, 3000, klen=(1, 20), vlen=(0, 120))
    a = [(k, None if i % 13 == 0 else v) for i, (k, v) in enumerate(a)]
    a += [(b"big%d" % i, bytes([i]) * 9000) for i in range(4)]  # overflow records too
    b_items = make_items(21, 500, klen=(1, 20), vlen=(0, 60), prefix=b"b:")
    with _fill_builder(htable, a[-4:] + a[:-4], buckets=64, fill=1.0) as b:
        st_a = b.finish_at(path, 4096, 1 << 30)
    assert st_a.overflow_items >= 4
    at_b = 4096 * (1 + (4096 + st_a.file_bytes + 4095) // 4096)  # a page of gap after a
    with open(path, "r+b") as f:  # bytes in the gap must stay as they are
        f.seek(4096 + st_a.file_bytes)
        f.write(b"\xAB" * (at_b - 4096 - st_a.file_bytes))
    with _fill_builder(htable, b_items, buckets=16) as b:
        st_b = b.finish_at(path, at_b, st_b_cap := 16 * 4096 * 4)
    assert st_b.file_bytes <= st_b_cap
    data = open(path, "rb").read()
    assert data[:4096] == junk[:4096]
    assert data[4096 + st_a.file_bytes:at_b] == b"\xAB" * (at_b - 4096 - st_a.file_bytes)
    assert len(data) == at_b + st_b.file_bytes
    want_a, want_b = dict(a), dict(b_items)
    with htable.HTable(path, offset=4096, length=st_a.file_bytes, use_mmap=use_mmap) as t, \
            htable.HTable(path, offset=at_b, length=st_b.file_bytes, use_mmap=use_mmap) as u:
        assert t.info["file_bytes"] == st_a.file_bytes and len(t) == len(want_a)
        assert dict(t.items()) == want_a and dict(u.items()) == want_b
        keys = list(want_a) + list(want_b)
        assert t.get_many(keys) == [want_a.get(k) for k in keys]
        assert u.get_many(keys) == [want_b.get(k) for k in keys]
        for k in list(want_a)[:200]:
            assert t.lookup(k) == ((lsm.Lookup.FOUND, want_a[k]) if want_a[k] is not None
                                   else (lsm.Lookup.DELETED, None))
            assert u.lookup(k) == (lsm.Lookup.ABSENT, None)


def test_a_table_larger_than_its_extent_is_refused_before_anything_is_written(tmp_path,
                                                                              htable):
    """max_bytes too small: ValueError with the size needed, the file untouched, and the same
    builder then finishes into a large enough extent."""
    path = str(tmp_path / "segment")
    with open(path, "wb") as f:
        f.write(b"\x01" * 8192)
    items = make_items(22, 400, vlen=(0, 50))
    with _fill_builder(htable, items, buckets=8) as b:
        with pytest.raises(ValueError, match=r"needs (\d+) bytes, over max_bytes=4096") as e:
            b.finish_at(path, 4096, 4096)
        need = int(re.search(r"needs (\d+) bytes", str(e.value)).group(1))
        assert open(path, "rb").read() == b"\x01" * 8192
        st = b.finish_at(path, 4096, need)  # exactly enough
    assert st.file_bytes == need
    with htable.HTable(path, offset=4096, length=need) as t:
        assert dict(t.items()) == dict(items)


def test_extent_arguments_are_checked(tmp_path, htable, lsm):
    path = str(tmp_path / "segment")
    open(path, "wb").close()
    items = make_items(23, 50)
    with _fill_builder(htable, items, buckets=4) as b:
        with pytest.raises(ValueError, match="multiple of 4096"):
            b.finish_at(path, 100, 1 << 20)
        with pytest.raises(TypeError):
            b.finish_at(path, "0", 1 << 20)
        with pytest.raises(FileNotFoundError):
            b.finish_at(str(tmp_path / "missing"), 0, 1 << 20)
        st = b.finish_at(path, 0, 1 << 20)
    with pytest.raises(ValueError, match="multiple of 4096"):
        htable.HTable(path, offset=5, length=st.file_bytes)
    with pytest.raises(TypeError, match="offset and length"):
        htable.HTable(path, offset=0)
    with pytest.raises(lsm.CorruptionError, match="holds"):  # past the end of the file
        htable.HTable(path, offset=4096, length=st.file_bytes)
    with pytest.raises(lsm.CorruptionError):  # a wrong length finds no footer there
        htable.HTable(path, offset=0, length=st.file_bytes - 4096)
    with htable.HTable(path, offset=0, length=st.file_bytes) as t:
        assert dict(t.items()) == dict(items)
