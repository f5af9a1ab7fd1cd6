"""`python -m lsmtrie load` (issue 22's contract): inputs in files, compressed or on stdin, bad
lines in both modes, the JSON summary, exit statuses, a second writer, and a load killed while it
reads files, then resumed. The contents are checked against a dict model built from the same
items (the text formats' round trips are tests/test_dump_cli.py's)."""

import bz2
import gzip
import json
import lzma
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import lsmtrie
from lsmtrie._parse import format_items

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("items_read", "items_loaded", "bad_lines", "duplicates", "seconds", "items_per_s",
        "user_bytes", "bytes_written", "write_amplification", "store_bytes", "peak_rss_bytes",
        "peak_disk_bytes")


def env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def load(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lsmtrie", "load", *map(str, args)],
                          input=stdin, capture_output=True, env=env(), timeout=600)


def items(seed, n, nkeys=None):
    rng = random.Random(seed)
    nkeys = nkeys or n
    pool = [rng.randbytes(rng.randint(0, 20)) for _ in range(nkeys)]
    return [(pool[rng.randrange(nkeys)], rng.randbytes(rng.randint(0, 50))) for _ in range(n)]


def contents(path):
    with lsmtrie.open(str(path), read_only=True) as db:
        return dict(db.items())


def test_tsv_files_compressed_and_plain_load_with_later_items_winning(tmp_path):
    a, b = items(1, 3000, 2000), items(2, 3000, 2000)
    a += [(b"\t\n\r\\", b"all the escapes\t\\"), (b"", b"empty key"), (b"empty value", b"")]
    files = []
    for i, (opener, suffix) in enumerate([(open, ""), (gzip.open, ".gz"), (bz2.open, ".bz2"),
                                          (lzma.open, ".xz")]):
        f = tmp_path / f"in{i}.tsv{suffix}"
        with opener(f, "wb") as out:
            out.write(format_items(a if i % 2 == 0 else b, "tsv").replace(b"\n", b"\r\n", 5))
        files.append(f)
    r = load(tmp_path / "db", *files, "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert sorted(summary) == sorted(KEYS)
    model = {}
    for its in (a, b, a, b):
        model.update(its)
    assert summary["items_read"] == 2 * (len(a) + len(b))
    assert summary["items_loaded"] == len(model)
    assert summary["duplicates"] == summary["items_read"] - len(model)
    assert contents(tmp_path / "db") == model


def test_stdin_and_binary_formats(tmp_path):
    its = items(3, 2000)
    r = load(tmp_path / "t", "-", "--no-progress", stdin=format_items(its, "tsv"))
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "t") == dict(its)
    r = load(tmp_path / "l", "--format", "lenprefix", "--no-progress",
             stdin=format_items(its, "lenprefix"))
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "l") == dict(its)
    fixed = [(bytes([i % 256]) * 4, bytes([i % 7]) * 3) for i in range(600)]
    r = load(tmp_path / "f", "--format", "fixed", "--key-size", "4", "--value-size", "3",
             "--no-progress", stdin=format_items(fixed, "fixed", key_size=4, value_size=3))
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "f") == dict(fixed)


def test_a_bad_line_fails_the_load_and_leaves_the_store_as_it_was(tmp_path):
    old = items(4, 500)
    with lsmtrie.open(str(tmp_path / "db")) as db:
        db.put_many([k for k, _ in old], [v for _, v in old])
    good = format_items(items(5, 400), "tsv")
    (tmp_path / "in.tsv").write_bytes(good + b"no tab here\n" + good)
    r = load(tmp_path / "db", tmp_path / "in.tsv", "--no-progress")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"{tmp_path / 'in.tsv'}: line 401: " in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert contents(tmp_path / "db") == dict(old)
    assert not os.path.exists(tmp_path / "db" / "load")
    r = load(tmp_path / "db", tmp_path / "in.tsv", "--on-bad-line", "skip", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bad_lines"] == 1
    assert "line 401" in r.stderr.decode()
    assert contents(tmp_path / "db") == {**dict(old), **dict(items(5, 400))}


def test_usage_errors_and_a_second_writer(tmp_path):
    assert load(tmp_path / "db", "--format", "xml").returncode == 2
    assert load(tmp_path / "db", "--memory", "lots").returncode == 2
    r = load(tmp_path / "db", tmp_path / "missing.tsv", "--no-progress")
    assert r.returncode == 1 and "missing.tsv" in r.stderr.decode()
    (tmp_path / "in.tsv").write_bytes(b"k\tv\n")
    with lsmtrie.open(str(tmp_path / "db")):
        r = load(tmp_path / "db", tmp_path / "in.tsv", "--no-progress")
    assert r.returncode == 1 and "LOCK" in r.stderr.decode()


def test_a_load_of_files_killed_while_reading_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Checkpoints every 256 KiB of input (the hook below) while four files are read; the
    loader is killed at random moments, resumed (maybe killed again), and ends with the
    model's contents. A resume with other arguments is refused."""
    files, model = [], {}
    for i in range(4):
        its = items(10 + i, 40_000, 30_000)
        model.update(its)
        f = tmp_path / f"in{i}.tsv.gz"
        with gzip.open(f, "wb", compresslevel=1) as out:
            out.write(format_items(its, "tsv"))
        files.append(str(f))
    hook = tmp_path / "sitecustomize.py"
    hook.write_text("import lsmtrie.bulk as L\nL.CHECKPOINT_BYTES = 256 << 10\n")
    e = dict(env(), PYTHONPATH=str(tmp_path) + os.pathsep + env()["PYTHONPATH"])
    cmd = [sys.executable, "-m", "lsmtrie", "load", str(tmp_path / "db"), *files, "--no-progress",
           "--memory", "16M"]
    rng = random.Random(5)
    started = time.monotonic()
    whole = subprocess.run(cmd[:4] + [str(tmp_path / "calibration")] + cmd[5:], env=e,
                           capture_output=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    seconds = time.monotonic() - started
    for attempt in range(4):
        p = subprocess.Popen(cmd + (["--resume"] if attempt else []), env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timer = threading.Timer(rng.uniform(0.3, 1.0) * seconds, p.kill)
        timer.start()
        out, err = p.communicate(timeout=600)
        timer.cancel()
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, err
        if os.path.exists(tmp_path / "db" / "CURRENT"):
            with lsmtrie.open(str(tmp_path / "db"), read_only=True) as db:
                seen = dict(db.items())  # nothing of the load until it installs, then all
            assert seen == {} or seen == model
        if os.path.exists(tmp_path / "db" / "load" / "JOURNAL"):
            other = cmd[:5] + files[:-1] + ["--no-progress", "--resume"]  # one file fewer
            r = subprocess.run(other, env=e, capture_output=True)
            assert r.returncode == 1 and b"other arguments" in r.stderr, r.stderr
    else:
        r = subprocess.run(cmd + ["--resume"], env=e, capture_output=True)
        assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "db") == model


def test_the_python_call_takes_arrays_and_batch_iterators(tmp_path):
    import numpy as np
    keys = np.random.default_rng(1).integers(0, 256, (5000, 12), dtype=np.uint8)
    values = np.random.default_rng(2).integers(0, 256, (5000, 7), dtype=np.uint8)
    s = lsmtrie.load(str(tmp_path / "a"), (keys, values))
    assert s["items_loaded"] == 5000 and s["items_read"] == 5000
    its = items(6, 3000, 2000)
    batches = ([[k for k, _ in its[i:i + 500]], [v for _, v in its[i:i + 500]]] for i in range(0, 3000, 500))
    s = lsmtrie.load(str(tmp_path / "b"), (tuple(b) for b in batches))
    assert s["duplicates"] == 3000 - len(dict(its))
    assert contents(tmp_path / "a") == {bytes(k): bytes(v) for k, v in zip(keys, values)}
    assert contents(tmp_path / "b") == dict(its)
    s = lsmtrie.load(str(tmp_path / "g"), generate=10_000, key_size=8, value_size=4, seed=3)
    assert s["items_read"] == 10_000 and s["user_bytes"] == 120_000


def test_the_progress_line_shows_percent_rates_and_write_amplification(tmp_path):
    its = items(21, 200_000)
    (tmp_path / "in.tsv").write_bytes(format_items(its, "tsv"))
    r = load(tmp_path / "db", tmp_path / "in.tsv", "--progress")
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode()
    assert "100%" in err and "items_s=" in err and "wa=" in err and "written=" in err, err
    assert "building" in err
    r = load(tmp_path / "g", "--generate", "100000", "--progress")
    assert r.returncode == 0 and "100%" in r.stderr.decode()
    assert contents(tmp_path / "db") == dict(its)


def test_value_format_memcached_stores_items_with_flags_zero(tmp_path):
    (tmp_path / "in.tsv").write_bytes(b"a\tone\nb\t\na\tlater\n")
    r = load(tmp_path / "db", tmp_path / "in.tsv", "--value-format", "memcached", "--no-progress")
    assert r.returncode == 0, r.stderr
    with lsmtrie.open(str(tmp_path / "db"), read_only=True) as db:
        assert db.options["value_format"] == "memcached"
        assert dict(db.items()) == {b"a": lsmtrie.memcached_item(b"later"),
                                    b"b": lsmtrie.memcached_item(b"")}
    # a second load into it: the flag is needed, so that no value is stored without flags
    (tmp_path / "more.tsv").write_bytes(b"c\tthree\n")
    r = load(tmp_path / "db", tmp_path / "more.tsv", "--no-progress")
    assert r.returncode == 1 and "--value-format memcached" in r.stderr.decode()
    assert len(r.stderr.decode().strip().splitlines()) == 1
    r = load(tmp_path / "db", tmp_path / "more.tsv", "--value-format", "raw", "--no-progress")
    assert r.returncode == 1 and "value_format=raw differs from the store's memcached" in r.stderr.decode()
    assert contents(tmp_path / "db").keys() == {b"a", b"b"}
    r = load(tmp_path / "db", tmp_path / "more.tsv", "--value-format", "memcached", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "db")[b"c"] == lsmtrie.memcached_item(b"three")
    # a raw store refuses to become one of items
    load(tmp_path / "raw", tmp_path / "in.tsv", "--no-progress")
    r = load(tmp_path / "raw", tmp_path / "more.tsv", "--value-format", "memcached", "--no-progress")
    assert r.returncode == 1 and "differs" in r.stderr.decode()
    assert load(tmp_path / "x", tmp_path / "in.tsv", "--value-format", "json").returncode == 2


def test_a_dump_of_a_store_of_items_loads_back_with_its_flags(tmp_path):
    with lsmtrie.open(str(tmp_path / "src"), value_format="memcached") as db:
        db.put_many([b"a", b"b"], [lsmtrie.memcached_item(b"x", 7), lsmtrie.memcached_item(b"", 0)])
    dump = subprocess.run([sys.executable, "-m", "lsmtrie", "dump", str(tmp_path / "src"), "--format",
                           "lenprefix", "-o", str(tmp_path / "d.lp")], capture_output=True, env=env())
    assert dump.returncode == 0, dump.stderr
    r = load(tmp_path / "dst", tmp_path / "d.lp", "--format", "lenprefix", "--value-format",
             "memcached-items", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "dst") == contents(tmp_path / "src")
    with lsmtrie.open(str(tmp_path / "dst"), read_only=True) as db:
        assert db.options["value_format"] == "memcached"
    # a value too short to hold its flags is no item: the load fails, the store as it was
    (tmp_path / "short.tsv").write_bytes(b"c\tab\n")
    r = load(tmp_path / "dst", tmp_path / "short.tsv", "--value-format", "memcached-items",
             "--no-progress")
    assert r.returncode == 1 and "no memcached item" in r.stderr.decode()
    assert contents(tmp_path / "dst") == contents(tmp_path / "src")
