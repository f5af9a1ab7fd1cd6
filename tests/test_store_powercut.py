"""Power cuts. A SIGKILL loses nothing the process handed to the kernel, so the kill tests of
test_store_crash.py cannot show a missing fsync. Here the same writers run with the power-cut
library preloaded (powercut.c): it keeps the image that the weakest POSIX model of a power cut
leaves at each moment (a file's bytes as of its last fsync, a directory's entries as of the
directory's last fsync). After the kill the store's directories are replaced by that image and
reopened: every write acknowledged under sync=True must be there, the rest must be a prefix,
every write_batch whole or absent, nothing corrupt; bulk loads keep everything flushed.

The first test checks the model itself on plain files, so the others cannot pass for want of a
working library."""

import itertools
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

import lsmtrie
import powercut
from test_store_crash import (BULK_OPEN, FAST, TINY_MEM, WRITER, _env, bulk_trials, crash_trials,
                              describe_mismatch, gen_ops, matching_prefix, read_state,
                              run_writer)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return powercut.build(str(tmp_path_factory.mktemp("powercut")))


_MODEL = textwrap.dedent("""
    import ctypes, os, sys
    d, phase = sys.argv[1], sys.argv[2]

    def put(name, data, sync):
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)

    def append(name, data):
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_APPEND)
        os.write(fd, data)
        os.close(fd)

    def sync_dir():
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    if phase == "fsync":
        put("named", b"2", False)     # its name is synced below, its bytes never
        put("whole", b"3", True)
        put("reused", b"r1", True)
        sync_dir()
        os.unlink(os.path.join(d, "reused"))
        put("fresh", b"", False)      # may take the inode number of "reused"
        append("fresh", b"f")
        sync_dir()
        append("whole", b"33")        # after its fsync
        put("old", b"new", False)     # "old" was there before, synced by the parent
        os.rename(os.path.join(d, "whole"), os.path.join(d, "moved"))
        os.unlink(os.path.join(d, "gone"))
        put("lost", b"1", True)       # synced, but its name never is
    else:                             # syncfs: everything as it is
        put("late", b"4", False)
        fd = os.open(d, os.O_RDONLY)
        assert ctypes.CDLL(None).syncfs(fd) == 0
        os.close(fd)
    print("done", flush=True)
""")


def test_the_model_keeps_only_what_was_synced(tmp_path, library):
    """Plain files under the library: the image keeps a file's bytes as of its last fsync and
    a directory's names as of its last fsync, tells a reused inode number from the file it held
    before, keeps appended (not overwritten) bytes when asked to, and everything after syncfs."""
    d = str(tmp_path / "dir")
    os.makedirs(d)
    for name in ("old", "gone"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(name.encode())
    shadow = str(tmp_path / "shadow")

    def run(phase):
        env = powercut.env(dict(os.environ), library, [d], shadow)
        r = subprocess.run([sys.executable, "-c", _MODEL, d, phase], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "done" in r.stdout, r.stderr

    run("fsync")
    assert powercut.image(shadow, 0) == {"old": b"old", "gone": b"gone", "named": b"",
                                         "whole": b"3", "fresh": b""}
    real = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    assert real["moved"] == b"333" and "gone" not in real  # (the files themselves went on)

    class All:  # keeps all of what was appended after the last fsyncs
        def randint(self, lo, hi):
            return hi

    powercut.apply_image(shadow, [d], All())  # appended bytes kept; overwritten ones not
    assert {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)} == {
        "old": b"old", "gone": b"gone", "named": b"2", "whole": b"333", "fresh": b"f"}

    run("syncfs")
    real = {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}
    assert powercut.image(shadow, 0) == real and real["late"] == b"4"
    powercut.apply_image(shadow, [d])
    assert {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d)} == real


_THREADS = textwrap.dedent("""
    import os, sys, threading
    d, shadow, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    done = threading.Event()

    def sync_dir():
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def durable(name):  # the image's bytes for name now, or None when its listing lacks it
        with open(os.path.join(shadow, "d-0")) as f:
            for line in f:
                kind, ino, gen, entry = line.rstrip("\\n").split(" ", 3)
                if entry == name:
                    p = os.path.join(shadow, "f-%s-%s" % (ino, gen))
                    return open(p, "rb").read() if os.path.exists(p) else b""
        return None

    def creator():  # each file synced, then its name; the one before it deleted (inode reuse)
        for i in range(rounds):
            name = "f%d" % i
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"data of " + name.encode())
            os.fsync(fd)
            os.close(fd)
            sync_dir()
            got = durable(name)  # synced, named, and not yet deleted: in the image, whole
            if got != b"data of " + name.encode():
                print("bad %s %r" % (name, got), flush=True)
            if i:
                os.unlink(os.path.join(d, "f%d" % (i - 1)))
        done.set()

    def syncer():  # syncs of the same directory from another thread, until the creator ends
        while not done.is_set():
            sync_dir()

    threads = [threading.Thread(target=creator), threading.Thread(target=syncer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done", flush=True)
""")


def test_the_model_records_concurrent_syncs_in_order(tmp_path, library):
    """Two threads syncing one directory, the library made slow to publish each record
    (POWERCUT_JITTER_US): once a sync returns, the image names what the directory held then,
    with the bytes synced for it. (A sync's stale listing could replace a newer one, and a
    power-cut test then lost the store's newest log, synced writes and all.)"""
    d = str(tmp_path / "dir")
    os.makedirs(d)
    shadow = str(tmp_path / "shadow")
    env = powercut.env(dict(os.environ), library, [d], shadow)
    env["POWERCUT_JITTER_US"] = "2000"
    r = subprocess.run([sys.executable, "-c", _THREADS, d, shadow, "200"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr
    assert "bad" not in r.stdout, r.stdout
    img = powercut.image(shadow, 0)  # (f198 is there if no sync came after its unlink)
    assert img.get("f199") == b"data of f199" and set(img) <= {"f198", "f199"}, img
    assert all(data == b"data of " + name.encode() for name, data in img.items()), img


def run_cut(script, args, library, watch, shadow):
    """The stdout of a writer script run under the power-cut library (it must exit with 0)."""
    r = subprocess.run([sys.executable, "-c", script, *args],
                       env=powercut.env(_env(), library, watch, shadow), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def powercut_trials(tmp_path, library, open_opts, meta=None, **kw):
    """crash_trials (test_store_crash.py) with power cuts: the store (created first, so that it
    exists durably) is rebuilt from the durable image before each reopen; in every other trial
    each file keeps a random part of the bytes appended since its last fsync (a torn write)."""
    path, shadow = str(tmp_path / "db"), str(tmp_path / "shadow")
    watch = [path] + ([meta] if meta else [])
    with lsmtrie.open(path, **open_opts):
        pass
    cuts = itertools.count()
    tears = random.Random(kw["seed"])

    def cut():  # odd trials keep random parts of what was written after the last fsyncs
        k = next(cuts)
        powercut.apply_image(shadow, watch, tears if k % 2 else None)
        if os.environ.get("POWERCUT_KEEP_IMAGES"):  # for a post-mortem: the store as cut
            for i, d in enumerate(watch):
                shutil.copytree(d, tmp_path / f"image-{k}-{i}")

    return crash_trials(tmp_path, open_opts, tag="P",
                        reopen_kw={"metadata_path": meta} if meta else None,
                        make_env=lambda: powercut.env(_env(), library, watch, shadow),
                        after_kill=cut, **kw)


@pytest.fixture
def scratch(tmp_path):
    """A directory in memory (/dev/shm) when there is one, else tmp_path: tests that copy and
    delete stores many times run there, off this machine's disk, whose deletes wait for the
    device (mounted with discard). The power-cut library decides what is durable either way."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = tempfile.mkdtemp(prefix="lsmtrie-powercut-", dir=shm)
    try:
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cuts_at_chosen_syncs(scratch, library, opts, cfg, store_sync, pick, verify=False):
    """Runs the writer once whole to trace its syncs, then again for each sync `pick(syncs)`
    names (POWERCUT_AT), each cut keeping random parts of what was appended since the last
    syncs: each must leave a store that reopens with every acknowledged synced write and a
    prefix of the rest (with verify, a store that verify() finds sound too)."""
    script = scratch / "writer.py"
    script.write_text(WRITER)
    path, fresh, shadow = (str(scratch / x) for x in ("db", "fresh", "shadow"))
    with lsmtrie.open(fresh, **opts):
        pass
    ops = gen_ops(cfg["seed"], cfg["n"], tag=cfg["tag"].encode(), **cfg["gen"])

    def run(at):
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(fresh, path)
        return run_writer(script, path, dict(cfg, open=opts), ops, store_sync,
                          env=powercut.env(_env(), library, [path], shadow, at=at))

    assert run(None).finished
    syncs = powercut.trace(shadow)
    tears = random.Random(cfg["seed"])
    for at in sorted(pick(syncs)):
        r = run(at)
        if r.finished:  # a run whose checkpoints found a few tables fewer alive: the count
            # varies with the background's timing (up to 22 of 880 in one CI run)
            assert at > len(syncs) - max(20, len(syncs) // 20), (at, len(syncs))
            continue
        assert len(powercut.trace(shadow)) < at, (at, r.acked)
        powercut.apply_image(shadow, [path], tears)
        state = read_state(path)
        lo, hi = r.synced_acked + 1, r.acked + 2
        assert matching_prefix({}, ops, state, lo, hi), (
            f"cut at sync {at} of {len(syncs)} (acked {r.acked}, last synced "
            f"{r.synced_acked}): no prefix in [{lo}, {hi}]; "
            + describe_mismatch({}, ops, state, lo, hi))
        if verify:
            with lsmtrie.open(path) as db:  # every pointer leads to its record
                db.verify()


def test_power_cut_at_chosen_syncs(scratch, library):
    """The power goes at chosen syncs of the store's files (POWERCUT_AT): each directory sync
    and the sync after it (log rotations: the old log's sync and the new log's name; the end of
    the checkpoints of flush() calls), and 12 more spread over the run, which syncs 30% of its
    writes and starts a new log every 32 memtables of 1500 bytes. Background checkpoints are
    off, so that runs make nearly the same syncs. Every cut also keeps random parts of what was
    appended since the last syncs. Each must leave a store that reopens with every acknowledged
    synced write and a prefix of the rest."""
    opts = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500,
                checkpoint_interval=3600)
    cfg = {"seed": 21, "n": 700, "tag": "C", "gen": {"p_sync": 0.3}, "flush_every": 150,
           "hooks": {"ltr_test_checkpoint_policy": [1e9, 1 << 50]}}

    def pick(syncs):
        rotations = [i for i, kind, p in syncs if kind == "d"]
        assert len(syncs) > 300 and len(rotations) >= 4, (len(syncs), rotations)
        points = {at for i in rotations for at in (i, i + 1)}
        return points | {1 + k * (len(syncs) - 1) // 11 for k in range(12)}

    cuts_at_chosen_syncs(scratch, library, opts, cfg, False, pick)


@pytest.mark.parametrize("store_sync", [False, True], ids=["sync_writes", "sync_store"])
def test_power_cut_at_chosen_syncs_with_value_logs(scratch, library, store_sync):
    """The chosen-syncs run above with values up to 20 KB, most of them kept in value logs
    (closed at 64 KiB, so new ones start all the time): the power goes at each directory sync
    and the one after it (a value log's or a log's creation, the end of a checkpoint) and at
    20 more, each keeping random parts of what was appended since the last syncs, so value logs
    lose records that logs point to. Every read of the reopened store succeeds (no
    CorruptionError) and it holds every acknowledged synced write and a prefix of the rest."""
    opts = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500,
                checkpoint_interval=3600, sync=store_sync)
    cfg = {"seed": 23, "n": 300, "tag": "V", "flush_every": 70,
           "gen": {"p_sync": 0.0 if store_sync else 0.3, "vmax": 20000, "nkeys": 120},
           "hooks": {"ltr_test_checkpoint_policy": [1e9, 1 << 50],
                     "ltr_test_blob_file_bytes": 1 << 16}}

    def pick(syncs):
        vlogs = {p for _, _, p in syncs if p.endswith(".vlog")}
        assert len(vlogs) > 10, vlogs  # value logs came and went
        rotations = [i for i, kind, p in syncs if kind == "d"]
        points = {at for i in rotations[::max(1, len(rotations) // 12)] for at in (i, i + 1)}
        return points | {1 + k * (len(syncs) - 1) // 19 for k in range(20)}

    cuts_at_chosen_syncs(scratch, library, opts, cfg, store_sync, pick, verify=True)


@pytest.mark.parametrize("store_sync", [False, True], ids=["sync_writes", "sync_store"])
def test_power_cut_during_writes_of_large_values(tmp_path, library, store_sync):
    """Random cuts (checkpoints every few ms) while values up to 20 KB are written, most of
    them to value logs that rotate at 64 KiB."""
    opts = dict(TINY_MEM, sync=store_sync)
    kinds = powercut_trials(tmp_path, library, opts, trials=6, n=250, seed=43 + store_sync,
                            store_sync=store_sync,
                            gen=dict(vmax=20000, nkeys=150, p_sync=0.0 if store_sync else 0.1),
                            hooks={"ltr_test_blob_file_bytes": 1 << 16})
    assert any(acked > 20 for _, acked, _ in kinds)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.stats()["bytes_written_by_kind"]["blobs"] > 0
        db.verify()


_THREADED_BLOB_WRITER = textwrap.dedent("""
    import hashlib, os, sys, threading, lsmtrie
    from lsmtrie import _binding
    _binding.lib.ltr_test_blob_file_bytes(1 << 16)
    db = lsmtrie.open(sys.argv[1], table_buckets=16, node_tables=2, levels=3,
                      memtable_bytes=2000, checkpoint_interval=0.005)
    lock = threading.Lock()

    def value(key):
        n = 3000 + int.from_bytes(hashlib.blake2b(key, digest_size=2).digest(), "little") % 15000
        return (key + b"|") * (n // (len(key) + 1)) + b"!"

    def writer(t):
        for j in range(80):
            key = b"t%d-%d" % (t, j)
            db.put(key, value(key), sync=(j % 3 != 2))  # a third unsynced
            with lock:
                print("%d %d" % (t, j), flush=True)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print("done", flush=True)
    os._exit(0)
""")


def test_power_cut_with_concurrent_sync_writers_of_large_values(scratch, library):
    """Four threads putting large values (each write's value-log record, then its log record,
    synced by group commits that other threads' appends overtake) while value logs rotate and
    checkpoints run; the power goes at chosen syncs. Every acknowledged synced put is there
    whole, every other key there is whole, and every read succeeds."""
    path, shadow = str(scratch / "db"), str(scratch / "shadow")

    def value(key):
        import hashlib
        n = 3000 + int.from_bytes(hashlib.blake2b(key, digest_size=2).digest(), "little") % 15000
        return (key + b"|") * (n // (len(key) + 1)) + b"!"

    def run(at):
        shutil.rmtree(path, ignore_errors=True)
        with lsmtrie.open(path, table_buckets=16, node_tables=2, levels=3, memtable_bytes=2000):
            pass
        r = subprocess.run([sys.executable, "-c", _THREADED_BLOB_WRITER, path],
                           env=powercut.env(_env(), library, [path], shadow, at=at),
                           capture_output=True, timeout=120)
        lines = r.stdout.decode().split("\n")
        acked = [tuple(map(int, x.split())) for x in lines if x and x != "done"]
        assert "done" in lines or at is not None, r.stderr.decode()
        return "done" in lines, acked

    finished, _ = run(None)
    syncs = len(powercut.trace(shadow))
    assert syncs > 200, syncs
    tears = random.Random(7)
    cuts = 0
    span = 8 * (syncs - 1) // 10  # (threads make the count of syncs vary by some 15%)
    for at in sorted({1 + k * span // 9 for k in range(10)}):
        finished, acked = run(at)
        if finished:
            continue
        cuts += 1
        powercut.apply_image(shadow, [path], tears)
        with lsmtrie.open(path) as db:
            state = dict(db.items())
            db.verify()
        for t, j in acked:
            k = b"t%d-%d" % (t, j)
            if j % 3 != 2:
                assert state.get(k) == value(k), f"cut at {at} of {syncs}: synced {k} lost"
        for k, v in state.items():
            assert v == value(k), f"cut at {at}: {k} holds a wrong value"
    assert cuts >= 6, cuts


def test_power_cut_during_writes_flushes_and_compactions(tmp_path, library):
    """Tiny memtables and tables: flushes, compactions and checkpoints all the time; a few
    percent of the writes synced."""
    kinds = powercut_trials(tmp_path, library, TINY_MEM, trials=8, n=800, seed=11)
    assert any(acked > 100 for _, acked, _ in kinds)
    assert any(synced > 0 for _, _, synced in kinds)
    with lsmtrie.open(str(tmp_path / "db")) as db:  # the trie was really used
        st = db.stats()
        assert st["flushes"] > 10 and st["compactions"] > 0, st


def test_power_cut_while_the_trie_deepens(tmp_path, library):
    """A growing trie (levels=0) of tiny tables: cuts land while it deepens and compacts the
    level it outgrew."""
    opts = dict(table_buckets=16, node_tables=2, levels=0, memtable_bytes=1500, **FAST)
    powercut_trials(tmp_path, library, opts, trials=6, n=2000, seed=22,
                    gen=dict(nkeys=20000, vmax=200))
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.stats()["levels"] >= 3


def test_power_cut_with_a_sync_store(tmp_path, library):
    """sync=True for the whole store: every acknowledged write survives the cut."""
    kinds = powercut_trials(tmp_path, library, dict(TINY_MEM, sync=True), trials=6, n=300,
                            seed=12, store_sync=True, gen=dict(p_sync=0.0))
    assert any(synced > 50 for _, _, synced in kinds)


def test_power_cut_with_explicit_flushes_and_log_rotation(tmp_path, library):
    """flush() calls, and memtables of the default size (logs rotate less often, and hold
    records of several memtables)."""
    powercut_trials(tmp_path, library, dict(table_buckets=16, node_tables=2, levels=2, **FAST),
                    trials=6, n=1200, seed=13, flush_every=97, gen=dict(vmax=300, nkeys=2000))


def test_power_cut_while_logs_rotate_and_writers_wait_for_log_space(tmp_path, library):
    """Memtables of the default size (they fill inside batches and hand the rest to a fresh one
    that starts at the batch's record), logs rotated at 16 KiB and writers held while the logs
    on disk pass 48 KiB: cuts land in log rotations, in releases of logs below the floor and
    while a writer waits for a checkpoint to free log space."""
    opts = dict(table_buckets=16, node_tables=2, levels=3, **FAST)
    powercut_trials(tmp_path, library, opts, trials=6, n=1200, seed=18,
                    gen=dict(vmax=300, nkeys=2000), hooks={"ltr_test_log_limits": [16384, 49152]})


def test_power_cut_when_checkpoints_sync_the_filesystem(tmp_path, library):
    """Checkpoints that flush() waits for sync the whole filesystem (syncfs) instead of each
    file once they name SYNCFS_MIN files; here from one file on."""
    powercut_trials(tmp_path, library, TINY_MEM, trials=6, n=800, seed=16, flush_every=61,
                    hooks={"ltr_test_syncfs_min": 1})


def test_power_cut_during_manifest_rotations(tmp_path, library):
    """A manifest replaced by a snapshot (a new manifest, then CURRENT) once it passes 2 KB
    (instead of 1 MiB) and four times its snapshot; flushes every few writes make edits enough:
    cuts land in rotations too."""
    opts = dict(table_buckets=4, node_tables=2, levels=3, memtable_bytes=300, **FAST)
    powercut_trials(tmp_path, library, opts, trials=6, n=1500, seed=17,
                    hooks={"ltr_test_manifest_rotation": 2048})
    with open(tmp_path / "db" / "CURRENT") as f:
        assert int(f.read().split("-")[1]) > 1  # MANIFEST-<file number>: replaced


@pytest.mark.parametrize("separate", [True, False], ids=["metadata_path", "in_store"])
def test_power_cut_during_last_level_appends_clusters_and_gc(tmp_path, library, separate):
    """levels=2 with a low gc_threshold: cuts land in cluster writes and garbage collections.
    The BloomClusters live in a metadata directory (watched too), or in the store's own."""
    meta = str(tmp_path / "meta") if separate else None
    opts = dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000,
                gc_threshold=0.2, max_open_files=4, **FAST)
    if meta:
        opts["metadata_path"] = meta
    powercut_trials(tmp_path, library, opts, trials=6, n=900, seed=14,
                    gen=dict(nkeys=200, vmax=200), meta=meta)
    with lsmtrie.open(str(tmp_path / "db"), metadata_path=meta) as db:
        st = db.stats()
        assert st["tables_per_level"][-1] > 0
        assert st["gcs"] > 0 and st["bytes_written_by_kind"]["clusters"] > 0, st


_CREATE = textwrap.dedent("""
    import os, sys, lsmtrie
    db = lsmtrie.open(sys.argv[1], create=True, table_buckets=16,
                      metadata_path=sys.argv[2] if len(sys.argv) > 2 else None)
    for i in range(20):
        db.put(b"k%d" % i, b"v%d" % i, sync=True)
    print("synced", flush=True)
    os._exit(0)
""")


@pytest.mark.parametrize("separate", [False, True], ids=["store", "metadata_path"])
def test_power_cut_after_creating_a_store_keeps_its_synced_writes(tmp_path, library, separate):
    """The directories a new store creates must survive with its first synced writes: their
    parent is synced too. (It was not: a cut took the new store away, synced writes and all.)"""
    parent = tmp_path / "parent"
    parent.mkdir()
    path, meta = str(parent / "db"), str(parent / "meta") if separate else None
    watch = [str(parent), path] + ([meta] if meta else [])
    shadow = str(tmp_path / "shadow")
    out = run_cut(_CREATE, [path] + ([meta] if meta else []), library, watch, shadow)
    assert "synced" in out, out
    powercut.apply_image(shadow, watch)
    assert os.path.isdir(path) and (not meta or os.path.isdir(meta))
    with lsmtrie.open(path, create=False, metadata_path=meta) as db:
        assert dict(db.items()) == {b"k%d" % i: b"v%d" % i for i in range(20)}


_SPLIT_BATCH = textwrap.dedent("""
    import json, os, sys, time, lsmtrie
    db = lsmtrie.open(sys.argv[1], table_buckets=4, node_tables=8, levels=3,
                      checkpoint_interval=0.003)
    db.put(b"x", b"old", sync=True)
    # not synced, and larger than a memtable (a 4-bucket table's worth, 15.5 KB): the
    # memtable fills in the middle of it
    db.put_many([b"x"] + [b"k%d" % i for i in range(9)], [b"new"] + [b"v" * 3000] * 9)
    time.sleep(1.0)  # the full memtable is flushed and a background checkpoint names its table
    st = db.stats()
    print(json.dumps([st["flushes"], st["checkpoints"], st["memtable_items"]]), flush=True)
    os._exit(0)
""")


def test_power_cut_after_a_checkpoint_of_part_of_an_unsynced_batch(tmp_path, library):
    """A batch larger than a memtable fills one in its middle; that memtable is flushed and a
    background checkpoint names its table while the rest of the batch waits in the next one.
    The batch was never synced, but a checkpoint syncs the log before it names the tables: the
    cut must leave the batch whole (or absent), not half there under the older value of x that
    recovery replays from the log. (It left x = b"old" beside part of the batch.)"""
    path, shadow = str(tmp_path / "db"), str(tmp_path / "shadow")
    with lsmtrie.open(path, table_buckets=4, node_tables=8, levels=3):
        pass
    out = run_cut(_SPLIT_BATCH, [path], library, [path], shadow)
    flushes, checkpoints, in_memory = json.loads(out)
    assert flushes >= 1 and checkpoints >= 1 and in_memory > 0, out  # the case arose
    powercut.apply_image(shadow, [path])
    with lsmtrie.open(path) as db:
        state = dict(db.items())
    before = {b"x": b"old"}
    after = dict([(b"x", b"new")] + [(b"k%d" % i, b"v" * 3000) for i in range(9)])
    assert state in (before, after), state


_CLUSTERS_LATER = textwrap.dedent("""
    import json, os, sys, lsmtrie
    from lsmtrie import _binding
    lib = _binding.lib
    lib.ltr_test_checkpoint_policy(1e9, 1 << 50)  # checkpoints only when flush() asks
    lib.ltr_test_hold_last_level(1)
    db = lsmtrie.open(sys.argv[1], checkpoint_interval=3600, **json.loads(sys.argv[2]))
    for r in range(60):
        db.put_many([b"c%02d-%03d" % (r, i) for i in range(40)], [b"v%02d" % r * 20] * 40)
    db.flush()  # the last level's tables made durable; no cluster built yet
    print(db.stats()["bytes_written_by_kind"]["clusters"], flush=True)
    lib.ltr_test_hold_last_level(0)
    db.flush()  # the clusters built: a checkpoint that names only them
    print(db.stats()["bytes_written_by_kind"]["clusters"], flush=True)
    os._exit(0)
""")


@pytest.mark.parametrize("separate", [True, False], ids=["metadata_path", "in_store"])
def test_power_cut_after_a_checkpoint_of_clusters_only(tmp_path, library, separate):
    """A checkpoint that names only BloomClusters (built after their tables were made durable)
    must still sync the directory that names them: the store's own when there is no metadata
    directory. (It did not: the reopen found the manifest naming a cluster file that the power
    cut had taken away.)"""
    path, meta = str(tmp_path / "db"), str(tmp_path / "meta") if separate else None
    opts = dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000)
    if meta:
        opts["metadata_path"] = meta
    with lsmtrie.open(path, **opts):
        pass
    watch = [path] + ([meta] if meta else [])
    shadow = str(tmp_path / "shadow")
    out = run_cut(_CLUSTERS_LATER, [path, json.dumps(opts)], library, watch, shadow)
    before, after = map(int, out.split())
    assert before == 0 and after > 0, out
    powercut.apply_image(shadow, watch)
    want = {b"c%02d-%03d" % (r, i): b"v%02d" % r * 20 for r in range(60) for i in range(40)}
    with lsmtrie.open(path, metadata_path=meta) as db:
        assert dict(db.items()) == want
        assert db.get_many(list(want)) == list(want.values())
        assert db.stats()["cluster_reads"] > 0  # the last level was read through its clusters


def test_power_cut_during_bulk_load(tmp_path, library):
    """bulk=True writes no log: a cut loses what was not flushed, and keeps all that was."""
    path = str(tmp_path / "db")
    with lsmtrie.open(path, **BULK_OPEN):
        pass
    shadow = str(tmp_path / "shadow")
    bulk_trials(tmp_path, trials=4, seed=15,
                make_env=lambda: powercut.env(_env(), library, [path], shadow),
                after_kill=lambda: powercut.apply_image(shadow, [path]))
