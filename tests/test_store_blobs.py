"""Value logs (docs/format/vlog.md, docs/design.md "Value logs"): values of at least
`min_blob_size` bytes kept apart from the tables in `NNNNNNNN.vlog` files, the log, memtables
and tables holding 20-byte pointers in their place.

Every test compares the store against a dict model through every read path (get, get_many in
small batches and streamed ones, items()); the files are checked independently with formatlib
(tables, version-2 trailers, pointer items) and its value-log reader; value logs come and go
(rotated at 64 KiB here through `ltr_test_blob_file_bytes`) while nothing referenced goes;
crashes, power cuts (test_store_powercut.py holds those runs), hand-made crash images, damaged
records and injected faults leave a store that opens with its acknowledged writes.
"""

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pytest

import formatlib as fl
import lsmtrie
from forked import isolated
from lsmtrie import _binding
from lsmtrie.htable import HTable
from test_store_crash import FAST, _env, crash_trials
from test_store_faults import run_with_fault

lib = _binding.lib

MAX_VALUE = lib.LTR_MAX_VALUE  # 16 MiB
MIN = 4096  # the default min_blob_size
TINY = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=3000)
GROWING = dict(table_buckets=16, node_tables=2, levels=0, memtable_bytes=3000)


def val(key, n, gen=0):
    """n deterministic bytes for key's generation gen (different keys and generations differ)."""
    h = hashlib.blake2b(bytes(key) + b"/%d" % gen, digest_size=32).digest()
    return (h * (n // 32 + 1))[:n]


def record_size(klen, vlen):
    return 4 + len(fl.varint(klen)) + len(fl.varint(vlen)) + klen + vlen


def files(path, ext):
    return sorted(f for f in os.listdir(path) if f.endswith(ext))


def vlogs(path):
    return files(path, ".vlog")


def vlog_numbers(path):
    return {int(f.split(".")[0]) for f in vlogs(path)}


def tick_until_gone(db, path, number, why):
    """Writes and flushes a tick at a time (checkpoints go on meanwhile) until value log
    `number` is gone: at most 400 rounds, some 8 s at least (a removed file's grace period, about
    1 s, applies while a read-only open holds the store). Returns the last tick's value."""
    for i in range(400):
        db.put(b"tick", b"%d" % i)
        db.flush()
        if number not in vlog_numbers(path):
            return b"%d" % i
        time.sleep(0.02)
    raise AssertionError(f"value log {number} {why}: {vlogs(path)}")


@pytest.fixture
def small_vlogs():
    """Value logs closed at 64 KiB (instead of 256 MiB), restored afterwards."""
    lib.ltr_test_blob_file_bytes(1 << 16)
    yield
    lib.ltr_test_blob_file_bytes(0)


def check(db, model, absent=(b"absent-1", b"absent-2")):
    """Every read path against the model: single gets, get_many (one call), items()."""
    for k, v in model.items():
        got = db.get(k)
        assert got == v, f"get({k[:20]!r}): {None if got is None else len(got)} bytes, want {len(v)}"
    for k in absent:
        assert db.get(k) is None
    keys = list(model) + list(absent)
    got = db.get_many(keys)
    wrong = [k[:20] for k, g in zip(keys, got) if g != model.get(k)]
    assert not wrong, f"get_many: {len(wrong)} of {len(keys)} wrong, e.g. {wrong[:3]}"
    items = list(db.items())
    scanned = dict(items)
    assert len(items) == len(scanned), "items() gave a key twice"
    missing = [k[:20] for k in model if k not in scanned]
    extra = [k[:20] for k in scanned if k not in model]
    bad = [k[:20] for k in model if k in scanned and scanned[k] != model[k]]
    assert not (missing or extra or bad), f"items(): missing {missing[:3]}, extra {extra[:3]}, wrong {bad[:3]}"


def live_tables(path):
    """The table files the manifest names now (its ADD_TABLE and REMOVE_TABLE replayed)."""
    with open(os.path.join(path, "CURRENT")) as f:
        name = f.read().strip()
    with open(os.path.join(path, name), "rb") as f:
        _, edits, _ = fl.read_manifest_ops(f.read())
    live = set()
    for ops in edits:
        for op, *args in ops:
            if op == fl.OP_ADD_TABLE:
                live.add(args[1])
            elif op == fl.OP_REMOVE_TABLE:
                live.discard(args[1])
    return sorted(live)


def check_files(path, model=None, min_blob=MIN, layout=True):
    """The store's files read independently (the store closed): every value log's header and
    records, every live table's layout (formatlib.check_layout: version 1 without pointers,
    version 2 listing exactly the value logs its pointers use, with their value bytes), and
    every pointer leading to a whole record of its key and length. With model (and the store
    flushed), each large value of the model is a pointed record and no small one is. Returns
    (tables, pointers, the value-log numbers the live tables list)."""
    logs = {}
    for name in vlogs(path):
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        recs, end = fl.read_vlog(data)
        logs[int(name.split(".")[0])] = (recs, end, len(data))
    pointed, inline, listed, tables, dangling = set(), {}, set(), [], set()
    for number in live_tables(path):
        t = fl.parse_file(os.path.join(path, "%08d.ht" % number))
        if layout:
            fl.check_layout(t)
        tables.append(t)
        listed |= {f for f, _ in t.blob_refs}
        for k, v, _ in t.all_items():
            if isinstance(v, fl.Pointer) and v.file not in logs:
                # the value-log GC removes a value log it moved while tables still list it: every
                # pointer left there is shadowed, which the model's check below proves (each
                # current large value resolves through another pointer)
                assert model is not None, f"table {number}: a pointer into missing value log {v.file}"
                dangling.add(k)
                continue
            if isinstance(v, fl.Pointer):
                recs = logs[v.file][0]
                assert v.offset in recs, f"table {number}: no record at {v.file}:{v.offset}"
                rk, rv = recs[v.offset]
                assert rk == k and len(rv) == v.vlen, f"table {number}: the record of {k[:20]!r} differs"
                if min_blob:
                    assert v.vlen >= min_blob
                pointed.add((k, rv))
            elif v is not None:
                inline.setdefault(k, set()).add(v)
                if min_blob:
                    assert len(v) < min_blob, f"table {number}: an inline value of {len(v)} bytes"
    if model is not None:
        for k, v in model.items():
            if min_blob and len(v) >= min_blob:
                assert (k, v) in pointed, f"{k[:20]!r}: no pointer to its value"
            else:
                assert v in inline.get(k, ()), f"{k[:20]!r}: its value is not in a table"
        # a dangling pointer's key is deleted or has its current value elsewhere (checked above)
        assert all(k not in model or (k, model[k]) in pointed or model[k] in inline.get(k, ())
                   for k in dangling)
    n = sum(1 for t in tables for _, v, _ in t.all_items() if isinstance(v, fl.Pointer))
    return tables, n, listed


# ---------------------------------------------------------------------------------------------
# 1. round trips


def sizes_at_the_limits(min_blob):
    s = [0, 1, 31, 32, 100, 4061, 4062, 4095, 4096, 4097, 9000, 65536, 1 << 20]
    if min_blob:
        s += [min_blob - 1, min_blob, min_blob + 1]
    return sorted(set(s))


def write_everything(db, model, min_blob, rng):
    """Puts at the limits, an empty key and the longest keys with large values, put_many
    batches mixing small and large values, write_batch mixing them with deletes, deletes and
    overwrites both ways."""
    for n in sizes_at_the_limits(min_blob):
        k = b"%016d" % n  # 16-byte keys: 4061 is the largest value that fits a bucket
        db.put(k, val(k, n))
        model[k] = val(k, n)
    db.put(b"", val(b"", 5000))
    model[b""] = val(b"", 5000)
    for i, n in enumerate([MIN, 70000, 100]):
        k = bytes([65 + i]) * lib.LTR_MAX_KEY
        db.put(k, val(k, n))
        model[k] = val(k, n)
    for b in range(3):
        keys = [b"many-%d-%d" % (b, i) for i in range(40)]
        vals = [val(k, rng.choice([0, 10, 4000, MIN, 5000, 20000])) for k in keys]
        db.put_many(keys, vals)
        model.update(zip(keys, vals))
    with db.write_batch() as wb:
        for i in range(30):
            k = b"batch-%d" % i
            v = val(k, rng.choice([50, MIN + 7, 12000]))
            wb.put(k, v)
            model[k] = v
        for k in [b"many-0-%d" % i for i in range(0, 40, 3)]:
            wb.delete(k)
            model.pop(k, None)
    for i in range(0, 40, 4):  # overwrites: large over small, small over large
        k = b"many-1-%d" % i
        v = val(k, 30 if len(model.get(k, b"")) >= MIN else 6000, gen=1)
        db.put(k, v)
        model[k] = v
    for k in [b"many-2-%d" % i for i in range(0, 40, 5)]:
        db.delete(k)
        model.pop(k, None)


@pytest.mark.parametrize("min_blob", [None, 0, 100])
@pytest.mark.parametrize("geometry", ["fixed", "growing"])
def test_round_trips_at_the_limits(tmp_path, min_blob, geometry):
    """Values at every limit through every write and read path, in the memtable, after
    flushes and compactions, after reopens (with the same threshold, read-only and with
    direct_io), the files checked independently."""
    path = str(tmp_path / "db")
    opts = dict(TINY if geometry == "fixed" else GROWING)
    mb = MIN if min_blob is None else min_blob
    rng = random.Random(5)
    model = {}
    with lsmtrie.open(path, min_blob_size=min_blob, **opts) as db:
        write_everything(db, model, mb, rng)
        check(db, model)  # (mostly in memtables)
        db.flush()
        check(db, model)
        db.verify()
        for r in range(8):  # compactions: rounds of small writes and more large overwrites
            keys = [b"round-%d-%d" % (r, i) for i in range(60)]
            vals = [val(k, rng.choice([20, 200, 5000])) for k in keys]
            db.put_many(keys, vals)
            model.update(zip(keys, vals))
            k = b"%016d" % 9000
            db.put(k, val(k, 9000, gen=r + 2))
            model[k] = val(k, 9000, gen=r + 2)
            db.flush()
        st = db.stats()
        assert st["compactions"] > 0, st
        check(db, model)
        assert db.verify()["items"] >= len(model)
        if mb:
            assert st["blob_files"] >= 1 and st["bytes_written_by_kind"]["blobs"] > 0
        else:
            assert st["blob_files"] == 0 and st["bytes_written_by_kind"]["blobs"] == 0
    if mb == 0:
        assert vlogs(path) == []
    tables, pointers, _ = check_files(path, model, min_blob=mb)
    assert (pointers > 0) == (mb > 0)
    assert any(t.footer.format_version == 2 for t in tables) == (mb > 0)
    with lsmtrie.open(path, min_blob_size=min_blob) as db:
        check(db, model)
    with lsmtrie.open(path, read_only=True) as db:
        check(db, model)
        db.verify()
    with lsmtrie.open(path, direct_io=True, min_blob_size=min_blob) as db:
        check(db, model)
        db.verify()


def test_the_largest_values(tmp_path):
    """16 MiB values (LTR_MAX_VALUE) with the longest and the empty key, in value logs and
    (min_blob_size=0) in the tables; one byte more is refused; the first get's 4 KiB buffer is
    far too small for them."""
    for mb in (None, 0):
        path = str(tmp_path / ("db-%s" % mb))
        big = {b"": val(b"", MAX_VALUE), b"K" * lib.LTR_MAX_KEY: val(b"K", MAX_VALUE, 1),
               b"small": b"s"}
        with lsmtrie.open(path, min_blob_size=mb, **TINY) as db:
            for k, v in big.items():
                db.put(k, v)
            before = db.stats()["blob_bytes"]
            with pytest.raises(lsmtrie.ItemTooLargeError):
                db.put(b"over", b"x" * (MAX_VALUE + 1))
            with pytest.raises(lsmtrie.ItemTooLargeError):  # refused before any value is written
                db.put_many([b"fine", b"K" * (lib.LTR_MAX_KEY + 1)], [b"f" * 5000, b"v" * 5000])
            assert db.stats()["blob_bytes"] == before and db.get(b"fine") is None
            assert db.get(b"") == big[b""]
            db.flush()
            check(db, big)
        with lsmtrie.open(path, read_only=True) as db:
            check(db, big)
        if mb is None:
            assert sum(os.path.getsize(os.path.join(path, f)) for f in vlogs(path)) >= 2 * MAX_VALUE
            check_files(path, big)


def test_many_keys_in_one_get_many(tmp_path):
    """get_many of more than 4,096 keys (two threads, values streamed) and of 600 (the threaded
    batch), large and small values, in memtables and tables, and with direct_io."""
    path = str(tmp_path / "db")
    rng = random.Random(9)
    model = {}
    keys = [b"g%05d" % i for i in range(4600)]
    vals = [val(k, 5000 if i % 15 == 0 else rng.randint(0, 40)) for i, k in enumerate(keys)]
    absent = [b"none%d" % i for i in range(200)]
    with lsmtrie.open(path, table_buckets=64, node_tables=2, levels=2) as db:
        db.put_many(keys[:2300], vals[:2300])
        db.flush()
        db.put_many(keys[2300:], vals[2300:])  # (partly in memtables)
        model.update(zip(keys, vals))
        ask = keys + absent
        rng.shuffle(ask)
        assert db.get_many(ask) == [model.get(k) for k in ask]
        assert db.get_many(ask[:600]) == [model.get(k) for k in ask[:600]]
    with lsmtrie.open(path, direct_io=True) as db:
        assert db.get_many(ask) == [model.get(k) for k in ask]
        assert db.get_many(ask[:600]) == [model.get(k) for k in ask[:600]]


@pytest.fixture
def compaction_window():
    yield lib.ltr_test_compaction_window
    lib.ltr_test_compaction_window(-1)


@pytest.mark.parametrize("window", [1, 4, 0])
def test_compactions_move_pointers(tmp_path, compaction_window, window):
    """Compactions streamed a few buckets at a time (or staged whole, 0) carry pointers and
    list in each output table exactly the value logs of its own pointers (checked by
    formatlib), including tables a window spills into."""
    compaction_window(window)
    path = str(tmp_path / "db")
    rng = random.Random(window)
    model = {}
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=3, memtable_bytes=4000) as db:
        for r in range(30):
            keys = [b"cw-%d" % rng.randrange(400) for _ in range(40)]
            vals = [val(k, rng.choice([8, 300, 4096, 6000]), gen=r) for k in keys]
            db.put_many(keys, vals)
            model.update(zip(keys, vals))
            for k in [b"cw-%d" % rng.randrange(400) for _ in range(5)]:
                db.delete(k)
                model.pop(k, None)
        db.flush()
        assert db.stats()["compactions"] > 5
        check(db, model)
    check_files(path, model)


def test_last_level_garbage_collection_and_clusters(tmp_path):
    """levels=2 with BloomClusters in a metadata directory and a low gc_threshold: garbage
    collections of last-level nodes rewrite their pointers (and the references)."""
    path, meta = str(tmp_path / "db"), str(tmp_path / "meta")
    rng = random.Random(4)
    model = {}
    opts = dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000, gc_threshold=0.2,
                metadata_path=meta)
    with lsmtrie.open(path, **opts) as db:
        for r in range(40):
            keys = [b"gc-%d" % rng.randrange(150) for _ in range(25)]
            vals = [val(k, rng.choice([20, 5000]), gen=r) for k in keys]
            db.put_many(keys, vals)
            model.update(zip(keys, vals))
        db.flush()
        st = db.stats()
        assert st["gcs"] > 0 and st["tables_per_level"][-1] > 0, st
        check(db, model)
        db.verify()
    check_files(path, model)
    with lsmtrie.open(path, metadata_path=meta, read_only=True) as db:
        check(db, model)


def test_bulk_mode_keeps_large_values_in_value_logs(tmp_path):
    """bulk=True (no log): large values still go to value logs; flushed, they survive a
    reopen; the value logs of writes never flushed are removed at the next open."""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, bulk=True, **TINY) as db:
        for i in range(60):
            k = b"bulk-%d" % i
            model[k] = val(k, 5000 if i % 2 else 40)
        db.put_many(list(model), list(model.values()))
        db.flush()
        check(db, model)
    with lsmtrie.open(path) as db:
        check(db, model)
    check_files(path, model)


def test_value_logs_a_crash_left_half_started(tmp_path):
    """Value logs with a short or damaged header (a crash while one was started) and an empty
    one, numbered above everything: the store opens, reads and writes as before, numbers new
    files past them, and a writer's open removes them."""
    path = str(tmp_path / "db")
    model = {b"h%d" % i: val(b"h%d" % i, 5000) for i in range(10)}
    with lsmtrie.open(path, **TINY) as db:
        db.put_many(list(model), list(model.values()))
    top = max(int(f.split(".")[0]) for f in os.listdir(path) if f[:8].isdigit())
    before = vlog_numbers(path)
    bad = {top + 3: b"", top + 5: fl.vlog_header()[:9],
           top + 7: b"LTRVLOG1\x01\x00\x00\x00\x00\x00\x00\x00" + fl.vlog_record(b"h1", b"x" * 40)}
    for n, data in bad.items():
        with open(os.path.join(path, "%08d.vlog" % n), "wb") as f:
            f.write(data)
    with lsmtrie.open(path, read_only=True) as db:
        check(db, model)
    with lsmtrie.open(path, **TINY) as db:
        check(db, model)
        db.put(b"new", val(b"new", 9000))
        model[b"new"] = val(b"new", 9000)
        db.flush()
        check(db, model)
    new = vlog_numbers(path) - set(bad) - before
    assert new and min(new) > top + 7, vlogs(path)
    with lsmtrie.open(path) as db:
        check(db, model)
    assert not set(bad) & vlog_numbers(path), vlogs(path)
    check_files(path, model)


def test_readers_and_writers_on_threads(tmp_path, small_vlogs):
    """Readers (get, get_many, items) on two threads while a writer overwrites large values,
    value logs rotate and go, and tables are flushed and compacted: each answer is one of the
    values the key ever had, and no read fails."""
    import threading
    path = str(tmp_path / "db")
    keys = [b"t-%d" % i for i in range(40)]
    gens = 60
    ever = {k: {val(k, 5000 + (g % 3) * 1000, gen=g) for g in range(gens)} for k in keys}
    errors = []
    done = threading.Event()
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000,
                      checkpoint_interval=0.005) as db:
        db.put_many(keys, [val(k, 5000, gen=0) for k in keys])

        def reader(which):
            try:
                n = 0
                while not done.is_set() or n < 3:
                    n += 1
                    if which == 0:
                        for k in keys:
                            assert db.get(k) in ever[k]
                        got = db.get_many(keys)
                        assert all(g in ever[k] for k, g in zip(keys, got))
                    else:
                        items = dict(db.items())
                        assert set(items) == set(keys)
                        assert all(v in ever[k] for k, v in items.items())
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(w,)) for w in (0, 1)]
        for t in threads:
            t.start()
        try:
            for g in range(1, gens):
                db.put_many(keys, [val(k, 5000 + (g % 3) * 1000, gen=g) for k in keys])
                if g % 5 == 0:
                    db.flush()
        finally:
            done.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]
        final = {k: val(k, 5000 + ((gens - 1) % 3) * 1000, gen=gens - 1) for k in keys}
        check(db, final)
        assert db.stats()["compactions"] > 0


# ---------------------------------------------------------------------------------------------
# 2. the threshold


def test_min_blob_size_zero_writes_no_value_log_and_modes_mix(tmp_path):
    """min_blob_size=0 keeps every value in the tables (no .vlog); a store written with value
    logs reads whole with 0, and goes on taking writes (inline), and the reverse."""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, min_blob_size=0, **TINY) as db:
        for i in range(40):
            k = b"a%d" % i
            model[k] = val(k, [10, 5000, 70000][i % 3])
            db.put(k, model[k])
        db.flush()
        check(db, model)
        assert db.stats()["blob_files"] == 0
    assert vlogs(path) == []
    check_files(path, model, min_blob=0)
    with lsmtrie.open(path, **TINY) as db:  # default: 4096
        check(db, model)
        for i in range(40):
            k = b"b%d" % i
            model[k] = val(k, [10, 5000, 70000][i % 3])
            db.put(k, model[k])
        db.put(b"a1", val(b"a1", 6000, 1))  # a pointer shadows an inline value
        model[b"a1"] = val(b"a1", 6000, 1)
        db.flush()
        check(db, model)
    assert vlogs(path)
    check_files(path, min_blob=0)
    with lsmtrie.open(path, min_blob_size=0, **TINY) as db:  # pointers read with 0
        check(db, model)
        db.put(b"b1", val(b"b1", 7000, 2))  # an inline value shadows a pointer
        model[b"b1"] = val(b"b1", 7000, 2)
        db.flush()
        check(db, model)
        db.verify()
    with lsmtrie.open(path, min_blob_size=0, read_only=True) as db:
        check(db, model)


@pytest.mark.parametrize("threshold", [32, 100])
def test_custom_thresholds(tmp_path, threshold):
    """Values of threshold bytes or more go to value logs, one byte less stays inline."""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, min_blob_size=threshold, **TINY) as db:
        db.put(b"below", val(b"below", threshold - 1))
        assert db.stats()["bytes_written_by_kind"]["blobs"] == 0
        db.put(b"at", val(b"at", threshold))
        assert db.stats()["bytes_written_by_kind"]["blobs"] == record_size(2, threshold)
        model = {b"below": val(b"below", threshold - 1), b"at": val(b"at", threshold)}
        for i in range(300):
            k = b"c%d" % i
            model[k] = val(k, threshold - 1 + i % 3)
            db.put(k, model[k])
        db.flush()
        check(db, model)
    check_files(path, model, min_blob=threshold)


def test_invalid_thresholds(tmp_path):
    path = str(tmp_path / "db")
    for bad in (True, False, "4096", 4096.0, b"1"):
        with pytest.raises(TypeError, match="min_blob_size"):
            lsmtrie.open(path, min_blob_size=bad)
    for bad in (-1, -4096, 2**32, 2**40):
        with pytest.raises(ValueError, match="min_blob_size"):
            lsmtrie.open(path, min_blob_size=bad)
    for bad in (1, 16, 31, MAX_VALUE + 1, 2**32 - 1):
        with pytest.raises(lsmtrie.InvalidArgumentError) as e:
            lsmtrie.open(path, min_blob_size=bad)
        assert isinstance(e.value, ValueError)
        assert "min_blob_size" in str(e.value) and "32" in str(e.value) and str(bad) in str(e.value)
    assert not os.path.exists(path) or not files(path, ".ht")
    for good in (32, MAX_VALUE):
        with lsmtrie.open(path, min_blob_size=good) as db:
            db.put(b"k", b"v" * 40)
            assert db.get(b"k") == b"v" * 40


# ---------------------------------------------------------------------------------------------
# 3. the files, read independently


def test_value_log_files_and_table_references(tmp_path, small_vlogs):
    """Value logs parsed by formatlib's reader (header, each record's checksum, key and value),
    pointers read from the tables by formatlib: each leads to a whole record of its key and
    length; each table lists exactly the value logs its pointers use with their value bytes;
    a table without pointers is version 1; the records of the value logs are the large values
    written, in order, back to back (the value-log GC, which writes records again, is off)."""
    lib.ltr_test_blob_gc(0)
    try:
        _files_and_references(tmp_path)
    finally:
        lib.ltr_test_blob_gc(1)


def _files_and_references(tmp_path):
    path = str(tmp_path / "db")
    model, written = {}, []
    with lsmtrie.open(path, **TINY) as db:
        for r in range(6):
            for i in range(30):
                k = b"f-%d" % i
                v = val(k, 4096 + 1000 * (i % 7), gen=r)
                db.put(k, v)
                written.append((k, v))
                model[k] = v
            db.put_many([b"small-%d-%d" % (r, i) for i in range(50)], [b"s" * 30] * 50)
            model.update({b"small-%d-%d" % (r, i): b"s" * 30 for i in range(50)})
            db.flush()
        check(db, model)
    assert len(vlogs(path)) > 1  # rotated at 64 KiB
    tables, pointers, listed = check_files(path, model)
    assert pointers >= len([v for v in model.values() if len(v) >= MIN])
    assert {t.footer.format_version for t in tables} == {1, 2}  # small-only tables stay version 1
    assert listed <= vlog_numbers(path)
    # each value log on disk holds a run of the large writes, in order, back to back, and the
    # value logs follow each other in number order
    at = 0
    for name in vlogs(path):
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        recs, end = fl.read_vlog(data)
        assert end == len(data), f"{name}: records end at {end} of {len(data)}"
        run = [recs[o] for o in sorted(recs)]
        assert run, f"{name}: no record"
        assert data == fl.vlog_header() + b"".join(fl.vlog_record(k, v) for k, v in run)
        start = written.index(run[0], at)
        assert written[start:start + len(run)] == run, f"{name}: not a run of the writes"
        at = start + len(run)
    # the standalone HTable refuses a pointer, reads the rest of a version-2 table
    t2 = next(t for t in tables if t.footer.format_version == 2)
    number = next(n for n in live_tables(path)
                  if fl.parse_file(os.path.join(path, "%08d.ht" % n)).data == t2.data)
    items = t2.all_items()
    pk = next(k for k, v, _ in items if isinstance(v, fl.Pointer))
    with HTable(os.path.join(path, "%08d.ht" % number)) as ht:
        with pytest.raises(lsmtrie.InvalidArgumentError, match="value log"):
            ht.get(pk)
        with pytest.raises(lsmtrie.InvalidArgumentError, match="value log"):
            ht.get_many([pk])
        with pytest.raises(lsmtrie.InvalidArgumentError, match="value log"):
            list(ht.items())
        small = [k for k, v, _ in items if isinstance(v, bytes)]
        for k in small[:5]:
            assert ht.get(k) == next(v for kk, v, _ in items if kk == k)
        assert ht.get(b"not-there") is None


def test_reencoded_version_2_table_is_byte_identical(tmp_path):
    """formatlib's writer knows version 2: re-encoding a table holding pointers from its
    decoded layout gives the store's bytes (pointers, references and footer field)."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, table_buckets=16, node_tables=8, levels=2, memtable_bytes=3000) as db:
        for i in range(40):
            db.put(b"r%d" % i, val(b"r%d" % i, 5000 if i % 2 else 20))
        db.flush()
    done = 0
    for n in live_tables(path):
        t = fl.parse_file(os.path.join(path, "%08d.ht" % n))
        if t.footer.format_version == 2:
            assert fl.reencode(t) == t.data
            done += 1
    assert done


# ---------------------------------------------------------------------------------------------
# 4. lifetime


def test_old_value_logs_go_and_referenced_ones_stay(tmp_path, small_vlogs):
    """Overwrites and deletes of every large value: after each step every value reads back
    (a value log still referenced never went); after close and reopen, every value log on disk
    is one the live tables list (a listed one may be gone once the value-log GC moved its
    records: only shadowed pointers lead there), and stats() counts them."""
    path = str(tmp_path / "db")
    model = {}
    keys = [b"life-%d" % i for i in range(40)]
    made = set()  # every value log seen (the GC removes some within moments of their move)
    with lsmtrie.open(path, **TINY, **FAST) as db:
        for r in range(5):
            for k in keys:
                model[k] = val(k, 5000 + r, gen=r)
                db.put(k, model[k])
                made |= vlog_numbers(path)
                if len(model) % 17 == 0:
                    check(db, model)
            db.flush()
            check(db, model)
        for k in keys[::2]:
            db.delete(k)
            del model[k]
        db.flush()
        check(db, model)
    assert len(made) > 8
    for _ in range(2):  # a writer's open removes the value logs nothing lists
        with lsmtrie.open(path) as db:
            check(db, model)
    _, _, listed = check_files(path, model)
    # what a writer's open keeps is listed (a listed one may be gone: the GC moved its records)
    assert vlog_numbers(path) <= listed
    assert len(vlog_numbers(path)) < len(made)
    with lsmtrie.open(path) as db:
        st = db.stats()
        on_disk = vlogs(path)
        assert st["blob_files"] == len(on_disk)
        assert st["blob_bytes"] == sum(os.path.getsize(os.path.join(path, f)) for f in on_disk)
    # every large value gone: every value log goes
    with lsmtrie.open(path, **TINY) as db:
        for k in list(model):
            db.delete(k)
        model.clear()
        db.flush()
        for _ in range(12):  # deletes reach the last level: compact it by filling the trie
            db.put_many([b"fill-%d-%d" % (_, i) for i in range(80)], [b"f" * 40] * 80)
            db.flush()
    for _ in range(2):
        with lsmtrie.open(path) as db:
            final = dict(db.items())
            assert all(len(v) < MIN for v in final.values())
    # (the model proves the pointers left in tables into value logs the GC removed shadowed)
    _, pointers, listed = check_files(path, final)
    assert vlog_numbers(path) <= listed
    if pointers == 0:
        assert vlogs(path) == []


def test_value_logs_go_while_the_store_is_open(tmp_path, small_vlogs):
    """With the store open, old value logs disappear after checkpoints (waited for with a
    bounded loop of flushes)."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=1, memtable_bytes=3000,
                      checkpoint_interval=0.01) as db:
        for r in range(3):
            for i in range(30):
                db.put(b"o%d" % i, val(b"o%d" % i, 5000, gen=r))
            db.flush()
        first = min(vlog_numbers(path))
        model = {b"o%d" % i: val(b"o%d" % i, 5000, gen=2) for i in range(30)}
        model[b"tick"] = tick_until_gone(db, path, first, "still there")
        check(db, model)
        st = db.stats()
        assert st["blob_files"] <= len(vlogs(path))


def test_lookups_start_again_when_their_value_log_was_collected(tmp_path):
    """A lookup that found a pointer and reads after the GC collected its value log (it moved the
    record, so a newer pointer shadows the one found) looks the key up again (store_read.c):
    single gets, get_many small and large, and verify() still answer. A read that keeps meeting
    a collected log fails with a typed error instead of looping. ltr_test_blob_moved_reads makes
    the next reads find their file collected."""
    path = str(tmp_path / "db")
    keys = [b"moved-%d" % i for i in range(1500)]
    model = {k: val(k, 5000) for k in keys}
    with lsmtrie.open(path) as db:
        db.put_many(keys, list(model.values()))
        db.flush()  # the pointers now in tables: found under a pinned version
        fresh = val(b"fresh", 5000)
        db.put(b"fresh", fresh)  # a pointer held by a memtable
        try:
            def counted(get):  # what a get adds to the counters of gets and hits
                before = db.stats()
                get()
                after = db.stats()
                return [after["gets"] - before["gets"],
                        sum(after["hits_per_level"]) - sum(before["hits_per_level"])]

            plain = counted(lambda: db.get(keys[0]))
            lib.ltr_test_blob_moved_reads(1)
            assert db.get(keys[0]) == model[keys[0]]
            lib.ltr_test_blob_moved_reads(1)  # a lookup that started again counts once
            assert counted(lambda: db.get(keys[0])) == plain
            lib.ltr_test_blob_moved_reads(3)
            assert db.get_many(keys[:40]) == [model[k] for k in keys[:40]]
            lib.ltr_test_blob_moved_reads(7)
            assert db.get_many(keys) == list(model.values())  # the batch's threads
            lib.ltr_test_blob_moved_reads(1)
            assert db.verify()["items"] >= len(keys)
            lib.ltr_test_blob_moved_reads(1000)
            # memtables and scans never hold a pointer into a collected file: never told so
            assert db.get(b"fresh") == fresh and db.get_many([b"fresh"]) == [fresh]
            assert dict(db.items())[keys[3]] == model[keys[3]]
            with pytest.raises(lsmtrie.CorruptionError, match="collected"):
                db.get(keys[1])
            with pytest.raises(lsmtrie.CorruptionError, match="collected"):
                db.get_many(keys[:3])
        finally:
            lib.ltr_test_blob_moved_reads(0)
        model[b"fresh"] = fresh
        check(db, model)


def test_a_value_log_the_gc_emptied_goes_without_a_checkpoint(tmp_path, small_vlogs):
    """Once the GC has moved a value log's live records it goes at once (the checkpoint thread
    runs a removal pass for it), not after two more checkpoints: with checkpoints an hour apart
    and no flush() after the file fell below the floor, a value log a table still lists but whose
    records are nine in ten overwritten leaves the directory (waited for with a bounded poll),
    and every value reads back, in this process and after a reopen."""
    path = str(tmp_path / "db")
    keys = [b"gone-%d" % i for i in range(60)]
    model = {k: val(k, 5000) for k in keys}
    with lsmtrie.open(path, levels=2, checkpoint_interval=3600) as db:
        db.put_many(keys, [model[k] for k in keys])  # one batch: one value log
        db.flush()
        (first,) = vlog_numbers(path)
        model.update((k, val(k, 5000, gen=1)) for k in keys[6:])
        db.put_many(keys[6:], [model[k] for k in keys[6:]])
        db.flush()
        model[b"tick"] = b"1"
        db.put(b"tick", b"1")
        db.flush()  # the memtables' floor passes the first value log: the GC may take it
        checkpoints = db.stats()["checkpoints"]
        for _ in range(600):  # at most some 60 s
            if first not in vlog_numbers(path):
                break
            time.sleep(0.1)
        assert first not in vlog_numbers(path), vlogs(path)
        assert db.stats()["checkpoints"] == checkpoints  # no checkpoint removed it
        check(db, model)
    with lsmtrie.open(path) as db:
        check(db, model)
    check_files(path, model)


@pytest.mark.parametrize("damage", ["value", "length"])
def test_the_gc_leaves_a_value_log_with_a_damaged_record(tmp_path, small_vlogs, damage):
    """A value log mostly overwritten, one of its dead records damaged on disk (a byte of its
    value, so its checksum fails, or of its length, which then claims more bytes than the file
    holds, like a torn tail): the GC moves what it reads before the damage but cannot tell what
    lies past it, so it leaves the file (stats()["blob_gc_damaged"]) rather than removing it with
    the live records past the damage, which still read back through their pointers. (It used to
    remove it.)"""
    path = str(tmp_path / "db")
    keys = [b"dmg-%02d" % i for i in range(60)]
    model = {k: val(k, 5000) for k in keys}
    lib.ltr_test_blob_gc(0)
    try:
        with lsmtrie.open(path, levels=2) as db:
            db.put_many(keys, [model[k] for k in keys])  # one value log, records in this order
            db.flush()
            (first,) = vlog_numbers(path)
            model.update((k, val(k, 5000, gen=1)) for k in keys[:50])
            db.put_many(keys[:50], [model[k] for k in keys[:50]])
            db.flush()
    finally:
        lib.ltr_test_blob_gc(1)
    name = os.path.join(path, "%08d.vlog" % first)
    with open(name, "rb") as f:
        recs, _ = fl.read_vlog(f.read())
    at = next(off for off, (k, _) in recs.items() if k == keys[20])  # overwritten: dead
    # the record: CRC (4 bytes), key length (1 byte here), value length (5000: 0x88 0x27), key, value
    where = at + 100 if damage == "value" else at + 6
    with open(name, "r+b") as f:
        f.seek(where)
        b = f.read(1)
        assert damage == "value" or b == b"\x27"
        f.seek(where)  # a value byte flipped; or the length's last byte made to go on, into the
        f.write(bytes([b[0] ^ 0xFF if damage == "value" else b[0] | 0x80]))  # key: 1.6 MB
    with lsmtrie.open(path, levels=2) as db:
        for _ in range(600):  # the GC looks at it once the store is open (at most some 60 s)
            if db.stats()["blob_gc_damaged"]:
                break
            time.sleep(0.1)
        st = db.stats()
        assert st["blob_gc_damaged"] == 1 and st["blob_gc_moved"] == 0, st
        assert first in vlog_numbers(path)
        assert [db.get(k) for k in keys[50:]] == [model[k] for k in keys[50:]]  # past it
        check(db, model)


def test_the_gc_counts_dead_value_log_bytes(tmp_path):
    """stats()["blob_live_bytes"]: the value logs' bytes less the records known dead. A record
    is dead once an overwrite or delete of its key replaces it in a memtable (counted at once)
    or is flushed over it (counted by the flush, which looks the key up in the tables), but for
    a small value flushed over a large one. The GC is off, so every number is exact; after a
    reopen the counts start again (the files the open found count as live until sampled)."""
    path = str(tmp_path / "db")
    keys = [b"k-%05d" % i for i in range(200)]
    rec = record_size(7, 5000)
    lib.ltr_test_blob_gc(0)
    try:
        with lsmtrie.open(path) as db:
            def dead():
                st = db.stats()
                return st["blob_bytes"] - st["blob_live_bytes"]
            db.put_many(keys, [val(k, 5000) for k in keys])
            assert dead() == 0
            db.put_many(keys[:50], [val(k, 5000, gen=1) for k in keys[:50]])
            assert dead() == 50 * rec  # replaced in the memtable: counted at once
            db.flush()
            db.put_many(keys[50:110], [val(k, 5000, gen=1) for k in keys[50:110]])
            assert dead() == 50 * rec  # what they shadow is in a table: counted by the flush
            db.flush()
            assert dead() == 110 * rec
            with db.write_batch() as wb:
                for k in keys[110:120]:
                    wb.delete(k)
            db.put(keys[120], b"small")  # a small value over a large one in a table: not
            # counted (a flush looks up only pointers and tombstones: small writes cost none)
            db.put(keys[121], val(keys[121], 5000, gen=1))
            db.delete(keys[121])  # its new version dead at once; its old one (a table) below
            assert dead() == 111 * rec  # (the others shadow versions in tables)
            db.flush()
            assert dead() == 122 * rec
            db.flush()  # nothing new: nothing counted twice
            assert dead() == 122 * rec
            st = db.stats()
            assert st["blob_live_bytes"] == 16 * st["blob_files"] + 189 * rec  # 110 + 78 + 1
        with lsmtrie.open(path) as db:
            st = db.stats()
            assert st["blob_live_bytes"] == st["blob_bytes"]  # an upper bound until sampled
            assert db.get(keys[0]) == val(keys[0], 5000, gen=1)
            assert db.get(keys[150]) == val(keys[150], 5000)
            assert db.get(keys[115]) is None and db.get(keys[120]) == b"small"
    finally:
        lib.ltr_test_blob_gc(1)


def test_the_gc_keeps_the_value_logs_within_their_bound(tmp_path, small_vlogs):
    """Overwrites that leave every value log more than half live (two keys in five, a round
    at a time) used to leave the logs at up to twice the live bytes: the GC took only files
    under half live. Now, once the logs pass 1.25 x their live bytes plus a file, it takes the
    least live file whatever its share, and writers of large values wait past 1.25 x plus two
    files (64 KiB files here: the writers wait often). Waited for with a bounded poll;
    every value checked."""
    path = str(tmp_path / "db")
    keys = [b"k-%05d" % i for i in range(400)]
    rec = record_size(7, 5000)
    model = {}
    with lsmtrie.open(path) as db:
        model.update((k, val(k, 5000)) for k in keys)
        db.put_many(keys, [model[k] for k in keys])
        db.flush()
        for r in range(1, 7):
            some = [k for i, k in enumerate(keys) if (i + r) % 5 < 2]
            model.update((k, val(k, 5000, gen=r)) for k in some)
            for lo in range(0, len(some), 20):
                db.put_many(some[lo:lo + 20], [model[k] for k in some[lo:lo + 20]])
            db.flush()
        live = len(keys) * rec
        for _ in range(400):  # at most some 40 s
            st = db.stats()
            if st["blob_bytes"] <= 1.25 * live + 2 * (1 << 16):
                break
            time.sleep(0.1)
        assert st["blob_bytes"] <= 1.25 * live + 2 * (1 << 16), st
        assert st["blob_gc_moved"] > 0
        assert st["blob_live_bytes"] >= live
        check(db, model)
    with lsmtrie.open(path, read_only=True) as db:
        check(db, model)


@pytest.mark.parametrize("mode", ["logged", "bulk", "gc off"])
def test_the_value_log_gc_runs_only_where_allowed(tmp_path, small_vlogs, mode):
    """The GC moves records only with the log and while allowed: in bulk mode the moved records
    would be durable only once flushed, and the file they left would go before; with the testing
    knob off, tests read value logs holding exactly what was written. Overwrites, flushes and
    compactions wake the worker; only the logged store with the GC on moves a file (waited for
    with a bounded poll). The worker used to run a GC step whenever it found nothing else to
    do, whatever the mode or the knob (this test then failed in about one run of three, and
    test_value_log_files_and_table_references in a few of a hundred)."""
    keys = [b"gc-%d" % i for i in range(30)]
    path = str(tmp_path / "db")
    model = {}
    lib.ltr_test_blob_gc(0 if mode == "gc off" else 1)
    try:
        with lsmtrie.open(path, bulk=mode == "bulk", **TINY) as db:
            for g in range(12):
                model.update((k, val(k, 5000, gen=g)) for k in keys)
                db.put_many(keys, [model[k] for k in keys])
                small = [b"s-%d-%d" % (g, i) for i in range(60)]
                db.put_many(small, [b"x" * 20] * 60)
                model.update((k, b"x" * 20) for k in small)
                db.flush()
            for _ in range(100 if mode == "logged" else 0):  # at most some 10 s for its GC
                if db.stats()["blob_gc_moved"]:
                    break
                time.sleep(0.1)
            st = db.stats()  # (the others were woken by every flush and compaction above)
            assert st["compactions"] > 0
            assert (st["blob_gc_moved"] > 0) == (mode == "logged"), st
            check(db, model)
    finally:
        lib.ltr_test_blob_gc(1)


def test_a_scan_keeps_the_values_it_will_return(tmp_path, small_vlogs):
    """A scan started over memtables holding pointers, then every key overwritten, flushed and
    compacted (so no table lists the old value logs any more): the scan still returns every old
    value (its pin keeps their value logs); once it is done, they go."""
    path = str(tmp_path / "db")
    keys = [b"scan-%d" % i for i in range(60)]
    old = {k: val(k, 6000) for k in keys}
    with lsmtrie.open(path, table_buckets=64, node_tables=2, levels=1,
                      checkpoint_interval=0.01) as db:
        db.put_many(keys, list(old.values()))  # in the memtable
        first = min(vlog_numbers(path))
        batches = db._scan_batches(max_items=1)
        got = {}

        def take(items):
            k = bytes(_binding.ffi.buffer(items.keys.data, items.keys.len))
            v = bytes(_binding.ffi.buffer(items.values.data, items.values.len))
            got[k] = v

        take(next(batches))
        for r in range(3):
            db.put_many(keys, [val(k, 6000, gen=r + 1) for k in keys])
            db.flush()
        for i in range(150):  # checkpoints come and go: nothing of the scan's may
            db.put(b"tick", b"x")
            db.flush()
            time.sleep(0.01)
        assert first in vlog_numbers(path)
        for items in batches:
            take(items)
        assert got == old
        del batches
        tick = tick_until_gone(db, path, first, "stayed after the scan ended")
        check(db, {**{k: val(k, 6000, gen=3) for k in keys}, b"tick": tick})


_GATE_C = r"""
/* LD_PRELOAD: the first open of a file whose path ends in $GATE_SUFFIX creates $GATE.reached,
 * then waits until $GATE exists (at most 60 s): a store's open held between two steps. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int done;

static void gate(const char *path)
{
    const char *g = getenv("GATE"), *end = getenv("GATE_SUFFIX");
    size_t n = strlen(path), e = end ? strlen(end) : 0;
    if (!g || !end || done || n < e || strcmp(path + n - e, end))
        return;
    done = 1;
    char reached[4096];
    snprintf(reached, sizeof reached, "%s.reached", g);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    int fd = real(reached, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0)
        close(fd);
    for (int i = 0; i < 60000 && access(g, F_OK); i++)
        usleep(1000);
}

int open(const char *path, int flags, ...)
{
    va_list a;
    va_start(a, flags);
    int mode = va_arg(a, int);
    va_end(a);
    gate(path);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    return real(path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dir, const char *path, int flags, ...)
{
    va_list a;
    va_start(a, flags);
    int mode = va_arg(a, int);
    va_end(a);
    gate(path);
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat");
    return real(dir, path, flags, mode);
}

int openat64(int dir, const char *path, int flags, ...) __attribute__((alias("openat")));
"""

_GATED_READER = textwrap.dedent("""
    import json, sys, lsmtrie
    db = lsmtrie.open(sys.argv[1], read_only=True)
    out = {}
    for k in json.loads(sys.argv[2]):
        try:
            v = db.get(k.encode())
            out[k] = None if v is None else len(v)
        except lsmtrie.CorruptionError as e:
            out[k] = str(e)
    print(json.dumps(out))
""")


def test_a_reader_opened_while_the_writer_starts_a_value_log(tmp_path, small_vlogs):
    """A read-only open lists the value logs, then reads the manifest. Held in between (an
    LD_PRELOAD shim gates its first open of CURRENT) while the writer starts a new value log
    and flushes a table pointing into it, the reader's manifest names that table: its values
    must read (they read as "value log ... is missing", a CorruptionError, until readers
    listed the value logs again after the manifest)."""
    so = str(tmp_path / "gate.so")
    (tmp_path / "gate.c").write_text(_GATE_C)
    r = subprocess.run([os.environ.get("CC", "gcc"), "-O2", "-shared", "-fPIC", "-o", so,
                        str(tmp_path / "gate.c"), "-ldl"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    path, gate = str(tmp_path / "db"), str(tmp_path / "go")
    first = {b"a%d" % i: val(b"a%d" % i, 5000) for i in range(10)}
    later = {b"b%d" % i: val(b"b%d" % i, 5000) for i in range(10)}
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000) as db:
        db.put_many(list(first), list(first.values()))
        db.flush()
        before = vlog_numbers(path)
        env = dict(_env(), GATE=gate, GATE_SUFFIX="/CURRENT")
        env["LD_PRELOAD"] = (env.get("LD_PRELOAD", "") + " " + so).strip()
        keys = [k.decode() for k in list(first) + list(later)]
        reader = subprocess.Popen([sys.executable, "-c", _GATED_READER, path, json.dumps(keys)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _ in range(6000):  # (at most a minute)
                if os.path.exists(gate + ".reached") or reader.poll() is not None:
                    break
                time.sleep(0.01)
            assert os.path.exists(gate + ".reached"), reader.communicate()[1].decode()
            for k, v in later.items():  # one put at a time: the value log fills, a new one starts
                db.put(k, v)
            db.flush()  # a table pointing into it, named by the manifest
            assert vlog_numbers(path) - before, "no value log was started"
        finally:
            open(gate, "w").close()
            out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err.decode()
    got = json.loads(out.decode())
    want = {k.decode(): len(v) for k, v in first.items()}
    assert {k: got[k] for k in want} == want, got
    # the reader saw the writer's state as of its manifest: all of the later keys or none
    seen = {k.decode(): got[k.decode()] for k in later}
    assert set(seen.values()) <= {None, 5000}, seen
    assert len(set(seen.values())) == 1, seen


# ---------------------------------------------------------------------------------------------
# 5. durability


@pytest.mark.parametrize("sync", [False, True])
def test_kill_while_writing_large_values(tmp_path, sync):
    """Writers SIGKILLed at random moments while they write values up to 20 KB (a third of
    them for the value logs, rotated at 64 KiB), flush and compact: every acknowledged synced
    write, a prefix of the rest."""
    opts = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500, **FAST)
    if sync:
        opts["sync"] = True
    kinds = crash_trials(tmp_path, opts, trials=6, n=250, seed=31 + sync, store_sync=sync,
                         gen=dict(vmax=20000, nkeys=150, p_sync=0.1),
                         hooks={"ltr_test_blob_file_bytes": 1 << 16}, tag="B")
    assert any(acked > 20 for _, acked, _ in kinds)
    path = str(tmp_path / "db")
    with lsmtrie.open(path) as db:
        st = db.stats()
        assert st["bytes_written_by_kind"]["blobs"] > 0 and st["flushes"] > 0
        db.verify()


_UNSYNCED_WRITER = textwrap.dedent("""
    import os, sys, lsmtrie
    from lsmtrie import _binding
    lib = _binding.lib
    lib.ltr_test_checkpoint_policy(1e9, 1 << 50)  # no checkpoint: the logs are replayed
    if sys.argv[2] == "rotate":
        lib.ltr_test_log_limits(300, -1)  # a new log every few puts
    db = lsmtrie.open(sys.argv[1], table_buckets=64,
                      checkpoint_interval=3600)
    for i in range(20):
        k = b"u%02d" % i
        db.put(k, (k * 5000)[:5000 + i])          # sync=False
        db.put(b"small-%02d" % i, b"s%d" % i)
    os._exit(0)  # like a crash: the page cache keeps it all
""")


def unsynced_store(tmp_path, mode="one"):
    path = str(tmp_path / "db")
    r = subprocess.run([sys.executable, "-c", _UNSYNCED_WRITER, path, mode], env=_env(),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    want = {}
    for i in range(20):
        k = b"u%02d" % i
        want[k] = (k * 5000)[:5000 + i]
        want[b"small-%02d" % i] = b"s%d" % i
    return path, want


def newest_vlog(path):
    name = vlogs(path)[-1]
    with open(os.path.join(path, name), "rb") as f:
        recs, _ = fl.read_vlog(f.read())
    return os.path.join(path, name), {k: off for off, (k, _) in recs.items()}


def expected_prefix(cut_key_index):
    want = {}
    for i in range(cut_key_index):
        k = b"u%02d" % i
        want[k] = (k * 5000)[:5000 + i]
        want[b"small-%02d" % i] = b"s%d" % i
    return want


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_lost_value_log_tail_ends_the_log(tmp_path, damage):
    """A crash image where the log survived but the value log's last records did not (or came
    back damaged): the store opens, the log ends at the first record whose value is missing
    (the later ones, small values included, are gone), and a second open is the same."""
    path, full = unsynced_store(tmp_path)
    with lsmtrie.open(path, read_only=True) as db:  # nothing lost yet
        assert dict(db.items()) == full
    vlog, offsets = newest_vlog(path)
    at = offsets[b"u13"]
    if damage == "truncate":
        os.truncate(vlog, at + 10)
    else:
        with open(vlog, "r+b") as f:
            f.seek(at + 100)
            b = f.read(1)
            f.seek(at + 100)
            f.write(bytes([b[0] ^ 0x40]))
    want = expected_prefix(13)
    with lsmtrie.open(path, read_only=True) as db:  # a reader stops there too
        check(db, want)
    with lsmtrie.open(path) as db:
        check(db, want)
        db.verify()
        db.put(b"after", val(b"after", 8000))  # and takes new writes
        want[b"after"] = val(b"after", 8000)
    with lsmtrie.open(path) as db:
        check(db, want)
    check_files(path, want)


def test_damaged_value_in_an_older_log_is_corruption(tmp_path):
    """The same damage under a record of a log that newer logs follow is no torn tail: the open
    fails with CorruptionError (read-only too) and changes nothing."""
    path, full = unsynced_store(tmp_path, "rotate")
    assert len(files(path, ".wal")) >= 3
    with lsmtrie.open(path, read_only=True) as db:
        assert dict(db.items()) == full
    vlog, offsets = newest_vlog(path)
    with open(vlog, "r+b") as f:
        f.seek(offsets[b"u02"] + 50)
        b = f.read(1)
        f.seek(offsets[b"u02"] + 50)
        f.write(bytes([b[0] ^ 1]))
    before = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
    for ro in (True, False):
        with pytest.raises(lsmtrie.CorruptionError, match="value-log record"):
            lsmtrie.open(path, read_only=ro)
    assert {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)} == before


def test_damaged_record_under_a_table_pointer(tmp_path):
    """A damaged value-log record that a table points to: its get, get_many and a scan raise
    CorruptionError, verify() names it, the other keys read."""
    path = str(tmp_path / "db")
    model = {b"d%d" % i: val(b"d%d" % i, 5000 if i % 2 else 50) for i in range(30)}
    with lsmtrie.open(path, **TINY) as db:
        db.put_many(list(model), list(model.values()))
        db.flush()
    vlog, offsets = newest_vlog(path)
    with open(vlog, "r+b") as f:
        f.seek(offsets[b"d7"] + 3000)
        b = f.read(1)
        f.seek(offsets[b"d7"] + 3000)
        f.write(bytes([b[0] ^ 0x80]))
    with lsmtrie.open(path) as db:
        with pytest.raises(lsmtrie.CorruptionError, match="value-log record"):
            db.get(b"d7")
        with pytest.raises(lsmtrie.CorruptionError):
            db.get_many([b"d1", b"d7"])
        with pytest.raises(lsmtrie.CorruptionError):
            dict(db.items())
        with pytest.raises(lsmtrie.CorruptionError, match="value-log record"):
            db.verify()
        rest = {k: v for k, v in model.items() if k != b"d7"}
        for k, v in rest.items():
            assert db.get(k) == v
        assert db.get_many(list(rest)) == list(rest.values())
    with lsmtrie.open(path, read_only=True) as db:
        with pytest.raises(lsmtrie.CorruptionError):
            db.get(b"d7")
    # a missing value log is corruption too, of every read that needs it
    os.unlink(vlog)
    with lsmtrie.open(path) as db:
        with pytest.raises(lsmtrie.CorruptionError, match="missing"):
            db.get(b"d1")
        assert db.get(b"d0") == model[b"d0"]


# ---------------------------------------------------------------------------------------------
# 6. faults


@pytest.fixture
def no_faults():
    yield
    _binding.fault_set("write", 0, 0)
    _binding.fault_set("fsync", 0, 0)


QUIET = dict(table_buckets=64, checkpoint_interval=3600)  # nothing flushed


def put_mixed(db, model, prefix, large):
    """Ten puts, alternately of 10 bytes and `large` bytes (a value log's), into db and model."""
    for i in range(10):
        k = prefix + b"%d" % i
        model[k] = val(k, large if i % 2 else 10)
        db.put(k, model[k])


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("after", [0, 1])
@isolated()
def test_failed_value_log_write(tmp_path, after, err):
    """write() fails at the value-log append (after=0) or at the log append after it (1): the
    put, the put_many and the write_batch fail typed, nothing of them is visible, the value log
    did not grow past its last good record (after=0), later writes work, and a reopen has
    exactly the acknowledged writes."""
    path = str(tmp_path / "db")
    model = {}
    db = lsmtrie.open(path, **QUIET)
    try:
        put_mixed(db, model, b"pre", 5000)
        name = vlogs(path)[-1]
        size = os.path.getsize(os.path.join(path, name))
        failed = []
        for what in ("put", "many", "batch"):
            _binding.fault_set("write", after, err)
            try:
                with pytest.raises(lsmtrie.StorageError) as e:
                    if what == "put":
                        db.put(b"f-put", val(b"f-put", 9000))
                    elif what == "many":
                        db.put_many([b"f-m1", b"f-m2", b"f-m3"],
                                    [b"small", val(b"f-m2", 9000), val(b"f-m3", 5000)])
                    else:
                        with db.write_batch() as wb:
                            wb.put(b"f-b1", val(b"f-b1", 7000))
                            wb.put(b"f-b2", b"x")
                            wb.delete(b"pre1")
            finally:
                _binding.fault_set("write", 0, 0)
            assert isinstance(e.value, lsmtrie.DiskFullError) == (err == errno.ENOSPC), repr(e.value)
            failed += [b"f-put", b"f-m1", b"f-m2", b"f-m3", b"f-b1", b"f-b2"]
            if after == 0:
                assert os.path.getsize(os.path.join(path, name)) == size
        check(db, model, absent=failed)
        put_mixed(db, model, b"post", 6000)
        check(db, model, absent=failed)
    finally:
        db.close()
    with lsmtrie.open(path) as db:
        check(db, model, absent=failed)
        db.verify()
    with lsmtrie.open(path) as db:
        check(db, model, absent=failed)


@isolated()
def test_failed_value_log_fsync(tmp_path):
    """fsync of the value log fails under a sync=True write: the write fails, and so does
    every later write that needs the value log durable or appended, with a message that says to
    reopen, until the store is reopened; nothing acknowledged is lost."""
    path = str(tmp_path / "db")
    model = {}
    db = lsmtrie.open(path, **QUIET)
    try:
        put_mixed(db, model, b"pre", 5000)
        db.put(b"synced", val(b"synced", 5000), sync=True)
        model[b"synced"] = val(b"synced", 5000)
        db.put(b"large-unsynced", val(b"lu", 5000))  # the value log has bytes to sync
        model[b"large-unsynced"] = val(b"lu", 5000)
        _binding.fault_set("fsync", 0, errno.EIO)
        try:
            with pytest.raises(lsmtrie.StorageError):
                db.put(b"fails", val(b"fails", 5000), sync=True)
        finally:
            _binding.fault_set("fsync", 0, 0)
        with pytest.raises(lsmtrie.StorageError, match="reopen"):
            db.put(b"later-large", val(b"later", 5000))
        with pytest.raises(lsmtrie.StorageError, match="reopen"):
            db.put(b"later-sync", b"s", sync=True)
        db.put(b"later-small", b"fine")  # neither appends to nor syncs the value log
        model[b"later-small"] = b"fine"
        # a sync=True write whose sync failed was logged and applied, never made durable: it
        # may be there (as after a failed log fsync, test_store_faults.py)
        maybe = {k: db.get(k) for k in (b"fails", b"later-sync")}
        assert maybe[b"fails"] in (None, val(b"fails", 5000))
        assert maybe[b"later-sync"] in (None, b"s")
        check(db, {**model, **{k: v for k, v in maybe.items() if v is not None}},
              absent=[b"later-large"])
    finally:
        try:
            db.close()
        except lsmtrie.StorageError:
            pass  # (its checkpoint syncs the value log: the same error)
    with lsmtrie.open(path) as db:
        state = dict(db.items())
        got_fails = state.pop(b"fails", None)
        assert got_fails in (None, val(b"fails", 5000))
        state.pop(b"later-sync", None)
        assert state == model
        db.put(b"after-reopen", val(b"ar", 5000), sync=True)
        assert db.get(b"after-reopen") == val(b"ar", 5000)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("op,after", [("write", 0), ("write", 3), ("write", 13), ("write", 55),
                                      ("fsync", 0), ("fsync", 2), ("fsync", 8), ("fsync", 34)])
@isolated()
def test_faults_anywhere_with_value_logs(tmp_path, op, after, err):
    """test_store_faults.py's run with min_blob_size=32, so most values (up to 90 bytes) go
    to value logs: a fault in value-log appends and syncs, log appends, flushes, compactions or
    checkpoints is typed, loses nothing acknowledged, and a reopen has it all."""
    run_with_fault(str(tmp_path / "db"), op, after, err, open_opts=dict(TINY, min_blob_size=32))


# ---------------------------------------------------------------------------------------------
# 7. stats and space


def test_blob_bytes_counted(tmp_path):
    """bytes_written_by_kind["blobs"] is the records' bytes; bytes_written (and so the write
    amplification) includes it."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, **TINY) as db:
        want = 0
        for i, n in enumerate([MIN - 1, MIN, 5000, 70000, 1 << 20, 10]):
            k = b"s%d" % i
            db.put(k, val(k, n))
            if n >= MIN:
                want += record_size(len(k), n)
        db.put_many([b"m%d" % i for i in range(5)], [val(b"m", 4500)] * 5)
        want += sum(record_size(len(b"m%d" % i), 4500) for i in range(5))
        st = db.stats()
        by = st["bytes_written_by_kind"]
        assert by["blobs"] == want
        total = sum(v if isinstance(v, int) else sum(v.values()) for v in by.values())
        assert st["bytes_written"] == total
        assert st["write_amplification"] == st["bytes_written"] / st["user_bytes_written"]
        assert st["blob_bytes"] == want + 16 * st["blob_files"]
    with lsmtrie.open(path) as db:  # persisted
        assert db.stats()["bytes_written_by_kind"]["blobs"] == want


def test_large_values_are_written_once(tmp_path):
    """200 values of 64 KiB, default table options: written about once (value log, plus a log
    of pointers) before the flush; the flush adds one table file, whatever the values' size."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path) as db:
        for i in range(200):
            k = b"w%05d" % i
            db.put(k, val(k, 65536))
        st = db.stats()
        user = st["user_bytes_written"]
        assert user == 200 * (6 + 65536)
        assert st["bytes_written"] / user < 1.05, st["bytes_written_by_kind"]
        db.flush()
        st = db.stats()
        by = st["bytes_written_by_kind"]
        table_bytes = sum(os.path.getsize(os.path.join(path, f)) for f in files(path, ".ht"))
        assert by["flush"] == table_bytes  # one table: a hash table's fixed size, not the values'
        assert (st["bytes_written"] - by["flush"]) / user < 1.05, by


def test_write_amplification_and_space_of_a_large_value_load(tmp_path):
    """A load of large values (32 to 96 KiB, no overwrites) with flushes and compactions: total
    bytes written over user bytes < 3, and the store takes at most 1.3 x the user bytes at
    rest, the value logs about 1 x. (Tables are hash tables of a fixed size however few items
    they hold: small tables here, so that their sum stays small beside 26 MB of values; with
    32 MiB tables a load this small is dominated by them.)"""
    path = str(tmp_path / "db")
    rng = random.Random(3)
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=2) as db:
        for i in range(400):
            k = b"load-%05d" % i
            db.put(k, val(k, rng.randint(32 << 10, 96 << 10)))
            if i % 50 == 49:
                db.flush()
        st = db.stats()
        user = st["user_bytes_written"]
        assert st["write_amplification"] < 3, st["bytes_written_by_kind"]
        assert st["bytes_written_by_kind"]["blobs"] < 1.01 * user
        assert st["compactions"] > 0
    on_disk = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    assert on_disk <= 1.3 * user, (on_disk, user)
    in_vlogs = sum(os.path.getsize(os.path.join(path, f)) for f in vlogs(path))
    assert user <= in_vlogs < 1.01 * user
