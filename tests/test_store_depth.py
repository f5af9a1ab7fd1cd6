"""A trie as deep as the data (levels=0, the default): the store starts two levels deep and
takes one more level whenever its last level averages DEEPEN_TABLES_PER_NODE x node_tables
tables a node; the level it outgrew is compacted into the new one, its BloomClusters answering
for the tables not yet compacted. Tiny tables (16 buckets, node_tables 2: a new level every six
tables a node) make the store pass several depths in a few megabytes. Contents are checked
against a dict model after each step, after reopens, beside readers, after kills and power cuts
(test_store_crash.py and test_store_powercut.py run their writers on growing stores too), and
through loads that deepen the trie."""

import os
import random

import pytest

import lsmtrie
from lsmtrie import _binding

GROW = dict(table_buckets=16, node_tables=2, memtable_bytes=8000)


def batches(seed, steps, per_step, nkeys=None):
    """(keys, values) batches; with nkeys, keys repeat (overwrites) and a few are deleted."""
    rng = random.Random(seed)
    pool = [rng.randbytes(16) for _ in range(nkeys)] if nkeys else None
    for _ in range(steps):
        ks = [rng.choice(pool) if pool else rng.randbytes(16) for _ in range(per_step)]
        vs = [rng.randbytes(rng.randint(0, 60)) for _ in range(per_step)]
        yield ks, vs


def manifest(path):
    out = _binding.ffi.new("ltr_manifest_summary *")
    _binding.check(_binding.lib.ltr_test_manifest_read(os.fsencode(path), out))
    return out


def grow(db, model, seed, steps):
    """put_many of `steps` batches of 3,000 new items, recorded in model."""
    for ks, vs in batches(seed, steps, 3000):
        db.put_many(ks, vs)
        model.update(zip(ks, vs))


def check(db, model):
    assert dict(db.items()) == model
    keys = list(model)[:3000]
    assert db.get_many(keys) == [model[k] for k in keys]
    assert all(db.get(k) == model[k] for k in keys[:300])
    assert db.get_many([b"absent" + bytes([i]) for i in range(50)]) == [None] * 50


def test_the_trie_deepens_as_the_data_grows_and_keeps_every_item(tmp_path):
    path = str(tmp_path / "db")
    model, depths = {}, []
    with lsmtrie.open(path, **GROW) as db:
        assert db.options["levels"] == 0 and db.stats()["levels"] == 2
        for i, (ks, vs) in enumerate(batches(1, 16, 3000)):
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
            if i % 4 == 3:
                db.flush()
                st = db.stats()
                depths.append(st["levels"])
                check(db, model)
                # after the work settles most items are in the last level, under clusters
                assert st["items_per_level"][-1] >= 0.8 * sum(st["items_per_level"]), st
    assert depths == sorted(depths) and depths[-1] >= 4, depths  # passed several depths
    with lsmtrie.open(path, read_only=True) as db:  # reopened: the depth and clusters recorded
        assert db.stats()["levels"] == depths[-1]
        check(db, model)
        assert db.verify()["tables"] > 0
    with lsmtrie.open(path, levels=0) as db:  # levels=0 given matches the recorded choice
        check(db, model)


def test_a_level_the_trie_outgrew_answers_through_its_clusters_until_compacted(tmp_path):
    """Across a deepening the last level's nodes, with their clusters, become upper ones;
    readers (and a reopen) find every item while their oldest tables are compacted away a pile
    at a time, the clusters skipping the tables gone (the manifest records such clusters)."""
    path = str(tmp_path / "db")
    model = {}
    with lsmtrie.open(path, **GROW) as db:
        grow(db, model, 2, 6)
        db.flush()
        st = db.stats()
        depth = st["levels"]
        for ks, vs in batches(3, 12, 3000):  # grow until the next deepening
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
            db.flush()
            check(db, model)
            if db.stats()["levels"] > depth:
                break
        assert db.stats()["levels"] > depth
    summary = manifest(path)
    assert summary.depth == depth + 1
    assert summary.clusters_skipping > 0  # compactions left nodes under clusters that skip
    with lsmtrie.open(path, read_only=True) as db:
        check(db, model)


def test_overwrites_and_deletes_across_deepenings_and_reopens(tmp_path):
    path = str(tmp_path / "db")
    model = {}
    rng = random.Random(4)
    for session in range(4):
        with lsmtrie.open(path, **GROW) as db:
            for ks, vs in batches(10 + session, 5, 3000, nkeys=20000):
                db.put_many(ks, vs)
                model.update(zip(ks, vs))
                gone = rng.sample(sorted(model), 200)
                with db.write_batch() as wb:
                    for k in gone:
                        wb.delete(k)
                        del model[k]
            check(db, model)
        with lsmtrie.open(path, read_only=True) as db:
            check(db, model)
    with lsmtrie.open(path) as db:
        db.flush()
        assert db.stats()["levels"] >= 3


def test_manifest_rotations_record_the_depth_and_the_clusters_offsets(tmp_path):
    """A manifest replaced by a snapshot every few kilobytes: the snapshot carries the depth and
    each cluster's first live entry, and the store reopens to the same contents."""
    path = str(tmp_path / "db")
    model = {}
    _binding.lib.ltr_test_manifest_rotation(2048)
    try:
        with lsmtrie.open(path, **GROW) as db:
            grow(db, model, 5, 12)
            db.flush()
            depth = db.stats()["levels"]
    finally:
        _binding.lib.ltr_test_manifest_rotation(0)
    with open(os.path.join(path, "CURRENT")) as f:
        assert int(f.read().split("-")[1]) > 1
    with lsmtrie.open(path, read_only=True) as db:
        assert db.stats()["levels"] == depth >= 3
        check(db, model)


def test_fixed_levels_stay_as_chosen(tmp_path):
    path = str(tmp_path / "db")
    with lsmtrie.open(path, levels=3, **GROW) as db:
        for ks, vs in batches(6, 8, 3000):
            db.put_many(ks, vs)
        db.flush()
        assert db.stats()["levels"] == 3
    with pytest.raises(ValueError, match="levels"):
        lsmtrie.open(path, levels=0)


def test_a_load_deepens_a_growing_store_that_holds_items(tmp_path):
    """A large load into a small growing store: the trie is deepened to the load's target, the
    old last level (under clusters) compacted down before the install, and newer wins."""
    path = str(tmp_path / "db")
    old = {}
    with lsmtrie.open(path, **GROW) as db:
        grow(db, old, 7, 3)
        db.flush()
        depth = db.stats()["levels"]
    rng = random.Random(8)
    keys = list(old)[:5000] + [rng.randbytes(16) for _ in range(150_000)]
    values = [rng.randbytes(rng.randint(0, 40)) for _ in keys]
    lsmtrie.load(path, (keys, values))
    model = {**old, **dict(zip(keys, values))}
    with lsmtrie.open(path, read_only=True) as db:
        st = db.stats()
        assert st["levels"] > depth
        assert st["items_per_level"][-1] >= 0.8 * sum(st["items_per_level"])
        check(db, model)
