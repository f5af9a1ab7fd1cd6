"""Store.verify(): every table and BloomCluster read whole and checked; damaged files named."""

import os
import random
import shutil
import threading

import pytest

import lsmtrie
from lsmtrie import _binding as b

# Small tables, so that a few thousand items reach the last level and its clusters.
SMALL = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=20000)


def fill(db, n=20000, seed=1, deletes=True):
    rng = random.Random(seed)
    keys = [rng.randbytes(8) for _ in range(n)]
    for i, k in enumerate(keys):
        db.put(k, rng.randbytes(rng.randint(0, 60)))
        if deletes and i % 9 == 0:
            db.delete(keys[rng.randrange(i + 1)])
    db.flush()
    return keys


def files(path, ext):
    """The files of a kind in a directory. Only right after an open are they all live: a store
    keeps dead table files for reuse and deletes dropped files once it may."""
    return sorted(f for f in os.listdir(path) if f.endswith(ext))


def filled(path, n=20000, deletes=True, **options):
    """Opens a store filled with n items and reopened, so that every file there is live."""
    with lsmtrie.open(path, **SMALL, **options) as db:
        fill(db, n=n, deletes=deletes)
    return lsmtrie.open(path, **SMALL, **options)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))


def test_a_sound_store_verifies_and_the_counts_match_its_statistics(tmp_path):
    with lsmtrie.open(tmp_path / "s", **SMALL) as db:
        fill(db)
        got = db.verify()
        st = db.stats()
    assert got["tables"] == sum(st["tables_per_level"]) > 0
    assert got["items"] == sum(st["items_per_level"])
    assert got["table_bytes"] == sum(st["table_bytes_per_level"])
    assert st["tables_per_level"][-1] > 0 and got["clusters"] > 0 and got["cluster_bytes"] > 0


def test_an_empty_store_verifies_with_nothing_to_read(tmp_path):
    with lsmtrie.open(tmp_path / "s") as db:
        db.put(b"k", b"v")  # in the memtable only: no file holds it yet
        assert db.verify() == dict(tables=0, items=0, table_bytes=0, clusters=0, cluster_bytes=0)


def test_every_damaged_file_is_named_and_the_rest_still_read(tmp_path):
    path = tmp_path / "s"
    with filled(path) as db:
        total = db.verify()
        tables, clusters = files(path, ".ht"), files(path, ".bc")
        damaged = [tables[0], tables[len(tables) // 2], clusters[-1]]
        flip(path / damaged[0], 4096 + 700)  # inside bucket 1
        flip(path / damaged[1], 5)           # bucket 0
        flip(path / damaged[2], 3)           # the first unit
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.verify()
        lines = str(e.value).splitlines()
        assert lines[0].startswith("3 damaged file(s)")
        assert sorted(os.path.basename(ln.split(":")[0]) for ln in lines[1:]) == sorted(damaged)
        assert all("bad checksum" in ln for ln in lines[1:])
        # the sound files were all read: repairing the three makes the store sound again
        for name, off in zip(damaged, (4096 + 700, 5, 3)):
            flip(path / name, off)
        assert db.verify() == total


def test_a_damaged_footer_or_trailer_is_found_in_a_table_the_store_has_open(tmp_path):
    # The store checked both when it opened the table; verify reads them again from the disk.
    path = tmp_path / "s"
    with filled(path) as db:
        a, c = files(path, ".ht")[2:4]
        flip(path / a, os.path.getsize(path / a) - 104 + 20)  # in the footer
        flip(path / c, os.path.getsize(path / c) - 104 - 3)   # the trailer's last bytes
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.verify()
    report = str(e.value)
    assert "2 damaged" in report and a in report and c in report
    assert "trailer checksum mismatch" in report


def test_a_table_file_replaced_by_another_sound_table_is_found(tmp_path):
    # Another sound table in place of one the store opened: every checksum passes, but it is
    # not the table the manifest named (the oldest file is a last-level table's, the newest a
    # younger table's, of another node).
    path = tmp_path / "s"
    with filled(path, deletes=False) as db:
        names = files(path, ".ht")
        victim, source = names[0], names[-1]
        shutil.copyfile(path / source, tmp_path / "copy")
        os.replace(tmp_path / "copy", path / victim)
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.verify()
    assert "1 damaged" in str(e.value) and victim in str(e.value)


def test_clusters_on_a_metadata_directory_are_verified_too(tmp_path):
    meta = tmp_path / "meta"
    with filled(tmp_path / "s", metadata_path=meta) as db:
        assert db.verify()["clusters"] > 0
        assert not files(tmp_path / "s", ".bc")
        name = files(meta, ".bc")[0]
        flip(meta / name, 1)
        with pytest.raises(lsmtrie.CorruptionError, match=name):
            db.verify()


def test_a_table_in_the_wrong_node_is_found(tmp_path):
    # Two last-level tables of the same size swap files: each file is sound (its checksums do
    # not depend on where the table sits), but its items' hashes lead to the other node.
    path = tmp_path / "s"
    filled(path, deletes=False).close()
    by_size = {}
    for name in files(path, ".ht"):
        by_size.setdefault(os.path.getsize(path / name), []).append(name)
    a, c = next(v for v in by_size.values() if len(v) >= 2)[:2]
    os.rename(path / a, tmp_path / "x")
    os.rename(path / c, path / a)
    os.rename(tmp_path / "x", path / c)
    with lsmtrie.open(path, **SMALL) as db:
        with pytest.raises(lsmtrie.CorruptionError) as e:
            db.verify()
    assert "2 damaged" in str(e.value)
    assert str(e.value).count("does not belong to node") == 2


def test_verify_runs_beside_writes_and_compactions(tmp_path):
    with lsmtrie.open(tmp_path / "s", **SMALL) as db:
        fill(db, n=5000)
        stop, errors = threading.Event(), []

        def write():
            rng = random.Random(2)
            try:
                while not stop.is_set():
                    db.put_many([rng.randbytes(8) for _ in range(500)], [b"v" * 40] * 500)
            except Exception as exc:  # reported below
                errors.append(exc)

        t = threading.Thread(target=write)
        t.start()
        try:
            rounds = [db.verify() for _ in range(15)]
        finally:
            stop.set()
            t.join()
        assert not errors
        assert all(r["tables"] > 0 for r in rounds)
        assert rounds[-1]["items"] > rounds[0]["items"]  # later rounds saw the writes go down
        db.flush()
        assert db.verify()["items"] == sum(db.stats()["items_per_level"])


def test_a_read_only_store_verifies(tmp_path):
    with lsmtrie.open(tmp_path / "s", **SMALL) as db:
        fill(db, n=5000)
        expected = db.verify()
    with lsmtrie.open(tmp_path / "s", read_only=True) as db:
        assert db.verify() == expected


def test_a_reader_verifies_its_view_after_the_writer_removed_files_of_it(tmp_path):
    # A reader sees the store as of opening; the writer deletes the files of the tables it
    # drops while a reader is there. The reader's verify reads those through its own
    # descriptors, where a fresh open finds nothing.
    import time

    path = tmp_path / "s"
    with filled(path, n=5000) as w, lsmtrie.open(path, read_only=True) as r:
        before = r.verify()
        seen = set(files(path, ".ht"))
        rng = random.Random(5)
        deadline = time.monotonic() + 60
        while seen <= set(files(path, ".ht")) and time.monotonic() < deadline:
            w.put_many([rng.randbytes(8) for _ in range(2000)], [b"v" * 40] * 2000)
            w.flush()
        assert not seen <= set(files(path, ".ht")), "no file of the reader's view was removed"
        assert r.verify() == before


def test_the_report_is_cut_to_its_buffer_and_the_count_is_exact(tmp_path):
    path = tmp_path / "s"
    with filled(path, n=5000) as db:
        for name in files(path, ".ht")[:6]:
            flip(path / name, 10)
        st = b.ffi.new("ltr_verify_stats *")
        buf = b.ffi.new("char[]", 80)
        buf[79] = b"#"
        with db._use() as h:
            rc = b.lib.ltr_store_verify(h, st, buf, 79)
        assert rc == b.lib.LTR_ECORRUPT and st.bad_files == 6
        assert len(b.ffi.string(buf)) <= 78 and buf[79] == b"#"


def test_verify_of_a_closed_store_raises(tmp_path):
    db = lsmtrie.open(tmp_path / "s")
    db.close()
    with pytest.raises(lsmtrie.ClosedError):
        db.verify()


def test_a_table_file_gone_missing_is_an_error_naming_it(tmp_path):
    path = tmp_path / "s"
    with filled(path, n=5000, max_open_files=16) as db:
        # descriptors beyond the bound were closed: a table reopened by path finds nothing
        victims = files(path, ".ht")
        shutil.move(str(path / victims[-1]), str(tmp_path / "away"))
        try:
            with pytest.raises(lsmtrie.Error, match=victims[-1]):
                for _ in range(3):
                    db.verify()
        finally:
            shutil.move(str(tmp_path / "away"), str(path / victims[-1]))
        db.verify()


# ---- the command line: lsmtrie verify PATH ----

def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lsmtrie", "verify", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_the_command_verifies_a_store_beside_its_writer(tmp_path):
    import json

    with filled(tmp_path / "s", n=5000) as db:
        expected = db.verify()
        r = run_cli(tmp_path / "s", "--json")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert {k: got[k] for k in expected} == expected
        r = run_cli(tmp_path / "s")
        assert r.returncode == 0 and "sound" in r.stdout and f"{expected['tables']:,} tables" in r.stdout


def test_the_command_names_damaged_files_and_fails(tmp_path):
    meta = tmp_path / "meta"
    filled(tmp_path / "s", n=5000, metadata_path=meta).close()
    table, cluster = files(tmp_path / "s", ".ht")[1], files(meta, ".bc")[0]
    flip(tmp_path / "s" / table, 30)
    flip(meta / cluster, 2)
    r = run_cli(tmp_path / "s", "--metadata-path", meta)
    assert r.returncode == 1
    assert "2 damaged" in r.stderr and table in r.stderr and cluster in r.stderr


def test_the_command_fails_apart_on_what_is_not_a_store(tmp_path):
    r = run_cli(tmp_path / "nothing-here")
    assert r.returncode == 2 and "no store" in r.stderr
    assert not (tmp_path / "nothing-here").exists()  # nothing created
