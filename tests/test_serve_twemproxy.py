"""Three `lsmtrie serve` shards behind a real twemproxy (nutcracker) on loopback (issue 25):
what is set through the router is found through it, each key on exactly one shard (asked
directly), and one shard restarted on its store and port: while it is down its keys fail
through the router (an error, never a wrong value or a miss) and the others' keys still work;
after the restart its keys come back with the values written before. Driven by pymemcache and
the libmemcached tools. The routing and the outage run with memcached shards too, which checks
the harness against the reference server (memcached keeps nothing across a restart)."""

import random
import signal
import subprocess

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

from serve_harness import HOST, FlagSerde, tool, wait_for
from serve_harness import fleet  # noqa: F401 (a fixture)

POOL = """\
shards:
  listen: {listen}
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  timeout: 5000
  server_connections: 1
  servers:
"""


def client(port, timeout=10):
    return Client((HOST, port), serde=FlagSerde(), default_noreply=False, timeout=timeout,
                  connect_timeout=timeout)


class Cluster:
    def __init__(self, fleet, tmp_path, kind):
        self.fleet, self.tmp, self.kind = fleet, tmp_path, kind
        self.shards = [self.start(i) for i in range(3)]
        conf = POOL + "".join(f"   - {HOST}:{s.port}:1 shard{i}\n"
                              for i, s in enumerate(self.shards))
        self.router = fleet.nutcracker(conf)

    def start(self, i, port=0):
        if self.kind == "lsmtrie":
            return self.fleet.lsmtrie(self.tmp / f"shard{i}", port=port)
        return self.fleet.memcached(port=port)

    def placement(self, keys):
        """{key: [indexes of the shards that hold it]}, asked of each shard directly."""
        where = {k: [] for k in keys}
        for i, s in enumerate(self.shards):
            c = client(s.port)
            try:
                for k, v in c.get_many(list(keys)).items():
                    where[k].append(i)
            finally:
                c.close()
        return where


@pytest.fixture(params=["lsmtrie", "memcached"])
def cluster(request, fleet, tmp_path):
    return Cluster(fleet, tmp_path, request.param)


def items(n, seed):
    rng = random.Random(seed)
    return {b"user:%d:%s" % (i, rng.randbytes(4).hex().encode()):
            (rng.choice([0, 1, 2**32 - 1]), rng.randbytes(rng.randint(0, 200))) for i in range(n)}


def test_keys_set_through_the_router_are_found_there_and_on_one_shard(cluster):
    its = items(300, 1)
    r = client(cluster.router.port)
    try:
        for k, v in its.items():
            assert r.set(k, v) is True
        for k, v in its.items():
            assert r.get(k) == v, k
        assert r.get(b"never-set") is None
        assert r.delete(next(iter(its))) is True
    finally:
        r.close()
    del its[next(iter(its))]
    where = cluster.placement(its)
    assert all(len(w) == 1 for w in where.values()), \
        {k: w for k, w in where.items() if len(w) != 1}
    counts = [sum(1 for w in where.values() if w == [i]) for i in range(3)]
    assert all(c > 30 for c in counts), f"keys per shard {counts}: ketama should spread them"
    for i, s in enumerate(cluster.shards):  # with their values and flags
        c = client(s.port)
        try:
            mine = [k for k, w in where.items() if w == [i]]
            assert c.get_many(mine) == {k: its[k] for k in mine}
        finally:
            c.close()


def test_libmemcached_tools_through_the_router(cluster, tmp_path):
    data = random.Random(2).randbytes(100_000) + b"\r\n"
    names = [f"file{i}.bin" for i in range(12)]
    for n in names:
        (tmp_path / n).write_bytes(data + n.encode())
    servers = f"--servers={cluster.router.addr}"
    r = subprocess.run([tool("memccp"), servers, *[str(tmp_path / n) for n in names]],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for n in names:
        out = tmp_path / ("out-" + n)
        r = subprocess.run([tool("memccat"), servers, f"--file={out}", n], capture_output=True,
                           timeout=60)
        assert r.returncode == 0 and out.read_bytes() == data + n.encode(), (n, r)
    where = cluster.placement([n.encode() for n in names])
    assert all(len(w) == 1 for w in where.values()), where


def shard_error(r, key):
    """True when a get of key through the router fails (an error reply or a closed
    connection), False when it answers."""
    try:
        r.get(key)
    except (MemcacheError, OSError):
        r.close()  # pymemcache reconnects on the next call
        return True
    return False


def test_a_shard_restarted_on_its_store_and_port(cluster):
    its = items(240, 3)
    r = client(cluster.router.port)
    try:
        r.set_many(its)
        where = cluster.placement(its)
        assert all(len(w) == 1 for w in where.values())
        down = 1
        gone = {k: v for k, v in its.items() if where[k] == [down]}
        kept = {k: v for k, v in its.items() if where[k] != [down]}
        assert gone and kept
        port = cluster.shards[down].port
        assert cluster.shards[down].stop(signal.SIGTERM) == 0, cluster.shards[down].stderr()
        for k in list(gone)[:40]:  # an error for each of its keys, never a value or a miss
            assert shard_error(r, k), f"{k!r} answered through the router with its shard down"
        for k, v in kept.items():  # the other shards' keys still work
            assert r.get(k) == v, k
        cluster.shards[down] = cluster.start(down, port=port)
        wait_for(lambda: not shard_error(r, next(iter(gone))), 60,
                 "the restarted shard's key answered through the router")
        if cluster.kind == "lsmtrie":  # the values written before
            assert {k: r.get(k) for k in gone} == gone
        else:  # memcached comes back empty, but routable
            assert all(r.get(k) is None for k in gone)
            k = next(iter(gone))
            assert r.set(k, gone[k]) is True and r.get(k) == gone[k]
        for k, v in kept.items():
            assert r.get(k) == v, k
    finally:
        r.close()
