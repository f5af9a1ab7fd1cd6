"""`lsmtrie load` under power cuts, a full disk and damaged partitions (issue 22: "a load killed
at any moment (SIGKILL, power cut) leaves the store as it was, plus whatever --resume needs").

The command runs in a subprocess with the power-cut library (tests/powercut.c) watching the
store, its load directory and (with --tmp) the partitions' directory, and cuts the power at
chosen syncs: while it spills partitions and writes its journal at checkpoints, while it builds
and fsyncs tables unit by unit, while it compacts the levels above the target, numbers, links
and installs the tables, and while it cleans up. The directories are then rebuilt from what was
durable (sometimes with part of what was written after the last sync, as a device may keep),
and the store must open with exactly its contents before the load or after it (after it when,
and only when, the install's manifest record was synced), checked against a dict model by a
scan and by lookups of every key, those the store held before included (some overwritten by
the load, some deleted before it and loaded again, some only in its log). A durable journal
still adding or building means the old contents. `--resume` with the same arguments, itself
sometimes cut, must then end at the contents after the load, and `lsmtrie verify` must pass.
Which phase each cut reached is read from the durable journal, and every phase must be reached.

A full disk through the command (the core's injected ENOSPC, in this process) at points spread
over the whole load must give exit status 1, one line on stderr naming what failed, and the
store as it was, and `--resume` then finishes the load; once the load is in, a failure to close
the store is a warning. A resume over damaged partitions fails in one line, store unchanged.

The loads are made small by a sitecustomize in the command's environment: checkpoints every
few dozen or hundred KiB instead of 256 MiB, small generated batches, and the command's 16 MiB
floor on --memory lifted, so that partitions overflow their buffers and spill between
checkpoints. The stores live in /dev/shm when there is one: the library, not the device,
decides what is durable."""

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

import lsmtrie
import powercut
from lsmtrie import _binding, bulk, cli
from lsmtrie._parse import format_items
from lsmtrie.hashing import digest
from test_store_powercut import library, scratch  # noqa: F401 (fixtures: the library; /dev/shm)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = """\
import lsmtrie.bulk as L
L.CHECKPOINT_BYTES = {checkpoint}
L.CHUNK = 16 << 10
L.GENERATE_BATCH = {batch}
_check = L.LoadOptions.check
def check(self):  # the floor on --memory, lifted: a small input spills its partitions
    memory, self.memory = self.memory, max(self.memory, 16 << 20)
    try:
        _check(self)
    finally:
        self.memory = memory
L.LoadOptions.check = check
"""
GENERATE_BATCH = 4096
ADDING, BUILDING, INSTALLING = 0, 1, 2  # the journal's phases (docs/format/load.md)


def items(seed, n, nkeys):
    """n items over nkeys random keys of 1 to 20 bytes: later items of a key replace earlier."""
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.randint(1, 20)) for _ in range(nkeys)]
    return [(rng.choice(pool), rng.randbytes(rng.randint(0, 40))) for _ in range(n)]


def generated(n, key_size, value_size, seed):
    """The items `lsmtrie load --generate n` adds, in order (with the hook's batches)."""
    assert bulk.GENERATE_BATCH == GENERATE_BATCH
    o = bulk.LoadOptions(generate=n, key_size=key_size, value_size=value_size, seed=seed)
    out = []
    for _, k, ko, v, vo, m in bulk._generated(n, o, 0):
        k, v = k.tobytes(), v.tobytes()
        out += [(k[ko[i]:ko[i + 1]], v[vo[i]:vo[i + 1]]) for i in range(m)]
    return out


def hooked(tmp_path, monkeypatch, checkpoint):
    """The hook in this process (undone after the test), for the commands run here; the
    environment of a command with the hook, for those run in a subprocess."""
    for name in ("CHECKPOINT_BYTES", "CHUNK", "GENERATE_BATCH"):
        monkeypatch.setattr(bulk, name, getattr(bulk, name))
    monkeypatch.setattr(bulk.LoadOptions, "check", bulk.LoadOptions.check)
    code = HOOK.format(checkpoint=checkpoint, batch=GENERATE_BATCH)
    exec(code, {})
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(code)
    path = os.pathsep.join([str(hook), ROOT, os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def contents(path):
    with lsmtrie.open(path, read_only=True) as db:
        return dict(db.items())


def journal_phase(path):
    """The phase the load's durable journal records, None without one."""
    try:
        with open(os.path.join(path, "load", "JOURNAL"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    assert data[:8] == b"LTRLOAD1", data[:16]
    return data[8]  # (a varint below 128: one byte)


@dataclass
class Case:
    """A load into a store that holds items, run by the command again and again from the same
    start: `old` is what the store holds before it, `new` after it."""
    library: str
    path: str
    pristine: str
    cmd: list
    watch: list   # the directories the library watches (outer ones first)
    env: dict
    shadow: str
    old: dict
    new: dict
    keys: list    # every key to look up: the old and the new ones, deleted and absent ones
    load_dir: bool = False  # STORE/load is there (empty, durable) before the load, as a load
                            # killed before it wrote anything leaves it: only the syncs of its
                            # files then make them durable (else also the first syncfs)

    def __post_init__(self):
        self.watch = [os.path.realpath(w) for w in self.watch]

    def fresh(self):
        for d in self.watch[2:]:  # the partitions' directory (--tmp) and its parent
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
        shutil.copytree(self.pristine, self.path)
        if self.load_dir:
            os.makedirs(os.path.join(self.path, "load"))
        if len(self.watch) > 2:
            os.makedirs(self.watch[2])

    def run(self, at=None, resume=False):
        """The command with the library, which cuts the power at its at-th sync."""
        env = powercut.env(self.env, self.library, self.watch, self.shadow, at=at)
        return subprocess.run(self.cmd + (["--resume"] if resume else []), env=env,
                              capture_output=True, timeout=600)

    def power_cut(self, rng):
        """Rebuilds the watched directories from their durable image. A watched directory the
        process removed (the load's, at its end) comes back when its parent's image names it:
        the rmdir was not durable."""
        for i, d in enumerate(self.watch):
            parent = os.path.dirname(d)
            if i and parent in self.watch and not os.path.isdir(d):
                _, dirs = powercut._listing(self.shadow, self.watch.index(parent))
                if os.path.basename(d) in dirs:
                    os.makedirs(d)
        powercut.apply_image(self.shadow, self.watch, rng)

    def check(self, where):
        """The store's contents by a scan and by lookups of every key: "old" or "new"."""
        with lsmtrie.open(self.path, read_only=True) as db:
            seen = dict(db.items())
            got = db.get_many(self.keys)
            unfinished = db.stats()["load_unfinished"]
        outcome = "old" if seen == self.old else "new" if seen == self.new else None
        differ = [sum(seen.get(k) != v for k, v in m.items()) for m in (self.old, self.new)]
        assert outcome, (f"{where}: neither state: {differ[0]} old and {differ[1]} new keys "
                         f"differ, {len(seen)} items (old {len(self.old)}, new {len(self.new)})")
        model = self.old if outcome == "old" else self.new
        assert got == [model.get(k) for k in self.keys], f"{where}: lookups disagree with the scan"
        assert unfinished == os.path.exists(os.path.join(self.path, "load", "JOURNAL")), where
        return outcome

    def finish(self, where):
        """--resume (in this process, without the library) ends at the new contents with
        nothing left over."""
        assert cli.main(self.cmd[3:] + ["--resume"]) == 0, where
        assert self.check(f"{where}, then --resume") == "new"
        assert not os.path.exists(os.path.join(self.path, "load")), where
        assert all(not os.listdir(d) for d in self.watch[2:3]), where  # (--tmp: nothing left)
        assert cli.main(["verify", self.path]) == 0, where


def cut_trials(case, rng):
    """Cuts the load at syncs spread over its phases (found in the trace of a run that is not
    cut), checks each cut's state and resumes it (sometimes cutting the resume too); returns
    {(journal phase, outcome)} over the cuts."""
    case.fresh()
    r = case.run()
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    trace = powercut.trace(case.shadow)
    case.power_cut(None)  # right after the command returned: all of the load is durable
    assert case.check("a cut after the command") == "new"
    case.finish("a cut after the command")
    syncs = len(trace)
    tables = [i for i, (_, _, p) in enumerate(trace, 1) if "/load/T" in p]
    journals = [i for i, (_, _, p) in enumerate(trace, 1) if p.endswith("/JOURNAL.tmp")]
    numbering = journals[-1]  # the journal with the tables' numbers, then their links
    install = next(i for i, (_, _, p) in enumerate(trace, 1)  # its manifest record
                   if i > numbering and os.path.basename(p).startswith("MANIFEST-"))
    assert journals[0] < tables[0] < tables[-1] < numbering < install < syncs, trace

    def installed(cut_trace):
        """Whether the install's manifest record took effect before the cut: the syncs from the
        numbered journal to it are the same in every run (the store's own work is paused),
        those before vary a little."""
        js = [i for i, (_, _, p) in enumerate(cut_trace, 1) if p.endswith("/JOURNAL.tmp")]
        return (len(js) >= len(journals)
                and len(cut_trace) >= js[len(journals) - 1] + install - numbering)

    def spread(lo, hi, k):
        return {rng.randint(lo, hi) for _ in range(k)} if lo <= hi else set()

    cuts = sorted({1, journals[0],                                 # before the first journal
                   *spread(journals[0] + 1, tables[0] - 1, 2),     # adding: spills, checkpoints
                   *spread(tables[0], tables[-1] + 2, 2),          # building, unit by unit
                   *spread(tables[-1] + 3, numbering - 1, 1),      # compacting above the target
                   numbering + 2, install,                         # numbered, linked, not in
                   install + 1, *spread(install + 2, syncs, 1)})   # in, cleaning up
    seen = set()

    def trial(at, resume_at=None):
        where = f"cut at sync {at} of {syncs}"
        case.fresh()
        r = case.run(at=at)
        if r.returncode == 0:  # fewer syncs this time
            assert at > install and case.check(where) == "new", where
            return
        assert r.returncode == -9, (where, r.returncode, r.stderr.decode()[-2000:])
        expect = "new" if installed(powercut.trace(case.shadow)) else "old"
        case.power_cut(rng if rng.random() < 0.5 else None)
        phase = journal_phase(case.path)
        outcome = case.check(where)
        assert outcome == expect, (where, phase)
        assert phase not in (ADDING, BUILDING) or outcome == "old", (where, phase)
        seen.add((phase, outcome))
        if resume_at is not None:  # the resume loses its power too
            where += f", then --resume cut at {resume_at}"
            r = case.run(at=resume_at, resume=True)
            assert r.returncode in (0, -9), (where, r.returncode, r.stderr.decode()[-2000:])
            if r.returncode == -9:
                case.power_cut(None)
                case.check(where)
        case.finish(where)

    for i, at in enumerate(cuts):
        trial(at, resume_at=rng.randint(1, 2 * syncs // 3) if i % 3 == 2 else None)
    return seen


def pristine_store(path, opts, puts, deletes, tail=()):
    """A store with puts then deletes in its tables (its background work done, so that every
    run of a load on a copy makes nearly the same syncs) and the tail's writes only in its log
    (the load's open replays them into a memtable; the install flushes it below the load)."""
    with lsmtrie.open(path, **opts) as db:
        db.put_many([k for k, _ in puts], [v for _, v in puts])
        for k in deletes:
            db.delete(k)
        db.flush()
        for k, v in tail:
            if v is None:
                db.delete(k)
            else:
                db.put(k, v)
    return contents(path)


def test_a_tsv_load_cut_at_any_sync_leaves_the_old_or_the_new_state_and_resumes(
        scratch, monkeypatch, library):
    """A growing store in use; 64 partitions (--expected-items), gathered eight to a unit for the
    level the tables go to; a checkpoint every 64 KiB of input."""
    env = hooked(scratch, monkeypatch, 64 << 10)
    rng = random.Random(3)
    before = items(1, 4000, 3000)
    held = list(dict(before))
    deleted = held[::7]
    tail = [(k, b"in the log") for k in held[:600:3]] + [(k, None) for k in held[1:600:7]]
    old = pristine_store(str(scratch / "pristine"), dict(table_buckets=16, node_tables=2,
                         memtable_bytes=4000), before, deleted, tail)
    load = items(2, 30_000, 20_000)
    for k in held[1::3] + deleted[::2] + held[1::30]:  # newer values of old keys (some twice)
        load.insert(rng.randrange(len(load) + 1), (k, b"newer " + rng.randbytes(rng.randint(0, 9))))
    (scratch / "in.tsv").write_bytes(format_items(load, "tsv"))
    new = {**old, **dict(load)}
    path = str(scratch / "db")
    case = Case(library, path, str(scratch / "pristine"),
                [sys.executable, "-m", "lsmtrie", "load", path, str(scratch / "in.tsv"),
                 "--no-progress", "--memory", "16M", "--expected-items", "1000000"],
                [path, path + "/load"], env, str(scratch / "shadow"),
                old, new, sorted(set(held) | set(new) | {b"never"}), load_dir=True)
    assert old != new and set(deleted) & set(new) and set(deleted) - set(new)
    seen = cut_trials(case, rng)
    phases = {p for p, _ in seen}
    outcomes = {o for _, o in seen}
    assert {ADDING, BUILDING, INSTALLING} <= phases and outcomes == {"old", "new"}, seen
    assert (None, "old") in seen and (INSTALLING, "old") in seen, seen


def test_a_generated_load_spilling_to_tmp_cut_at_any_sync_resumes(scratch, monkeypatch, library):
    """--generate with two-byte keys (many repeats, and keys the store held), a fixed trie, 1.5
    MiB of memory: eight partitions, in --tmp, whose buffers overflow between checkpoints."""
    env = hooked(scratch, monkeypatch, 800 << 10)
    rng = random.Random(5)
    n, key_size, value_size, seed = 40_000, 2, 40, 7
    load = generated(n, key_size, value_size, seed)
    loaded = list(dict(load))
    before = [(k, b"old " + k) for k in loaded[:1500]] + \
             [(bytes([i >> 8, i & 255]), b"old only") for i in range(0, 65536, 97)] + \
             [(b"longer key %d" % i, b"v%d" % i) for i in range(1500)]
    deleted = loaded[:1500:5] + [b"longer key %d" % i for i in range(0, 1500, 9)]
    tail = [(k, b"in the log") for k in loaded[1400:1800]] + [(k, None) for k in loaded[1800:1900]]
    old = pristine_store(str(scratch / "pristine"), dict(table_buckets=16, levels=3,
                         node_tables=4), before, deleted, tail)
    new = {**old, **dict(load)}
    assert len(load) - len(dict(load)) > 5000  # repeats within the load
    path, tmp = str(scratch / "db"), str(scratch / "tmp")
    spill = os.path.join(tmp, "lsmtrie-load-%016x"  # (load.c, spill_dir_of)
                         % int.from_bytes(digest(path.encode())[:8], "little"))
    case = Case(library, path, str(scratch / "pristine"),
                [sys.executable, "-m", "lsmtrie", "load", path, "--generate", str(n),
                 "--key-size", str(key_size), "--value-size", str(value_size), "--seed", str(seed),
                 "--no-progress", "--memory", "1536K", "--tmp", tmp],
                [path, path + "/load", tmp, spill], env,
                str(scratch / "shadow"), old, new, sorted(set(old) | set(new) | {b"never"}))
    seen = cut_trials(case, rng)
    phases = {p for p, _ in seen}
    assert {ADDING, BUILDING, INSTALLING} <= phases, seen
    assert {o for _, o in seen} == {"old", "new"}, seen


@pytest.mark.parametrize("op", ["write", "fsync"])
def test_a_full_disk_fails_the_command_in_one_line_and_keeps_the_store(scratch, capsys,
                                                                       monkeypatch, op):
    """ENOSPC from the op-th call after 0, 1, 3, 7, ... more calls of that kind until the load
    gets through, and by bisection for a phase the doubling skipped: failures in every phase,
    each one line naming what failed, the store as it was, and --resume ends the load once there
    is room. A failure after the install (closing the store) reports the load as done."""
    hooked(scratch, monkeypatch, 256 << 10)
    pristine = str(scratch / "pristine")
    old = pristine_store(pristine, dict(table_buckets=16, node_tables=2, memtable_bytes=4000),
                         items(4, 3000, 3000), [])
    load = items(5, 40_000, 30_000)
    (scratch / "in.tsv").write_bytes(format_items(load, "tsv"))
    new = {**old, **dict(load)}
    path = str(scratch / "db")
    cmd = ["load", path, str(scratch / "in.tsv"), "--no-progress", "--memory", "16M",
           "--expected-items", "300000"]
    seen = {}

    def attempt(after):
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(pristine, path)
        capsys.readouterr()
        try:
            _binding.fault_set(op, after, 28)  # ENOSPC after that many more calls
            rc = cli.main(cmd)
        finally:
            _binding.fault_set(op, 0, 0)
        out, err = capsys.readouterr()
        where = f"ENOSPC from {op} call {after + 1} on: {err!r}"
        assert "Traceback" not in err and err.count("\n") <= 1, where
        if rc == 0:  # it got in: perhaps the store's close failed after it
            assert contents(path) == new, where
            assert not err or err.startswith("lsmtrie load: the load is complete, but closing "
                                             "the store then failed: "), where
            assert cli.main(["verify", path]) == 0, where
            seen[after] = "in, close failed" if err else "in"
            return seen[after]
        assert rc == 1 and err.startswith("lsmtrie load: ") and "space" in err.lower(), where
        assert out == "", where
        assert contents(path) == old, where
        phase = journal_phase(path)
        if phase == ADDING:  # the load's own step, not the store's close after it
            assert os.path.join(path, "load") in err, where
        assert cli.main(["verify", path]) == 0, where
        assert cli.main(cmd + ["--resume"]) == 0, where
        assert contents(path) == new, (where, "then --resume")
        assert not os.path.exists(os.path.join(path, "load")), where
        seen[after] = phase
        return phase

    after = 0
    while attempt(after) != "in":
        after = 2 * after + 1
        assert after < 1 << 16, "the fault never let the load through"
    # A phase the doubling skipped is sought between the last failure before it and the next
    # attempt (the store's own calls vary the counts a little: the order is nearly monotone).
    rank = {None: -1, ADDING: 0, BUILDING: 1, INSTALLING: 2, "in, close failed": 3, "in": 3}
    for want in (ADDING, BUILDING, INSTALLING):
        while want not in seen.values():
            lo = max((a for a, p in seen.items() if rank[p] < rank[want]), default=-1)
            hi = min(a for a, p in seen.items() if a > lo)
            if hi - lo <= 1:
                break
            attempt((lo + hi) // 2)
    assert {None, ADDING, BUILDING, INSTALLING} <= set(seen.values()), seen


@pytest.mark.parametrize("damage", ["short", "zeros", "garbage"])
def test_a_damaged_partition_fails_the_resume_and_keeps_the_store(scratch, monkeypatch, damage):
    """Partitions that a crash left damaged though the journal recorded them (a disk that lost
    or zeroed synced bytes, a cleaner of --tmp): --resume fails in one line, nothing of the
    load gets in, and a new load goes through."""
    env = hooked(scratch, monkeypatch, 64 << 10)
    old = pristine_store(str(scratch / "db"), dict(table_buckets=16), items(6, 2000, 2000), [])
    load = items(7, 30_000, 20_000)
    (scratch / "in.tsv").write_bytes(format_items(load, "tsv"))
    path = str(scratch / "db")
    cmd = ["load", path, str(scratch / "in.tsv"), "--no-progress", "--memory", "1M"]
    checkpoint = bulk._Run.checkpoint

    def interrupted(run, **where):  # Ctrl-C after the fourth checkpoint
        checkpoint(run, **where)
        run.checkpoints = getattr(run, "checkpoints", 0) + 1
        if run.checkpoints == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(bulk._Run, "checkpoint", interrupted)
    assert cli.main(cmd) == 1
    monkeypatch.setattr(bulk._Run, "checkpoint", checkpoint)
    assert journal_phase(path) == ADDING and contents(path) == old
    spills = sorted(f for f in os.listdir(os.path.join(path, "load")) if f.endswith(".spill"))
    assert len(spills) > 1
    rng = random.Random(8)
    for name in spills[::2]:
        with open(os.path.join(path, "load", name), "r+b") as f:
            size = len(f.read())
            f.truncate(size // 2)
            if damage != "short":
                f.seek(size // 2)
                rest = size - size // 2
                f.write(bytes(rest) if damage == "zeros" else rng.randbytes(rest))
    r = subprocess.run([sys.executable, "-m", "lsmtrie", *cmd, "--resume"], env=env,  # (a crash
                       capture_output=True, text=True, timeout=600)             # stays there)
    err = r.stderr
    assert r.returncode == 1 and err.startswith("lsmtrie load: ") and err.count("\n") == 1, err
    assert "partition" in err or ".spill" in err, err
    assert contents(path) == old
    assert cli.main(["verify", path]) == 0
    assert cli.main(cmd) == 0 and contents(path) == {**old, **dict(load)}
