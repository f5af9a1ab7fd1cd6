"""A Store shared by threads: readers checking known values while a writer runs and flushes and
compactions go on in the background; concurrent writers; close() from another thread.

Each test body runs in a forked child with a time limit, so a deadlock fails the test instead of
hanging the suite.
"""

import os
import random
import threading
import time
import traceback

import pytest

import lsmtrie
from forked import isolated

TINY = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=3000)


class Failures:
    """Collects exceptions raised in threads."""

    def __init__(self):
        self.errors = []
        self.lock = threading.Lock()

    def run(self, fn, *args):
        def target():
            try:
                fn(*args)
            except BaseException:
                with self.lock:
                    self.errors.append(traceback.format_exc())
        t = threading.Thread(target=target, daemon=True)
        t.start()
        return t

    def check(self):
        assert not self.errors, f"{len(self.errors)} thread(s) failed; the first:\n{self.errors[0]}"


def stable_items(n=1500):
    rng = random.Random(1)
    return {b"stable-%d" % i: b"S%d-" % i + rng.randbytes(rng.randint(0, 40)) for i in range(n)}


@isolated(timeout=60)
def test_readers_while_writing_and_compacting(tmp_path):
    db = lsmtrie.open(str(tmp_path / "db"), **TINY)
    stable = stable_items()
    gone = {b"gone-%d" % i: b"G%d" % i for i in range(300)}
    db.put_many(list(stable), list(stable.values()))
    db.put_many(list(gone), list(gone.values()))
    db.flush()
    c0 = db.stats()["compactions"]
    hot = [b"hot-%d" % j for j in range(60)]
    rounds = 80
    done = threading.Event()
    completed = [-1]    # last round the writer finished
    deleted_upto = [0]  # gone-0 .. gone-(n-1) deleted (the delete returned)
    fails = Failures()
    reads = [0]

    def writer():
        rng = random.Random(2)
        try:
            for r in range(rounds):
                for k in hot:
                    db.put(k, b"%08d" % r + rng.randbytes(rng.randint(0, 60)))
                for i in range(r * 7, min(len(gone), r * 7 + 7)):
                    db.delete(b"gone-%d" % i)
                    deleted_upto[0] = i + 1
                with db.write_batch() as b:
                    for j in range(20):
                        b.put(b"batch-%d" % j, b"%08d" % r)
                completed[0] = r
        finally:
            done.set()

    def check_hot(k, v, floor, seen):
        if v is None:
            assert floor < 0 and seen.get(k, -1) < 0, f"{k!r} vanished after round {floor}"
            return
        r = int(v[:8])
        assert floor <= r <= rounds, f"{k!r}: round {r}, but round {floor} had already completed"
        assert r >= seen.get(k, -1), f"{k!r} went back from round {seen[k]} to {r}"
        seen[k] = r

    def reader(seed):
        rng = random.Random(seed)
        seen = {}
        gone_seen = set()
        skeys = list(stable)
        while not done.is_set():
            floor, dfloor = completed[0], deleted_upto[0]
            choice = rng.random()
            if choice < 0.4:
                k = rng.choice(skeys)
                assert db.get(k) == stable[k], f"stable key {k!r} wrong"
                k = rng.choice(hot)
                check_hot(k, db.get(k), floor, seen)
            elif choice < 0.8:
                ks = rng.sample(skeys, 30) + rng.sample(hot, 10) + rng.sample(list(gone), 10)
                got = db.get_many(ks)
                for k, v in zip(ks[:30], got[:30]):
                    assert v == stable[k], f"stable key {k!r} wrong in get_many"
                for k, v in zip(ks[30:40], got[30:40]):
                    check_hot(k, v, floor, seen)
                for k, v in zip(ks[40:], got[40:]):
                    i = int(k.split(b"-")[1])
                    if i < dfloor or k in gone_seen:
                        assert v is None, f"{k!r} was deleted but reads {v!r}"
                    else:
                        assert v in (None, gone[k])
                    if v is None:
                        gone_seen.add(k)
            else:
                k = rng.choice(skeys)
                assert k in db
                assert db[k] == stable[k]
            reads[0] += 1

    def scanner():
        while not done.is_set():
            floor = completed[0]
            got = dict(db.items())
            for k, v in stable.items():
                assert got.get(k) == v, f"items() lost or changed stable key {k!r}"
            for k in hot:
                if k in got:
                    assert int(got[k][:8]) >= floor
                else:
                    assert floor < 0
            time.sleep(0.01)

    threads = [fails.run(writer)] + [fails.run(reader, s) for s in range(3)] + [fails.run(scanner)]
    for t in threads:
        t.join(45)
    assert not any(t.is_alive() for t in threads), "threads still running"
    fails.check()
    assert reads[0] > 100
    st = db.stats()
    assert st["compactions"] > c0, "no compaction ran during the test"
    db.flush()
    final = dict(db.items())
    for k, v in stable.items():
        assert final[k] == v
    for k in hot:
        assert int(final[k][:8]) == rounds - 1
    db.close()


@isolated(timeout=60)
def test_concurrent_writers_and_flushes(tmp_path):
    db = lsmtrie.open(str(tmp_path / "db"), **TINY)
    fails = Failures()
    want = {}
    lock = threading.Lock()

    def writer(w):
        rng = random.Random(w)
        mine = {}
        for i in range(400):
            k = b"w%d-%d" % (w, rng.randrange(300))
            c = rng.random()
            if c < 0.5:
                v = b"%d" % i + rng.randbytes(rng.randint(0, 40))
                db.put(k, v)
                mine[k] = v
            elif c < 0.65:
                db.delete(k)
                mine.pop(k, None)
            elif c < 0.85:
                ks = [b"w%d-%d" % (w, rng.randrange(300)) for _ in range(10)]
                vs = [b"m%d-%d" % (i, j) for j in range(10)]
                db.put_many(ks, vs)
                mine.update(zip(ks, vs))
            else:
                with db.write_batch() as b:
                    b.put(k, b"b%d" % i)
                    b.delete(k + b"x")
                mine[k] = b"b%d" % i
                mine.pop(k + b"x", None)
            if i % 97 == 0:
                db.flush()
        with lock:
            want.update(mine)

    threads = [fails.run(writer, w) for w in range(4)]
    for t in threads:
        t.join(45)
    assert not any(t.is_alive() for t in threads)
    fails.check()
    assert dict(db.items()) == want
    db.flush()
    assert dict(db.items()) == want
    assert db.stats()["compactions"] > 0
    db.close()
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert dict(db.items()) == want


@isolated(timeout=60)
def test_close_from_another_thread(tmp_path):
    path = str(tmp_path / "db")
    db = lsmtrie.open(path, **TINY)
    stable = stable_items(800)
    db.put_many(list(stable), list(stable.values()))
    db.flush()
    fails = Failures()
    outcome = {}
    acked = [-1]
    skeys = list(stable)

    def reader(n):
        rng = random.Random(n)
        count = 0
        try:
            while True:
                c = rng.random()
                if c < 0.4:
                    k = rng.choice(skeys)
                    assert db.get(k) == stable[k]
                elif c < 0.7:
                    ks = rng.sample(skeys, 20)
                    assert db.get_many(ks) == [stable[k] for k in ks]
                elif c < 0.9:
                    assert rng.choice(skeys) in db
                else:
                    got = dict(db.items())
                    for k, v in stable.items():
                        assert got[k] == v
                count += 1
        except lsmtrie.ClosedError:
            outcome[n] = ("closed", count)

    def writer():
        i = 0
        try:
            while True:
                db.put(b"late-%d" % i, b"v%d" % i)
                acked[0] = i
                i += 1
        except lsmtrie.ClosedError:
            outcome["w"] = ("closed", i)

    threads = [fails.run(reader, n) for n in range(4)] + [fails.run(writer)]
    time.sleep(0.4)
    db.close()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a thread is still blocked after close()"
    fails.check()
    assert len(outcome) == 5 and all(o[0] == "closed" for o in outcome.values()), outcome
    assert all(o[1] > 0 for o in outcome.values()), outcome
    db.close()  # idempotent here too
    with lsmtrie.open(path) as db2:
        got = dict(db2.items())
        for k, v in stable.items():
            assert got[k] == v
        n = acked[0] + 1
        missing = [i for i in range(n) if got.get(b"late-%d" % i) != b"v%d" % i]
        assert not missing, f"{len(missing)} acknowledged writes lost by close(): {missing[:5]}"


@isolated(timeout=60)
def test_close_while_scans_are_open(tmp_path):
    """A half-consumed items() generator and a batch in progress when the store closes."""
    db = lsmtrie.open(str(tmp_path / "db"), **TINY)
    stable = stable_items(500)
    db.put_many(list(stable), list(stable.values()))
    db.flush()
    it = db.items()
    first = [next(it) for _ in range(10)]
    assert all(stable[k] == v for k, v in first)
    t = threading.Thread(target=db.close)
    t.start()
    t.join(20)
    assert not t.is_alive()
    with pytest.raises(lsmtrie.ClosedError):
        list(it)
    it.close()
