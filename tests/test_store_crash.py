"""Crash consistency: a writer process is killed with SIGKILL at random moments (while it writes,
flushes, compacts or recovers); the store must reopen with every write acknowledged under
sync=True, a prefix of the other writes in order, every write_batch whole or absent, and no
corruption. Recovery is exercised again and again: the trials of one test share one store.

The writer is a helper script written into tmp_path; it prints the index of each operation once
the call has returned, so the parent knows what was acknowledged before the kill.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lsmtrie

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The operation generator, shared by the writer script and this test (exec'd in both).
GEN = r'''
import random


def gen_ops(seed, n, nkeys=300, vmax=120, p_sync=0.05, tag=b"t"):
    """Deterministic operations: ("put", k, v, sync), ("del", k, sync), ("batch", [(k, v|None)],
    sync), ("many", keys, values, sync). sync is True, False or None (the store's default).
    Every value carries the trial tag and the operation index, so states of different prefixes
    differ."""
    rng = random.Random(seed)
    pool = [b"key%d" % i for i in range(nkeys)]
    ops = []
    for i in range(n):
        r = rng.random()
        s = rng.random()
        sync = True if s < p_sync else (False if s < 0.5 else None)
        head = b"%s:%d:" % (tag, i)
        if r < 0.5:
            ops.append(("put", rng.choice(pool), head + rng.randbytes(rng.randint(0, vmax)), sync))
        elif r < 0.65:
            ops.append(("del", rng.choice(pool), sync))
        elif r < 0.88:
            items = []
            for j in range(rng.randint(1, 12)):
                v = None if rng.random() < 0.25 else head + b"%d:" % j + rng.randbytes(rng.randint(0, vmax))
                items.append((rng.choice(pool), v))
            ops.append(("batch", items, sync))
        else:
            m = rng.randint(1, 25)
            ks = [rng.choice(pool) for _ in range(m)]
            vs = [head + b"%d:" % j + rng.randbytes(rng.randint(0, vmax)) for j in range(m)]
            ops.append(("many", ks, vs, sync))
    return ops


def apply_model(model, op):
    kind = op[0]
    if kind == "put":
        model[op[1]] = op[2]
    elif kind == "del":
        model.pop(op[1], None)
    elif kind == "batch":
        for k, v in op[1]:
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
    else:
        for k, v in zip(op[1], op[2]):
            model[k] = v


def apply_store(db, op):
    kind, sync = op[0], op[-1]
    if kind == "put":
        db.put(op[1], op[2], sync=sync)
    elif kind == "del":
        db.delete(op[1], sync=sync)
    elif kind == "batch":
        with db.write_batch(sync=sync) as b:
            for k, v in op[1]:
                if v is None:
                    b.delete(k)
                else:
                    b.put(k, v)
    else:
        db.put_many(op[1], op[2], sync=sync)
'''

WRITER = GEN + r'''

import json
import os
import sys

import lsmtrie


def main():
    path, cfg = sys.argv[1], json.loads(sys.argv[2])
    ops = gen_ops(cfg["seed"], cfg["n"], tag=cfg["tag"].encode(), **cfg.get("gen", {}))
    if cfg.get("hooks"):  # test hooks of the core, e.g. {"ltr_test_syncfs_min": 1}
        from lsmtrie import _binding
        for name, args in cfg["hooks"].items():
            getattr(_binding.lib, name)(*(args if isinstance(args, list) else [args]))
    print("start", flush=True)
    db = lsmtrie.open(path, **cfg["open"])
    print("open", flush=True)
    out = sys.stdout
    for i, op in enumerate(ops):
        apply_store(db, op)
        out.write("%d\n" % i)
        out.flush()
        if cfg.get("flush_every") and i % cfg["flush_every"] == cfg["flush_every"] - 1:
            db.flush()
    print("done", flush=True)
    os._exit(0)  # no close(): like a crash right after the last write returned


main()
'''

BULK_WRITER = r'''
import json
import os
import sys

import numpy as np

import lsmtrie


def main():
    path, cfg = sys.argv[1], json.loads(sys.argv[2])
    db = lsmtrie.open(path, bulk=True, **cfg["open"])
    print("open", flush=True)
    for c in range(cfg["chunks"]):
        keys = [b"bulk-%d-%d" % (c, i) for i in range(cfg["per_chunk"])]
        vals = [b"value-%d-%d-" % (c, i) + b"x" * (i % 50) for i in range(cfg["per_chunk"])]
        db.put_many(keys, vals)
        if c % cfg["flush_every"] == cfg["flush_every"] - 1:
            db.flush()
            print("flushed %d" % c, flush=True)
        else:
            print("wrote %d" % c, flush=True)
    print("done", flush=True)
    os._exit(0)


main()
'''

_ns = {}
exec(compile(GEN, "<crash-gen>", "exec"), _ns)
gen_ops, apply_model = _ns["gen_ops"], _ns["apply_model"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def kill_and_drain(p, errf):
    """SIGKILLs p and returns (the rest of its stdout, its stderr). Reads through p.stdout
    (not communicate(), which would skip lines already in p.stdout's buffer)."""
    p.send_signal(signal.SIGKILL)
    rest = p.stdout.read()
    p.wait(timeout=60)
    errf.seek(0)
    err = errf.read()
    errf.close()
    return rest, err


class Run:
    def __init__(self, acked, synced_acked, finished, stderr, returncode):
        self.acked = acked                # index of the last acknowledged operation, or -1
        self.synced_acked = synced_acked  # index of the last acknowledged synced operation, or -1
        self.finished = finished
        self.stderr = stderr
        self.returncode = returncode


def run_writer(script, path, cfg, ops, store_sync, kill_after_acks=None, kill_after_start=None,
               delay=0.0, env=None):
    """Runs the writer (in `env`, by default _env()); SIGKILLs it `delay` seconds after it
    acknowledged `kill_after_acks` operations (or `kill_after_start` seconds after it started
    opening the store)."""
    errf = open(str(script) + ".stderr", "w+b")
    p = subprocess.Popen([sys.executable, str(script), path, json.dumps(cfg)],
                         stdout=subprocess.PIPE, stderr=errf, env=env or _env())
    acked, lines = -1, []
    try:
        while True:
            line = p.stdout.readline()
            if not line:
                break
            line = line.strip()
            lines.append(line)
            if kill_after_start is not None and line == b"start":
                time.sleep(kill_after_start)
                break
            if line.isdigit():
                acked = int(line)
                if kill_after_acks is not None and acked + 1 >= kill_after_acks:
                    time.sleep(delay)
                    break
    finally:
        rest, err = kill_and_drain(p, errf)
    for line in rest.split():
        if line.isdigit():
            acked = max(acked, int(line))
        lines.append(line)
    synced = -1
    for i in range(acked + 1):
        s = ops[i][-1]
        if s is True or (s is None and store_sync):
            synced = i
    assert p.returncode in (-signal.SIGKILL, 0), err.decode()
    if p.returncode == 0:
        assert b"done" in lines, err.decode()
    return Run(acked, synced, b"done" in lines, err.decode(), p.returncode)


def read_state(path, **kw):
    with lsmtrie.open(path, **kw) as db:
        state = dict(db.items())
        keys = [b"key%d" % i for i in range(400)]
        got = db.get_many(keys)
        for k, g in zip(keys, got):
            assert g == state.get(k), f"get_many and items() disagree on {k!r}"
        for k in list(state)[:50]:
            assert db[k] == state[k]
        return state


def matching_prefix(base, ops, state, lo, hi):
    """The prefix lengths p in [lo, hi] whose model state equals `state`."""
    model = dict(base)
    found = []
    for p in range(0, min(hi, len(ops)) + 1):
        if p >= lo and model == state:
            found.append(p)
        if p < len(ops):
            apply_model(model, ops[p])
    return found


def describe_mismatch(base, ops, state, lo, hi):
    """How the state differs from the closest allowed prefix."""
    model = dict(base)
    best = None
    for p in range(0, min(hi, len(ops)) + 1):
        if p >= lo:
            missing = [k for k in model if k not in state]
            wrong = [k for k in model if k in state and state[k] != model[k]]
            extra = [k for k in state if k not in model]
            n = len(missing) + len(wrong) + len(extra)
            if best is None or n < best[0]:
                best = (n, p, missing, wrong, extra, dict(model))
        if p < len(ops):
            apply_model(model, ops[p])
    n, p, missing, wrong, extra, m = best
    return (f"closest prefix {p}: {len(missing)} keys missing, {len(wrong)} with other values, "
            f"{len(extra)} extra; e.g. missing {[(k, m[k][:14]) for k in missing[:3]]}, wrong "
            f"{[(k, state[k][:14], m[k][:14]) for k in wrong[:3]]}, extra "
            f"{[(k, state[k][:14]) for k in extra[:3]]}")


def crash_trials(tmp_path, open_opts, trials, n, seed, gen=None, store_sync=False, flush_every=None,
                 reopen_kw=None, hooks=None, make_env=None, after_kill=None, tag="T"):
    """Writers killed `trials` times on one store, each in make_env() (default _env()) and with
    the core's test hooks set as `hooks` ({name: argument or [arguments]}) says. After each kill after_kill()
    runs, and the reopened store must hold a prefix of the operations with every acknowledged
    synced one. Every fourth trial kills the writer while it opens the store, so recovery of
    the previous trial's crash is interrupted too."""
    reopen_kw = reopen_kw or {}
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = str(tmp_path / "db")
    rng = random.Random(seed)
    base = {}
    kinds = []
    for t in range(trials):
        tseed = rng.randrange(1 << 30)
        cfg = {"seed": tseed, "n": n, "tag": f"{tag}{t}", "open": open_opts, "gen": gen or {}}
        if flush_every:
            cfg["flush_every"] = flush_every
        if hooks:
            cfg["hooks"] = hooks
        ops = gen_ops(tseed, n, tag=f"{tag}{t}".encode(), **(gen or {}))
        env = make_env() if make_env else None
        mode = t % 4
        if mode == 3:  # kill while opening: recovery of the previous trial's crash
            run = run_writer(script, path, cfg, ops, store_sync, env=env,
                             kill_after_start=rng.uniform(0.0, 0.4))
        else:
            target = rng.randrange(1, n)
            run = run_writer(script, path, cfg, ops, store_sync, kill_after_acks=target,
                             delay=rng.choice([0, 0, 0.001, 0.005, 0.02]), env=env)
        kinds.append((mode, run.acked, run.synced_acked))
        if after_kill:
            after_kill()
        state = read_state(path, **reopen_kw)
        lo, hi = run.synced_acked + 1, run.acked + 2
        found = matching_prefix(base, ops, state, lo, hi)
        assert found, (f"trial {t} (mode {mode}, acked {run.acked}, last synced {run.synced_acked}): "
                       f"the recovered state is no prefix in [{lo}, {hi}]; "
                       + describe_mismatch(base, ops, state, lo, hi))
        # recovery after recovery: reopening again changes nothing
        assert read_state(path, **reopen_kw) == state, f"trial {t}: a second reopen changed the state"
        base = state
    return kinds


# ---------------------------------------------------------------------------------------------


# Checkpoints every few milliseconds: kills land before, during and after them. (At the default
# interval of a second most of these short runs would end before the first one.)
FAST = dict(checkpoint_interval=0.003)
TINY_MEM = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500, **FAST)


def test_kill_during_writes_flushes_and_compactions(tmp_path):
    """Tiny memtables: a flush every ~15 operations and compactions all the time."""
    kinds = crash_trials(tmp_path, TINY_MEM, trials=8, n=1000, seed=1)
    assert any(acked > 100 for _, acked, _ in kinds)
    with lsmtrie.open(str(tmp_path / "db")) as db:  # the trie was really used
        st = db.stats()
        assert st["flushes"] > 10 and st["compactions"] > 0


def test_kill_while_the_trie_deepens(tmp_path):
    """A growing trie (levels=0) of tiny tables: kills land while it deepens and while the
    level it outgrew is compacted, its clusters skipping the tables gone."""
    opts = dict(table_buckets=16, node_tables=2, levels=0, memtable_bytes=1500, **FAST)
    crash_trials(tmp_path, opts, trials=8, n=2000, seed=21, gen=dict(nkeys=20000, vmax=200))
    with lsmtrie.open(str(tmp_path / "db")) as db:
        assert db.stats()["levels"] >= 3


def test_kill_with_full_size_memtables(tmp_path):
    """memtable_bytes left at its default (one table's capacity): memtables fill up mid-batch."""
    crash_trials(tmp_path, dict(table_buckets=16, node_tables=2, levels=3, **FAST), trials=8,
                 n=2500, seed=2, gen=dict(vmax=400, nkeys=5000))


def test_kill_during_large_batches_written_in_parts(tmp_path):
    """Values up to 60 KB: batches of up to about 1.5 MB, which the log writes in 256 KiB pieces
    with the record's checksum last (docs/format/log.md). A kill between two pieces leaves a
    record that fails its checksum at the log's end, which recovery cuts off as a torn tail: the
    recovered state is still a prefix that holds every synced write."""
    kinds = crash_trials(tmp_path, dict(table_buckets=64, node_tables=2, levels=3, **FAST),
                         trials=6, n=300, seed=7, gen=dict(vmax=60000, nkeys=400))
    assert any(acked > 30 for _, acked, _ in kinds)


_LONG_LOG_WRITER = textwrap.dedent("""
    import os, sys, lsmtrie
    from lsmtrie import _binding
    _binding.lib.ltr_test_checkpoint_policy(1e9, 1 << 50)  # no background checkpoints
    db = lsmtrie.open(sys.argv[1], table_buckets=256, memtable_bytes=256 << 10,
                      checkpoint_interval=3600)  # logs of 32 memtables: 8 MB
    for c in range(120):
        keys = [b"r%03d-%05d" % (c, i) for i in range(10000)]
        db.put_many(keys, [k + b"-" + b"v" * 60 for k in keys])
    db.put(b"last", b"x", sync=True)
    os._exit(0)  # no close(): about 100 MB of log that no checkpoint covers
""")

_REOPEN = textwrap.dedent("""
    import json, sys, lsmtrie

    def peak():  # this process's peak RSS in KiB (ru_maxrss would carry the parent's over exec)
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

    before = peak()
    db = lsmtrie.open(sys.argv[1], read_only=sys.argv[2] == "ro")
    grew = peak() - before
    n = sum(1 for _ in db.items())
    print(json.dumps([grew * 1024, n, db.get(b"last").decode(), db.stats()["flushes"]]))
""")


def test_recovery_writes_memtables_out_while_it_replays(tmp_path):
    """A writer that exits with some 100 MB of log that no checkpoint covers: the reopen replays
    it all, one log file (8 MB here) at a time, writing the oldest memtable (a table's capacity,
    1 MB here) out whenever more than RECOVERY_IMMUTABLE (8) are full, so the logs need not fit
    in memory: the open grows the process by far less than a read-only open, which replays into
    memory only. Both have every write."""
    path = str(tmp_path / "db")
    r = subprocess.run([sys.executable, "-c", _LONG_LOG_WRITER, path], env=_env(),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    log = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".wal"))
    assert log > 90e6, log

    env = _env()  # (under AddressSanitizer, freed memory waits in a quarantine: none here)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0"

    def reopen(mode):
        r = subprocess.run([sys.executable, "-c", _REOPEN, path, mode], env=env,
                           capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        return json.loads(r.stdout.decode().strip().splitlines()[-1])

    grew_ro, n_ro, last_ro, _ = reopen("ro")
    grew, n, last, flushes = reopen("rw")
    assert n_ro == n == 1_200_001 and last_ro == last == "x"
    assert flushes > 60, flushes  # the replay's memtables became tables
    assert grew_ro > 0.8 * log, (grew_ro, log)  # (what replaying into memory costs)
    assert grew < 0.4 * grew_ro, (grew, grew_ro, log)
    grew, n, last, _ = reopen("rw")  # and again, from the tables
    assert n == 1_200_001


def test_kill_sync_store(tmp_path):
    """sync=True for the whole store: every acknowledged write survives (per-call sync=False
    overrides still give a prefix)."""
    opts = dict(TINY_MEM, sync=True)
    crash_trials(tmp_path, opts, trials=6, n=400, seed=3, store_sync=True, gen=dict(p_sync=0.0))


def test_kill_with_explicit_flushes(tmp_path):
    """flush() calls in the writer: kills land during waits for background work too."""
    crash_trials(tmp_path, dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=4000),
                 trials=6, n=1500, seed=4, flush_every=97)


def test_kill_with_default_checkpoints(tmp_path):
    """The default checkpoint interval (1 s): most kills land between checkpoints, so recovery
    replays logs whose memtables were flushed and compacted already."""
    crash_trials(tmp_path, dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=1500),
                 trials=6, n=1500, seed=8)


def test_kill_during_last_level_appends_clusters_and_gc(tmp_path):
    """levels=2 with BloomClusters in a metadata directory and a low gc_threshold: kills land
    in cluster writes and garbage collections of last-level nodes too. The writer keeps at most
    4 table files open, so tables are closed and reopened meanwhile, and dropped files wait for
    their last readers."""
    meta = str(tmp_path / "meta")
    opts = dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000, gc_threshold=0.2,
                metadata_path=meta, max_open_files=4, **FAST)
    crash_trials(tmp_path, opts, trials=6, n=1000, seed=7, gen=dict(nkeys=200, vmax=200),
                 reopen_kw={"metadata_path": meta})
    with lsmtrie.open(str(tmp_path / "db"), metadata_path=meta) as db:
        st = db.stats()
        assert st["tables_per_level"][-1] > 0
        assert st["gcs"] > 0 and st["bytes_written_by_kind"]["clusters"] > 0, st


@pytest.mark.parametrize("memtable_bytes", [None, 1500])
def test_exit_without_close_keeps_every_synced_write(tmp_path, memtable_bytes):
    """Deterministic: the writer returns from its last synced put and exits without close().
    Every put must be there (each was synced), across many memtable rotations."""
    script = tmp_path / "w.py"
    script.write_text(r'''
import os, random, sys
import lsmtrie
opts = dict(table_buckets=16, node_tables=2, levels=3)
if sys.argv[2] != "None":
    opts["memtable_bytes"] = int(sys.argv[2])
db = lsmtrie.open(sys.argv[1], **opts)
rng = random.Random(7)
for i in range(4000):
    db.put(b"k%05d" % i, b"v%d-" % i + b"x" * rng.randint(0, 60), sync=(i % 50 == 49))
os._exit(0)
''')
    path = str(tmp_path / "db")
    r = subprocess.run([sys.executable, str(script), path, str(memtable_bytes)], env=_env(),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    rng = random.Random(7)
    want = {b"k%05d" % i: b"v%d-" % i + b"x" * rng.randint(0, 60) for i in range(4000)}
    state = read_state(path)
    missing = sorted(k for k in want if k not in state)
    assert not missing, f"{len(missing)} acknowledged synced puts lost, e.g. {missing[:5]}"
    assert state == want


def test_kill_during_bulk_load(tmp_path):
    """bulk=True skips the log: a kill loses what was not flushed, but everything flushed
    before is there, nothing is corrupt, and the store reopens (twice)."""
    bulk_trials(tmp_path)


BULK_OPEN = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=4000)


def bulk_trials(tmp_path, trials=3, seed=5, make_env=None, after_kill=None):
    """The bulk writer killed `trials` times, each in make_env() (default _env()); after_kill()
    runs before each reopen."""
    script = tmp_path / "bulk.py"
    script.write_text(BULK_WRITER)
    path = str(tmp_path / "db")
    cfg = {"open": BULK_OPEN, "chunks": 400, "per_chunk": 200, "flush_every": 5}

    def expected(c):
        return {b"bulk-%d-%d" % (c, i): b"value-%d-%d-" % (c, i) + b"x" * (i % 50)
                for i in range(cfg["per_chunk"])}

    rng = random.Random(seed)
    ever_wrote = -1  # the trials share the store: earlier trials' chunks may be there too
    for trial in range(trials):
        errf = open(str(script) + ".stderr", "w+b")
        p = subprocess.Popen([sys.executable, str(script), path, json.dumps(cfg)],
                             stdout=subprocess.PIPE, stderr=errf,
                             env=make_env() if make_env else _env())
        target = rng.randrange(8, 40)
        lines = []
        try:
            while True:
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line.strip())
                if line.startswith((b"wrote", b"flushed")) and int(line.split()[1]) >= target:
                    time.sleep(rng.choice([0, 0.002, 0.01]))
                    break
        finally:
            rest, err = kill_and_drain(p, errf)
        lines += rest.split(b"\n")
        assert p.returncode == -signal.SIGKILL, err.decode()
        flushed = [int(x.split()[1]) for x in lines if x.startswith(b"flushed")]
        last_flushed = max(flushed) if flushed else -1
        wrote = [int(x.split()[1]) for x in lines if x.startswith((b"wrote", b"flushed"))]
        if after_kill:
            after_kill()
        state = read_state(path)
        for c in range(last_flushed + 1):  # flushed: all there
            e = expected(c)
            missing = [k for k in e if state.get(k) != e[k]]
            assert not missing, f"trial {trial}: chunk {c} was flushed but {len(missing)} items differ"
        ever_wrote = max([ever_wrote] + wrote)
        allowed = {}
        for c in range(ever_wrote + 2):
            allowed.update(expected(c))
        for k, v in state.items():  # whatever else survived is a correct item
            assert allowed.get(k) == v, f"trial {trial}: unexpected item {k!r}"
        assert read_state(path) == state


def test_recovered_store_takes_new_writes(tmp_path):
    """After a crash and recovery, the store works normally: new writes, flush, close, reopen."""
    crash_trials(tmp_path, TINY_MEM, trials=2, n=500, seed=6)
    path = str(tmp_path / "db")
    with lsmtrie.open(path) as db:
        model = dict(db.items())
        ops = gen_ops(99, 500, tag=b"after")
        for op in ops:
            _ns["apply_store"](db, op)
            apply_model(model, op)
        db.flush()
        assert dict(db.items()) == model
    assert read_state(path) == model
