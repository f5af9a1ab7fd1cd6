"""examples/dask_build.py: shards built on a Dask cluster (two worker processes) from tsv files,
one of them cut into many byte ranges, with keys written again later in the input, are the input
with the last value of each key winning, disjoint, each key in the shard its route names; served
by `lsmtrie serve` behind a real nutcracker they answer for every key, and keys written through
the proxy land where the route says. Then the line ranges, the command (against the same
cluster's scheduler), bad input and refusals.

Needs dask[distributed] (the scale extra), Debian's nutcracker and pip's pymemcache
(scripts/_env.sh installs them)."""

import contextlib
import gzip
import io
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys

import pytest

import lsmtrie
from lsmtrie._parse import format_items
from lsmtrie.bulk import LoadError
from lsmtrie.route import Route

from servers import (ROOT, get_all, start_lsmtrie_serve, start_nutcracker, stop,  # noqa: E402
                     where_keys_landed, write_through)

sys.path.insert(0, str(ROOT / "examples"))
import dask_build  # noqa: E402

SPEC = "fnv1a_64:ketama"
PARTITION = 64 << 10          # cuts big.tsv (about 730 KB) into a dozen ranges
TIMEOUT = 180                 # seconds a build may take here before it fails the test
# bytes a memcached key may hold (nutcracker and lsmtrie serve refuse spaces and controls)
KEY_BYTES = bytes(c for c in range(0x21, 0x100) if c != 0x7F)
VALUE_BYTES = b"ab\t\n\\\r z\x00\xff"  # escapes of tsv and bytes of every kind


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of two worker processes of one thread each, as the command makes."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster, timeout=60) as c:
        yield c


def keys(seed: int, n: int, prefix: bytes = b"k") -> list[bytes]:
    """n distinct keys (the prefix and index, then 0..12 random key bytes)."""
    rng = random.Random(seed)
    return [prefix + b"%d." % i + bytes(rng.choices(KEY_BYTES, k=rng.randint(0, 12)))
            for i in range(n)]


def rewrites(rng: random.Random, pool: list[bytes], n: int) -> list[tuple[bytes, bytes]]:
    """n items of keys drawn from pool, each with a new random value."""
    return [(k, bytes(rng.choices(VALUE_BYTES, k=rng.randint(0, 30))))
            for k in rng.choices(pool, k=n)]


def input_files(tmp, rng: random.Random) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """Three inputs and their items in input order: first.tsv; big.tsv (cut into ranges),
    which writes again keys of first.tsv, repeats some keys at once (in one range) and ends
    with 6,000 keys of its own again (in later ranges); last.tsv.gz (read whole), which writes
    again keys of both and adds new ones. 29,000 keys, 40,500 items."""
    k = keys(1, 29_000)
    first = [(x, b"first%d" % i) for i, x in enumerate(k[:5000])]
    big = []
    for i, x in enumerate(k[3000:28_000]):
        big += [(x, b"a%d" % i)] + ([(x, b"again%d" % i)] if i % 50 == 0 else [])
    big += rewrites(rng, k[3000:28_000], 6000)
    last = rewrites(rng, k[:28_000], 3000) + [(x, b"new") for x in k[28_000:]]
    (tmp / "first.tsv").write_bytes(format_items(first, "tsv"))
    (tmp / "big.tsv").write_bytes(format_items(big, "tsv"))
    (tmp / "last.tsv.gz").write_bytes(gzip.compress(format_items(last, "tsv")))
    return [str(tmp / n) for n in ("first.tsv", "big.tsv", "last.tsv.gz")], first + big + last


@pytest.fixture(scope="module")
def built(dask_client, tmp_path_factory):
    """(output directory, inputs, items in input order, summary) of one build of 3 shards."""
    tmp = tmp_path_factory.mktemp("dask")
    inputs, items = input_files(tmp, random.Random(2))
    summary = dask_build.build(inputs, str(tmp / "out"), 3, SPEC, dask_client, memory=64 << 20,
                               partition_bytes=PARTITION, timeout=TIMEOUT)
    return tmp / "out", inputs, items, summary


def shard_contents(path) -> dict:
    """{key: data} of a store of memcached items, every item's flags checked to be 0."""
    with lsmtrie.open(str(path), read_only=True) as db:
        split = {k: lsmtrie.memcached_split(v) for k, v in db.items()}
    assert {flags for flags, _ in split.values()} <= {0}
    return {k: data for k, (_, data) in split.items()}


def check_shards(paths, items, route: Route) -> None:
    """The stores' union is the items with the last value of each key, they are disjoint, and
    each holds only keys its route sends it."""
    held = [shard_contents(p) for p in paths]
    model = dict(items)
    assert sum(len(h) for h in held) == len(model)
    assert {k: v for h in held for k, v in h.items()} == model
    for i, h in enumerate(held):
        assert h and set(route.shard_of(list(h)).tolist()) == {i}


def test_the_shards_are_the_input_with_later_items_winning(built):
    out, inputs, items, summary = built
    ranges = [math.ceil(os.path.getsize(p) / PARTITION) for p in inputs[:2]]
    assert ranges[1] > 10 and summary["partitions"] == sum(ranges) + 1  # last.tsv.gz: whole
    totals = summary["totals"]
    assert totals["input_items"] == totals["items_read"] == len(items) == 40_500
    assert totals["items"] == len(dict(items)) == 29_000
    assert totals["duplicates"] == len(items) - len(dict(items))
    assert [s["name"] for s in summary["shards"]] == ["shard0", "shard1", "shard2"]
    assert sum(s["items"] for s in summary["shards"]) == totals["items"]
    check_shards([out / f"shard{i}" for i in range(3)], items, Route.from_spec(SPEC, 3))
    assert sorted(os.listdir(out)) == ["shard0", "shard1", "shard2"]  # spill files removed


@pytest.fixture
def served(built, tmp_path):
    """(the build's items, the shards' ports, the proxy's port): copies of the three shards,
    each served by `python -m lsmtrie serve`, behind nutcracker configured by the example."""
    out, _, items, _ = built
    with contextlib.ExitStack() as stack:
        ports = []
        for i in range(3):
            store = shutil.copytree(out / f"shard{i}", tmp_path / f"shard{i}")
            proc, port = start_lsmtrie_serve(store)
            stack.callback(stop, proc)
            ports.append(port)
        conf = tmp_path / "nutcracker.yml"
        conf.write_text(dask_build.nutcracker_config(Route.from_spec(SPEC, 3), ports,
                                                     listen="127.0.0.1:LISTEN"))
        proxy, port = start_nutcracker(str(conf), tmp_path)
        stack.callback(stop, proxy)
        yield items, ports, port


def test_through_nutcracker_every_key_is_found_and_new_keys_land_by_the_route(served):
    items, shard_ports, proxy = served
    model = dict(items)
    assert get_all(proxy, list(model)) == model
    new = keys(3, 2000, prefix=b"new")
    write_through(proxy, new)
    assert where_keys_landed(shard_ports, new) == Route.from_spec(SPEC, 3).shard_of(new).tolist()


def test_line_ranges_share_out_every_line_once_whatever_the_cut():
    lines = b"".join(b"k%d\t%s\r\n" % (i, b"v" * (i % 37)) for i in range(300))
    data = b"a\tb\n\n" + lines + b"z\ty"  # an empty line, CRLFs, a last line without LF
    f = io.BytesIO(data)
    for step in (1, 2, 3, 7, 40, 1000, len(data) - 1, len(data), len(data) + 5):
        ranges = [dask_build.line_range(f, s, min(s + step, len(data)))
                  for s in range(0, len(data), step)]
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(lo == 0 or data[lo - 1:lo] == b"\n" for lo, hi in ranges if hi > lo)


def test_the_command_builds_jsonl_shards_and_writes_their_proxy_configuration(dask_client,
                                                                            tmp_path):
    k = keys(5, 3000)
    items = [(x, b"v%d" % i) for i, x in enumerate(k)] + rewrites(random.Random(4), k, 2000)
    # (jsonl holds UTF-8 text: each byte becomes the character of its code)
    items = [(x.decode("latin-1").encode(), v.decode("latin-1").encode()) for x, v in items]
    (tmp_path / "in.jsonl").write_bytes(format_items(items, "jsonl"))
    conf = tmp_path / "n.yml"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "dask_build.py"), "--route",
                        "murmur:modula", "--shards", "2", "--out", str(tmp_path / "out"),
                        "--format", "jsonl", "--partition-bytes", "20K", "--memory", "64M",
                        "--scheduler", dask_client.scheduler.address, "--timeout", str(TIMEOUT),
                        "--nutcracker-config", str(conf), "--base-port", "23000",
                        str(tmp_path / "in.jsonl")], capture_output=True, timeout=TIMEOUT + 60)
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert summary["partitions"] > 5 and summary["totals"]["items"] == len(dict(items))
    route = Route.from_spec("murmur:modula", 2)
    check_shards([tmp_path / "out" / f"shard{i}" for i in range(2)], items, route)
    assert Route.from_config(conf).describe() == route.describe()
    assert "127.0.0.1:23001:1 shard1" in conf.read_text()


def bad_input(tmp_path) -> str:
    """A tsv file whose one bad line (no tab) is in a late range."""
    lines = [b"k%d\tv" % i for i in range(20_000)]
    lines[15_000] = b"no tab here"
    (tmp_path / "bad.tsv").write_bytes(b"\n".join(lines) + b"\n")
    return str(tmp_path / "bad.tsv")


def test_a_bad_line_fails_the_build_naming_the_file_and_range(dask_client, tmp_path):
    path = bad_input(tmp_path)
    with pytest.raises(LoadError, match=r"bad\.tsv \(lines from byte \d+\): line \d+: ") as e:
        dask_build.build([path], str(tmp_path / "out"), 2, SPEC, dask_client,
                         partition_bytes=32 << 10, timeout=TIMEOUT)
    assert "lines from byte 0)" not in str(e.value)
    assert os.listdir(tmp_path / "out") == []  # no shard built, spill files removed


def test_bad_lines_skipped_are_counted(dask_client, tmp_path):
    summary = dask_build.build([bad_input(tmp_path)], str(tmp_path / "out"), 2, SPEC,
                               dask_client, partition_bytes=32 << 10, timeout=TIMEOUT,
                               on_bad_line="skip")
    assert summary["totals"]["bad_lines"] == 1
    assert summary["totals"]["items"] == 19_999
    assert len(summary["bad_line_examples"]) == 1 and "bad.tsv" in summary["bad_line_examples"][0]


def test_a_build_out_of_time_fails_and_leaves_no_spill_files(dask_client, tmp_path):
    (tmp_path / "in.tsv").write_bytes(b"".join(b"k%d\tv\n" % i for i in range(50_000)))
    with pytest.raises(dask_build.BuildError, match="the map step did not finish in time"):
        dask_build.build([str(tmp_path / "in.tsv")], str(tmp_path / "out"), 2, SPEC,
                         dask_client, partition_bytes=4 << 10, timeout=0.001)
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("change, message", [
    ({"shards": 0}, "at least 1"),
    ({"inputs": ["-"]}, "not a file"),
    ({"inputs": []}, "no input files"),
    ({"partition_bytes": 0}, "partition_bytes"),
    ({}, "shard1 exists"),
])
def test_refusals_come_before_any_work(tmp_path, change, message):
    """(No cluster is started: the refusals come first.)"""
    (tmp_path / "in.tsv").write_bytes(b"k\tv\n")
    (tmp_path / "out" / "shard1").mkdir(parents=True)
    args = dict(inputs=[str(tmp_path / "in.tsv")], out=str(tmp_path / "out"), shards=2,
                partition_bytes=1 << 20) | change
    with pytest.raises(dask_build.BuildError, match=message):
        dask_build.build(route=SPEC, client=None, **args)
    assert os.listdir(tmp_path / "out") == ["shard1"]
