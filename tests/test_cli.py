"""The command line: lsmtrie stats PATH (lsmtrie verify is tested in test_store_verify.py)."""

import json
import random
import subprocess
import sys

import lsmtrie
from lsmtrie import cli

SMALL = dict(table_buckets=16, node_tables=2, levels=3, memtable_bytes=20000)


def run(*args):
    return subprocess.run([sys.executable, "-m", "lsmtrie", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def make_store(path, n=6000):
    rng = random.Random(3)
    with lsmtrie.open(path, **SMALL) as db:
        db.put_many([rng.randbytes(10) for _ in range(n)], [rng.randbytes(30) for _ in range(n)])
        db.flush()
        return db.stats()


def test_stats_prints_each_level_and_the_write_costs(tmp_path):
    st = make_store(tmp_path / "s")
    r = run("stats", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == (f"{tmp_path / 's'}: {sum(st['items_per_level']):,} items in "
                        f"{sum(st['tables_per_level']):,} tables "
                        f"({cli.human_bytes(sum(st['table_bytes_per_level']))}) on 3 levels")
    rows = [ln.split() for ln in lines[2:5]]
    assert [int(row[0]) for row in rows] == [0, 1, 2]
    assert [int(row[1].replace(",", "")) for row in rows] == st["tables_per_level"]
    assert [int(row[2].replace(",", "")) for row in rows] == st["items_per_level"]
    assert f"(write amplification {st['write_amplification']:.2f})" in r.stdout


def test_stats_json_is_the_stores_own_byte_counters(tmp_path):
    st = make_store(tmp_path / "s")
    r = run("stats", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for key in ("user_bytes_written", "bytes_written", "tables_per_level", "items_per_level",
                "table_bytes_per_level"):
        assert got[key] == st[key], key
    assert got["bytes_written_by_kind"]["log"] == st["bytes_written_by_kind"]["log"]


def test_stats_of_a_new_store_and_of_no_store(tmp_path):
    lsmtrie.open(tmp_path / "s").close()
    r = run("stats", tmp_path / "s")
    assert r.returncode == 0 and "0 items in 0 tables" in r.stdout, r.stderr
    r = run("stats", tmp_path / "none")
    assert r.returncode == 2 and "no store" in r.stderr
    assert not (tmp_path / "none").exists()


def test_human_bytes():
    assert [cli.human_bytes(n) for n in (0, 999, 1000, 1_234_567, 5e12, 7e15)] == [
        "0 B", "999 B", "1.00 KB", "1.23 MB", "5.00 TB", "7000.00 TB"]
