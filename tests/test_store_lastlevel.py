"""The last level: it never compacts downward, tables are appended to its nodes; BloomClusters
hold the per-bucket filters of a last-level node's tables by bucket column (in metadata_path
when given, else inside the store); garbage collection merges a node's tables, dropping shadowed
versions and tombstones, once its garbage ratio passes gc_threshold.

Geometry: levels=2 (the root and 8 last-level nodes), 16-bucket tables (~62 KB), two tables per
node before compaction. Every root compaction appends about one table to each of the 8 nodes.
"""

import os
import random

import pytest

import lsmtrie

LL = dict(table_buckets=16, node_tables=2, levels=2)


def load(db, model, rounds, per_round, tag, rng, vlen=(10, 60)):
    """Unique keys, put_many in rounds."""
    for r in range(rounds):
        ks = [b"%s-%d-%d" % (tag, r, i) for i in range(per_round)]
        vs = [rng.randbytes(rng.randint(*vlen)) for _ in ks]
        db.put_many(ks, vs)
        model.update(zip(ks, vs))


def check(db, model, sample=600, seed=0):
    keys = sorted(model)
    pick = random.Random(seed).sample(keys, min(sample, len(keys)))
    absent = [b"absent-%d" % i for i in range(100)]
    got = db.get_many(pick + absent)
    assert got[:len(pick)] == [model[k] for k in pick]
    assert got[len(pick):] == [None] * len(absent)
    scanned = dict(db.items())
    if scanned != model:
        missing = [k for k in model if k not in scanned]
        extra = [k for k in scanned if k not in model]
        wrong = [k for k in model if k in scanned and scanned[k] != model[k]]
        raise AssertionError(f"items(): {len(missing)} missing {missing[:3]}, {len(extra)} extra "
                             f"{extra[:3]}, {len(wrong)} wrong {wrong[:3]}")


def test_last_level_appends_tables_and_never_compacts_down(tmp_path):
    rng = random.Random(1)
    model = {}
    history = []
    with lsmtrie.open(str(tmp_path / "db"), **LL) as db:
        for step in range(8):
            load(db, model, 1, 2500, b"s%d" % step, rng)
            db.flush()
            st = db.stats()
            history.append(st["tables_per_level"][-1])
            assert len(st["tables_per_level"]) == 2
            # unique keys: no garbage, so no GC, and the last level only grows
            assert st["gcs"] == 0
            if len(history) > 1:
                assert history[-1] >= history[-2], f"last-level tables shrank: {history}"
        st = db.stats()
        # far more tables than node_tables per node: nodes grow by appending
        assert st["tables_per_level"][-1] >= 8 * 4, st["tables_per_level"]
        assert st["tables_per_level"][0] < 2 * LL["node_tables"]
        assert st["bytes_written_by_kind"]["compaction"][1] > 0
        assert st["items_per_level"][0] + st["items_per_level"][1] == len(model)
        check(db, model)
        before = st["tables_per_level"]
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.stats()["tables_per_level"] == before
        check(db, model, seed=1)


def _big_load(db, rng):
    """Enough data for 30+ appended tables per last-level node."""
    model = {}
    load(db, model, 16, 5000, b"big", rng)
    db.flush()
    return model


@pytest.mark.parametrize("use_meta", [True, False])
def test_bloom_clusters(tmp_path, use_meta):
    rng = random.Random(2)
    meta = str(tmp_path / "meta") if use_meta else None
    path = str(tmp_path / "db")
    with lsmtrie.open(path, metadata_path=meta, **LL) as db:
        model = _big_load(db, rng)
        st = db.stats()
        assert st["tables_per_level"][-1] >= 8 * 30, st["tables_per_level"]
        clusters = st["bytes_written_by_kind"]["clusters"]
        table_bytes = st["table_bytes_per_level"][-1]
        assert clusters > 0, "no BloomCluster was written"
        assert clusters < 0.10 * table_bytes, (
            f"cluster writes {clusters} bytes are {clusters / table_bytes:.1%} of the last level's "
            f"{table_bytes} table bytes (the contract: under 10%)")
        if use_meta:
            files = [f for f in os.listdir(meta) if os.path.getsize(os.path.join(meta, f)) > 0]
            assert files, "metadata_path holds no cluster file"
        # lookups of last-level keys read clusters
        c0 = db.stats()["cluster_reads"]
        early = [k for k in model if k.startswith(b"big-0-")][:400]
        assert db.get_many(early) == [model[k] for k in early]
        c1 = db.stats()["cluster_reads"]
        assert c1 > c0, "get_many of last-level keys read no BloomCluster"
        for k in early[:50]:
            assert db.get(k) == model[k]
        assert db.stats()["cluster_reads"] > c1
        check(db, model)
    with lsmtrie.open(path, metadata_path=meta) as db:
        c0 = db.stats()["cluster_reads"]
        check(db, model, seed=3)
        assert db.stats()["cluster_reads"] > c0
    with lsmtrie.open(path, metadata_path=meta, read_only=True) as db:
        check(db, model, seed=4)


def test_metadata_path_is_required_on_reopen(tmp_path):
    rng = random.Random(3)
    meta = str(tmp_path / "meta")
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, metadata_path=meta, **LL) as db:
        load(db, model, 6, 2500, b"m", rng)
        db.flush()
    with pytest.raises(ValueError) as ei:
        lsmtrie.open(path)
    assert "metadata" in str(ei.value).lower()
    with pytest.raises(ValueError):
        lsmtrie.open(path, read_only=True)
    with lsmtrie.open(path, metadata_path=meta) as db:  # the refused opens changed nothing
        check(db, model)


@pytest.mark.parametrize("use_meta", [False, True])
def test_gc_of_overwritten_and_deleted_keys(tmp_path, use_meta):
    rng = random.Random(4)
    meta = str(tmp_path / "meta") if use_meta else None
    path = str(tmp_path / "db")
    n = 3000
    keys = [b"hot-%05d" % i for i in range(n)]
    model = {}
    items_hist = []
    with lsmtrie.open(path, metadata_path=meta, gc_threshold=0.5, **LL) as db:
        for r in range(14):  # every key overwritten 14 times
            vs = [b"r%d-" % r + rng.randbytes(rng.randint(10, 50)) for _ in keys]
            db.put_many(keys, vs)
            model.update(zip(keys, vs))
            db.flush()
            items_hist.append(db.stats()["items_per_level"][-1])
        st = db.stats()
        assert st["gcs"] > 0, f"no GC ran; last-level items per round: {items_hist}"
        assert any(b < a for a, b in zip(items_hist, items_hist[1:])), (
            f"the last level never shrank: {items_hist}")
        # without GC the last level would hold ~14 versions of every key
        assert st["items_per_level"][-1] <= 5 * n, items_hist
        check(db, model)
        gcs = st["gcs"]
        # delete every key (tombstones) and push the tombstones down with a little fresh data:
        # each node then holds mostly garbage (old versions and tombstones), well past 0.5
        for k in keys:
            db.delete(k)
        model.clear()
        load(db, model, 1, 1200, b"fresh", rng)
        db.flush()
        st = db.stats()
        assert st["tables_per_level"][0] == 0 and st["memtable_items"] == 0
        assert st["gcs"] > gcs, "deleting every key triggered no GC"
        check(db, model)
        # GC'd nodes keep at most gc_threshold garbage: items <= live / (1 - 0.5), with slack
        assert st["items_per_level"][-1] <= 2.5 * len(model), (
            f"{st['items_per_level']} items for {len(model)} live keys: deleted keys' versions "
            "and tombstones were not dropped")
        for k in keys[:100]:
            assert db.get(k) is None
    with lsmtrie.open(path, metadata_path=meta) as db:
        assert db.stats()["gcs"] >= st["gcs"]
        check(db, model, seed=5)
        for k in keys[:100]:
            assert db.get(k) is None


def test_gc_keeps_newest_versions_under_mixed_traffic(tmp_path):
    """Overwrites, deletes and re-puts of the same keys across many appends: whatever GC merges,
    every read answers from the newest version."""
    rng = random.Random(6)
    model = {}
    keys = [b"mix-%d" % i for i in range(2500)]
    with lsmtrie.open(str(tmp_path / "db"), gc_threshold=0.3, **LL) as db:
        for r in range(12):
            sel = rng.sample(keys, 1800)
            for k in sel[:300]:
                db.delete(k)
                model.pop(k, None)
            vs = [b"%d-" % r + rng.randbytes(rng.randint(5, 40)) for _ in sel[300:]]
            db.put_many(sel[300:], vs)
            model.update(zip(sel[300:], vs))
            if r % 3 == 2:
                db.flush()
                check(db, model, seed=r)
        db.flush()
        assert db.stats()["gcs"] > 0
        check(db, model)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        check(db, model, seed=99)


def test_metadata_path_on_a_store_created_without_one(tmp_path):
    """A store whose clusters live inside it refuses a metadata_path on reopen with a clear
    error (it must not look for its clusters in the wrong place), and opens fine without one."""
    path = str(tmp_path / "db")
    want = {}
    with lsmtrie.open(path, table_buckets=16, levels=2, node_tables=2) as db:
        for i in range(60000):
            want[b"k%d" % i] = b"v%d" % i
        db.put_many(list(want), list(want.values()))
        db.flush()
        assert db.stats()["tables_per_level"][-1] > 0
    assert any(f.endswith(".bc") for f in os.listdir(path))
    with pytest.raises(ValueError, match="inside the store"):
        lsmtrie.open(path, metadata_path=str(tmp_path / "meta"))
    with lsmtrie.open(path) as db:
        assert db.get_many(list(want)[:2000]) == list(want.values())[:2000]
