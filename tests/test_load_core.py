"""The bulk loader's core (ltr_load_*, lsmtrie/_loader.py): items partitioned by hash prefix,
tables built per node and installed in one manifest edit.

What a load must guarantee, checked against a dict model: a later item of a key beats an earlier
one and the load beats what the store held (in its memtables or in any level); readers see the
store as it was until the install, then all of it; an aborted or killed load leaves the store as
it was; a resume goes on from the last checkpoint and ends with the same contents.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import lsmtrie
from lsmtrie import _binding, errors
from lsmtrie._loader import Loader, plan_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(table_buckets=16, levels=4, node_tables=4)


def items(seed, n, nkeys=None, vmax=40):
    """n items over nkeys keys (repeats when nkeys < n), values tagged with their index."""
    rng = random.Random(seed)
    nkeys = nkeys or n
    keys = [b"k%d-" % i + rng.randbytes(rng.randint(0, 12)) for i in range(nkeys)]
    out = []
    for i in range(n):
        k = keys[rng.randrange(nkeys)] if nkeys < n else keys[i]
        out.append((k, b"%d:" % i + rng.randbytes(rng.randint(0, vmax))))
    return out


def load(db, its, batch=997, **kw):
    with Loader(db, **kw) as ld:
        for i in range(0, len(its), batch):
            part = its[i:i + batch]
            ld.add([k for k, _ in part], [v for _, v in part])
        ld.finish()
        return ld.stats()


def check(db, model, absent=()):
    keys = sorted(model)
    assert db.get_many(keys) == [model[k] for k in keys]
    for k in absent:
        assert db.get(k) is None


def no_load_dir(path):
    return not os.path.exists(os.path.join(path, "load"))


@pytest.mark.parametrize("memory", [0, 1 << 16])
def test_a_load_into_a_new_store_holds_the_newest_item_of_each_key(tmp_path, memory):
    path = str(tmp_path / "db")
    its = items(1, 100_000, nkeys=70_000)  # 3.5 MB: more than 512 partition buffers of 4 KiB
    model = dict(its)
    with lsmtrie.Store(path, **SMALL) as db:
        st = load(db, its, memory=memory)
        check(db, model, absent=[b"never"])
        assert st["phase"] == "done"
        assert st["items_added"] == len(its)
        assert st["duplicates"] == len(its) - len(model)
        assert st["items_loaded"] == len(model)
        assert st["user_bytes"] == sum(len(k) + len(v) for k, v in its)
        if memory:
            assert st["spill_bytes"] > 0 and st["partitions"] > 1
        per_level = db.stats()["items_per_level"]
        assert per_level[st["target_level"]] == len(model) == sum(per_level)
    assert no_load_dir(path)
    with lsmtrie.Store(path, read_only=True) as db:
        check(db, model)
        assert db.verify()["tables"] > 0  # (raises CorruptionError on a damaged file)


def test_the_load_beats_what_the_store_held_in_every_level_and_memtable(tmp_path):
    path = str(tmp_path / "db")
    old = items(2, 20_000, nkeys=8_000)
    new = items(3, 6_000, nkeys=6_000)
    new = [(old[i * 3][0], v) for i, (_, v) in enumerate(new[:3000])] + new[3000:]  # overlap
    model = {}
    with lsmtrie.Store(path, **SMALL) as db:
        for i in range(0, len(old), 500):
            part = old[i:i + 500]
            db.put_many([k for k, _ in part], [v for _, v in part])
            if i == 10_000:
                db.flush()  # some in the levels, some still in the memtables
        model.update(old)
        gone = [k for k, _ in old[1::7] if k not in dict(new)]
        with db.write_batch() as wb:
            for k in gone:
                wb.delete(k)
        for k in gone:
            model.pop(k, None)
        assert sum(db.stats()["items_per_level"]) > 0
        load(db, new)
        model.update(new)
        check(db, model, absent=gone)
    with lsmtrie.Store(path) as db:
        check(db, model, absent=gone)


def test_tables_go_to_the_deepest_level_where_each_node_gets_half_a_table(tmp_path):
    with lsmtrie.Store(str(tmp_path / "small"), table_buckets=64, levels=4) as db:
        st = load(db, items(4, 500))
        assert st["target_level"] == 0  # a few kilobytes: one table in the root
    with lsmtrie.Store(str(tmp_path / "big"), table_buckets=16, levels=3) as db:
        st = load(db, items(5, 100_000))  # 3.6 MB: 56 KB a node of level 2, a table holds 62 KB
        assert st["target_level"] == 2


def test_plan_options_put_a_load_in_the_last_level(tmp_path):
    """A new store with the planned table size: the load deepens its growing trie to the
    level where each node gets about one table, and every item lands there."""
    its = items(6, 50_000, vmax=60)
    size = sum(len(k) + len(v) + 3 for k, v in its)
    opts = plan_options(size)
    assert set(opts) == {"table_buckets"}
    with lsmtrie.Store(str(tmp_path / "db"), **opts) as db:
        st = load(db, its)
        stats = db.stats()
        assert st["target_level"] == stats["levels"] - 1 >= 1
        assert stats["items_per_level"][-1] == len(dict(its))
        nodes = 8 ** (stats["levels"] - 1)
        assert nodes / 2 < stats["tables_per_level"][-1] <= 1.25 * nodes
        check(db, dict(its))
    # the 1 B plan of the benchmarks: 4,096 nodes of about 2,200 buckets
    assert 2000 < plan_options(36 * 10**9)["table_buckets"] < 2400


def test_a_reader_sees_the_old_state_until_it_reopens(tmp_path):
    path = str(tmp_path / "db")
    old = items(7, 3_000)
    new = [(k, b"new" + v) for k, v in old[:1500]]
    with lsmtrie.Store(path, **SMALL) as db:
        db.put_many([k for k, _ in old], [v for _, v in old])
        db.flush()
        with lsmtrie.Store(path, read_only=True) as reader:
            load(db, new)
            check(reader, dict(old))
        with lsmtrie.Store(path, read_only=True) as reader:
            check(reader, {**dict(old), **dict(new)})


def test_an_aborted_load_leaves_the_store_as_it_was(tmp_path):
    path = str(tmp_path / "db")
    old = items(8, 2_000)
    with lsmtrie.Store(path, **SMALL) as db:
        db.put_many([k for k, _ in old], [v for _, v in old])
        ld = Loader(db, memory=1 << 16, identity="a")
        ld.add([k for k, _ in old[:1000]], [b"x"] * 1000)
        ld.checkpoint(b"1000")
        ld.add([b"more"], [b"y"])
        ld.abort()
        check(db, dict(old), absent=[b"more"])
        assert no_load_dir(path)
        assert not db.stats()["load_unfinished"]


def test_a_resume_with_other_arguments_or_without_a_load_is_refused(tmp_path):
    path = str(tmp_path / "db")
    with lsmtrie.Store(path, **SMALL) as db:
        with pytest.raises(errors.InvalidArgumentError):
            Loader(db, identity="a", resume=True)
        with Loader(db, identity="a") as ld:
            ld.add([b"k"], [b"v"])
            ld.checkpoint(b"pos")
        assert db.stats()["load_unfinished"]
        with pytest.raises(errors.InvalidArgumentError, match="other arguments"):
            Loader(db, identity="b", resume=True)
        with Loader(db, identity="a", resume=True) as ld:
            assert ld.position == b"pos"
            ld.finish()
        assert db.get(b"k") == b"v"
        assert not db.stats()["load_unfinished"]


def test_a_full_disk_while_loading_fails_clearly_and_loses_nothing(tmp_path):
    path = str(tmp_path / "db")
    old = items(9, 2_000)
    with lsmtrie.Store(path, **SMALL) as db:
        db.put_many([k for k, _ in old], [v for _, v in old])
        db.flush()
        for after in (0, 3, 40):
            ld = Loader(db, memory=1 << 16)
            try:
                _binding.fault_set("write", after, 28)  # ENOSPC
                with pytest.raises(errors.DiskFullError):
                    for i in range(0, 20_000, 1000):
                        its = items(100 + i, 1000)
                        ld.add([k for k, _ in its], [v for _, v in its])
                    ld.finish()
            finally:
                _binding.fault_set("write", 0, 0)
            ld.abort()
            check(db, dict(old))
    with lsmtrie.Store(path) as db:
        check(db, dict(old))
        assert db.verify()["tables"] > 0  # (raises CorruptionError on a damaged file)


def test_a_second_writer_is_refused_while_a_load_runs(tmp_path):
    path = str(tmp_path / "db")
    with lsmtrie.Store(path) as db:
        with Loader(db) as ld:
            ld.add([b"k"], [b"v"])
            with pytest.raises(errors.LockError):
                lsmtrie.Store(path)
            ld.finish()


# ---- killed loads ----

LOADER = textwrap.dedent(r'''
    import json, sys, random
    import lsmtrie
    from lsmtrie._loader import Loader
    path, cfg = sys.argv[1], json.loads(sys.argv[2])
    exec(cfg["gen"])
    batches = make_batches(cfg["seed"], cfg["batches"], cfg["per_batch"])
    with lsmtrie.Store(path, **cfg["opts"]) as db:
        resume = cfg["resume"]
        print("ready", flush=True)
        ld = Loader(db, memory=cfg["memory"], identity=cfg["identity"], resume=resume)
        st = ld.stats()
        start = int(ld.position or b"0") if resume else 0
        if st["phase"] == "adding":
            for i in range(start, len(batches)):
                ks, vs = batches[i]
                ld.add(ks, vs)
                if i % cfg["every"] == cfg["every"] - 1:
                    ld.checkpoint(b"%d" % (i + 1))
                    print("checkpoint", i + 1, flush=True)
        ld.finish()
        print("done", json.dumps(ld.stats()), flush=True)
        ld.close()
''')

GEN = r'''
def make_batches(seed, nb, per):
    rng = random.Random(seed)
    pool = [b"key%d" % i for i in range(nb * per // 2)]
    out = []
    for b in range(nb):
        ks = [rng.choice(pool) for _ in range(per)]
        vs = [b"%d.%d:" % (b, j) + rng.randbytes(rng.randint(0, 30)) for j in range(per)]
        out.append((ks, vs))
    return out
'''
exec(GEN)


def run_loader(script, path, cfg, kill_after=None):
    """The loader script in its own process, killed (SIGKILL) kill_after seconds after it says
    it is ready (store open, batches made), or by a watchdog after 300 seconds whatever it does.
    Returns (status, stdout, stderr, seconds from ready to exit)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, str(script), path, json.dumps(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    watchdog = threading.Timer(300, p.kill)
    watchdog.daemon = True
    watchdog.start()
    first = p.stdout.readline()
    ready = time.monotonic()
    timer = threading.Timer(kill_after, p.kill) if kill_after is not None else None
    if timer and first.startswith("ready"):
        timer.daemon = True
        timer.start()
    out = p.stdout.read()  # (not communicate(): it skips lines already in p.stdout's buffer)
    p.wait()
    err = p.stderr.read()
    for t in (timer, watchdog):
        if t:
            t.cancel()
    return p.returncode, first + out, err, time.monotonic() - ready


def test_a_load_killed_at_random_moments_resumes_to_the_same_contents(tmp_path):
    """Kills land anywhere from the start to the end of a load (its length measured first by a
    load that runs to the end): while adding, between checkpoints, while building, while
    installing. The store must show all of the old state or all of the new one, and resumes
    (themselves killed too) must end with the model's contents."""
    script = tmp_path / "loader.py"
    script.write_text(LOADER)
    rng = random.Random(11)
    base = dict(gen=GEN, seed=99, batches=40, per_batch=2_000, every=5, memory=1 << 18,
                identity="calibration", opts=SMALL, resume=False)
    rc, out, err, whole = run_loader(script, str(tmp_path / "calibration"), base)
    assert rc == 0 and "done" in out, err
    for trial in range(8):
        path = str(tmp_path / f"db{trial}")
        old = items(200 + trial, 3_000, vmax=20)
        with lsmtrie.Store(path, **SMALL) as db:
            db.put_many([k for k, _ in old], [v for _, v in old])
        before = dict(old)
        cfg = dict(gen=GEN, seed=trial, batches=40, per_batch=2_000, every=5, memory=1 << 18,
                   identity=f"trial{trial}", opts=SMALL, resume=False)
        model = dict(before)
        for ks, vs in make_batches(trial, 40, 2_000):
            model.update(zip(ks, vs))
        rc, out, err, _ = run_loader(script, path, cfg, kill_after=rng.uniform(0, 1.1) * whole)
        done = "done" in out
        assert done or rc == -signal.SIGKILL, err
        with lsmtrie.Store(path, read_only=True) as db:  # as it was, or all of the load
            keys = sorted(set(model) | set(before))
            seen = dict(zip(keys, db.get_many(keys)))
        full = {k: model.get(k) for k in keys}
        assert seen == full if done else seen in ({k: before.get(k) for k in keys}, full)
        for _ in range(3):  # the resume may itself be killed
            if done:
                break
            cfg["resume"] = True
            rc, out, err, _ = run_loader(script, path, cfg, kill_after=rng.uniform(0, 1.1) * whole)
            done = "done" in out
            assert done or rc == -signal.SIGKILL or "no unfinished load" in err, err
            if not done and "no unfinished load" in err:  # killed before the first checkpoint
                cfg["resume"] = False
        if not done:
            cfg["resume"] = os.path.exists(os.path.join(path, "load", "JOURNAL"))
            rc, out, err, _ = run_loader(script, path, cfg)
            assert rc == 0 and "done" in out, err
        with lsmtrie.Store(path) as db:
            check(db, model)
            assert not db.stats()["load_unfinished"]
            assert db.verify()["tables"] > 0  # (raises CorruptionError on a damaged file)
        assert no_load_dir(path)
