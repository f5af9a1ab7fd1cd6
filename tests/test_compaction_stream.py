"""Compactions streamed by windows of home buckets (native/src/compaction.c, window_read.c,
htable_write.c's ltr_hstream): a compaction reads its inputs and writes its outputs a window of
buckets at a time, so its memory is a window of each, not whole tables.

An item's home decides its window; the reader finds it in its home bucket, along its home's
migration chain (to buckets anywhere in the table) or in the overflow area; each output window
is balanced among its own buckets; a child whose share of a window overfills takes another
table. The window is a testing knob (ltr_test_compaction_window): windows of one, a few and all
of a table's buckets, and the whole-table path (0), must give the same contents, for items that
migrate, overflow, are overwritten across inputs and deleted."""

import errno
import random

import pytest

import lsmtrie
from forked import isolated
from lsmtrie import _binding


@pytest.fixture
def window():
    def set_window(buckets):
        _binding.lib.ltr_test_compaction_window(buckets)
    yield set_window
    _binding.lib.ltr_test_compaction_window(-1)


def mixed_batches(seed, steps, per_step, nkeys):
    """Keys from a pool (overwrites across tables), values of every size class: small, large
    enough that few fit a bucket (migration), larger than a bucket (overflow area), and
    tombstones."""
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.randint(1, 24)) for _ in range(nkeys)]
    for _ in range(steps):
        batch = []
        for _ in range(per_step):
            k, r = rng.choice(pool), rng.random()
            if r < 0.08:
                batch.append((k, None))
            elif r < 0.12:
                batch.append((k, rng.randbytes(rng.randint(4081, 9000))))
            elif r < 0.30:
                batch.append((k, rng.randbytes(rng.randint(300, 1500))))
            else:
                batch.append((k, rng.randbytes(rng.randint(0, 90))))
        yield batch


def apply(db, model, batch):
    puts = {k: v for k, v in batch if v is not None}
    for k, v in batch:
        if v is None:
            db.delete(k)
            model.pop(k, None)
        else:
            db.put(k, v)
            model[k] = v
    return puts


def check(db, model, absent=()):
    assert dict(db.items()) == model
    keys = list(model)
    assert db.get_many(keys) == [model[k] for k in keys]
    assert all(db.get(k) == model[k] for k in keys[:200])
    assert all(db.get(k) is None for k in absent)


OPTS = dict(table_buckets=32, node_tables=3, levels=4, memtable_bytes=60000)


def grow_and_check(db, seed, steps, nkeys, every):
    """`steps` mixed batches of 600 writes, with a flush and a check every `every` of them;
    returns the model and the keys deleted (and not written since)."""
    model, deleted = {}, set()
    for i, batch in enumerate(mixed_batches(seed, steps, 600, nkeys)):
        apply(db, model, batch)
        deleted |= {k for k, v in batch if v is None}
        deleted -= set(model)
        if i % every == every - 1:
            db.flush()
            check(db, model, deleted)
    return model, deleted


@pytest.mark.parametrize("buckets", [1, 3, 7, 32, 0])
def test_streamed_compactions_keep_every_item(tmp_path, window, buckets):
    window(buckets)
    path = str(tmp_path / "db")
    with lsmtrie.open(path, **OPTS) as db:
        model, deleted = grow_and_check(db, 7, 24, 3000, every=6)
        st = db.stats()
        assert st["compactions"] >= 10, st  # the work under test happened
        assert sum(st["tables_per_level"][1:]) > 0
        report = db.verify()
        assert report["items"] >= len(model)
    with lsmtrie.open(path, read_only=True) as db:
        check(db, model, deleted)


def test_streamed_outputs_hold_migrated_and_overflow_items(tmp_path, window):
    """Windows of one bucket: every migration record of an input leads outside its window, and
    every output window balances among one bucket, so items overfill into the overflow area
    (or another table); lookups still cost what the tables promise."""
    window(1)
    path, model = str(tmp_path / "db"), {}
    rng = random.Random(3)
    with lsmtrie.open(path, table_buckets=64, node_tables=2, levels=3, fill=1.0,
                      memtable_bytes=200000) as db:
        for _ in range(6):
            ks = [rng.randbytes(16) for _ in range(1500)]
            vs = [rng.randbytes(rng.choice([20, 200, 900, 5000])) for _ in ks]
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
            db.flush()
        st = db.stats()
        assert st["compactions"] >= 2 and sum(st["tables_per_level"][1:]) >= 8
        check(db, model)
        assert db.verify()["items"] >= len(model)


def test_a_window_that_overfills_spills_into_another_table(tmp_path, window):
    """Eight full root tables split into eight children: each child's share of a two-bucket
    window is about one window's payload, so many windows overfill and the child takes a second
    table for their excess. Versions in the second (newer) table shadow those left in the
    first."""
    window(2)
    path, model = str(tmp_path / "db"), {}
    rng = random.Random(5)
    keys = [rng.randbytes(16) for _ in range(30000)]
    with lsmtrie.open(path, table_buckets=64, node_tables=8, levels=3, fill=1.0) as db:
        for r in range(9):
            ks = keys[r * 2600:(r + 1) * 2600] + rng.sample(keys[:r * 2600 + 100], 100)
            vs = [b"%d-" % r + rng.randbytes(rng.randint(60, 120)) for _ in ks]
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
            db.flush()
        st = db.stats()
        assert st["compactions"] >= 1
        assert st["tables_per_level"][1] > 8, st["tables_per_level"]  # some child spilled
        check(db, model)
    with lsmtrie.open(path) as db:
        check(db, model)


def test_large_values_do_not_spill_windows(tmp_path, window):
    """Values larger than a bucket go to the overflow area: a window's budget counts only what
    its buckets hold, so a window with a few large values takes no second table (each would be
    a whole table of empty buckets). The children hold every large value in one table each."""
    window(4)
    path, model = str(tmp_path / "db"), {}
    rng = random.Random(8)
    with lsmtrie.open(path, table_buckets=64, node_tables=4, levels=3) as db:
        for r in range(4):
            ks = [rng.randbytes(16) for _ in range(300)]
            vs = [rng.randbytes(rng.randint(5000, 30000)) if i % 3 == 0 else rng.randbytes(50)
                  for i in range(len(ks))]
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
            db.flush()
        st = db.stats()
        assert st["compactions"] >= 1
        assert st["tables_per_level"][1] <= 8, st["tables_per_level"]
        check(db, model)
    with lsmtrie.open(path) as db:
        check(db, model)


def test_whole_table_and_streamed_compactions_agree(tmp_path, window):
    """The same writes through both paths leave the same contents (the tables differ: a window
    that overfills spills where a whole table would not)."""
    results = []
    for buckets in (0, 5):
        window(buckets)
        path, model = str(tmp_path / f"db{buckets}"), {}
        with lsmtrie.open(path, hash_seed=11, **OPTS) as db:
            for batch in mixed_batches(9, 12, 600, 2500):
                apply(db, model, batch)
            db.flush()
            st = db.stats()
            results.append((dict(db.items()), st["compactions"]))
        assert results[-1][0] == model
    assert results[0][0] == results[1][0]
    assert min(results[0][1], results[1][1]) >= 5


@pytest.mark.parametrize("kind", ["write", "pread"])
@isolated(timeout=60)
def test_a_fault_in_a_streamed_compaction_loses_nothing(tmp_path, kind):
    """Write and read failures armed as a compaction of three-window tables becomes due: the
    failure surfaces as a typed error, the inputs stay, and once it is cleared flush() does the
    work. Nothing is lost, before and after a reopen."""
    _binding.lib.ltr_test_compaction_window(11)
    opts = dict(table_buckets=32, node_tables=4, levels=2, memtable_bytes=60000)
    hit = 0
    for after in (0, 2, 5, 9, 14, 20, 40):
        p = str(tmp_path / f"db-{kind}-{after}")
        model = {}
        with lsmtrie.open(p, **opts) as db:
            for r in range(3):
                for i in range(700):
                    k, v = b"k%d" % ((r * 700 + i) % 1200), b"r%d-%d" % (r, i) * 3
                    db.put(k, v)
                    model[k] = v
                db.flush()
            for i in range(700):
                db.put(b"n%d" % i, b"%d" % i)
                model[b"n%d" % i] = b"%d" % i
            c0 = db.stats()["compactions"]
            _binding.fault_set(kind, after, errno.EIO)
            try:
                db.flush()
            except lsmtrie.StorageError:
                hit += 1
            _binding.fault_set(kind, 0, 0)
            assert dict(db.items()) == model
            db.flush()
            st = db.stats()
            assert st["compactions"] > c0
            assert dict(db.items()) == model
        with lsmtrie.open(p) as db:
            assert dict(db.items()) == model
    assert hit >= 3, f"only {hit} of the fault counts surfaced an error"


def test_a_direct_io_store_streams_its_compactions_through_the_cache(tmp_path, window):
    """With direct_io the store reads tables with O_DIRECT into aligned buffers; a streamed
    compaction reads its inputs (fresh, mostly unwritten tables) through a second, cached
    descriptor per input, windows, migration targets and overflow records alike."""
    window(3)
    path = str(tmp_path / "db")
    with lsmtrie.open(path, direct_io=True, **OPTS) as db:
        model, deleted = grow_and_check(db, 12, 12, 2500, every=4)
        assert db.stats()["compactions"] >= 5
        assert db.verify()["items"] >= len(model)
    with lsmtrie.open(path, direct_io=True, read_only=True) as db:
        check(db, model, deleted)
