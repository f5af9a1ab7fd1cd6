"""direct_io: table files read with O_DIRECT into aligned buffers (issue 23).

Every read path (a single get, get_many in one call and streamed, get_many_packed, items(),
verify(), a read-only open, the HTable reader) must give exactly what a buffered open gives, on
stores holding memtable answers, tables at every level, overflow items (values larger than a
bucket), migrated items and tombstones, with the same reads counted. A store moves between
direct and buffered opens freely. A failing or short O_DIRECT read is a typed error, and a file
system that refuses O_DIRECT fails the open, never falling back to the page cache unasked.
Batched gets keep many reads in flight on a pool of threads: their answers must not depend on
how many threads run them, nor on other batches running at once.
"""

import errno
import os
import random
import threading

import numpy as np
import pytest

import lsmtrie
from forked import isolated
from lsmtrie import _binding
from lsmtrie.htable import HTable, HTableBuilder
from test_store_faults import TINY, run_with_fault

lib, ffi = _binding.lib, _binding.ffi

SIZES = (0, 1, 17, 200, 900, 4100, 9000)  # 4100 and 9000: the overflow area


def _fill(path, seed=1, n=2500, **opts):
    """A store of three levels (the last with BloomClusters) holding values of every size,
    tombstones, and a memtable's worth of fresh writes (when the store is kept open).
    Returns the open store and its model (None: deleted)."""
    rng = random.Random(seed)
    # values of every size in the tables (overflow areas included): value logs, which would take
    # the large ones out, are read through the page cache and tested in test_store_blobs.py
    o = dict(TINY, min_blob_size=0)
    o.update(opts)
    db = lsmtrie.open(path, **o)
    model = {}
    keys = [b"key-%d-%d" % (seed, i) for i in range(n)]
    for lo in range(0, n, 250):
        vals = [rng.randbytes(rng.choice(SIZES)) for _ in keys[lo:lo + 250]]
        db.put_many(keys[lo:lo + 250], vals)
        model.update(zip(keys[lo:lo + 250], vals))
    for k in keys[::7]:
        db.delete(k)
        model[k] = None
    db.flush()
    for r in range(3):  # a table or two above the last level: the first two go down a level
        upper = [b"upper-%d-%d-%d" % (seed, r, i) for i in range(25)]
        vals = [rng.randbytes(rng.randint(0, 30)) for _ in upper]
        db.put_many(upper, vals)
        model.update(zip(upper, vals))
        db.flush()
    for k in keys[3::50]:  # answered by the memtable
        model[k] = b"fresh" + k
        db.put(k, model[k])
    return db, model


def _absent(n=2000):
    return [b"absent-%d" % i for i in range(n)]


def _reads(db, keys):
    """Everything the read paths say about keys and the store, and the table reads they took
    (the store's own counters: bucket pages and overflow records read from table files)."""
    before = db.stats()
    out = dict(small=db.get_many(keys[:300]), streamed=db.get_many(keys))
    status, data, offs = db.get_many_packed(keys)
    out["packed"] = (status.tolist(), data, offs.tolist())
    batched = db.stats()
    out["single"] = [db.get(k) for k in keys]
    out["items"] = sorted(db.items())
    after = db.stats()
    out["table_reads"] = after["bucket_reads"] - before["bucket_reads"]
    out["cluster_reads"] = after["cluster_reads"] - before["cluster_reads"]
    out["batched_gets"] = batched["gets"] - before["gets"]
    out["verified"] = db.verify()
    return out


def _check_model(got, keys, model):
    want = [model.get(k) for k in keys]
    assert got["single"] == want and got["streamed"] == want and got["small"] == want[:300]
    assert got["items"] == sorted((k, v) for k, v in model.items() if v is not None)


def test_every_read_path_reads_as_a_buffered_open(tmp_path):
    path = str(tmp_path / "db")
    db, model = _fill(path, direct_io=True)
    try:
        stats = db.stats()
        assert stats["levels"] == 3 and all(stats["tables_per_level"][1:]), stats["tables_per_level"]
        assert stats["memtable_items"] > 0
        keys = list(model) + _absent()
        assert len(keys) > 4096  # the streamed form
        direct = _reads(db, keys)
    finally:
        db.close()
    _check_model(direct, keys, model)
    assert direct["batched_gets"] == 2 * len(keys) + 300 and direct["table_reads"] > 0
    with lsmtrie.open(path) as db:
        db.put_many([k for k in model if k.endswith(b"3")][:1], [b"x"])  # (a memtable again)
    model[[k for k in model if k.endswith(b"3")][0]] = b"x"
    with lsmtrie.open(path, read_only=True) as db:
        buffered = _reads(db, keys)
    with lsmtrie.open(path, read_only=True, direct_io=True) as db:
        assert db.direct_io
        direct = _reads(db, keys)
    assert direct == buffered  # answers, scans, verification and the reads counted
    _check_model(direct, keys, model)


def test_a_store_moves_between_direct_and_buffered_opens(tmp_path):
    """Written (flushes, compactions, BloomCluster builds) with direct_io, then without it, then
    with it again: each open reads what every earlier one wrote."""
    path = str(tmp_path / "db")
    model = {}
    for r, direct in enumerate((True, False, True, False)):
        db, m = _fill(path, seed=r, n=800, direct_io=direct)
        model.update(m)
        with db:
            got = db.get_many(list(model))
            assert got == list(model.values())
        with lsmtrie.open(path, direct_io=not direct) as db:
            assert db.get_many(list(model)) == list(model.values())
            assert sorted(db.items()) == sorted((k, v) for k, v in model.items() if v is not None)


def test_direct_io_within_a_bound_on_open_files(tmp_path):
    """With two table descriptors for a store of many tables, tables are closed and reopened
    (with O_DIRECT again) as the reads go."""
    path = str(tmp_path / "db")
    db, model = _fill(path)
    db.close()
    keys = list(model) + _absent(200)
    with lsmtrie.open(path, direct_io=True, max_open_files=2) as db:
        assert db.get_many(keys) == [model.get(k) for k in keys]
        assert [db.get(k) for k in keys] == [model.get(k) for k in keys]
        db.verify()
        st = db.stats()
        assert st["table_file_reopens"] > 100 and st["table_files_open"] <= 2 + 32


@pytest.mark.parametrize("threads", [0, 1, 3, 32], ids=lambda n: f"{n}-threads")
def test_batched_answers_do_not_depend_on_the_threads(tmp_path, threads):
    path = str(tmp_path / "db")
    db, model = _fill(path, direct_io=True)
    keys = list(model) + _absent()
    random.Random(5).shuffle(keys)
    lib.ltr_test_batch_threads(threads)
    try:
        with db:
            for n in (1, 2, 31, 33, 500, 4095, 4096, len(keys)):
                gets = db.stats()["gets"]
                assert db.get_many(keys[:n]) == [model.get(k) for k in keys[:n]], n
                assert db.stats()["gets"] == gets + n
    finally:
        lib.ltr_test_batch_threads(-1)


def test_batches_from_several_threads_share_the_pool(tmp_path):
    path = str(tmp_path / "db")
    db, model = _fill(path, direct_io=True)
    keys = list(model) + _absent()
    errors = []

    def reader(seed):
        try:
            rng = random.Random(seed)
            for _ in range(6):
                batch = rng.choices(keys, k=rng.choice((3, 100, 5000)))
                assert db.get_many(batch) == [model.get(k) for k in batch]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    with db:
        ts = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors, errors[0]


@isolated(timeout=60)
def test_a_batch_given_up_early_is_freed(tmp_path):
    """The caller takes one segment of a large batch and frees it: the runs of the pool not yet
    started are dropped, the running ones stop, and the next batch reads everything."""
    path = str(tmp_path / "db")
    db, model = _fill(path, direct_io=True)
    keys = list(model) * 4
    k = np.frombuffer(b"".join(keys), np.uint8)
    offs = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(x) for x in keys], out=offs[1:])
    status = np.zeros(len(keys), np.int8)
    with db, db._use() as h:
        for _ in range(20):
            out = ffi.new("ltr_batch **")
            _binding.check(lib.ltr_store_batch_start(h, _binding.ptr_u8(k), _binding.ptr_i64(offs),
                                                     k.size, len(keys), _binding.ptr_i8(status), out))
            lo, hi = ffi.new("size_t *"), ffi.new("size_t *")
            data, ends = ffi.new("uint8_t **"), ffi.new("int64_t **")
            _binding.check(lib.ltr_batch_next(out[0], lo, hi, data, ends))
            assert lo[0] == 0 and hi[0] > 0
            lib.ltr_batch_free(out[0])
    with lsmtrie.open(path, direct_io=True, read_only=True) as db:
        assert db.get_many(keys) == [model[x] for x in keys]


# ---- the HTable reader ----

def _full_table(path, buckets, seed):
    """A table filled to its budget with small values, some tombstones and a value larger than
    a bucket every 500 items: its buckets overflow, so it has migrated items and overflow items."""
    rng = random.Random(seed)
    items = {}
    with HTableBuilder(buckets=buckets, sync=False) as b:
        while True:
            k = rng.randbytes(rng.randint(1, 30))
            if rng.random() < 0.1:
                if not b.delete(k):
                    break
                items[k] = None
                continue
            big = buckets > 1 and len(items) % 500 == 1  # (one bucket's budget is too small)
            v = rng.randbytes(5000 if big else rng.randint(0, 60))
            if not b.add(k, v):
                break
            items[k] = v
        return items, b.finish(path)


def test_htable_reads_directly_as_through_a_mapping(tmp_path):
    """Tables of several sizes (their files end at different offsets of their last block), with
    migrated items, overflow items and tombstones."""
    for buckets in (1, 3, 7, 32, 100):
        path = str(tmp_path / f"t{buckets}")
        items, st = _full_table(path, buckets, buckets)
        assert (buckets == 1 or st.overflow_items > 0) and (buckets < 32 or st.migrated_items > 0), st
        keys = list(items) + [b"absent-%d" % i for i in range(300)]
        with HTable(path) as mapped, HTable(path, direct_io=True) as direct:
            assert direct.info == mapped.info
            got = [direct.lookup(k) for k in keys]
            assert got == [mapped.lookup(k) for k in keys]
            assert [v for _, v in got[:len(items)]] == list(items.values())
            assert direct.get_many(keys) == mapped.get_many(keys)
            assert sorted(direct.items()) == sorted(mapped.items())
            assert direct.read_stats() == mapped.read_stats()


def test_htable_inside_a_file_is_not_opened_directly(tmp_path):
    path = str(tmp_path / "pack")
    open(path, "wb").close()
    with HTableBuilder(buckets=4) as b:
        b.add(b"k", b"v")
        st = b.finish_at(path, 4096, 1 << 20)
    with pytest.raises(lsmtrie.InvalidArgumentError, match="LTR_OPEN_DIRECT"):
        HTable(path, offset=4096, length=st.file_bytes, direct_io=True)
    with HTable(path, offset=4096, length=st.file_bytes) as t:
        assert t.get(b"k") == b"v"


# ---- file systems that refuse O_DIRECT ----

@isolated(timeout=60)
def test_a_file_system_that_refuses_o_direct_fails_the_open(tmp_path):
    """(ltr_test_refuse_direct: every O_DIRECT open fails with EINVAL, as on a file system
    without direct I/O.) Writer and reader opens, a new store, and an HTable are refused with
    InvalidArgumentError naming the directory; the store opens without direct_io meanwhile."""
    path = str(tmp_path / "db")
    db, model = _fill(path, n=300)
    db.close()
    lib.ltr_test_refuse_direct(1)
    try:
        for opts in (dict(), dict(read_only=True)):
            with pytest.raises(lsmtrie.InvalidArgumentError) as e:
                lsmtrie.open(path, direct_io=True, **opts)
            assert path in str(e.value) and "O_DIRECT" in str(e.value), str(e.value)
        fresh = str(tmp_path / "new")
        with pytest.raises(lsmtrie.InvalidArgumentError, match="O_DIRECT"):
            lsmtrie.open(fresh, direct_io=True)
        table = next(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".ht"))
        with pytest.raises(lsmtrie.InvalidArgumentError, match="O_DIRECT"):
            HTable(table, direct_io=True)
        with lsmtrie.open(path, read_only=True) as db:
            assert db.get_many(list(model)) == list(model.values())
    finally:
        lib.ltr_test_refuse_direct(0)
    with lsmtrie.open(path, direct_io=True) as db:
        assert db.get_many(list(model)) == list(model.values())


def _tmpfs():
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    return next((m[1] for m in mounts if m[2] == "tmpfs" and m[1] == "/dev/shm"
                 and os.access(m[1], os.W_OK)), None)


@pytest.mark.skipif(_tmpfs() is None, reason="no writable tmpfs at /dev/shm")
def test_direct_io_on_tmpfs_works_or_is_refused(tmp_path):
    """tmpfs accepts O_DIRECT from Linux 6.6 on (reads then cost what buffered ones do) and
    refused it before: a direct store there must read as a buffered one, or fail to open with
    InvalidArgumentError naming its directory; never open and then fail, or fall back."""
    import tempfile
    root = tempfile.mkdtemp(dir=_tmpfs(), prefix="lsmtrie-direct-")
    try:
        path = os.path.join(root, "db")
        db, model = _fill(path, n=600)
        db.close()
        try:
            fd = os.open(os.path.join(path, "CURRENT"), os.O_RDONLY | os.O_DIRECT)
            os.close(fd)
            accepts = True
        except OSError as e:
            assert e.errno == errno.EINVAL
            accepts = False
        if accepts:
            with lsmtrie.open(path, direct_io=True) as db:
                assert db.get_many(list(model)) == list(model.values())
                db.verify()
        else:
            with pytest.raises(lsmtrie.InvalidArgumentError) as e:
                lsmtrie.open(path, direct_io=True)
            assert path in str(e.value)
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)


# ---- faults ----

@isolated(timeout=120)
def test_a_failing_direct_read_is_a_storage_error_on_every_path(tmp_path):
    path = str(tmp_path / "db")
    db, model = _fill(path)
    db.close()
    keys = list(model) + _absent(200)
    present = [k for k in keys if model.get(k) is not None and not model[k].startswith(b"fresh")]
    calls = dict(get=lambda db: [db.get(k) for k in present[:50]],
                 small=lambda db: db.get_many(present[:100]),
                 streamed=lambda db: db.get_many(keys * 2),
                 items=lambda db: list(db.items()),
                 verify=lambda db: db.verify())
    with lsmtrie.open(path, direct_io=True, read_only=True) as db:
        for name, call in calls.items():
            for after in (0, 3, 40):
                _binding.fault_set("pread", after, errno.EIO)
                try:
                    with pytest.raises(lsmtrie.StorageError) as e:
                        call(db)
                finally:
                    _binding.fault_set("pread", 0, 0)
                assert e.value.errno == errno.EIO and not isinstance(e.value, lsmtrie.CorruptionError), (name, e.value)
                assert "O_DIRECT" in str(e.value), str(e.value)
            call(db)  # and once the fault is gone, the call goes through
        assert db.get_many(keys) == [model.get(k) for k in keys]


@isolated(timeout=60)
def test_a_short_direct_read_is_a_corruption_error(tmp_path):
    """A table file cut short under an open store (at an offset inside a block): the O_DIRECT
    read of a bucket past the new end comes back short, a CorruptionError naming the file."""
    path = str(tmp_path / "db")
    db, model = _fill(path)
    db.close()
    with lsmtrie.open(path, direct_io=True, read_only=True, max_open_files=-1) as db:
        tables = sorted((f for f in os.listdir(path) if f.endswith(".ht")),
                        key=lambda f: -os.path.getsize(os.path.join(path, f)))
        victim = os.path.join(path, tables[0])
        assert os.path.getsize(victim) > 3 * 4096
        os.truncate(victim, 4096 + 1000)
        with pytest.raises(lsmtrie.CorruptionError) as e:
            for k in model:
                db.get(k)
        assert victim in str(e.value), str(e.value)
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.get_many(list(model))
        assert victim in str(e.value), str(e.value)
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.verify()
        assert victim in str(e.value), str(e.value)


@pytest.mark.parametrize("op,err", [("pread", errno.EIO), ("open", errno.EIO),
                                    ("write", errno.ENOSPC)])
@pytest.mark.parametrize("after", [0, 2, 7, 20])
@isolated(timeout=120)
def test_faults_in_a_direct_writer(tmp_path, op, after, err):
    """A store written and read with direct_io while reads, opens (flushes open their new
    tables, compactions open their inputs a second time, through the page cache) or writes
    fail: typed errors, and every acknowledged write after the fault is cleared."""
    opts = dict(TINY, direct_io=True, min_blob_size=0)  # (every value in the tables: _fill)
    run_with_fault(str(tmp_path / "db"), op, after, err, open_opts=opts,
                   reads_during_fault=op == "write")
