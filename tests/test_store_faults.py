"""Full disks, I/O errors and damaged files.

Faults are injected with `lsmtrie._binding.fault_set(op, after, err)`: after `after` more
successful write()/fsync() calls in this process, the next ones fail with errno `err` until
cleared. The contract: the error is typed (DiskFullError for ENOSPC, StorageError otherwise),
nothing acknowledged is lost, the store stays consistent, and once the fault is gone `flush()`
retries the failed background work and a reopen works.
"""

import errno
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import lsmtrie
from forked import isolated
from lsmtrie import _binding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500)


@pytest.fixture(autouse=True)
def _no_faults_left():
    _binding.fault_set("write", 0, 0)
    _binding.fault_set("fsync", 0, 0)
    yield
    _binding.fault_set("write", 0, 0)
    _binding.fault_set("fsync", 0, 0)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def gen_ops(seed, n, nkeys=150, vmax=90):
    rng = random.Random(seed)
    pool = [b"key%d" % i for i in range(nkeys)]
    ops = []
    for i in range(n):
        r = rng.random()
        sync = rng.random() < 0.1
        head = b"%d:" % i
        if r < 0.6:
            ops.append(("put", rng.choice(pool), head + rng.randbytes(rng.randint(0, vmax)), sync))
        elif r < 0.75:
            ops.append(("del", rng.choice(pool), sync))
        else:
            items = [(rng.choice(pool), None if rng.random() < 0.3 else head + b"%d" % j)
                     for j in range(rng.randint(1, 8))]
            ops.append(("batch", items, sync))
    return ops


def apply_model(model, op):
    if op[0] == "put":
        model[op[1]] = op[2]
    elif op[0] == "del":
        model.pop(op[1], None)
    else:
        for k, v in op[1]:
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v


def apply_store(db, op):
    sync = op[-1]
    if op[0] == "put":
        db.put(op[1], op[2], sync=sync)
    elif op[0] == "del":
        db.delete(op[1], sync=sync)
    else:
        with db.write_batch(sync=sync) as b:
            for k, v in op[1]:
                if v is None:
                    b.delete(k)
                else:
                    b.put(k, v)


def assert_state(state, model, failed_op):
    """state equals the model, or the model with the failed operation applied whole."""
    if state == model:
        return
    if failed_op is not None:
        m2 = dict(model)
        apply_model(m2, failed_op)
        if state == m2:
            return
    missing = [k for k in model if k not in state]
    wrong = [k for k in model if k in state and state[k] != model[k]]
    extra = [k for k in state if k not in model]
    raise AssertionError(f"state differs from the model (failed op {failed_op and failed_op[0]}): "
                         f"{len(missing)} missing {missing[:3]}, {len(wrong)} wrong {wrong[:3]}, "
                         f"{len(extra)} extra {extra[:3]}")


def store_state(db):
    state = dict(db.items())
    keys = [b"key%d" % i for i in range(160)]
    assert db.get_many(keys) == [state.get(k) for k in keys], "get_many and items() disagree"
    return state


def check_error_type(e, err):
    if err == errno.ENOSPC:
        assert isinstance(e, lsmtrie.DiskFullError), repr(e)
    else:
        assert isinstance(e, lsmtrie.StorageError) and not isinstance(e, lsmtrie.DiskFullError), repr(e)
    assert isinstance(e, OSError)


def run_with_fault(path, op, after, err, preload=300, n=700, open_opts=TINY, seed=0,
                   reads_during_fault=True):
    """Loads `preload` operations, arms the fault, goes on until an error surfaces (from a write
    or from flush()), checks it, clears the fault, retries with flush(), reopens. Returns the
    error. With reads_during_fault False (a fault of reads themselves), reads while the fault
    is armed may fail too, with a typed error.

    After the fault is cleared, flush() should succeed; if it does not (background work that hit
    the fault just before it was cleared may report late), close() and a reopen must still give
    every acknowledged write."""
    ops = gen_ops(seed, preload + n)
    model = {}
    db = lsmtrie.open(path, **open_opts)
    state = None
    try:
        for o in ops[:preload]:
            apply_store(db, o)
            apply_model(model, o)
        db.flush()
        _binding.fault_set(op, after, err)
        failed_op, error = None, None
        for o in ops[preload:]:
            try:
                apply_store(db, o)
            except lsmtrie.StorageError as e:
                failed_op, error = o, e
                break
            apply_model(model, o)
        if error is None:
            try:
                db.flush()
            except lsmtrie.StorageError as e:
                error = e
        assert error is not None, "the injected fault never surfaced"
        check_error_type(error, err)
        # reads go on while the disk is "full", and see every acknowledged write
        if reads_during_fault:
            assert_state(store_state(db), model, failed_op)
        else:
            try:
                assert_state(store_state(db), model, failed_op)
            except lsmtrie.StorageError as e:
                check_error_type(e, err)
        _binding.fault_set(op, 0, 0)
        try:
            db.flush()  # retries the failed background work
        except lsmtrie.StorageError:
            pass  # the fallback: close + reopen (checked below)
        else:
            state = store_state(db)
            assert_state(state, model, failed_op)
            # and the store takes writes again
            db.put(b"after-the-fault", b"ok")
            state[b"after-the-fault"] = b"ok"
            db.flush()
    finally:
        _binding.fault_set(op, 0, 0)
        try:
            db.close()
        except lsmtrie.StorageError:
            if state is not None:
                raise  # the retry succeeded: close() has no excuse to fail
    with lsmtrie.open(path) as db:
        got = store_state(db)
        if state is None:
            assert_state(got, model, failed_op)
            state = got
        assert got == state
    with lsmtrie.open(path) as db:  # twice: recovery after recovery
        assert store_state(db) == state
    return error


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144])
@isolated()
def test_write_fault(tmp_path, after, err):
    """write() fails: in log appends, flushes, compactions and manifest edits, depending on the
    count."""
    run_with_fault(str(tmp_path / "db"), "write", after, err)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8, 13, 21, 34, 55])
@isolated()
def test_fsync_fault(tmp_path, after, err):
    """fsync() fails: of tables, directories, the manifest and (for sync=True writes) the log."""
    run_with_fault(str(tmp_path / "db"), "fsync", after, err)


@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8, 13, 21])
@isolated()
def test_syncfs_fault(tmp_path, after):
    """The same with every checkpoint that someone waits for syncing whole filesystems
    (syncfs, the path of checkpoints naming 1,024 files or more): a failed syncfs cannot say
    which file failed, so every file it covered is rewritten and synced on its own by the
    retry, and nothing acknowledged is lost."""
    _binding.lib.ltr_test_syncfs_min(1)
    run_with_fault(str(tmp_path / "db"), "fsync", after, errno.EIO)


@pytest.mark.parametrize("after", [0, 1, 2])
@isolated()
def test_log_append_fault_is_the_callers_error(tmp_path, after):
    """With no background work pending, a failing log append fails the put itself with
    DiskFullError (errno ENOSPC); the failed put is not half there (the same answer before and
    after a reopen), and the log stays appendable: a half-written record must not hide the
    writes acknowledged after it once the store is reopened."""
    path = str(tmp_path / "db")
    want = {}
    with lsmtrie.open(path, table_buckets=16, memtable_bytes=60000) as db:
        for i in range(20):
            db.put(b"k%d" % i, b"v%d" % i)
            want[b"k%d" % i] = b"v%d" % i
        _binding.fault_set("write", after, errno.ENOSPC)
        error = None
        for j in range(5):
            try:
                db.put(b"f%d" % j, b"x" * 100)
            except lsmtrie.DiskFullError as e:
                error = e
                break
            want[b"f%d" % j] = b"x" * 100
        assert error is not None and error.errno == errno.ENOSPC, error
        with pytest.raises(lsmtrie.DiskFullError):  # still full
            with db.write_batch() as b:
                b.put(b"failed-batch", b"1")
        _binding.fault_set("write", 0, 0)
        failed_live = db.get(b"f%d" % j)
        assert db.get(b"failed-batch") is None
        for i in range(20, 40):
            db.put(b"k%d" % i, b"v%d" % i)
            want[b"k%d" % i] = b"v%d" % i
        live = dict(db.items())
    with lsmtrie.open(path) as db:
        got = dict(db.items())
        assert db.get(b"f%d" % j) == failed_live
        if failed_live is not None:
            want[b"f%d" % j] = failed_live
        assert got == want == live


def test_a_failed_table_write_names_the_table_file(tmp_path):
    """A flush whose table write fails says which file it was writing (tables are written in
    place, without a temporary name: the message said "write to (null)")."""
    with lsmtrie.open(str(tmp_path / "db"), table_buckets=16) as db:
        for i in range(50):
            db.put(b"k%d" % i, b"v" * 50)
        _binding.fault_set("write", 0, errno.ENOSPC)
        try:
            with pytest.raises(lsmtrie.DiskFullError) as e:
                db.flush()
        finally:
            _binding.fault_set("write", 0, 0)
    assert "(null)" not in str(e.value) and re.search(r"write to \S+\.ht at offset", str(e.value)), e.value


@pytest.mark.parametrize("what", ["write_batch", "put_many"])
@pytest.mark.parametrize("op,after", [("fsync", 0), ("fsync", 1), ("fsync", 2), ("write", 0),
                                      ("write", 1), ("write", 2)])
@isolated()
def test_failed_batch_is_all_or_nothing(tmp_path, what, op, after):
    """A batch that fills the memtable midway (so the memtable rotates inside it) while the disk
    fails: the write raises a StorageError or succeeds, and either way the batch is there whole
    or not at all, before and after a reopen."""
    path = str(tmp_path / "db")
    db = lsmtrie.open(path, table_buckets=16, node_tables=2, levels=2)  # memtable: one table
    before = {b"pre-%d" % i: b"p" * 40 for i in range(600)}  # ~30 KB of a ~62 KB memtable
    db.put_many(list(before), list(before.values()))
    batch = {b"batch-%d" % i: b"b%d-" % i + b"x" * 40 for i in range(1000)}  # ~50 KB
    _binding.fault_set(op, after, errno.EIO)
    try:
        try:
            if what == "write_batch":
                with db.write_batch() as b:
                    for k, v in batch.items():
                        b.put(k, v)
            else:
                db.put_many(list(batch), list(batch.values()))
        except lsmtrie.StorageError as e:
            check_error_type(e, errno.EIO)
        _binding.fault_set(op, 0, 0)
        got = db.get_many(list(batch))
        n = sum(g is not None for g in got)
        assert n in (0, len(batch)), f"{n} of the batch's {len(batch)} items are visible"
        assert db.get_many(list(before)) == list(before.values())
        try:
            db.flush()
        finally:
            db.close()
    finally:
        _binding.fault_set(op, 0, 0)
    with lsmtrie.open(path) as db:
        got2 = db.get_many(list(batch))
        n2 = sum(g is not None for g in got2)
        assert n2 == n, f"{n} of the batch's items were visible, {n2} after a reopen"
        assert db.get_many(list(before)) == list(before.values())


@isolated()
def test_flush_fault_reported_by_flush_and_retried(tmp_path):
    """Background flush fails on a full disk: flush() raises DiskFullError (errno ENOSPC) and
    keeps raising while the disk is full; writes are refused or accepted, but nothing is lost;
    after space is freed flush() succeeds."""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=3, memtable_bytes=60000) as db:
        for i in range(300):
            db.put(b"k%d" % i, b"v%d" % i)
            model[b"k%d" % i] = b"v%d" % i
        _binding.fault_set("write", 0, errno.ENOSPC)
        with pytest.raises(lsmtrie.DiskFullError):
            db.flush()
        with pytest.raises(lsmtrie.DiskFullError):
            db.flush()
        assert dict(db.items()) == model  # still readable, from the memtables
        _binding.fault_set("write", 0, 0)
        db.flush()
        st = db.stats()
        assert st["memtable_items"] == 0 and st["flushes"] >= 1
        assert dict(db.items()) == model
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == model


@isolated()
def test_background_error_surfaces_on_later_writes(tmp_path):
    """A background failure is reported on later writes, typed and with its errno, until
    flush() retries it. (bulk=True: no log, so the only fsyncs are the background checkpoints';
    checkpoints every millisecond, so one fails while the writes go on.)"""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, bulk=True, checkpoint_interval=0.001, **TINY) as db:
        _binding.fault_set("fsync", 0, errno.EIO)
        error = None
        for i in range(3000):
            k, v = b"k%d" % (i % 300), b"v%d" % i
            try:
                db.put(k, v)
            except lsmtrie.StorageError as e:
                error = e
                break
            model[k] = v
        assert error is not None, "the failed background flush was never reported"
        check_error_type(error, errno.EIO)
        with pytest.raises(lsmtrie.StorageError):  # reported again: the work is still failing
            db.put(b"x", b"y")
        _binding.fault_set("fsync", 0, 0)
        db.flush()
        db.put(b"x", b"y")
        model[b"x"] = b"y"
        assert_state(dict(db.items()), model, ("put", k, v, False))
        state = dict(db.items())
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == state
    # StorageError is an OSError carrying the errno (docs/design.md "Errors"), also when the
    # failure happened in the background thread
    assert error.errno == errno.EIO, f"errno {error.errno}, message {error}"


@pytest.mark.parametrize("syncfs", [False, True])
@pytest.mark.parametrize("bulk", [True, False])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 4, 5])
@isolated()
def test_flush_fsync_fault_then_retry(tmp_path, after, bulk, syncfs):
    """Each fsync of one flush fails in turn (the table file, its directory, the manifest edit,
    and without bulk the log rotation): flush() reports it, and once the fault is cleared
    flush() and close() succeed and the store reopens with every item. With `syncfs`, the
    flush's checkpoint syncs the filesystem instead of the table file (as from 1,024 files)."""
    if syncfs:
        _binding.lib.ltr_test_syncfs_min(1)
    path = str(tmp_path / "db")
    want = {b"k%d" % i: b"v%d" % i for i in range(100)}
    db = lsmtrie.open(path, bulk=bulk, table_buckets=16, node_tables=8, levels=2, memtable_bytes=60000)
    try:
        db.put_many(list(want), list(want.values()))
        _binding.fault_set("fsync", after, errno.EIO)
        try:
            db.flush()
        except lsmtrie.StorageError as e:
            check_error_type(e, errno.EIO)
            if syncfs and bulk and after == 0:  # the checkpoint's first sync is the syncfs
                assert "syncfs" in str(e), e
        _binding.fault_set("fsync", 0, 0)
        assert dict(db.items()) == want
        db.flush()
        st = db.stats()
        assert st["memtable_items"] == 0 and st["tables_per_level"][0] >= 1
        assert dict(db.items()) == want
    finally:
        _binding.fault_set("fsync", 0, 0)
        db.close()
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want


@isolated()
def test_fault_during_compaction(tmp_path):
    """Faults armed when the next flush makes a compaction due: with growing counts the fault
    lands in the flush, in the compaction's output tables and in its manifest edit. Whatever
    failed, clearing the fault and flushing completes the work and nothing is lost."""
    opts = dict(table_buckets=16, node_tables=4, levels=2, memtable_bytes=30000)
    hit = 0
    for after in (0, 3, 6, 10, 15, 20, 30, 40):
        p = str(tmp_path / f"db-{after}")
        model = {}
        with lsmtrie.open(p, **opts) as db:
            for r in range(3):  # three root tables: one short of a compaction
                for i in range(400):
                    k, v = b"k%d" % ((r * 400 + i) % 700), b"r%d-%d" % (r, i)
                    db.put(k, v)
                    model[k] = v
                db.flush()
            assert db.stats()["tables_per_level"][0] == 3
            for i in range(400):
                db.put(b"n%d" % i, b"%d" % i)
                model[b"n%d" % i] = b"%d" % i
            c0 = db.stats()["compactions"]
            _binding.fault_set("write", after, errno.ENOSPC)
            try:
                db.flush()
            except lsmtrie.StorageError as e:
                check_error_type(e, errno.ENOSPC)
                hit += 1
            _binding.fault_set("write", 0, 0)
            assert dict(db.items()) == model
            try:
                db.flush()
            except lsmtrie.Error as e:
                raise AssertionError(f"write fault after {after} writes: flush() after clearing "
                                     f"the fault failed: {type(e).__name__}: {e}") from e
            st = db.stats()
            assert st["compactions"] > c0 and st["tables_per_level"][0] < 4
            assert dict(db.items()) == model
        with lsmtrie.open(p) as db:
            assert dict(db.items()) == model
    assert hit >= 4, f"only {hit} of the fault counts surfaced an error"


_PARTS_WRITER = textwrap.dedent("""
    import errno, os, sys, lsmtrie
    from lsmtrie import _binding
    path, after = sys.argv[1], int(sys.argv[2])
    big = {b"big-%d" % i: bytes([i % 251]) * 150 for i in range(6000)}
    big[b"huge"] = b"h" * 400_000
    db = lsmtrie.open(path, memtable_bytes=16 << 20, min_blob_size=0)  # values in the log
    db.put(b"before", b"1", sync=True)
    log = sorted(f for f in os.listdir(path) if f.endswith(".wal"))[-1]
    size = os.path.getsize(os.path.join(path, log))
    _binding.fault_set("write", after, errno.ENOSPC)
    try:
        db.put_many(list(big), list(big.values()))
        outcome = "ok"
    except lsmtrie.DiskFullError as e:
        assert e.errno == errno.ENOSPC, e
        outcome = "failed"
    _binding.fault_set("write", 0, 0)
    if outcome == "failed":
        assert os.path.getsize(os.path.join(path, log)) == size, "the partial record stayed"
        assert db.get(b"huge") is None and db.get(b"big-0") is None
    db.put(b"after", b"2", sync=True)
    print(outcome, flush=True)
    os._exit(0)  # no close(): the reopen replays the log
""")


def test_log_record_written_in_parts_is_whole_or_absent(tmp_path):
    """A batch larger than the log's 256 KiB piece is encoded and written a piece at a time, an
    item larger than a piece straight from the caller's buffer, the record's checksum last. A
    write failing at any one of those steps (tried in turn) fails the call with DiskFullError and
    takes the partial record back; the writes after it land, and a reopen that replays the log
    has exactly the writes that returned, the whole batch once a run succeeds."""
    big = {b"big-%d" % i: bytes([i % 251]) * 150 for i in range(6000)}
    big[b"huge"] = b"h" * 400_000
    outcomes = []
    for after in range(40):
        path = str(tmp_path / f"db{after}")
        r = subprocess.run([sys.executable, "-c", _PARTS_WRITER, path, str(after)], env=_env(),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        outcome = r.stdout.decode().split()[-1]
        outcomes.append(outcome)
        want = {b"before": b"1", b"after": b"2", **(big if outcome == "ok" else {})}
        with lsmtrie.open(path) as db:
            assert dict(db.items()) == want, (after, outcome)
        if outcome == "ok":
            break
    # a header, five pieces, the large item in three parts, the checksum: ten writes to fail
    assert outcomes.count("failed") >= 9 and outcomes[-1] == "ok", outcomes


# ---------------------------------------------------------------------------------------------
# damaged files


def _records(data):
    """(start, end, type) of each record of a record log (docs/format/log.md)."""
    out, pos = [], 0
    while pos + 9 <= len(data):
        crc, length, typ = struct.unpack_from("<IIB", data, pos)
        end = pos + 9 + length
        if end > len(data):
            break
        out.append((pos, end, typ))
        pos = end
    return out


def _crashed_store(tmp_path, n=100, **opts):
    """A store whose writer exited without close() after n unsynced puts (all in the log)."""
    path = str(tmp_path / "db")
    code = textwrap.dedent("""
        import json, os, sys, lsmtrie
        db = lsmtrie.open(sys.argv[1], **json.loads(sys.argv[2]))
        for i in range(int(sys.argv[3])):
            db.put(b"k%03d" % i, b"value-%d" % i)
        os._exit(0)
    """)

    o = dict(table_buckets=16, memtable_bytes=60000)
    o.update(opts)
    r = subprocess.run([sys.executable, "-c", code, path, json.dumps(o), str(n)], env=_env(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return path


def _newest_log(path):
    logs = sorted(f for f in os.listdir(path) if f.endswith(".wal"))
    assert logs, os.listdir(path)
    full = [f for f in logs if os.path.getsize(os.path.join(path, f)) > 0]
    return os.path.join(path, full[-1] if full else logs[-1])


def _want(n):
    return {b"k%03d" % i: b"value-%d" % i for i in range(n)}


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 12, -1])
def test_torn_log_tail_keeps_the_prefix(tmp_path, cut):
    path = _crashed_store(tmp_path)
    log = _newest_log(path)
    data = open(log, "rb").read()
    recs = _records(data)
    assert len(recs) == 100 and recs[-1][1] == len(data)
    start, end, _ = recs[60]
    size = start + cut if cut > 0 else end - 1  # inside record 60
    with open(log, "r+b") as f:
        f.truncate(size)
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == _want(60)
        db.put(b"k060", b"again")  # new writes after the torn bytes
        db.put(b"k999", b"new")
    want = _want(60)
    want.update({b"k060": b"again", b"k999": b"new"})
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want
    with lsmtrie.open(path, read_only=True) as db:
        assert dict(db.items()) == want


def test_garbage_after_the_log_tail(tmp_path):
    path = _crashed_store(tmp_path)
    log = _newest_log(path)
    with open(log, "ab") as f:
        f.write(b"\x13\x37" * 50)  # a torn record: not a record, after the last good one
    with lsmtrie.open(path, read_only=True) as db:  # a reader copes with the torn tail as well
        assert dict(db.items()) == _want(100)
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == _want(100)
        db.put(b"x", b"y")
    want = _want(100)
    want[b"x"] = b"y"
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want


def test_bad_log_record_followed_by_good_ones_is_corruption(tmp_path):
    """docs/format/log.md: a bad record followed by good ones is CorruptionError (not a torn
    tail to cut off: that would silently drop the 69 good records after it)."""
    path = _crashed_store(tmp_path)
    log = _newest_log(path)
    data = bytearray(open(log, "rb").read())
    recs = _records(bytes(data))
    start, end, _ = recs[30]
    data[start + 12] ^= 0x40  # a payload byte: the record's CRC fails
    open(log, "wb").write(data)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path, read_only=True)
    # the refused open left the file alone
    assert open(log, "rb").read() == bytes(data)


def _flushed_store(tmp_path, n=300, **opts):
    path = str(tmp_path / "db")
    o = dict(table_buckets=16, node_tables=8, levels=2, memtable_bytes=60000)
    o.update(opts)
    with lsmtrie.open(path, **o) as db:
        for i in range(n):
            db.put(b"k%03d" % i, b"value-%d" % i)
        db.flush()
        assert db.stats()["tables_per_level"] == [1, 0]
    return path


def test_corrupt_table_buckets(tmp_path):
    path = _flushed_store(tmp_path)
    tables = [f for f in os.listdir(path) if f.endswith(".ht")]
    assert len(tables) == 1
    t = os.path.join(path, tables[0])
    with open(t, "r+b") as f:
        for b in range(16):  # every bucket's CRC
            f.seek(b * 4096 + 4092)
            c = f.read(1)
            f.seek(b * 4096 + 4092)
            f.write(bytes([c[0] ^ 0xFF]))
    try:
        db = lsmtrie.open(path)
    except lsmtrie.CorruptionError:
        return  # found at open: typed, fine
    try:
        with pytest.raises(lsmtrie.CorruptionError):
            db.get(b"k001")
        with pytest.raises(lsmtrie.CorruptionError):
            db.get_many([b"k002", b"k003"])
        with pytest.raises(lsmtrie.CorruptionError):
            list(db.items())
        # never wrong data instead of an error; the store itself still works
        db.put(b"k001", b"new")
        assert db.get(b"k001") == b"new"
    finally:
        db.close()


def test_corrupt_table_footer(tmp_path):
    path = _flushed_store(tmp_path)
    t = os.path.join(path, [f for f in os.listdir(path) if f.endswith(".ht")][0])
    data = bytearray(open(t, "rb").read())
    data[-3] ^= 0x01
    open(t, "wb").write(data)
    with pytest.raises(lsmtrie.CorruptionError):
        with lsmtrie.open(path) as db:
            db.get(b"k001")
            list(db.items())


def _store_with_clusters(tmp_path, **opts):
    """A closed store whose last level has BloomClusters, and its keys."""
    path = str(tmp_path / "db")
    keys = [b"key%d" % i for i in range(20000)]
    with lsmtrie.open(path, create=True, table_buckets=16, levels=2, node_tables=2, **opts) as db:
        db.put_many(keys, keys)
        db.flush()
    assert [f for f in os.listdir(path) if f.endswith(".bc")]
    return path, keys


@isolated()
def test_cluster_cut_short_under_its_mapping(tmp_path):
    """BloomClusters are read through a mapping. A cluster file cut short while the store has
    it mapped would raise SIGBUS on the next probe and kill the interpreter; the probe instead
    fails with CorruptionError, and the store goes on working (mapguard.c)."""
    path, keys = _store_with_clusters(tmp_path)
    db = lsmtrie.open(path)
    try:
        assert db.get_many(keys[:50]) == keys[:50]
        for f in os.listdir(path):
            if f.endswith(".bc"):
                os.truncate(os.path.join(path, f), 0)
        with pytest.raises(lsmtrie.CorruptionError, match="cut short"):
            db.get_many(keys)
        with pytest.raises(lsmtrie.CorruptionError, match="cut short"):
            for k in keys[:200]:  # one of them is answered by a cluster
                db.get(k)
        try:  # background work that probes the clusters (garbage checks) fails the same way
            db.put(b"new", b"value")
            assert db.get(b"new") == b"value"  # (the memtable answers)
        except lsmtrie.CorruptionError as e:
            assert "background work failed" in str(e) and "cut short" in str(e), str(e)
    finally:
        try:
            db.close()
        except lsmtrie.CorruptionError:
            pass


@isolated(timeout=60)
def test_cluster_rebuild_from_a_cluster_cut_short(tmp_path):
    """A cluster rebuild (more tables reach the node) copies the old cluster's units out of its
    mapping: with the file cut short that copy fails with CorruptionError instead of SIGBUS, the
    failure surfaces as a background error, and the store still closes. (New keys only, and a
    high gc_threshold: no garbage check samples the node, through its cluster, first.)"""
    path, keys = _store_with_clusters(tmp_path, gc_threshold=0.99)
    db = lsmtrie.open(path)
    try:
        for f in os.listdir(path):
            if f.endswith(".bc"):
                os.truncate(os.path.join(path, f), 0)
        more = [b"more%d" % i for i in range(40000)]
        with pytest.raises(lsmtrie.CorruptionError, match="cut short"):
            for i in range(0, len(more), 500):
                db.put_many(more[i:i + 500], more[i:i + 500])
            db.flush()
    finally:
        try:
            db.close()
        except lsmtrie.CorruptionError:
            pass


def test_sigbus_outside_the_store_still_kills(tmp_path):
    """The store's SIGBUS handler takes only faults inside its own guarded reads: a process that
    touches a cut-short mapping of its own still dies of SIGBUS, as without lsmtrie."""
    path, keys = _store_with_clusters(tmp_path)
    script = textwrap.dedent(f"""
        import mmap, os, lsmtrie
        with lsmtrie.open({path!r}, read_only=True) as db:  # maps a cluster: installs the handler
            assert db.get_many({keys[:20]!r}) == {keys[:20]!r}
            f = open({str(tmp_path / "other")!r}, "w+b")
            f.write(b"x" * 8192); f.flush()
            m = mmap.mmap(f.fileno(), 8192)
            os.truncate(f.name, 0)
            print(m[4096])
    """)
    r = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, timeout=60)
    err = r.stderr.decode()
    # killed by the default action; or, under AddressSanitizer (docs/development.md), whose
    # handler was there before ours, reported by it and ended with its exit status
    chained = r.returncode > 0 and "AddressSanitizer" in err and "BUS" in err
    assert r.returncode == -signal.SIGBUS or chained, (r.returncode, err[-2000:])


def test_missing_table_file(tmp_path):
    path = _flushed_store(tmp_path)
    os.unlink(os.path.join(path, [f for f in os.listdir(path) if f.endswith(".ht")][0]))
    with pytest.raises((lsmtrie.CorruptionError, lsmtrie.StorageError)):
        lsmtrie.open(path)


def _manifest(path):
    names = [f for f in os.listdir(path) if f.startswith("MANIFEST-")]
    current = open(os.path.join(path, "CURRENT")).read().strip()
    assert current in names
    return os.path.join(path, current)


def test_corrupt_manifest_options_record(tmp_path):
    path = _flushed_store(tmp_path)
    m = _manifest(path)
    data = bytearray(open(m, "rb").read())
    data[12] ^= 0x10  # inside the first record (the options)
    open(m, "wb").write(data)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path, read_only=True)


def test_truncated_manifest(tmp_path):
    path = _flushed_store(tmp_path)
    m = _manifest(path)
    with open(m, "r+b") as f:
        f.truncate(5)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path)


def test_manifest_not_a_manifest(tmp_path):
    path = _flushed_store(tmp_path)
    m = _manifest(path)
    data = open(m, "rb").read()
    recs = _records(data)
    # a well-framed first record that is not an options record
    payload = b"NOTMANIF" + bytes(40)
    from lsmtrie import _binding as bnd

    hdr = struct.pack("<IB", len(payload), 1)
    crc = bnd.lib.ltr_crc32c(0, hdr + payload, len(hdr) + len(payload))
    open(m, "wb").write(struct.pack("<I", crc) + hdr + payload + data[recs[0][1]:])
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path)


def test_bad_manifest_edit_followed_by_good_ones_is_corruption(tmp_path):
    """A damaged edit with intact edits after it is CorruptionError (docs/format/log.md), not a
    torn tail: cutting it off would forget tables and logs that hold data."""
    path = str(tmp_path / "db")
    want = {}
    with lsmtrie.open(path, table_buckets=16, node_tables=8, levels=2, memtable_bytes=60000) as db:
        for r in range(4):
            for i in range(100):
                db.put(b"r%d-%d" % (r, i), b"v")
                want[b"r%d-%d" % (r, i)] = b"v"
            db.flush()
    m = _manifest(path)
    data = bytearray(open(m, "rb").read())
    recs = _records(bytes(data))
    assert len(recs) >= 4, recs
    start, end, _ = recs[2]
    data[start + 9] ^= 0x01  # first payload byte of an edit in the middle
    open(m, "wb").write(data)
    with pytest.raises(lsmtrie.CorruptionError):
        with lsmtrie.open(path) as db:
            got = dict(db.items())
    # a refused open must not have "repaired" anything away
    assert open(m, "rb").read() == bytes(data)


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"MANIFEST-\n", b"\x00\xff\x00"])
def test_corrupt_current(tmp_path, content):
    path = _flushed_store(tmp_path)
    with open(os.path.join(path, "CURRENT"), "wb") as f:
        f.write(content)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path)
    with pytest.raises(lsmtrie.CorruptionError):
        lsmtrie.open(path, read_only=True)


# ---------------------------------------------------------------------------------------------
# a second writer


def test_second_writer_process_gets_lock_error(tmp_path):
    path = str(tmp_path / "db")
    code = textwrap.dedent("""
        import sys, time, lsmtrie
        db = lsmtrie.open(sys.argv[1], table_buckets=16, memtable_bytes=2000)
        for i in range(500):
            db.put(b"k%d" % i, b"v%d" % i, sync=(i == 499))
        print("ready", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env())
    try:
        assert p.stdout.readline().strip() == b"ready", p.stderr.read()
        with pytest.raises(lsmtrie.LockError) as ei:
            lsmtrie.open(path)
        assert path in str(ei.value) and "lock" in str(ei.value).lower()
        with pytest.raises(lsmtrie.LockError):
            lsmtrie.open(path, bulk=True)
        with lsmtrie.open(path, read_only=True) as ro:  # a reader is welcome
            assert ro.get(b"k499") == b"v499"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # the dead writer's lock is gone with it; its synced writes are there
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == {b"k%d" % i: b"v%d" % i for i in range(500)}


def test_running_out_of_open_files_is_a_clear_error_and_loses_nothing(tmp_path):
    """With max_open_files=-1 each table keeps its file open: a process limit on open files far
    below what the store needs makes background work fail with a StorageError that says what to
    do, writes stop, and a reopen (without the limit) has every acknowledged write. (With the
    default bound the same writer succeeds: test_store_open_files.py.)"""
    path = str(tmp_path / "db")
    code = textwrap.dedent("""
        import json, resource, sys, lsmtrie
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
        db = lsmtrie.open(sys.argv[1], table_buckets=1, node_tables=2, levels=4,
                          memtable_bytes=2000, max_open_files=-1)
        done = 0
        try:
            for r in range(400):
                db.put_many([b"f%d-%d" % (r, i) for i in range(40)], [b"v%d" % r] * 40, sync=True)
                done = r + 1
            print(json.dumps({"done": done, "error": None}), flush=True)
        except lsmtrie.StorageError as e:
            print(json.dumps({"done": done, "error": str(e)}), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out["error"], f"no error with 96 open files after {out['done']} batches"
    assert "open files" in out["error"] and "ulimit" in out["error"], out["error"]
    with lsmtrie.open(path) as db:
        got = db.get_many([b"f%d-%d" % (r, i) for r in range(out["done"]) for i in range(40)])
        assert got == [b"v%d" % r for r in range(out["done"]) for _ in range(40)]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("after", [0, 9, 40])
@isolated()
def test_fsync_fault_in_a_checkpoint_of_many_files(tmp_path, after, err):
    """A checkpoint that names many files syncs them on several threads (checkpoint.c): one
    failing fsync, met by whichever thread, fails the checkpoint with its own typed error and
    errno and its file's name; the manifest is not advanced, and once the fault is cleared the
    next flush() syncs every file (a failed one written again first) and a reopen has it all."""
    path = str(tmp_path / "db")
    want = {b"key%d" % i: b"value%d" % i * 3 for i in range(3000)}
    with lsmtrie.open(path, bulk=True, checkpoint_interval=3600, **TINY) as db:
        keys, values = list(want), list(want.values())
        for i in range(0, len(keys), 50):  # a memtable per batch or so: hundreds of tables
            db.put_many(keys[i:i + 50], values[i:i + 50])
        deadline = time.monotonic() + 60
        while sum(db.stats()["tables_per_level"]) < 64 and time.monotonic() < deadline:
            time.sleep(0.01)  # the background flushes and compactions write the tables
        tables = sum(db.stats()["tables_per_level"])
        assert tables >= 64, tables  # enough files for every sync thread to take some
        _binding.fault_set("fsync", after, err)
        with pytest.raises(lsmtrie.StorageError) as e:
            db.flush()
        check_error_type(e.value, err)
        assert e.value.errno == err, str(e.value)
        # its file: a table's, or a BloomCluster's (the checkpoint syncs both, on several threads)
        assert "fsync of" in str(e.value) and (".ht" in str(e.value) or ".bc" in str(e.value)), \
            str(e.value)
        _binding.fault_set("fsync", 0, 0)
        with lsmtrie.open(path, read_only=True) as ro:  # the durable state: nothing yet
            assert sum(ro.stats()["tables_per_level"]) == 0
        db.flush()
        assert dict(db.items()) == want
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == want
