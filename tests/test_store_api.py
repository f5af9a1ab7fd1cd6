"""The store's Python API (`lsmtrie.open`): every call and its edge cases, against the contract.

Stores use tiny tables (16 buckets) so flushes and compactions happen after a few KB of data.
"""

import errno
import os
import random
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import lsmtrie

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny geometry: a 16-bucket table holds ~62 KB; a memtable of 3000 bytes flushes every few
# dozen items; two tables per node before compaction; three levels (the last one is level 2).
TINY = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=3000)


def open_tiny(path, **kw):
    opts = dict(TINY)
    opts.update(kw)
    return lsmtrie.open(str(path), **opts)


def corrupt_first_buckets(path):
    """Flips one byte of the first bucket of every table of the store at path."""
    for name in (f for f in os.listdir(path) if f.endswith(".ht")):
        with open(path / name, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x5A]))


def rand_ops(seed, n, nkeys=200, vmax=80):
    """A deterministic list of ("put", k, v) / ("del", k) over a small key pool."""
    rng = random.Random(seed)
    pool = [b"key-%d-" % i + rng.randbytes(rng.randint(0, 8)) for i in range(nkeys)]
    ops = []
    for i in range(n):
        k = rng.choice(pool)
        if rng.random() < 0.2:
            ops.append(("del", k))
        else:
            ops.append(("put", k, b"%d:" % i + rng.randbytes(rng.randint(0, vmax))))
    return ops


def apply_ops(db, model, ops):
    for op in ops:
        if op[0] == "put":
            db.put(op[1], op[2])
            model[op[1]] = op[2]
        else:
            db.delete(op[1])
            model.pop(op[1], None)


def check_model(db, model, absent=()):
    """get_many and items() both agree with the dict model."""
    keys = list(model) + list(absent)
    got = db.get_many(keys)
    wrong = [k for k, g in zip(keys, got) if g != model.get(k)]
    assert not wrong, f"get_many: {len(wrong)} of {len(keys)} keys wrong, e.g. {wrong[:3]}"
    items = list(db.items())
    scanned = dict(items)
    assert len(items) == len(scanned), "items() returned a key twice"
    missing = [k for k in model if k not in scanned]
    extra = [k for k in scanned if k not in model]
    bad = [k for k in model if k in scanned and scanned[k] != model[k]]
    assert not (missing or extra or bad), (
        f"items(): {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra "
        f"(e.g. {extra[:3]}), {len(bad)} with a wrong value (e.g. {bad[:3]})")


def run_py(code, *args, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# single-key calls


def test_put_get_contains_delete(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        assert db.get(b"a") is None
        assert db.get(b"a", b"dflt") == b"dflt"
        assert db.get(b"a", 17) == 17
        assert b"a" not in db
        with pytest.raises(KeyError):
            db[b"a"]
        db.put(b"a", b"1")
        db[b"b"] = b"2"
        assert db.get(b"a") == b"1" and db[b"b"] == b"2"
        assert db.get(b"a", b"dflt") == b"1"
        assert b"a" in db and b"b" in db
        assert isinstance(db.get(b"a"), bytes)
        db.put(b"a", b"1bis")
        assert db[b"a"] == b"1bis"
        db.delete(b"a")
        assert db.get(b"a") is None and b"a" not in db
        assert db.get(b"a", b"d") == b"d"
        with pytest.raises(KeyError):
            db[b"a"]
        del db[b"b"]
        assert b"b" not in db
        db.delete(b"never-existed")  # not an error
        del db[b"never-existed-either"]
        assert db.get(b"never-existed") is None
        db.put(b"a", b"again")  # a put after a delete revives the key
        assert db[b"a"] == b"again"
        assert dict(db.items()) == {b"a": b"again"}


def test_getitem_keyerror_carries_key(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        with pytest.raises(KeyError) as ei:
            db[b"missing"]
        assert ei.value.args[0] == b"missing"


def test_empty_keys_and_empty_values(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        assert db.get(b"") is None and b"" not in db
        db.put(b"", b"empty-key")
        db.put(b"ev", b"")
        assert db.get(b"") == b"empty-key" and b"" in db
        assert db.get(b"ev") == b"" and b"ev" in db and db[b"ev"] == b""
        assert db.get(b"ev", b"dflt") == b""  # an empty value is not absence
        assert db.get_many([b"", b"ev", b"x"]) == [b"empty-key", b"", None]
        assert dict(db.items()) == {b"": b"empty-key", b"ev": b""}
        db.flush()  # the same answers from a table
        assert db.get(b"") == b"empty-key" and db.get(b"ev") == b""
        assert db.get_many([b"", b"ev", b"x"]) == [b"empty-key", b"", None]
        assert dict(db.items()) == {b"": b"empty-key", b"ev": b""}
        db.delete(b"")
        assert db.get(b"") is None
        db.flush()
        assert db.get(b"") is None and dict(db.items()) == {b"ev": b""}
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.get(b"") is None and db.get(b"ev") == b""


def test_bytes_like_keys_and_values(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(bytearray(b"ba"), bytearray(b"v1"))
        db.put(memoryview(b"mv"), memoryview(b"v2"))
        db.put(b"np", np.frombuffer(b"v3", dtype=np.uint8).tobytes())
        db.put(b"wide", memoryview(np.array([1, 2], dtype=np.uint16)))
        assert db.get(b"ba") == b"v1" and db.get(bytearray(b"mv")) == b"v2"
        assert db.get(memoryview(b"np")) == b"v3"
        assert db.get(b"wide") == np.array([1, 2], dtype=np.uint16).tobytes()
        assert all(type(k) is bytes and type(v) is bytes for k, v in db.items())
        assert db.get_many([bytearray(b"ba"), memoryview(b"mv")]) == [b"v1", b"v2"]
        with db.write_batch() as b:
            b.put(bytearray(b"wb"), memoryview(b"v4"))
            b.delete(bytearray(b"ba"))
        assert db.get(b"wb") == b"v4" and db.get(b"ba") is None


@pytest.mark.parametrize("bad", ["str", 5, None, 2.5, [b"x"], object()])
def test_type_errors(tmp_path, bad):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"keep", b"1")
        before = db.stats()["user_bytes_written"]
        with pytest.raises(TypeError):
            db.put(bad, b"v")
        with pytest.raises(TypeError):
            db.put(b"k", bad)
        with pytest.raises(TypeError):
            db[bad] = b"v"
        with pytest.raises(TypeError):
            db.get(bad)
        with pytest.raises(TypeError):
            bad in db  # noqa: B015
        with pytest.raises(TypeError):
            db.delete(bad)
        with pytest.raises(TypeError):
            db.put_many([b"a", bad], [b"1", b"2"])
        with pytest.raises(TypeError):
            db.put_many([b"a", b"b"], [b"1", bad])
        with pytest.raises(TypeError):
            db.get_many([b"a", bad])
        with pytest.raises(TypeError):
            with db.write_batch() as b:
                b.put(b"in-batch", b"1")
                b.put(bad, b"v")
        with pytest.raises(TypeError):
            with db.write_batch() as b:
                b.put(b"in-batch", b"1")
                b.delete(bad)
        # nothing of the refused calls was written
        assert db.get(b"a") is None and db.get(b"in-batch") is None and db.get(b"k") is None
        assert db.stats()["user_bytes_written"] == before
        assert dict(db.items()) == {b"keep": b"1"}


def test_put_many_rejects_single_bytes_and_str(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        with pytest.raises(TypeError):
            db.put_many(b"abc", b"def")
        with pytest.raises(TypeError):
            db.put_many(["a"], ["b"])
        with pytest.raises(TypeError):
            db.get_many(b"abc")
        assert dict(db.items()) == {}


# ---------------------------------------------------------------------------------------------
# size limits


def _msg_has(exc, *alternatives):
    msg = str(exc.value)
    return any(a in msg for a in alternatives)


def test_key_too_large(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"x" * 65535, b"max-key")  # exactly the limit is fine
        assert db.get(b"x" * 65535) == b"max-key"
        st = db.stats()
        big = b"y" * 65536
        with pytest.raises(lsmtrie.ItemTooLargeError) as ei:
            db.put(big, b"v")
        assert isinstance(ei.value, ValueError)
        assert _msg_has(ei, "65535", "65,535")
        with pytest.raises(lsmtrie.ItemTooLargeError):
            db[big] = b"v"
        with pytest.raises(lsmtrie.ItemTooLargeError):
            db.delete(big)
        with pytest.raises(lsmtrie.ItemTooLargeError):
            db.put_many([b"ok-first", big], [b"1", b"2"])
        with pytest.raises(lsmtrie.ItemTooLargeError):
            with db.write_batch() as b:
                b.put(b"ok-in-batch", b"1")
                b.put(big, b"2")
        st2 = db.stats()
        # before anything is written: no item, no log byte, no user byte
        assert db.get(b"ok-first") is None and db.get(b"ok-in-batch") is None
        assert st2["user_bytes_written"] == st["user_bytes_written"]
        assert st2["bytes_written_by_kind"]["log"] == st["bytes_written_by_kind"]["log"]
        assert st2["memtable_items"] == st["memtable_items"]
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == {b"x" * 65535: b"max-key"}


def test_value_too_large(tmp_path):
    limit = 16 * 1024 * 1024
    assert lsmtrie.MAX_VALUE_BYTES == limit and lsmtrie.MAX_KEY_BYTES == 65535
    with open_tiny(tmp_path / "db") as db:
        big = bytes(limit + 1)
        st = db.stats()
        with pytest.raises(lsmtrie.ItemTooLargeError) as ei:
            db.put(b"k", big)
        assert isinstance(ei.value, ValueError)
        assert _msg_has(ei, "16777216", "16 MiB", "16,777,216")
        with pytest.raises(lsmtrie.ItemTooLargeError):
            db.put_many([b"first", b"k"], [b"1", big])
        with pytest.raises(lsmtrie.ItemTooLargeError):
            with db.write_batch() as b:
                b.put(b"first-b", b"1")
                b.put(b"k", big)
        assert db.get(b"k") is None and db.get(b"first") is None and db.get(b"first-b") is None
        st2 = db.stats()
        assert st2["user_bytes_written"] == st["user_bytes_written"]
        assert st2["bytes_written_by_kind"]["log"] == st["bytes_written_by_kind"]["log"]
        # exactly the limit is accepted, even with tiny tables, and survives a flush and reopen
        v = bytes(range(256)) * (limit // 256)
        db.put(b"max", v)
        assert db.get(b"max") == v
        db.flush()
        assert db.get(b"max") == v
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.get(b"max") == v


def test_large_values_in_memtable_and_tables(tmp_path):
    # values bigger than a bucket (overflow area) and bigger than the first read buffer
    rng = random.Random(5)
    model = {b"v%d" % n: rng.randbytes(n) for n in (0, 1, 4061, 4062, 4096, 4097, 10000, 100000)}
    with open_tiny(tmp_path / "db") as db:
        for k, v in model.items():
            db.put(k, v)
        check_model(db, model)
        db.flush()
        check_model(db, model)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)
        for k, v in model.items():
            assert db[k] == v


def test_batches_mixing_memtable_and_table_answers(tmp_path):
    """A batched get answers keys from the memtables first and looks the rest up in the trie,
    prefetching the metadata of the next few keys it will look up: every pattern of keys the
    memtable answers (a value, a tombstone) among keys the tables answer or nobody does, at
    every spacing, reads back exactly, in batches that run on one thread and on two."""
    rng = random.Random(31)
    model = {}
    old = [b"old-%d" % i for i in range(20_000)]
    vals = [rng.randbytes(rng.randint(1, 40)) for _ in old]
    with open_tiny(tmp_path / "db", memtable_bytes=60_000) as db:  # room for the fresh writes
        db.put_many(old, vals)
        model.update(zip(old, vals))
        db.flush()
        tables = db.stats()["tables_per_level"]
        assert all(tables[1:]), tables
        flushes = db.stats()["flushes"]
        fresh = {}  # in the memtable now: new values of some old keys, tombstones of others
        for i in range(0, 3000, 7):  # (a memtable's worth)
            fresh[old[i]] = b"new-%d" % i
        for k, v in fresh.items():
            db.put(k, v)
        for i in range(3, 3000, 11):
            db.delete(old[i])
            fresh[old[i]] = None
        model.update(fresh)
        assert db.stats()["flushes"] == flushes, "the memtable was to hold them"
        absent = [b"never-%d" % i for i in range(500)]
        for spacing in range(1, 7):  # a memtable answer every `spacing` keys
            keys = []
            for i in range(6000):
                pool = list(fresh) if i % spacing == 0 else (old if i % 3 else absent)
                keys.append(pool[rng.randrange(len(pool))])
            for batch in (keys[:300], keys[:1000], keys):  # one thread; two threads (512 keys or more)
                got = db.get_many(batch)
                want = [model.get(k) for k in batch]
                wrong = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
                assert not wrong, (spacing, len(batch), wrong[:5])


def test_compactions_keep_the_newest_of_bucket_and_overflow_items(tmp_path):
    """Compaction reads its input tables whole and stages their items by reference, not copies,
    until its outputs are written: the newest version of each key (or its tombstone) wins
    whether it sits in a bucket or in the overflow area, in the same input or a later one, at
    every level down to the last and through its garbage collection; and reopened too."""
    rng = random.Random(9)
    model, deleted = {}, set()
    with open_tiny(tmp_path / "db", gc_threshold=0.3) as db:
        for r in range(80):
            keys = [b"k%d" % rng.randrange(120) for _ in range(30)]
            vals = [rng.randbytes(rng.choice((0, 1, 40, 900, 4100, 6000))) for _ in keys]
            db.put_many(keys, vals)
            for k, v in zip(keys, vals):
                model[k] = v
                deleted.discard(k)
            if r % 7 == 6:
                gone = rng.sample(sorted(model), 5)
                with db.write_batch() as b:
                    for k in gone:
                        b.delete(k)
                for k in gone:
                    del model[k]
                    deleted.add(k)
            if r % 20 == 19:
                db.flush()
                check_model(db, model, absent=sorted(deleted))
        st = db.stats()
        assert st["compactions"] > 50 and st["gcs"] > 0, st
        assert st["tables_per_level"][-1] > 0, st["tables_per_level"]
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model, absent=sorted(deleted))


# ---------------------------------------------------------------------------------------------
# batches


def _pair(items):
    data = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(x) for x in items])
    return data, offs


def test_put_many_input_forms(tmp_path):
    rng = random.Random(3)
    with open_tiny(tmp_path / "db") as db:
        model = {}
        # lists
        ks = [b"list-%d" % i for i in range(50)]
        vs = [rng.randbytes(rng.randint(0, 30)) for _ in ks]
        db.put_many(ks, vs)
        model.update(zip(ks, vs))
        # tuples and generators
        ks = tuple(b"tuple-%d" % i for i in range(20))
        vs = tuple(b"t%d" % i for i in range(20))
        db.put_many(ks, vs)
        model.update(zip(ks, vs))
        db.put_many((b"gen-%d" % i for i in range(5)), (b"g%d" % i for i in range(5)))
        model.update({b"gen-%d" % i: b"g%d" % i for i in range(5)})
        # 2-D uint8 arrays (fixed width) for both
        karr = np.frombuffer(b"".join(b"arr%05d" % i for i in range(40)), dtype=np.uint8).reshape(40, 8)
        varr = np.arange(40 * 3, dtype=np.uint8).reshape(40, 3)
        db.put_many(karr, varr)
        model.update({bytes(karr[i]): bytes(varr[i]) for i in range(40)})
        # (data, offsets) pairs, with empty items in them
        kp = [b"pair-%d" % i for i in range(30)] + [b""]
        vp = [b"" if i % 3 == 0 else b"p%d" % i for i in range(31)]
        db.put_many(_pair(kp), _pair(vp))
        model.update(zip(kp, vp))
        # mixed forms
        km = [b"mixed-%d" % i for i in range(10)]
        db.put_many(km, np.full((10, 4), 7, dtype=np.uint8))
        model.update({k: b"\x07" * 4 for k in km})
        db.put_many(_pair([b"mix2-a", b"mix2-b"]), [b"A", b"B"])
        model.update({b"mix2-a": b"A", b"mix2-b": b"B"})
        # offsets not starting at 0 (a view into a larger buffer)
        data = np.frombuffer(b"XXabcdefYY", dtype=np.uint8).copy()
        db.put_many((data, np.array([2, 4, 8], dtype=np.int64)), [b"ab-v", b"cdef-v"])
        model.update({b"ab": b"ab-v", b"cdef": b"cdef-v"})
        # an empty batch is a no-op
        db.put_many([], [])
        check_model(db, model, absent=[b"XX", b"YY", b"abcdef"])
        db.flush()
        check_model(db, model)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)


def test_put_many_zero_width_array_keys(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put_many(np.zeros((1, 0), dtype=np.uint8), np.zeros((1, 2), dtype=np.uint8))
        assert db.get(b"") == b"\x00\x00"


def test_put_many_bad_shapes(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        with pytest.raises(ValueError):
            db.put_many([b"a", b"b"], [b"1"])
        with pytest.raises(ValueError):
            db.put_many(np.zeros((3, 2), np.uint8), np.zeros((2, 2), np.uint8))
        with pytest.raises(TypeError):
            db.put_many(np.zeros((3, 2), np.int32), np.zeros((3, 2), np.uint8))
        with pytest.raises(TypeError):
            db.put_many(np.zeros(3, np.uint8), np.zeros((3, 2), np.uint8))
        with pytest.raises((ValueError, TypeError)):  # offsets past the data
            db.put_many((np.zeros(3, np.uint8), np.array([0, 2, 9], np.int64)), [b"1", b"2"])
        with pytest.raises((ValueError, TypeError)):  # decreasing offsets
            db.put_many((np.zeros(3, np.uint8), np.array([0, 2, 1], np.int64)), [b"1", b"2"])
        assert dict(db.items()) == {}
        assert db.stats()["user_bytes_written"] == 0


def test_put_many_later_item_wins(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put_many([b"a", b"b", b"a", b"c", b"a"], [b"1", b"2", b"3", b"4", b"5"])
        assert db.get_many([b"a", b"b", b"c"]) == [b"5", b"2", b"4"]
        db.put_many([b"b", b"b"], [b"x", b""])
        assert db.get(b"b") == b""
        db.flush()
        assert db.get_many([b"a", b"b", b"c"]) == [b"5", b"", b"4"]
        assert dict(db.items()) == {b"a": b"5", b"b": b"", b"c": b"4"}


def test_put_many_spanning_many_memtables(tmp_path):
    # one call larger than several memtables (and tables): everything lands, later wins
    rng = random.Random(11)
    keys = [b"big-%d" % rng.randrange(3000) for _ in range(6000)]
    vals = [b"%d-" % i + rng.randbytes(rng.randint(0, 40)) for i in range(6000)]
    model = {}
    for k, v in zip(keys, vals):
        model[k] = v
    with open_tiny(tmp_path / "db") as db:
        db.put_many(keys, vals)
        check_model(db, model)
        db.flush()
        check_model(db, model)
        assert db.stats()["flushes"] >= 2  # ~160 KB live: more than one 62 KB table
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)


def test_get_many_order_and_forms(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put_many([b"a", b"b", b"c", b""], [b"1", b"22", b"", b"e"])
        db.delete(b"b")
        q = [b"c", b"zz", b"a", b"b", b"a", b"", b"c"]
        want = [b"", None, b"1", None, b"1", b"e", b""]
        assert db.get_many(q) == want
        assert db.get_many(tuple(q)) == want
        assert db.get_many(_pair(q)) == want
        assert db.get_many([]) == []
        arr = np.frombuffer(b"acab", dtype=np.uint8).reshape(4, 1)
        assert db.get_many(arr) == [b"1", b"", b"1", None]
        db.flush()
        assert db.get_many(q) == want
        got = db.get_many(q)
        assert all(x is None or type(x) is bytes for x in got)


def test_write_batch_applies_atomically(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"b", b"old-b")
        db.put(b"c", b"old-c")
        with db.write_batch() as b:
            b.put(b"a", b"1")
            b.delete(b"b")
            b.put(b"c", b"2")
            b.put(b"c", b"3")  # later wins inside a batch
            b.put(b"d", b"4")
            b.delete(b"d")  # put then delete: absent
            b.delete(b"e")
            b.put(b"e", b"5")  # delete then put: present
            b.put(b"", b"empty")
            assert len(b) == 9
            # nothing visible before the block ends
            assert db.get(b"a") is None and db.get(b"b") == b"old-b"
        want = {b"a": b"1", b"c": b"3", b"e": b"5", b"": b"empty"}
        assert dict(db.items()) == want
        assert db.get(b"b") is None and db.get(b"d") is None
        db.flush()
        assert dict(db.items()) == want
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == want


def test_write_batch_discarded_on_exception(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"x", b"keep")
        st = db.stats()
        with pytest.raises(RuntimeError, match="boom"):
            with db.write_batch() as b:
                b.put(b"a", b"1")
                b.delete(b"x")
                raise RuntimeError("boom")
        assert db.get(b"a") is None and db.get(b"x") == b"keep"
        assert db.stats()["user_bytes_written"] == st["user_bytes_written"]
        assert db.stats()["bytes_written_by_kind"]["log"] == st["bytes_written_by_kind"]["log"]
        with pytest.raises(KeyError):  # a KeyError from a read inside the block, too
            with db.write_batch() as b:
                b.put(b"a", b"1")
                db[b"missing"]
        assert db.get(b"a") is None
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == {b"x": b"keep"}


def test_write_batch_twice_is_an_error(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        b = db.write_batch()
        b.put(b"a", b"1")
        b.write()
        assert db.get(b"a") == b"1"
        with pytest.raises(lsmtrie.Error):
            b.write()
        with pytest.raises(lsmtrie.Error):
            with db.write_batch() as b2:
                b2.put(b"b", b"2")
                b2.write()
        assert db.get(b"b") == b"2"  # written once, by the explicit write()


def test_write_batch_empty_and_sync(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        with db.write_batch():
            pass
        with db.write_batch(sync=True) as b:
            b.put(b"s", b"1")
        with db.write_batch(sync=False) as b:
            b.put(b"n", b"2")
        assert db.get_many([b"s", b"n"]) == [b"1", b"2"]


def test_sync_writes(tmp_path):
    with lsmtrie.open(str(tmp_path / "db"), sync=True, **TINY) as db:
        assert db.sync is True
        db.put(b"a", b"1")
        db.put(b"b", b"2", sync=False)
        db.delete(b"a", sync=True)
        db.put_many([b"c", b"d"], [b"3", b"4"], sync=True)
        db.put_many([b"e"], [b"5"], sync=False)
        assert dict(db.items()) == {b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5"}
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == {b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5"}


# ---------------------------------------------------------------------------------------------
# items() against a dict model


def test_items_matches_model_across_flushes_and_levels(tmp_path):
    model = {}
    with open_tiny(tmp_path / "db") as db:
        for rnd in range(8):
            apply_ops(db, model, rand_ops(100 + rnd, 400))
            check_model(db, model)
            if rnd % 2:
                db.flush()
                check_model(db, model)
        st = db.stats()
        assert st["flushes"] >= 8 and st["compactions"] > 0
        assert st["items_per_level"][-1] > 0  # data reached the last level
        keys = list(db)
        assert sorted(keys) == sorted(model)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)


def test_items_tombstones_shadow_older_levels(tmp_path):
    # old versions sink to the last level; deletes and overwrites stay above them
    with open_tiny(tmp_path / "db") as db:
        keys = [b"k%04d" % i for i in range(1500)]
        db.put_many(keys, [b"old"] * len(keys))
        db.flush()
        for _ in range(3):  # push the old versions down
            db.put_many([b"filler-%d-%d" % (_, i) for i in range(800)], [b"f" * 20] * 800)
            db.flush()
        deep = db.stats()["items_per_level"]
        assert deep[-1] > 0
        model = dict(dict(db.items()))
        for i, k in enumerate(keys):
            if i % 3 == 0:
                db.delete(k)
                model.pop(k)
            elif i % 3 == 1:
                db.put(k, b"new")
                model[k] = b"new"
        check_model(db, model)  # memtables over tables
        db.flush()
        check_model(db, model)  # newer tables over older ones
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)
        assert db.get(keys[0]) is None and db.get(keys[1]) == b"new" and db.get(keys[2]) == b"old"


def test_items_sees_every_pending_memtable(tmp_path):
    # each put fills a memtable, so several wait for their flush when items() runs
    rng = random.Random(12)
    for trial in range(5):
        model = {}
        with open_tiny(tmp_path / f"db{trial}", memtable_bytes=2000) as db:
            for i in range(6):
                k, v = b"t%d-%d" % (trial, i), rng.randbytes(2500 + 5000 * (i % 3))
                db.put(k, v)
                model[k] = v
            check_model(db, model)


def test_items_is_a_snapshot_once_started(tmp_path):
    with open_tiny(tmp_path / "db", memtable_bytes=50000) as db:
        model = {b"s%03d" % i: b"v%d" % i for i in range(300)}
        db.put_many(list(model), list(model.values()))
        db.flush()
        db.put_many([b"m%03d" % i for i in range(100)], [b"m"] * 100)  # some in the memtable
        model.update({b"m%03d" % i: b"m" for i in range(100)})
        it = db.items()
        first = next(it)
        # writes after the scan started: not seen by it
        for i in range(100):
            db.delete(b"s%03d" % i)
            db.put(b"new%03d" % i, b"n")
        db.flush()
        rest = dict(it)
        rest[first[0]] = first[1]
        assert rest == model


# ---------------------------------------------------------------------------------------------
# options


def test_default_options(tmp_path):
    with lsmtrie.open(str(tmp_path / "db")) as db:
        o = db.options
        assert set(o) == {"table_buckets", "fill", "levels", "node_tables", "bloom_bits_per_key",
                          "memtable_bytes", "hash_seed", "gc_threshold", "value_format"}
        assert o["value_format"] == "raw"
        assert o["table_buckets"] == 8191 and o["fill"] == 0.95 and o["levels"] == 0  # grows
        assert o["node_tables"] == 8 and o["bloom_bits_per_key"] == 16
        assert o["gc_threshold"] == 0.5
        assert o["memtable_bytes"] == int(0.95 * 8191 * 4080)
        assert isinstance(o["hash_seed"], int)
        assert len(db.stats()["tables_per_level"]) == db.stats()["levels"] == 2  # to start with


def test_options_recorded_and_taken_from_store(tmp_path):
    opts = dict(table_buckets=64, fill=0.9, levels=4, node_tables=3, bloom_bits_per_key=10,
                memtable_bytes=5000, hash_seed=12345, gc_threshold=0.25, value_format="memcached")
    with lsmtrie.open(str(tmp_path / "db"), **opts) as db:
        assert db.options == opts
        db.put(b"a", b"1")
    with lsmtrie.open(str(tmp_path / "db")) as db:  # omitted: taken from the store
        assert db.options == opts
        assert db.get(b"a") == b"1"
    with lsmtrie.open(str(tmp_path / "db"), **opts) as db:  # the same values: fine
        assert db.options == opts
    with lsmtrie.open(str(tmp_path / "db"), levels=4, hash_seed=12345) as db:  # some of them
        assert db.options == opts


def test_default_memtable_bytes_is_one_table(tmp_path):
    with lsmtrie.open(str(tmp_path / "db"), table_buckets=64) as db:
        assert db.options["memtable_bytes"] == int(0.95 * 64 * 4080)
    with pytest.raises(ValueError):
        lsmtrie.open(str(tmp_path / "db2"), table_buckets=64, memtable_bytes=int(0.95 * 64 * 4080) + 1)
    with lsmtrie.open(str(tmp_path / "db3"), table_buckets=64,
                      memtable_bytes=int(0.95 * 64 * 4080)) as db:
        assert db.options["memtable_bytes"] == int(0.95 * 64 * 4080)


@pytest.mark.parametrize("name,first,other", [
    ("table_buckets", 16, 17), ("fill", 0.95, 0.9), ("levels", 3, 4), ("node_tables", 2, 3),
    ("bloom_bits_per_key", 16, 10), ("memtable_bytes", 3000, 2999), ("hash_seed", 7, 8),
    ("gc_threshold", 0.5, 0.6), ("value_format", "memcached", "raw"),
    ("value_format", "raw", "memcached"),
])
def test_option_mismatch_on_reopen(tmp_path, name, first, other):
    opts = dict(TINY)
    opts[name] = first
    with lsmtrie.open(str(tmp_path / "db"), **opts) as db:
        db.put(b"a", b"1")
    with pytest.raises(lsmtrie.InvalidArgumentError) as ei:
        lsmtrie.open(str(tmp_path / "db"), **{name: other})
    assert isinstance(ei.value, ValueError)
    assert name in str(ei.value)
    # the failed open left the store usable (and unlocked)
    with lsmtrie.open(str(tmp_path / "db"), **{name: first}) as db:
        assert db.options[name] == first and db.get(b"a") == b"1"


def test_value_format_names(tmp_path):
    with pytest.raises(ValueError, match="value_format must be one of raw, memcached"):
        lsmtrie.open(str(tmp_path / "db"), value_format="json")
    with pytest.raises(ValueError):
        lsmtrie.open(str(tmp_path / "db"), value_format=1)
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())
    assert lsmtrie.memcached_item(b"data", 7) == b"\x07\x00\x00\x00data"
    assert lsmtrie.memcached_split(lsmtrie.memcached_item(b"", 2**32 - 1)) == (2**32 - 1, b"")
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.memcached_split(b"abc")


def test_unknown_and_badly_typed_options(tmp_path):
    with pytest.raises(TypeError):
        lsmtrie.open(str(tmp_path / "db"), table_bucket=16)
    with pytest.raises(TypeError):
        lsmtrie.open(str(tmp_path / "db"), compression="zstd")
    with pytest.raises(TypeError):
        lsmtrie.open(str(tmp_path / "db"), table_buckets="16")
    with pytest.raises(TypeError):
        lsmtrie.open(str(tmp_path / "db"), levels=3.0)
    # and the refused opens created no store
    with pytest.raises(lsmtrie.StorageError):
        lsmtrie.open(str(tmp_path / "db"), create=False)


@pytest.mark.parametrize("bad", [
    dict(table_buckets=0), dict(table_buckets=70000), dict(fill=0.0), dict(fill=1.5),
    dict(levels=13), dict(node_tables=1), dict(memtable_bytes=10**12),
    dict(gc_threshold=0.0), dict(gc_threshold=1.0), dict(bloom_bits_per_key=65), dict(levels=-1),
    dict(checkpoint_interval=-1.0), dict(checkpoint_interval=3601),
])
def test_invalid_option_values(tmp_path, bad):
    with pytest.raises(ValueError):
        lsmtrie.open(str(tmp_path / "db"), **bad)


def test_checkpoint_interval_type(tmp_path):
    for bad in ("1", None, True):
        with pytest.raises(TypeError):
            lsmtrie.open(str(tmp_path / "db"), checkpoint_interval=bad)


def _durable_tables(path):
    """Tables per level in the manifest on disk (a read-only open replays no log into tables)."""
    with lsmtrie.open(path, read_only=True) as ro:
        return ro.stats()["tables_per_level"], dict(ro.items())


def test_checkpoints_make_background_work_durable(tmp_path):
    """With checkpoints far apart, flushes and compactions change only the state in memory: the
    manifest on disk still names no table, every log is kept, and a reader (and a reopen after
    an exit without close) sees every write through the logs. flush() is a checkpoint: then the
    manifest names the tables, and the logs and compacted tables are gone."""
    path = str(tmp_path / "db")
    script = tmp_path / "w.py"
    script.write_text(textwrap.dedent('''
        import os, sys, time, lsmtrie
        db = lsmtrie.open(sys.argv[1], checkpoint_interval=3600, table_buckets=16, node_tables=2,
                          levels=3, memtable_bytes=3000)
        for i in range(3000):
            db.put(b"k%05d" % i, b"v%d" % i)
        for _ in range(500):  # let the background work settle (without flush(): no checkpoint)
            st = db.stats()
            if st["compactions"] >= 3 and st["memtable_items"] < 200:
                break
            time.sleep(0.01)
        st = db.stats()
        print(st["compactions"], sum(st["tables_per_level"]), flush=True)
        sys.stdin.readline()  # the parent looks at the store now
        os._exit(0)
    '''))
    p = subprocess.Popen([sys.executable, str(script), path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        compactions, tables = map(int, p.stdout.readline().split())
        assert compactions >= 3 and tables > 0
        want = {b"k%05d" % i: b"v%d" % i for i in range(3000)}
        durable, seen = _durable_tables(path)
        assert sum(durable) == 0, durable  # no checkpoint yet: the manifest names no table
        assert seen == want
        assert any(f.endswith(".wal") for f in os.listdir(path))
    finally:
        p.communicate(b"\n", timeout=60)
    assert p.returncode == 0
    with lsmtrie.open(path, checkpoint_interval=3600) as db:
        assert dict(db.items()) == want  # replayed from the kept logs
        db.put(b"more", b"1")
        db.flush()
        durable, seen = _durable_tables(path)
        assert sum(durable) > 0 and seen == {**want, b"more": b"1"}
    # close() deleted what the checkpoints dropped: every table left is named by the manifest
    durable, _ = _durable_tables(path)
    files = os.listdir(path)
    assert sum(f.endswith(".ht") for f in files) == sum(durable), files


@pytest.fixture
def small_manifest_rotation():
    """Manifests replaced once past 4 KiB instead of 1 MiB (process-wide, for this test)."""
    from lsmtrie import _binding
    _binding.lib.ltr_test_manifest_rotation(4096)
    yield
    _binding.lib.ltr_test_manifest_rotation(0)


def test_grown_manifest_is_replaced_by_a_snapshot(tmp_path, small_manifest_rotation):
    """Checkpoints append edits to the manifest; once it has grown past the limit (1 MiB; 4 KiB
    here) and four times its snapshot, a checkpoint writes a new manifest holding a snapshot of
    the state instead (encoded when the checkpoint starts), CURRENT names it, the old one is
    removed, and a reopen has every write."""
    path = str(tmp_path / "db")
    want = {}
    names = []
    with lsmtrie.open(path, checkpoint_interval=0, table_buckets=1, node_tables=2, levels=3,
                      memtable_bytes=150) as db:  # a flush (and edits) every few items
        for r in range(5000):
            keys = [b"m%d-%d" % (r, i) for i in range(10)]
            db.put_many(keys, [b"v%d" % r] * 10)
            want.update((k, b"v%d" % r) for k in keys)
            if r % 100 == 99:  # a checkpoint for sure: background ones may lag behind the loop
                db.flush()
            current = open(os.path.join(path, "CURRENT")).read().strip()
            if not names or names[-1] != current:
                names.append(current)
            if len(names) >= 3:
                break
        # (a second replacement waits for four times the first snapshot, which holds every table)
        assert len(names) >= 2, "the manifest was never replaced"
        db.flush()
        manifests = [f for f in os.listdir(path) if f.startswith("MANIFEST-")]
        assert manifests == [open(os.path.join(path, "CURRENT")).read().strip()], manifests
        assert dict(db.items()) == want
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want
        assert db.get_many(list(want)) == list(want.values())


def test_manifest_of_a_store_reopened_often_is_replaced_too(tmp_path, small_manifest_rotation):
    """Growth counts from the manifest's snapshot, not from its size at the open: sessions
    that each add a little still get it replaced. (Counted from the open, each session had to
    quadruple the manifest on its own, and short sessions let it grow without bound.)"""
    path = str(tmp_path / "db")
    opts = dict(checkpoint_interval=0, table_buckets=1, node_tables=2, levels=3,
                memtable_bytes=150)
    want, names, sizes = {}, set(), []
    for session in range(60):
        with lsmtrie.open(path, **opts) as db:
            for r in range(4):
                keys = [b"s%d-%d-%d" % (session, r, i) for i in range(10)]
                db.put_many(keys, [b"v%d" % session] * 10)
                want.update((k, b"v%d" % session) for k in keys)
                db.flush()
        current = open(os.path.join(path, "CURRENT")).read().strip()
        names.add(current)
        sizes.append(os.path.getsize(os.path.join(path, current)))
    assert len(names) >= 3, (names, sizes[::10])
    assert max(sizes[-20:]) < 2 * max(sizes[:20]) + 8 * 4096, sizes[::10]  # bounded
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want


# ---------------------------------------------------------------------------------------------
# stats


STATS_KEYS = {
    "user_bytes_written", "bytes_written", "write_amplification", "bytes_written_by_kind",
    "tables_per_level", "items_per_level", "table_bytes_per_level", "memtable_items",
    "metadata_memory_bytes", "gets", "bucket_reads", "cluster_reads", "filter_false_positives",
    "flushes", "compactions", "gcs", "write_stalls", "files_reused", "files_reused_durable",
    "table_files_open", "table_file_reopens",
}


def _by_kind_total(st):
    """Sum of every number in bytes_written_by_kind (nested dicts included)."""
    def total(x):
        return sum(total(v) for v in x.values()) if isinstance(x, dict) else x
    return total(st["bytes_written_by_kind"])


def test_stats_keys_and_shapes(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        st = db.stats()
        assert STATS_KEYS <= set(st), STATS_KEYS - set(st)
        assert {"log", "flush", "compaction", "clusters", "manifest"} <= set(st["bytes_written_by_kind"])
        assert sorted(st["bytes_written_by_kind"]["compaction"]) == [1, 2]
        for k in ("tables_per_level", "items_per_level", "table_bytes_per_level"):
            assert len(st[k]) == 3 and all(x == 0 for x in st[k])
        assert st["user_bytes_written"] == 0 and st["memtable_items"] == 0
        assert st["gets"] == 0 and st["flushes"] == 0 and st["compactions"] == 0 and st["gcs"] == 0
        assert st["bytes_written"] == _by_kind_total(st)


def test_stats_user_bytes_exact(tmp_path):
    with open_tiny(tmp_path / "db", memtable_bytes=60000) as db:
        db.put(b"abc", b"12345")            # 8
        db[b"k"] = b""                      # 1
        db.delete(b"abc")                   # 3 (key length only)
        db.put_many([b"x", b"yy"], [b"1", b"222"])  # 1+1 + 2+3 = 7
        with db.write_batch() as b:
            b.put(b"bat", b"vv")            # 5
            b.delete(b"gone")               # 4
        with pytest.raises(RuntimeError):
            with db.write_batch() as b:     # discarded: 0
                b.put(b"nope", b"x" * 100)
                raise RuntimeError
        st = db.stats()
        assert st["user_bytes_written"] == 8 + 1 + 3 + 7 + 5 + 4
        assert st["memtable_items"] == 6  # abc(tombstone), k, x, yy, bat, gone(tombstone)
        assert st["bytes_written_by_kind"]["log"] >= st["user_bytes_written"]
        assert st["bytes_written"] == _by_kind_total(st)


def test_stats_invariants_after_flush_and_compaction(tmp_path):
    model = {}
    with open_tiny(tmp_path / "db") as db:
        s0 = db.stats()
        apply_ops(db, model, rand_ops(7, 3000))
        db.flush()
        st = db.stats()
        assert st["memtable_items"] == 0
        assert st["flushes"] > s0["flushes"] and st["compactions"] > 0
        kinds = st["bytes_written_by_kind"]
        assert kinds["log"] >= st["user_bytes_written"] > 0
        assert kinds["flush"] > 0 and kinds["manifest"] > 0 and kinds["compaction"][1] > 0
        assert st["bytes_written"] == _by_kind_total(st)
        assert st["write_amplification"] == pytest.approx(st["bytes_written"] / st["user_bytes_written"])
        assert st["write_amplification"] >= 1
        assert sum(st["tables_per_level"]) > 0
        assert sum(st["items_per_level"]) >= len(model)
        for t, b in zip(st["tables_per_level"], st["table_bytes_per_level"]):
            assert (t == 0) == (b == 0)
            assert b >= t * 16 * 4096
        assert st["metadata_memory_bytes"] > 0
        # reads are counted
        g0 = st["gets"]
        db.get(next(iter(model)))
        assert db.stats()["gets"] == g0 + 1
        keys = list(model)[:50]
        db.get_many(keys)
        st2 = db.stats()
        assert st2["gets"] == g0 + 1 + len(keys)
        assert st2["bucket_reads"] > 0
        # more writes: the counters only grow
        apply_ops(db, model, rand_ops(8, 1000))
        db.flush()
        st3 = db.stats()
        for k in ("user_bytes_written", "bytes_written", "flushes", "compactions", "gets"):
            assert st3[k] >= st2[k]
        assert st3["flushes"] > st2["flushes"]
        assert st3["user_bytes_written"] > st2["user_bytes_written"]
        assert st3["bytes_written_by_kind"]["log"] > kinds["log"]
        before_close = st3
    with lsmtrie.open(str(tmp_path / "db")) as db:  # byte counters persist across reopens
        st4 = db.stats()
        assert st4["user_bytes_written"] == before_close["user_bytes_written"]
        assert st4["bytes_written"] >= before_close["bytes_written"]
        assert st4["flushes"] >= before_close["flushes"]
        assert st4["compactions"] >= before_close["compactions"]
        assert st4["bytes_written"] == _by_kind_total(st4)
        check_model(db, model)


def test_stats_flushes_count(tmp_path):
    with open_tiny(tmp_path / "db", memtable_bytes=60000) as db:
        db.put(b"a", b"1")
        assert db.stats()["flushes"] == 0 and db.stats()["memtable_items"] == 1
        db.flush()
        st = db.stats()
        assert st["flushes"] == 1 and st["memtable_items"] == 0
        assert st["tables_per_level"][0] == 1 and st["items_per_level"][0] == 1
        db.flush()  # nothing to write: no new table
        assert db.stats()["flushes"] == 1 and db.stats()["tables_per_level"][0] == 1


# ---------------------------------------------------------------------------------------------
# close, context manager, closed objects


def test_close_is_idempotent_and_everything_raises_after(tmp_path):
    db = open_tiny(tmp_path / "db")
    db.put(b"a", b"1")
    b_open = db.write_batch()
    b_open.put(b"late", b"1")
    it = db.items()
    assert not db.closed
    db.close()
    assert db.closed
    db.close()  # idempotent
    db.close()
    calls = [
        lambda: db.put(b"a", b"2"),
        lambda: db.__setitem__(b"a", b"2"),
        lambda: db.get(b"a"),
        lambda: db.get(b"a", b"d"),
        lambda: db[b"a"],
        lambda: b"a" in db,
        lambda: db.delete(b"a"),
        lambda: db.__delitem__(b"a"),
        lambda: db.put_many([b"a"], [b"1"]),
        lambda: db.get_many([b"a"]),
        lambda: list(db.items()),
        lambda: list(db),
        lambda: next(it),
        lambda: db.flush(),
        lambda: db.stats(),
        lambda: b_open.write(),
    ]
    for i, call in enumerate(calls):
        try:
            call()
        except lsmtrie.ClosedError:
            continue
        except Exception as e:  # noqa: BLE001 - the test reports which call misbehaved
            pytest.fail(f"call #{i} on a closed store raised {e!r}, not ClosedError")
        pytest.fail(f"call #{i} on a closed store did not raise ClosedError")
    with pytest.raises(lsmtrie.ClosedError):
        with db.write_batch() as b:
            b.put(b"x", b"1")
    assert isinstance(lsmtrie.ClosedError("x"), lsmtrie.Error)
    with lsmtrie.open(str(tmp_path / "db")) as db2:
        assert dict(db2.items()) == {b"a": b"1"}


def test_context_manager(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"a", b"1")
    assert db.closed
    with pytest.raises(lsmtrie.ClosedError):
        db.get(b"a")
    with pytest.raises(ZeroDivisionError):
        with lsmtrie.open(str(tmp_path / "db")) as db:
            db.put(b"b", b"2")
            1 / 0
    assert db.closed
    # closed on the exception too: the lock is free and the write is there
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == {b"a": b"1", b"b": b"2"}


def test_close_makes_unflushed_writes_durable(tmp_path):
    db = open_tiny(tmp_path / "db", memtable_bytes=60000)
    model = {}
    apply_ops(db, model, rand_ops(1, 300))
    assert db.stats()["memtable_items"] > 0
    db.close()
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)


# ---------------------------------------------------------------------------------------------
# opening: missing stores, read-only, locks


@pytest.mark.parametrize("kw", [dict(create=False), dict(read_only=True)])
def test_open_missing_store(tmp_path, kw):
    with pytest.raises(lsmtrie.StorageError) as ei:
        lsmtrie.open(str(tmp_path / "nope"), **kw)
    assert ei.value.errno == errno.ENOENT
    assert isinstance(ei.value, OSError)


def test_open_existing_with_create_false(tmp_path):
    with open_tiny(tmp_path / "db") as db:
        db.put(b"a", b"1")
    with lsmtrie.open(str(tmp_path / "db"), create=False) as db:
        assert db.get(b"a") == b"1"


def test_open_accepts_pathlike(tmp_path):
    with lsmtrie.open(tmp_path / "db", **TINY) as db:
        db.put(b"a", b"1")
    with lsmtrie.open(tmp_path / "db") as db:
        assert db.get(b"a") == b"1"


def test_read_only_sees_data_and_refuses_writes(tmp_path):
    model = {}
    with open_tiny(tmp_path / "db") as db:
        apply_ops(db, model, rand_ops(2, 1500))
        db.flush()
        apply_ops(db, model, rand_ops(3, 100))  # some only in the log
    ro = lsmtrie.open(str(tmp_path / "db"), read_only=True)
    try:
        assert ro.read_only
        check_model(ro, model)
        assert ro.options["table_buckets"] == 16
        for call in (lambda: ro.put(b"a", b"1"), lambda: ro.__setitem__(b"a", b"1"),
                     lambda: ro.delete(b"a"), lambda: ro.__delitem__(b"a"),
                     lambda: ro.put_many([b"a"], [b"1"]), lambda: ro.put(b"a", b"1", sync=True)):
            with pytest.raises(lsmtrie.ReadOnlyError):
                call()
        with pytest.raises(lsmtrie.ReadOnlyError):
            with ro.write_batch() as b:
                b.put(b"a", b"1")
        check_model(ro, model)
        # two read-only handles at once, and a writer alongside them
        with lsmtrie.open(str(tmp_path / "db"), read_only=True) as ro2:
            check_model(ro2, model)
        with lsmtrie.open(str(tmp_path / "db")) as w:
            w.put(b"after", b"x")
        check_model(ro, model)
    finally:
        ro.close()
    with lsmtrie.open(str(tmp_path / "db"), read_only=True) as ro:
        model[b"after"] = b"x"
        check_model(ro, model)


def _churn(db, model, seed, rounds=8):
    """Writes that flush and compact, with pauses, so that the tables dropped in early rounds
    are past their grace period (1 s) while later rounds create tables."""
    for r in range(rounds):
        apply_ops(db, model, rand_ops(seed * 100 + r, 400))
        db.flush()
        time.sleep(0.25)


def test_dropped_table_files_are_reused_only_without_readers(tmp_path):
    """Files of dropped tables are reused for new ones (creating files is slow on ext4):
    unnamed ones always, durable ones only while no read-only open holds the store, since a
    reader may have them open. A reader's view stays intact while the writer reuses nothing."""
    path = tmp_path / "db"
    model = {}
    with open_tiny(path, checkpoint_interval=0.002) as db:
        _churn(db, model, 1)
        st = db.stats()
        assert st["files_reused"] > 0 and st["files_reused_durable"] > 0, st
        check_model(db, model)
        snapshot = dict(model)
        ro = lsmtrie.open(str(path), read_only=True)
        try:
            before = db.stats()
            _churn(db, model, 2)  # drops every table the reader has open, many times over
            during = db.stats()
            assert during["compactions"] > before["compactions"] + 20
            # had a file the reader reads been reused, it would read other tables' bytes
            check_model(ro, snapshot)
        finally:
            ro.close()
        _churn(db, model, 3)
        assert db.stats()["files_reused_durable"] > during["files_reused_durable"]
        check_model(db, model)
    with lsmtrie.open(str(path)) as db:
        check_model(db, model)


def test_read_only_sees_state_as_of_opening(tmp_path):
    model = {}
    w = open_tiny(tmp_path / "db")
    try:
        apply_ops(w, model, rand_ops(4, 1500))
        w.flush()
        apply_ops(w, model, rand_ops(5, 50))  # in the writer's memtable and log
        snapshot = dict(model)
        with lsmtrie.open(str(tmp_path / "db"), read_only=True) as ro:
            check_model(ro, snapshot)
            # the writer goes on: overwrites, deletes, flushes and compactions remove tables
            apply_ops(w, model, rand_ops(6, 3000))
            w.flush()
            assert model != snapshot
            check_model(ro, snapshot)
            ro.flush()  # harmless on a read-only store, changes nothing
            check_model(ro, snapshot)
        with lsmtrie.open(str(tmp_path / "db"), read_only=True) as ro:
            check_model(ro, model)
    finally:
        w.close()


def test_lock_error_same_process(tmp_path):
    path = str(tmp_path / "db")
    db = open_tiny(path)
    try:
        db.put(b"a", b"1")
        with pytest.raises(lsmtrie.LockError) as ei:
            lsmtrie.open(path)
        msg = str(ei.value)
        assert path in msg and "lock" in msg.lower()
        with pytest.raises(lsmtrie.LockError):
            lsmtrie.open(path, **TINY)
        # the refused open did not disturb the first handle
        db.put(b"b", b"2")
        db.flush()
        assert dict(db.items()) == {b"a": b"1", b"b": b"2"}
    finally:
        db.close()
    with lsmtrie.open(path) as db:  # released by close
        assert dict(db.items()) == {b"a": b"1", b"b": b"2"}


def test_lock_error_from_another_process(tmp_path):
    path = str(tmp_path / "db")
    with open_tiny(path) as db:
        db.put(b"a", b"1")
        r = run_py("""
            import sys, lsmtrie
            try:
                lsmtrie.open(sys.argv[1])
            except lsmtrie.LockError as e:
                print("LockError", e)
                sys.exit(3)
            print("opened")
        """, path)
        assert r.returncode == 3, r.stdout + r.stderr
        assert path in r.stdout and "lock" in r.stdout.lower().replace("lockerror", "")
        # reading from the other process works while we hold the lock
        r = run_py("""
            import sys, lsmtrie
            with lsmtrie.open(sys.argv[1], read_only=True) as ro:
                print(ro.get(b"a"))
                try:
                    ro.put(b"x", b"y")
                except lsmtrie.ReadOnlyError:
                    print("ReadOnlyError")
        """, path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["b'1'", "ReadOnlyError"]
        db.put(b"b", b"2")
    r = run_py("""
        import sys, lsmtrie
        with lsmtrie.open(sys.argv[1]) as db:
            print(sorted(db.items()))
    """, path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[(b'a', b'1'), (b'b', b'2')]"


def test_read_only_in_another_process_keeps_its_snapshot(tmp_path):
    path = str(tmp_path / "db")
    model = {}
    with open_tiny(path) as w:
        apply_ops(w, model, rand_ops(20, 1500))
        w.flush()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        code = textwrap.dedent("""
            import hashlib, sys, lsmtrie
            def digest(db):
                return hashlib.sha256(repr(sorted(db.items())).encode()).hexdigest()
            with lsmtrie.open(sys.argv[1], read_only=True) as ro:
                print(digest(ro), flush=True)
                sys.stdin.readline()
                print(digest(ro), flush=True)
        """)
        p = subprocess.Popen([sys.executable, "-c", code, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            first = p.stdout.readline().strip()
            import hashlib

            assert first == hashlib.sha256(repr(sorted(model.items())).encode()).hexdigest()
            apply_ops(w, model, rand_ops(21, 2500))  # flushes, compactions, deleted tables
            w.flush()
            p.stdin.write("go\n")
            p.stdin.flush()
            second = p.stdout.readline().strip()
            assert second == first, p.stderr.read()
        finally:
            p.kill()
            p.wait()


def test_read_only_alongside_busy_writer_process(tmp_path):
    """Read-only opens while another process writes (flushes and compactions running): each
    open succeeds and sees a consistent state: every write acknowledged before the open, and
    only a prefix of the write sequence."""
    path = str(tmp_path / "db")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    code = textwrap.dedent("""
        import sys, lsmtrie
        db = lsmtrie.open(sys.argv[1], table_buckets=16, node_tables=2, levels=3, memtable_bytes=2000)
        print("ready", flush=True)
        for i in range(1000000):
            db.put(b"w%07d" % i, b"value-%d" % i)
            print(i, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    last = [-1]

    def reader():
        for line in p.stdout:
            if line.strip().isdigit():
                last[0] = int(line)

    try:
        assert p.stdout.readline().strip() == "ready"
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.time() + 60
        while last[0] < 500 and time.time() < deadline:
            time.sleep(0.01)
        assert last[0] >= 500, p.stderr.read() if p.poll() is not None else "writer too slow"
        for _ in range(25):
            acked = last[0]
            with lsmtrie.open(path, read_only=True) as ro:
                got = dict(ro.items())
                n = len(got)
                assert n >= acked + 1
                want = {b"w%07d" % i: b"value-%d" % i for i in range(n)}
                assert got == want
                sample = [b"w%07d" % i for i in range(0, n, max(1, n // 200))]
                assert ro.get_many(sample) == [want[k] for k in sample]
            time.sleep(0.02)
        assert p.poll() is None, p.stderr.read()
    finally:
        p.kill()
        p.wait()


# ---------------------------------------------------------------------------------------------
# bulk mode


def test_bulk_mode(tmp_path):
    rng = random.Random(9)
    model = {}
    with open_tiny(tmp_path / "db", bulk=True) as db:
        assert db.bulk
        keys = [b"bulk-%06d" % i for i in range(5000)]
        vals = [rng.randbytes(rng.randint(0, 30)) for _ in keys]
        db.put_many(keys, vals)
        model.update(zip(keys, vals))
        db.put(b"single", b"s")
        model[b"single"] = b"s"
        db.delete(keys[0])
        del model[keys[0]]
        with db.write_batch() as b:
            b.put(b"batched", b"b")
        model[b"batched"] = b"b"
        check_model(db, model)  # readable before it is durable
        st = db.stats()
        assert st["bytes_written_by_kind"]["log"] == 0  # bulk skips the log
        assert st["user_bytes_written"] > 0
    assert not any(f.endswith(".wal") and os.path.getsize(tmp_path / "db" / f) > 0
                   for f in os.listdir(tmp_path / "db"))
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check_model(db, model)
        assert db.stats()["bytes_written_by_kind"]["log"] == 0
    with lsmtrie.open(str(tmp_path / "db"), bulk=True) as db:  # bulk again, after flush()
        db.put(b"second", b"2")
        model[b"second"] = b"2"
        db.flush()
        check_model(db, model)
    with lsmtrie.open(str(tmp_path / "db"), read_only=True) as db:
        check_model(db, model)


def test_bulk_after_logged_writes(tmp_path):
    with open_tiny(tmp_path / "db", memtable_bytes=60000) as db:
        db.put(b"logged", b"1")  # only in the log when closed
    with lsmtrie.open(str(tmp_path / "db"), bulk=True) as db:
        assert db.get(b"logged") == b"1"
        db.put(b"bulk", b"2")
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == {b"logged": b"1", b"bulk": b"2"}


def test_errors_hierarchy():
    assert issubclass(lsmtrie.ItemTooLargeError, ValueError)
    assert issubclass(lsmtrie.InvalidArgumentError, ValueError)
    assert issubclass(lsmtrie.DiskFullError, lsmtrie.StorageError)
    assert issubclass(lsmtrie.StorageError, OSError)
    for e in (lsmtrie.LockError, lsmtrie.ReadOnlyError, lsmtrie.ClosedError, lsmtrie.CorruptionError):
        assert issubclass(e, lsmtrie.Error)


def test_store_handle_in_a_forked_child(tmp_path):
    """A handle inherited across fork() is refused in the child and dropping it there does not
    close the parent's store (its threads, log and lock stay the parent's)."""
    db = lsmtrie.open(str(tmp_path / "db"), **TINY)
    try:
        db.put(b"a", b"1")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what happened, then drop the handle
            code = 1
            try:
                db.get(b"a")
            except lsmtrie.Error:
                code = 0
            del db  # runs the handle's destructor in the child: must not close the store
            os.write(w, bytes([code]))
            os._exit(0)
        os.close(w)
        reply = os.read(r, 1)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert reply == b"\x00", "the child could use the parent's handle"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        db.put(b"b", b"2")
        assert db.get(b"a") == b"1" and db[b"b"] == b"2"
    finally:
        db.close()
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db[b"a"] == b"1" and db[b"b"] == b"2"


@pytest.fixture
def checkpoint_policy():
    """Sets the background checkpoints' spacing factor and log trigger (process-wide)."""
    from lsmtrie import _binding
    yield _binding.lib.ltr_test_checkpoint_policy
    _binding.lib.ltr_test_checkpoint_policy(-1, -1)


def _write_for(db, seconds, tag):
    """Writes small batches (each rotating the 3 KB memtable: a flush, an edit) for a while."""
    end, r = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        db.put_many([b"%s-%d-%d" % (tag, r, i) for i in range(60)], [b"v" * 40] * 60)
        r += 1
        time.sleep(0.002)


def _wait_for_checkpoints(db, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while db.stats()["checkpoints"] < count and time.monotonic() < deadline:
        _write_for(db, 0.05, b"more")
    return db.stats()["checkpoints"]


@pytest.mark.parametrize("spacing", [0.0, 1e9])
def test_background_checkpoints_wait_in_proportion_to_their_cost(tmp_path, checkpoint_policy,
                                                                 spacing):
    """After a checkpoint, the next background one waits `spacing` times as long as that one
    took (4 by default), however short checkpoint_interval is: syncing a busy store's
    short-lived tables every second kept the device busy with tables that died soon after.
    With no spacing (0) checkpoints follow one another while edits come; with a huge one none
    comes after the first; flush() checkpoints regardless."""
    checkpoint_policy(spacing, 1 << 50)  # (no log trigger)
    with open_tiny(tmp_path / "db", checkpoint_interval=0) as db:
        first = _wait_for_checkpoints(db, 1, timeout=120)
        assert first >= 1, "no background checkpoint came"
        time.sleep(0.3)  # (one under way finishes)
        before = db.stats()["checkpoints"]
        _write_for(db, 0.6, b"load")
        if spacing == 0:  # they keep coming (however slow the disk is today)
            assert _wait_for_checkpoints(db, before + 3, timeout=120) >= before + 3
        after = db.stats()
        if spacing:
            assert after["checkpoints"] == before, (before, after["checkpoints"])
        assert after["flushes"] > 20
        db.flush()
        if spacing:  # (with no spacing, background ones may come too)
            assert db.stats()["checkpoints"] == after["checkpoints"] + 1
        assert db.stats()["checkpoints"] > after["checkpoints"]
        assert db.stats()["checkpoint_seconds"] > 0


def test_checkpoint_comes_once_enough_log_was_written(tmp_path, checkpoint_policy):
    """However far the spacing puts the next background checkpoint, it starts once enough log
    was written since the last one started (1 GiB by default; 100 KB here): that bounds the
    logs kept on disk and their replay after a crash."""
    checkpoint_policy(1e9, 100_000)
    # A memtable of 15 batches: few files for each checkpoint to fsync (a CI disk took seconds
    # for the hundreds that a memtable per batch made), and still edits pending.
    with open_tiny(tmp_path / "db", checkpoint_interval=3600, memtable_bytes=50_000) as db:
        first = _wait_for_checkpoints(db, 1, timeout=120)
        assert first >= 1
        log0 = db.stats()["bytes_written_by_kind"]["log"]
        got = _wait_for_checkpoints(db, first + 3, timeout=120)
        log1 = db.stats()["bytes_written_by_kind"]["log"]
        assert got >= first + 3, (first, got, log1 - log0)
        # each came after about 100 KB of log, not sooner (interval and spacing forbid that)
        assert log1 - log0 >= 2 * 100_000, (got - first, log1 - log0)


def test_old_logs_are_deleted_after_checkpoints(tmp_path):
    """Logs rotate (at 32 memtables' worth here) and each checkpoint hands those below the
    replay floor to the checkpoint thread, which deletes them after the grace period that
    dropped tables get (a read-only open may be replaying them; and flush() need not wait for
    the freeing of their blocks): the directory keeps the newest log or two, not one per
    rotation; a reopen that replays logs deletes them too."""
    path = str(tmp_path / "db")
    rng = random.Random(12)
    model = {}

    def wal_files():
        return sorted(f for f in os.listdir(path) if f.endswith(".wal"))

    with open_tiny(path, memtable_bytes=4000) as db:
        for r in range(120):
            ks = [b"log-%d-%d" % (r, i) for i in range(300)]
            vs = [rng.randbytes(rng.randint(10, 40)) for _ in ks]
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
        assert db.stats()["bytes_written_by_kind"]["log"] > 8 * 32 * 4000  # 8 rotations or more
        db.flush()
        deadline = time.monotonic() + 30
        while len(wal_files()) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(wal_files()) <= 2, wal_files()
        db.put(b"last", b"x")
        model[b"last"] = b"x"
    with lsmtrie.open(path) as db:
        check_model(db, model)
        assert len(wal_files()) <= 2, wal_files()


@pytest.fixture(params=[2, 0, "deep"], ids=["threads", "inline", "deepened"])
def batch_threads(request):
    """Batch gets with their two threads, with none (as when no thread can start: the caller's
    thread then looks each segment up as it asks for it), and deepened: every segment looked up
    counts as having waited for the device, so each batch starts on its two threads and adds
    more after its first segment (store_batch.c)."""
    from lsmtrie import _binding
    deep = request.param == "deep"
    _binding.lib.ltr_test_batch_threads(-1 if deep else request.param)
    _binding.lib.ltr_test_batch_device(deep)
    yield request.param
    _binding.lib.ltr_test_batch_threads(-1)
    _binding.lib.ltr_test_batch_device(0)


def test_large_batches_stream_in_segments_in_key_order(tmp_path, batch_threads):
    """get_many from 4,096 keys on is streamed: two C threads look up segments of 2,048 keys
    while the caller's thread makes the values of the finished ones. Every size around the
    segment boundaries, with values of every size (empty, and larger than a bucket) from the
    memtable, the tables and the overflow areas, tombstones and absent keys, reads back as the
    one-call form and the model say, in order, and counts each get once."""
    from lsmtrie import _binding
    rng = random.Random(41)
    model = {}
    keys = [b"s-%d" % i for i in range(12_000)]
    vals = [rng.randbytes(rng.choice((0, 1, 17, 200, 5000))) for _ in keys]
    with open_tiny(tmp_path / "db", memtable_bytes=60_000) as db:
        db.put_many(keys, vals)
        model.update(zip(keys, vals))
        for i in range(0, 12_000, 13):
            db.delete(keys[i])
            model[keys[i]] = None
        db.flush()
        for i in range(5, 12_000, 97):  # the memtable answers these
            db.put(keys[i], b"fresh-%d" % i)
            model[keys[i]] = b"fresh-%d" % i
        assert db.stats()["memtable_items"] > 100
        pool = keys + [b"absent-%d" % i for i in range(3000)]
        runs = _binding.lib.ltr_test_batch_deepen_runs()
        for n in (4095, 4096, 4097, 2048 * 5, 2048 * 5 + 1, 30_000):
            batch = [pool[rng.randrange(len(pool))] for _ in range(n)]
            gets = db.stats()["gets"]
            got = db.get_many(batch)
            assert db.stats()["gets"] == gets + n
            want = [model.get(k) for k in batch]
            wrong = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
            assert not wrong, (n, wrong[:5])
            status, data, voffs = db.get_many_packed(batch)  # the one-call form agrees
            one = [data[voffs[i]:voffs[i + 1]] if s == 1 else None for i, s in enumerate(status)]
            assert one == got, n
        if batch_threads == "deep":  # every batch added threads, one a segment left at most
            assert db.stats()["batches_deepened"] >= 12
            assert _binding.lib.ltr_test_batch_deepen_runs() - runs >= 12


def device_read_bytes():
    for line in open("/proc/self/io"):
        if line.startswith("read_bytes:"):
            return int(line.split()[1])


def test_a_batch_that_waits_for_the_device_deepens(tmp_path):
    """The pages of a closed store's tables and BloomClusters dropped from the page cache (its
    close synced them, so they are clean): a batch of the reopened store reads them from the
    device and deepens; the batches after it, whose pages are cached, do not wait. Every answer
    is right, in the deepened batch and after it."""
    path = tmp_path / "db"
    keys = [b"d-%d" % i for i in range(150_000)]
    vals = [b"%d" % i * 20 for i in range(150_000)]
    with lsmtrie.open(str(path), table_buckets=64, levels=2) as db:
        db.put_many(keys, vals)
        db.flush()
        assert db.stats()["tables_per_level"][-1] > 0
    for name in os.listdir(path):
        fd = os.open(path / name, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    with lsmtrie.open(str(path), read_only=True) as db:
        before = device_read_bytes()
        assert db.get_many(keys) == vals
        read = device_read_bytes() - before
        # (the store is some 10 MB: a file system that kept its pages cached fails here)
        assert read >= 1 << 20, f"only {read} bytes read from the device: the pages stayed cached"
        assert db.stats()["batches_deepened"] == 1
        for _ in range(2):  # cached now: the next batch starts deep, the one after does not
            assert db.get_many(keys[::-1]) == vals[::-1]
        assert db.stats()["batches_deepened"] == 1


def test_a_failing_segment_raises_and_the_store_goes_on(tmp_path, batch_threads):
    """A corrupt bucket met by one segment of a streamed batch raises CorruptionError from
    get_many and from get_many_packed, which runs large batches the same way (the threads stop
    and are joined: nothing hangs), and the store answers the other keys afterwards."""
    path = tmp_path / "db"
    keys = [b"c-%d" % i for i in range(8000)]
    with open_tiny(path) as db:
        db.put_many(keys, [b"w" * 60] * len(keys))
        db.flush()
    corrupt_first_buckets(path)
    with lsmtrie.open(str(path), read_only=True) as db:
        for _ in range(3):
            with pytest.raises(lsmtrie.CorruptionError, match="checksum|corrupt"):
                db.get_many(keys * 3)
            with pytest.raises(lsmtrie.CorruptionError, match="checksum|corrupt"):
                db.get_many_packed(keys * 3)
        ok = bad = 0
        for k in keys[:500]:  # keys in other buckets still read
            try:
                ok += db.get(k) == b"w" * 60
            except lsmtrie.CorruptionError:
                bad += 1
        assert ok > 300 and ok + bad == 500, (ok, bad)


def test_closing_while_streamed_batches_run(tmp_path, batch_threads):
    """close() from another thread waits for a streamed get_many in flight (its C threads, and
    those a deepened batch added, use the store until the batch is freed); the caller gets its
    whole answer or ClosedError."""
    keys = [b"t-%d" % i for i in range(6000)]
    vals = [b"%d" % i * 3 for i in range(6000)]
    for delay in (0.0, 0.001, 0.005, 0.02):
        db = open_tiny(tmp_path / f"db{delay}")
        db.put_many(keys, vals)
        db.flush()
        results, errors = [], []

        def reader():
            try:
                for _ in range(50):
                    results.append(db.get_many(keys) == vals)
            except lsmtrie.ClosedError:
                errors.append("closed")

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(delay)
        db.close()
        t.join(60)
        assert not t.is_alive()
        assert all(results), delay
        assert len(results) == 50 or errors == ["closed"], (delay, len(results), errors)
