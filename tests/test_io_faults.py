"""Failing each file system call of the core (io.c) through the store's API.

Every file system call of the C core passes io.c, whose fault-injection hook covers open,
rename, unlink, ftruncate, mkdir and pread as well as write and fsync
(`_binding.fault_set(op, after, err)`: after `after` more successful calls of that kind, the
next ones fail with errno `err` until cleared, or only the next one with `once=True`). The contract is the one of
test_store_faults.py: the error is typed (DiskFullError for ENOSPC, StorageError otherwise) and
names the file, nothing acknowledged is lost, and once the fault is gone the store reopens with
every acknowledged write. A failing unlink of a dead file is not an error: the file is left and
the next open removes it.
"""

import errno
import os

import pytest

import lsmtrie
from forked import isolated
from lsmtrie import _binding
from test_store_faults import TINY, apply_model, apply_store, check_error_type, gen_ops, \
    run_with_fault, store_state

KINDS = ("write", "fsync", "open", "rename", "unlink", "ftruncate", "mkdir", "pread")


def _clear():
    for k in KINDS:
        _binding.fault_set(k, 0, 0)


@pytest.fixture(autouse=True)
def _no_faults_left():
    _clear()
    yield
    _clear()


def _load(path, n=600, seed=1, close=True, **opts):
    """A store loaded with n operations (flushed, and closed unless close=False); its model."""
    o = dict(TINY)
    o.update(opts)
    model = {}
    db = lsmtrie.open(path, **o)
    for op in gen_ops(seed, n):
        apply_store(db, op)
        apply_model(model, op)
    db.flush()
    if close:
        db.close()
        return model
    return model, db


def _counts(limit=1 << 20):
    """0, 1, 2, ..., 15, then growing by half each step."""
    n = 0
    while n < limit:
        yield n
        n = n + 1 if n < 16 else n * 3 // 2


def _sweep_open(path, op, err, model, read_only=False):
    """Opens the store with the fault armed after 0, 1, 2, ... calls (armed for the open only):
    each failure must be typed, and a reopen after clearing the fault must give the model.
    Stops at the first count the open gets through. Returns the number of opens that failed."""
    failures = 0
    for after in _counts():
        error, db = None, None
        _binding.fault_set(op, after, err)
        try:
            db = lsmtrie.open(path, read_only=read_only)
        except lsmtrie.StorageError as e:
            error = e
        finally:
            _binding.fault_set(op, 0, 0)
        if db is not None:
            with db:
                assert store_state(db) == model
            return failures
        failures += 1
        check_error_type(error, err)
        assert str(error), "an error without a message"
        with lsmtrie.open(path, read_only=read_only) as db:
            assert store_state(db) == model, f"{op} failing after {after} calls lost data"
    raise AssertionError(f"opening still failed with the {op} fault after {after} calls")


def _files(path):
    return sorted(os.listdir(path))


# ---- open ----

@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8, 13, 21])
@isolated(timeout=60)
def test_open_fault_in_writes(tmp_path, after, err):
    """open() fails: of new logs, of table files being written, of tables being installed."""
    run_with_fault(str(tmp_path / "db"), "open", after, err)


@pytest.mark.parametrize("err", [errno.EIO, errno.EMFILE])
@isolated(timeout=120)
def test_open_fault_in_open(tmp_path, err):
    """open() fails while a store opens (its lock, CURRENT, manifest, logs, tables): a typed
    error naming the file, and the next open has everything."""
    path = str(tmp_path / "db")
    model = _load(path)
    assert _sweep_open(path, "open", err, model) > 0


@isolated(timeout=60)
def test_open_fault_names_the_file(tmp_path):
    path = str(tmp_path / "db")
    model = _load(path)
    _binding.fault_set("open", 0, errno.EIO)
    with pytest.raises(lsmtrie.StorageError) as e:
        lsmtrie.open(path)
    _binding.fault_set("open", 0, 0)
    assert e.value.errno == errno.EIO
    assert path in str(e.value) and "cannot open" in str(e.value), str(e.value)
    with lsmtrie.open(path) as db:
        assert store_state(db) == model


@pytest.mark.parametrize("after", [0, 1, 2, 4])
@isolated(timeout=60)
def test_open_fault_in_a_read_only_open(tmp_path, after):
    path = str(tmp_path / "db")
    model = _load(path)
    _binding.fault_set("open", after, errno.EIO)
    try:
        with lsmtrie.open(path, read_only=True) as db:
            assert store_state(db) == model
    except lsmtrie.StorageError as e:
        check_error_type(e, errno.EIO)
    finally:
        _binding.fault_set("open", 0, 0)
    with lsmtrie.open(path, read_only=True) as db:
        assert store_state(db) == model


@isolated(timeout=120)
def test_a_read_only_open_holds_the_directory_lock_or_fails(tmp_path):
    """Whichever one open() call fails (EACCES, once), a read-only open either fails with a typed
    error or holds LOCK_SH on the store directory: unlocked, the writer would take it for absent
    and unlink at once dropped files that it might read."""
    import fcntl
    path = str(tmp_path / "db")
    model = _load(path)
    for after in range(12):
        _binding.fault_set("open", after, errno.EACCES, once=True)
        try:
            db = lsmtrie.open(path, read_only=True)
        except lsmtrie.StorageError as e:
            assert e.errno == errno.EACCES, e
            continue
        finally:
            _binding.fault_set("open", 0, 0)
        with db:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
            assert store_state(db) == model


# ---- rename ----

@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("after", [0, 1, 3])
@isolated(timeout=60)
def test_rename_fault_in_writes_is_tolerated(tmp_path, after, err):
    """rename() fails installing CURRENT after a manifest rotation (made frequent here): the
    rotation is given up and the edits go on being appended to the manifest in force, so no
    write fails and nothing is lost; the unused new manifest goes at the next open."""
    _binding.lib.ltr_test_manifest_rotation(4096)
    path = str(tmp_path / "db")
    model, db = _load(path, close=False)
    try:
        _binding.fault_set("rename", after, err)
        for i, op in enumerate(gen_ops(5, 1500)):
            apply_store(db, op)
            apply_model(model, op)
            if i % 20 == 0:
                db.flush()  # a checkpoint: a manifest edit
        db.flush()
        assert store_state(db) == model
        during = _files(path)
    finally:
        _binding.fault_set("rename", 0, 0)
        db.close()
    manifests = [f for f in during if f.startswith("MANIFEST-")]
    assert len(manifests) > 1, f"no rotation met the fault: {manifests}"
    assert not any(f.endswith(".tmp") for f in during), "a .tmp file was left"
    with lsmtrie.open(path) as db:
        assert store_state(db) == model
        after_open = _files(path)
    assert sum(f.startswith("MANIFEST-") for f in after_open) == 1
    with lsmtrie.open(path) as db:
        assert store_state(db) == model


@isolated(timeout=60)
def test_rename_fault_creating_a_store(tmp_path):
    """A new store's CURRENT is installed by rename: the open fails, and a later open makes
    the store."""
    path = str(tmp_path / "db")
    _binding.fault_set("rename", 0, errno.EIO)
    with pytest.raises(lsmtrie.StorageError) as e:
        lsmtrie.open(path, **TINY)
    _binding.fault_set("rename", 0, 0)
    check_error_type(e.value, errno.EIO)
    assert "rename" in str(e.value), str(e.value)
    with lsmtrie.open(path, **TINY) as db:
        db.put(b"a", b"1")
    with lsmtrie.open(path) as db:
        assert store_state(db) == {b"a": b"1"}


@isolated(timeout=60)
def test_rename_fault_when_taking_a_pooled_file(tmp_path):
    """Reusing a dead table's file starts with a rename: when it fails, a new file is written
    and nothing is reported (the writes succeed), nothing is lost."""
    path = str(tmp_path / "db")
    model, db = _load(path, close=False)
    try:
        _binding.fault_set("rename", 0, errno.EIO)
        ops = gen_ops(7, 800)
        for op in ops:
            apply_store(db, op)
            apply_model(model, op)
        _binding.fault_set("rename", 0, 0)
        db.flush()
        assert store_state(db) == model
    finally:
        _binding.fault_set("rename", 0, 0)
        db.close()
    with lsmtrie.open(path) as db:
        assert store_state(db) == model


# ---- unlink ----

@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES])
@isolated(timeout=120)
def test_unlink_fault_is_tolerated_and_the_files_go_later(tmp_path, err):
    """unlink() of a dead file (log, table, manifest) fails: nothing is reported, nothing is
    lost, the files stay meanwhile, and the next open removes them."""
    _binding.lib.ltr_test_log_limits(2000, -1)  # logs rotate (and die) often
    path = str(tmp_path / "db")
    model, db = _load(path, close=False)
    try:
        # the log in use (older ones may be dying meanwhile; this one dies only after writes)
        first = [f for f in _files(path) if f.endswith(".wal")][-1:]
        _binding.fault_set("unlink", 0, err)
        for i, op in enumerate(gen_ops(3, 1500)):
            apply_store(db, op)
            apply_model(model, op)
            if i % 100 == 0:
                db.flush()
        db.flush()
        assert store_state(db) == model
        during = _files(path)
        _binding.fault_set("unlink", 0, 0)
    finally:
        _binding.fault_set("unlink", 0, 0)
        db.close()
    # the log in use before the fault died since, and is still there: its unlink failed
    assert first and all(f in during for f in first), ([f for f in first if f not in during], len(first))
    with lsmtrie.open(path) as db:
        assert store_state(db) == model
        st = db.stats()
        tables = sum(st["tables_per_level"])
        after = _files(path)
    # the open removed what is dead: one table file per live table, one manifest, no .tmp,
    # and the dead logs
    assert not any(f in after for f in first), first
    assert sum(f.endswith(".ht") for f in after) == tables, (tables, len(after))
    assert sum(f.startswith("MANIFEST-") for f in after) == 1
    assert not any(f.endswith(".tmp") for f in after)
    with lsmtrie.open(path) as db:
        assert store_state(db) == model


@isolated(timeout=60)
def test_unlink_fault_in_open(tmp_path):
    """An open whose removal of dead files fails still opens (and a later open removes
    them)."""
    path = str(tmp_path / "db")
    model = _load(path)
    with open(os.path.join(path, "99999999.ht"), "wb") as f:
        f.write(b"x" * 100)  # an orphan the open removes
    _binding.fault_set("unlink", 0, errno.EIO)
    try:
        with lsmtrie.open(path) as db:
            assert store_state(db) == model
    finally:
        _binding.fault_set("unlink", 0, 0)
    assert os.path.exists(os.path.join(path, "99999999.ht")), \
        "the orphan went although unlink failed: recovery's unlink bypasses io.c"
    with lsmtrie.open(path) as db:
        assert store_state(db) == model
    assert not os.path.exists(os.path.join(path, "99999999.ht"))


# ---- ftruncate ----

@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8])
@isolated(timeout=60)
def test_ftruncate_fault_in_writes(tmp_path, after, err):
    """ftruncate() fails: cutting a table file written in place (a reused file) to its
    length, or taking a log back after a failed append."""
    run_with_fault(str(tmp_path / "db"), "ftruncate", after, err)


@pytest.mark.parametrize("after", [0, 1, 2, 3])
@isolated(timeout=60)
def test_ftruncate_fault_after_a_failed_append(tmp_path, after):
    """A log append fails and taking the log back (ftruncate) fails too: the put fails with a
    typed error that says the log's state is unknown, and nothing acknowledged is lost."""
    path = str(tmp_path / "db")
    o = dict(TINY, memtable_bytes=60000)
    model = {}
    db = lsmtrie.open(path, **o)
    try:
        for i in range(50):
            db.put(b"k%d" % i, b"v%d" % i)
            model[b"k%d" % i] = b"v%d" % i
        _binding.fault_set("ftruncate", 0, errno.EIO)
        _binding.fault_set("write", after, errno.ENOSPC)
        error = None
        for i in range(50, 100):
            try:
                db.put(b"k%d" % i, b"v%d" % i)
            except lsmtrie.StorageError as e:
                error = e
                break
            model[b"k%d" % i] = b"v%d" % i
        assert error is not None
        assert isinstance(error, lsmtrie.StorageError)
        assert "unknown state" in str(error) or "length" in str(error), str(error)
    finally:
        _clear()
        try:
            db.close()
        except lsmtrie.StorageError:
            pass
    with lsmtrie.open(path) as db:
        state = store_state(db)
    for k, v in model.items():
        assert state.get(k) == v, k
    assert set(state) <= set(model) | {b"k%d" % i for i in range(100)}


@isolated(timeout=60)
def test_ftruncate_fault_cutting_a_torn_log_tail(tmp_path):
    """Opening a store whose log ends in a torn record cuts the log (ftruncate): when that
    fails, the open fails with a typed error, and the next open has every whole record."""
    from test_store_faults import _crashed_store, _newest_log, _want
    path = _crashed_store(tmp_path)
    with open(_newest_log(path), "ab") as f:
        f.write(b"\x13\x37" * 50)
    _binding.fault_set("ftruncate", 0, errno.EIO)
    with pytest.raises(lsmtrie.StorageError) as e:
        lsmtrie.open(path)
    _binding.fault_set("ftruncate", 0, 0)
    check_error_type(e.value, errno.EIO)
    assert ".wal" in str(e.value), str(e.value)
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == _want(100)
    with lsmtrie.open(path) as db:
        assert dict(db.items()) == _want(100)


# ---- mkdir ----

@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC, errno.EACCES])
@isolated(timeout=60)
def test_mkdir_fault_creating_a_store(tmp_path, err):
    """mkdir() of a new store's directory fails: a typed error naming the directory, nothing
    created; the next open makes the store."""
    path = str(tmp_path / "db")
    _binding.fault_set("mkdir", 0, err)
    with pytest.raises(lsmtrie.StorageError) as e:
        lsmtrie.open(path, **TINY)
    _binding.fault_set("mkdir", 0, 0)
    check_error_type(e.value, err)
    assert path in str(e.value), str(e.value)
    assert not os.path.exists(path)
    with lsmtrie.open(path, **TINY) as db:
        db.put(b"a", b"1")
    with lsmtrie.open(path) as db:
        assert store_state(db) == {b"a": b"1"}


@isolated(timeout=60)
def test_mkdir_fault_creating_a_metadata_directory(tmp_path):
    path, meta = str(tmp_path / "db"), str(tmp_path / "meta")
    _binding.fault_set("mkdir", 1, errno.EIO)  # the store's directory is made, not the other
    with pytest.raises(lsmtrie.StorageError) as e:
        lsmtrie.open(path, metadata_path=meta, **TINY)
    _binding.fault_set("mkdir", 0, 0)
    check_error_type(e.value, errno.EIO)
    assert meta in str(e.value), str(e.value)
    with lsmtrie.open(path, metadata_path=meta, **TINY) as db:
        db.put(b"a", b"1")
    with lsmtrie.open(path, metadata_path=meta) as db:
        assert store_state(db) == {b"a": b"1"}


# ---- pread ----

@pytest.mark.parametrize("err", [errno.EIO])
@pytest.mark.parametrize("after", [0, 1, 2, 3, 5, 8, 13])
@isolated(timeout=60)
def test_pread_fault_in_writes(tmp_path, after, err):
    """pread() fails: of the footer and trailer of a table being installed after a flush or a
    compaction."""
    run_with_fault(str(tmp_path / "db"), "pread", after, err, reads_during_fault=False)


@isolated(timeout=120)
def test_pread_fault_in_open(tmp_path):
    """pread() fails while a store opens (CURRENT, the manifest, tables' footers and
    trailers): a typed error, and the next open has everything."""
    path = str(tmp_path / "db")
    model = _load(path)
    assert _sweep_open(path, "pread", errno.EIO, model) > 0


@isolated(timeout=120)
def test_pread_fault_replaying_logs(tmp_path):
    """pread() fails while the logs of a writer that died are replayed."""
    from test_store_faults import _crashed_store, _want
    path = _crashed_store(tmp_path)
    assert _sweep_open(path, "pread", errno.EIO, _want(100)) > 0


@isolated(timeout=120)
def test_pread_fault_in_a_read_only_open(tmp_path):
    path = str(tmp_path / "db")
    model = _load(path)
    assert _sweep_open(path, "pread", errno.EIO, model, read_only=True) > 0


@isolated(timeout=60)
def test_pread_fault_in_verify(tmp_path):
    """verify() reads every table afresh: a failing pread stops it with a StorageError (not a
    report of damage), and the store is untouched."""
    path = str(tmp_path / "db")
    model, db = _load(path, close=False)
    try:
        _binding.fault_set("pread", 0, errno.EIO)
        with pytest.raises(lsmtrie.StorageError) as e:
            db.verify()
        assert not isinstance(e.value, lsmtrie.CorruptionError)
        _binding.fault_set("pread", 0, 0)
        db.verify()
        assert store_state(db) == model
    finally:
        _binding.fault_set("pread", 0, 0)
        db.close()
