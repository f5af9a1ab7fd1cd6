"""`lsmtrie load` under power cuts and a full disk (issue 22: "a load killed at any moment
(SIGKILL, power cut) leaves the store as it was, plus whatever --resume needs").

The command runs with the power-cut library (tests/powercut.c) watching the store and its load
directory, and cuts the power at chosen syncs: while it spills partitions at checkpoints (every
64 KiB of input here), writes its journal, builds and fsyncs tables, links them and installs.
The directories are then rebuilt from what was durable, and the store must open with exactly
the state before the load or the state after it; `--resume` with the same arguments must then
end at the state after it, and `lsmtrie verify` must pass. A full disk through the command (the
core's injected ENOSPC, in this process) must give exit status 1, one line on stderr, and the
store as it was."""

import os
import random
import shutil
import subprocess
import sys

import pytest

import lsmtrie
import powercut
from lsmtrie import _binding, cli
from lsmtrie._parse import format_items

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return powercut.build(str(tmp_path_factory.mktemp("powercut")))


def items(seed, n, nkeys):
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.randint(1, 20)) for _ in range(nkeys)]
    return [(rng.choice(pool), rng.randbytes(rng.randint(0, 40))) for _ in range(n)]


def contents(path):
    with lsmtrie.open(path, read_only=True) as db:
        return dict(db.items())


def base_env(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import lsmtrie.bulk as L\nL.CHECKPOINT_BYTES = 64 << 10\nL.CHUNK = 16 << 10\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), ROOT, os.environ.get("PYTHONPATH", "")]))


def test_a_load_cut_at_any_sync_leaves_the_old_or_the_new_state_and_resumes(tmp_path, library):
    before = items(1, 4000, 3000)
    pristine = str(tmp_path / "pristine")
    with lsmtrie.open(pristine, table_buckets=16, node_tables=2, memtable_bytes=4000) as db:
        db.put_many([k for k, _ in before], [v for _, v in before])  # a growing store, in use
    old = contents(pristine)
    load = items(2, 30_000, 20_000) + before[:500]  # new keys, and newer versions of old ones
    (tmp_path / "in.tsv").write_bytes(format_items(load, "tsv"))
    new = {**old, **dict(load)}
    path, shadow = str(tmp_path / "db"), str(tmp_path / "shadow")
    cmd = [sys.executable, "-m", "lsmtrie", "load", path, str(tmp_path / "in.tsv"),
           "--no-progress", "--memory", "16M"]
    env = base_env(tmp_path)

    def fresh():
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(pristine, path)
        os.makedirs(os.path.join(path, "load"), exist_ok=True)  # watched from the start

    fresh()  # an uncut run counts the syncs
    r = subprocess.run(cmd, env=powercut.env(env, library, [path, path + "/load"], shadow),
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    syncs = len(powercut.trace(shadow))
    assert syncs > 20, syncs  # checkpoints, units, links and the install each sync
    assert contents(path) == new
    rng = random.Random(3)
    early = sorted({1, 2, syncs // 4, syncs // 3, syncs // 2, *(rng.randint(1, syncs) for _ in range(4))})
    late = [syncs - i for i in range(12) if syncs - i > 0]  # from the end down to the install
    outcomes = set()

    def trial(at):
        """A cut at sync `at`: the old or the new state, then --resume ends at the new one.
        Returns the state seen ("old", "new") or None when the run had fewer syncs."""
        fresh()
        r = subprocess.run(cmd, env=powercut.env(env, library, [path, path + "/load"], shadow, at=at),
                           capture_output=True, timeout=600)
        if r.returncode == 0:  # fewer syncs this time (the store's own checkpoints vary)
            assert at > syncs // 2 and contents(path) == new
            return None
        assert r.returncode == -9, (at, r.returncode, r.stderr[-2000:])
        powercut.apply_image(shadow, [path, path + "/load"])
        seen = contents(path)
        assert seen in (old, new), f"cut at sync {at} of {syncs}: neither state"
        with lsmtrie.open(path, read_only=True) as db:
            unfinished = db.stats()["load_unfinished"]
        assert unfinished == os.path.exists(os.path.join(path, "load", "JOURNAL"))
        r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, timeout=600)
        assert r.returncode == 0, (at, r.stderr[-2000:])
        assert contents(path) == new, f"cut at sync {at} of {syncs}, then --resume"
        assert cli.main(["verify", path]) == 0
        return "new" if seen == new else "old"

    for at in early:
        outcomes.add(trial(at))
    for at in late:  # until one cut lands after the install became durable
        outcomes.add(trial(at))
        if "new" in outcomes:
            break
    assert {"old", "new"} <= outcomes  # cuts landed before and after the install


@pytest.mark.parametrize("after", [0, 12, 34, 40, 72])  # flush, tables, manifest
def test_a_full_disk_fails_the_command_in_one_line_and_keeps_the_store(tmp_path, capsys, after):
    path = str(tmp_path / "db")
    old = items(4, 3000, 3000)
    with lsmtrie.open(path) as db:
        db.put_many([k for k, _ in old], [v for _, v in old])
    (tmp_path / "in.tsv").write_bytes(format_items(items(5, 60_000, 50_000), "tsv"))
    capsys.readouterr()
    try:
        _binding.fault_set("write", after, 28)  # ENOSPC after that many more writes
        rc = cli.main(["load", path, str(tmp_path / "in.tsv"), "--no-progress",
                       "--memory", "16M"])
    finally:
        _binding.fault_set("write", 0, 0)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("lsmtrie load: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "space" in err.lower(), err
    assert contents(path) == dict(old)
    assert cli.main(["verify", path]) == 0
    assert cli.main(["load", path, str(tmp_path / "in.tsv"), "--no-progress"]) == 0  # room again
    assert contents(path) == {**dict(old), **dict(items(5, 60_000, 50_000))}
