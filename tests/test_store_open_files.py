"""The bound on open table files (max_open_files): a store with more tables than the bound
closes the descriptors of tables not read lately and reopens them on demand. Answers stay
right, the bound holds, readers racing evictions never read through a closed descriptor, a
replaced file is refused, and a process limit on open files far below the table count is no
longer an obstacle.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import lsmtrie
from forked import isolated

TINY = dict(table_buckets=1, node_tables=2, levels=4, memtable_bytes=2000)


def _open_fds():
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _load(db, n, tag=b"v"):
    keys = [b"key-%d" % i for i in range(n)]
    for i in range(0, n, 400):
        db.put_many(keys[i:i + 400], [tag + k for k in keys[i:i + 400]])
    db.flush()
    return {k: tag + k for k in keys}


def _table_files(path):
    return sorted(f for f in os.listdir(path) if f.endswith(".ht"))


def test_bound_holds_and_every_answer_is_right(tmp_path):
    path = str(tmp_path / "db")
    before = _open_fds()
    with lsmtrie.open(path, max_open_files=6, **TINY) as db:
        want = _load(db, 12000)
        st = db.stats()
        tables = sum(st["tables_per_level"])
        assert tables > 100, st["tables_per_level"]  # far more tables than the bound
        assert st["table_files_open"] <= 6
        keys = list(want)
        random.Random(2).shuffle(keys)
        assert db.get_many(keys) == [want[k] for k in keys]
        for k in keys[:1500]:
            assert db.get(k) == want[k] and k in db
        assert db.get_many([b"absent-%d" % i for i in range(2000)]) == [None] * 2000
        assert dict(db.items()) == want
        st = db.stats()
        assert st["table_files_open"] <= 6
        assert st["table_file_reopens"] > 0
        # the process holds the bound's descriptors plus a few of the store's own (lock,
        # directory, log, manifest), not one per table
        assert _open_fds() - before <= 6 + 8, (_open_fds() - before, tables)
    # reopened without a bound, the store has every table open and the same items
    with lsmtrie.open(path, max_open_files=-1) as db:
        st = db.stats()
        assert st["table_files_open"] == sum(st["tables_per_level"])
        assert st["table_file_reopens"] == 0
        assert dict(db.items()) == want


def test_default_bound_comes_from_the_process_limit(tmp_path):
    """Without max_open_files, a writer under a soft limit of 96 open files (96 - 64 = 32 of them
    for tables) keeps working with thousands of tables, and loses nothing."""
    path = str(tmp_path / "db")
    code = textwrap.dedent("""
        import json, resource, sys, lsmtrie
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
        with lsmtrie.open(sys.argv[1], table_buckets=1, node_tables=2, levels=4,
                          memtable_bytes=2000) as db:
            for r in range(400):
                db.put_many([b"f%d-%d" % (r, i) for i in range(40)], [b"v%d" % r] * 40, sync=True)
            db.flush()
            keys = [b"f%d-%d" % (r, i) for r in range(400) for i in range(40)]
            ok = db.get_many(keys) == [b"v%d" % r for r in range(400) for _ in range(40)]
            st = db.stats()
            print(json.dumps({"ok": ok, "tables": sum(st["tables_per_level"]),
                              "open": st["table_files_open"],
                              "reopens": st["table_file_reopens"]}), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert out["ok"], out
    assert out["tables"] > 96 and out["open"] <= 32 and out["reopens"] > 0, out
    with lsmtrie.open(path) as db:
        assert db.get_many([b"f%d-%d" % (r, i) for r in range(400) for i in range(40)]) == \
            [b"v%d" % r for r in range(400) for _ in range(40)]


@isolated(timeout=120)
def test_readers_racing_evictions_read_the_right_files(tmp_path):
    """Four threads read known items through a bound of 2 descriptors (nearly every read closes
    another table's file, or reopens its own) while a writer adds items and compactions swap
    tables. A read through a descriptor closed under it would fail (EBADF) or, worse, read
    another file reusing its number: every answer is checked."""
    db = lsmtrie.open(str(tmp_path / "db"), max_open_files=2, **TINY)
    want = _load(db, 6000, tag=b"stable-")
    keys = list(want)
    errors = []
    stop = threading.Event()

    def reader(seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                ks = rng.sample(keys, 200)
                got = db.get_many(ks)
                assert got == [want[k] for k in ks]
                for k in ks[:20]:
                    assert db.get(k) == want[k]
                assert db.get(b"absent-%d" % rng.randrange(10**6)) is None
        except BaseException as e:  # reported by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for r in range(60):
            db.put_many([b"new-%d-%d" % (r, i) for i in range(100)], [b"n%d" % r] * 100)
        db.flush()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    st = db.stats()
    assert st["compactions"] > 0 and st["table_file_reopens"] > 1000, st
    assert db.get_many([b"new-%d-%d" % (r, i) for r in range(60) for i in range(100)]) == \
        [b"n%d" % r for r in range(60) for _ in range(100)]
    db.close()


def test_scan_reads_its_tables_after_compactions_dropped_them(tmp_path):
    """A scan holds its version's tables while compactions drop them and checkpoints bury their
    files. With a bound of 2 those tables are closed and reopened as the scan goes; a dropped
    table's file is unlinked only after its last table object is freed, so every reopen finds
    it, and the scan returns exactly the state it started from; the files it held go when it
    is done. After close, the directory holds only the tables the store names. (A read-only
    open holds the store meanwhile, so the writer unlinks what it drops instead of reusing it.)"""
    path = str(tmp_path / "db")
    db = lsmtrie.open(path, max_open_files=2, checkpoint_interval=0, table_buckets=8,
                      node_tables=2, levels=4)
    n = 100_000  # items() reads 65,536 at a time: the rest of the scan reads tables after the drops
    want = _load(db, n, tag=b"a")
    at_start = set(_table_files(path))
    it = db.items()
    got = dict(next(it) for _ in range(100))
    reader = lsmtrie.open(path, read_only=True)
    _load(db, n, tag=b"b")  # the same keys again: the scanned tables are compacted away
    time.sleep(1.5)  # past the grace period: the checkpoints' graves are reaped
    db.put(b"late", b"1")
    db.flush()
    during = at_start & set(_table_files(path))
    got.update(it)  # the generator ends: the scan lets go of its version
    assert got == want
    st = db.stats()
    assert st["table_file_reopens"] > 0 and st["table_files_open"] <= 2, st
    time.sleep(1.5)
    db.flush()
    after = at_start & set(_table_files(path))
    # the files only the scan still held were there during it, and went after it
    assert len(during - after) > 100, (len(at_start), len(during), len(after))
    reader.close()
    db.close()
    files = _table_files(path)
    with lsmtrie.open(path, read_only=True) as ro:
        assert len(files) == sum(ro.stats()["tables_per_level"]), files
        assert ro.get(b"key-7") == b"bkey-7" and ro.get(b"late") == b"1"


def test_a_replaced_table_file_is_refused_on_reopen(tmp_path):
    """A table reopened after its descriptor was closed must be the same file: one replaced by a
    copy (same bytes, another inode) is refused with CorruptionError, not read."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, **TINY) as db:
        want = _load(db, 3000)
    with lsmtrie.open(path, max_open_files=1) as db:
        for name in _table_files(path):
            src = os.path.join(path, name)
            shutil.copyfile(src, src + ".copy")
            os.replace(src + ".copy", src)
        with pytest.raises(lsmtrie.CorruptionError, match="replaced"):
            db.get_many(list(want))


def test_read_only_store_with_a_bound_whose_writer_dropped_tables(tmp_path):
    """A read-only store sees the tables that existed when it was opened. With every table kept
    open (max_open_files=-1) it keeps reading them after the writer compacted them away; with a
    bound, a closed table whose file the writer removed cannot be reopened, and the error says
    to open the store again (README, "Processes and threads")."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, **TINY) as db:
        want = _load(db, 3000)
    before = set(_table_files(path))
    ro_all = lsmtrie.open(path, read_only=True, max_open_files=-1)
    ro_bound = lsmtrie.open(path, read_only=True, max_open_files=1)
    try:
        with lsmtrie.open(path, checkpoint_interval=0) as db:
            _load(db, 3000, tag=b"w")  # the same keys again: old tables compacted away
        gone = before - set(_table_files(path))
        assert len(gone) > 1, "the writer removed no table files"
        keys = list(want)
        assert ro_all.get_many(keys) == [want[k] for k in keys]
        with pytest.raises(lsmtrie.StorageError, match="opened again"):
            ro_bound.get_many(keys)
    finally:
        ro_all.close()
        ro_bound.close()
    with lsmtrie.open(path, read_only=True, max_open_files=1) as ro:
        assert ro.get_many(list(want)) == [b"w" + k for k in want]


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-2, ValueError), (2**63, ValueError),
                                     ("8", TypeError), (True, TypeError), (8.0, TypeError)])
def test_max_open_files_is_validated(tmp_path, bad, exc):
    with pytest.raises(exc, match="max_open_files"):
        lsmtrie.open(str(tmp_path / "db"), max_open_files=bad)
    assert not os.path.exists(tmp_path / "db")  # refused before anything was created


def test_value_logs_past_their_descriptor_bound(tmp_path):
    """Under a soft limit of 96 open files a store keeps descriptors for 8 value logs (a
    sixteenth, at least 8) while it has hundreds of them; four readers racing a writer (and the
    value-log garbage collection its overwrites start) read every large value right, the bound
    holds, and a reopen under the same limit reads everything."""
    path = str(tmp_path / "db")
    code = textwrap.dedent("""
        import json, random, resource, sys, threading, lsmtrie
        from lsmtrie._binding import lib
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
        lib.ltr_test_blob_file_bytes(1 << 14)
        db = lsmtrie.open(sys.argv[1], table_buckets=16, node_tables=2, min_blob_size=64)
        want = {}
        for r in range(60):
            ks = [b"s%d-%d" % (r, i) for i in range(10)]
            vs = [bytes([r]) * (1000 + 7 * i) for i in range(10)]
            db.put_many(ks, vs)
            want.update(zip(ks, vs))
        keys, errors, most = list(want), [], [0]
        stop = threading.Event()
        def reader(seed):
            rng = random.Random(seed)
            try:
                while not stop.is_set():
                    ks = rng.sample(keys, 50)
                    assert db.get_many(ks) == [want[k] for k in ks]
                    k = rng.choice(keys)
                    assert db.get(k) == want[k]
                    most[0] = max(most[0], db.stats()["blob_files_open"])
            except BaseException as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for r in range(150):  # overwrites: garbage for the collection to move
                ks = [b"o%d" % (i % 40) for i in range(r * 10, r * 10 + 10)]
                db.put_many(ks, [bytes([r % 251]) * 2000] * 10)
            db.flush()
        finally:
            stop.set()
            for t in threads:
                t.join()
        st = db.stats()
        got = db.get_many(keys) == [want[k] for k in keys]
        db.close()
        print(json.dumps({"errors": errors[:3], "files": st["blob_files"], "most": most[0],
                          "ok": got}), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert not out["errors"] and out["ok"], out
    assert out["files"] > 50 and 0 < out["most"] <= 8, out
    reread = textwrap.dedent("""
        import resource, sys, lsmtrie
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
        with lsmtrie.open(sys.argv[1]) as db:
            got = db.get_many([b"s%d-%d" % (r, i) for r in range(60) for i in range(10)])
            assert got == [bytes([r]) * (1000 + 7 * i) for r in range(60) for i in range(10)]
            assert len(dict(db.items())) == 600 + 40
            db.verify()
    """)
    r = subprocess.run([sys.executable, "-c", reread, path], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
