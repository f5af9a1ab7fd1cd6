"""The store's working memory (docs/design.md, "Memory"): memtables and the buffers of flushes
and compactions, capped by `working_memory`. The cap sizes memtables by bytes and by items
(small items cost more index than bytes), compaction windows, and how many compactions run at
once; too small a cap is refused with the least that fits. The cap is checked where it
matters, in the resident memory of a process that loads a store, against the same load
without it."""

import json
import subprocess
import sys
import textwrap

import pytest

import lsmtrie

MiB = 1 << 20


def test_working_memory_is_checked_and_not_recorded(tmp_path):
    path = str(tmp_path / "db")
    for bad, err in (("64M", TypeError), (True, TypeError), (0, ValueError), (-5, ValueError)):
        with pytest.raises(err):
            lsmtrie.open(path, working_memory=bad)
    with pytest.raises(lsmtrie.InvalidArgumentError, match=r"at least \d+ MiB"):
        lsmtrie.open(path, working_memory=4 * MiB)
    # the least the message names fits; a MiB less does not
    try:
        lsmtrie.open(path, working_memory=4 * MiB)
    except lsmtrie.InvalidArgumentError as e:
        least = int(str(e).split("at least ")[1].split(" MiB")[0])
    with lsmtrie.open(path, working_memory=least * MiB) as db:
        db.put(b"k", b"v")
    with pytest.raises(lsmtrie.InvalidArgumentError):
        lsmtrie.open(path, working_memory=(least - 1) * MiB)
    # a property of the open, not of the store: reopened with another cap, or none
    with lsmtrie.open(path, working_memory=256 * MiB) as db:
        assert db.get(b"k") == b"v"
    with lsmtrie.open(path) as db:
        assert db.get(b"k") == b"v"
    # smaller tables need less
    with lsmtrie.open(str(tmp_path / "small"), table_buckets=64, working_memory=4 * MiB) as db:
        db.put(b"k", b"v")


def test_a_capped_memtable_is_rotated_by_its_items(tmp_path):
    """Eight-byte keys and empty values: a default memtable holds millions of them (its index
    far larger than its bytes); under a cap it is rotated once its items fill their share,
    within a batch too. Every item is kept."""
    keys = [b"%08d" % i for i in range(1_500_000)]
    flushes = {}
    for cap in (None, 80 * MiB):
        path = str(tmp_path / f"db-{cap}")
        with lsmtrie.open(path, working_memory=cap) as db:
            for i in range(0, len(keys), 500_000):
                db.put_many(keys[i:i + 500_000], [b""] * 500_000)
            db.flush()
            flushes[cap] = db.stats()["flushes"]
            assert db.get_many(keys[::997]) == [b""] * len(keys[::997])
            assert sum(1 for _ in db.items()) == len(keys)
    assert flushes[None] <= 2 and flushes[80 * MiB] >= 4, flushes


LOADER = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import lsmtrie
    path, cap, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(1)
    batch = 50_000
    koffs = np.arange(batch + 1, dtype=np.int64) * 16
    voffs = np.arange(batch + 1, dtype=np.int64) * 100
    def rss(field="VmHWM"):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    values = np.frombuffer(rng.bytes(100 * batch), np.uint8)
    base, base_anon = rss(), rss("RssAnon")
    with lsmtrie.open(path, working_memory=cap) as db:
        for i in range(n // batch):
            keys = np.frombuffer(rng.bytes(16 * batch), np.uint8)
            db.put_many((keys, koffs), (values, voffs))
        db.flush()
        st = db.stats()
        settled_anon = rss("RssAnon")  # the background idle, the memtables empty
    print(json.dumps(dict(base=base, peak=rss(), metadata=st["metadata_memory_bytes"],
                          base_anon=base_anon, settled_anon=settled_anon,
                          compactions=st["compactions"], flushes=st["flushes"])))
""")


def load_in_child(tmp_path, cap, n):
    out = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / f"db-{cap}"),
                          json.dumps(cap), str(n)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_cap_bounds_the_resident_memory_of_a_load(tmp_path):
    """4 M items (16-byte keys, 100-byte values) through put_many, with flushes and
    compactions, in a process of its own: the peak resident memory the store added stays
    within the cap plus its metadata and the batches in flight; without the cap the same load
    takes markedly more (two memtables of a table each, two compactions)."""
    n, cap = 4_000_000, 64 * MiB
    free = load_in_child(tmp_path, None, n)
    capped = load_in_child(tmp_path, cap, n)
    assert capped["compactions"] >= 2 and capped["flushes"] > free["flushes"]
    grown = capped["peak"] - capped["base"]
    assert grown <= cap + capped["metadata"] + 24 * MiB, (capped, cap)
    assert free["peak"] - free["base"] >= grown + 30 * MiB, (free, capped)


def test_the_memory_background_work_freed_goes_back(tmp_path):
    """The same load without a cap: once flush() has let the background settle, the process's
    anonymous memory is back to where it started plus the store's metadata, however high the
    memtables, flush plans and compaction windows took it meanwhile (glibc would keep their
    freed blocks in its arenas; the background threads trim them after each job)."""
    r = load_in_child(tmp_path, None, 4_000_000)
    kept = r["settled_anon"] - r["base_anon"]
    assert kept <= r["metadata"] + 24 * MiB, r
    assert r["peak"] - r["base"] >= kept + 64 * MiB, r  # the load did use much more meanwhile


CRASHER = textwrap.dedent("""
    import os, sys, lsmtrie
    db = lsmtrie.open(sys.argv[1])
    keys = [b"%08d" % i for i in range(1_200_000)]
    for i in range(0, len(keys), 400_000):
        db.put_many(keys[i:i + 400_000], [b"v"] * 400_000)
    db.put(b"last", b"synced", sync=True)
    os._exit(0)  # no close(): the items are in the log only
""")


def test_a_replay_keeps_to_the_cap(tmp_path):
    """A writer dies with 1.2 M small items in its log and in no table; reopened under a cap,
    the replay rotates its memtables by their items as writes would (flushing as it goes),
    and every item is there."""
    path = str(tmp_path / "db")
    out = subprocess.run([sys.executable, "-c", CRASHER, path], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    with lsmtrie.open(path, working_memory=80 * MiB) as db:
        assert db.stats()["flushes"] >= 3  # by the replay, under the cap
        keys = [b"%08d" % i for i in range(0, 1_200_000, 7)]
        assert db.get_many(keys) == [b"v"] * len(keys)
        assert db.get(b"last") == b"synced"
