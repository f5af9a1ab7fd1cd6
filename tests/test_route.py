"""Shard routing (lsmtrie.route over native/src/route.c): twemproxy 0.5.0's twelve hashes by
known answers and against an independent pure-Python reading (tests/twemproxy_ref.py); whole
pools (names, weights, hash tags, ketama and modula) against that reading; nutcracker
configurations; and the decisive tests: keys written through a real nutcracker in front of three
real memcached servers land on the servers Route.shard_of names, for every hash and several
pools; shards built offline and served by lsmtrie serve behind nutcracker answer for every
item. Then `lsmtrie load --shard I/N --route`: shards whose union is the input, disjoint, each
key in the store its route names, resumable, and its usage errors.

Needs Debian's memcached, nutcracker and libmemcached-tools and pip's pymemcache (scripts/_env.sh
installs them when it can); without them these tests fail, saying what is missing."""

import contextlib
import json
import os
import pathlib
import pwd
import random
import subprocess
import sys

import numpy as np
import pytest

import lsmtrie
from lsmtrie import bulk
from lsmtrie._parse import format_items
from lsmtrie.route import HASHES, Route, resolve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twemproxy_ref as ref  # noqa: E402
from servers import (ROOT, client, get_all, start_nutcracker, start_server,  # noqa: E402
                     stop, tool, where_keys_landed, write_through)

# Known answers, from tests/twemproxy_ref.py's reading of twemproxy's sources (MD5, CRC-32 and
# the FNVs of plain ASCII agree with their published vectors; the last key has bytes >= 0x80,
# which twemproxy reads as negative chars).
KAT_KEYS = [b"a", b"abc", b"hello", b"twemproxy:key", b"0123456789abcdefghijklm", b"\xff\x80\xe9z"]
KAT = {
    "one_at_a_time": (0xca2e9442, 0xed131f5b, 0xc8fd181b, 0x5478fb73, 0xdd667229, 0xf6ca9d41),
    "md5": (0xb975c10c, 0x98500190, 0x2a40415d, 0x78d61ff4, 0xe93421c4, 0xeedc1c82),
    "crc16": (0x00007c87, 0x7c749dd6, 0x6b4fc362, 0xfdbd28c8, 0xf18fc96c, 0x92b8050e),
    "crc32": (0x000068b7, 0x00003524, 0x00003610, 0x00003aad, 0x000027b4, 0x00002118),
    "crc32a": (0xe8b7be43, 0x352441c2, 0x3610a686, 0xbaad8309, 0x27b408d7, 0x211812ea),
    "fnv1_64": (0x8601b7be, 0x6bafadcb, 0xbdbdd4c7, 0xaee830ef, 0x0adbdc1d, 0x5c90fc71),
    "fnv1a_64": (0x8601ec8c, 0x0541574b, 0x80aabd0b, 0xa953045b, 0x78e7f5b1, 0x48664bb9),
    "fnv1_32": (0x050c5d7e, 0x439c2f4b, 0xb6fa7167, 0x4ad7a78f, 0x9c3b85fd, 0xdf21cdd1),
    "fnv1a_32": (0xe40c292c, 0x1a47e90b, 0x4f9f2cab, 0x7fa8007b, 0xd20cbb51, 0xfad38e59),
    "hsieh": (0x93642e87, 0xe5186b3a, 0x13842ac5, 0xb3f300aa, 0x04d23943, 0x799917c6),
    "murmur": (0x4b41757c, 0x7b0cc428, 0x521b0bff, 0xce62599e, 0x1f496dee, 0xbbb2180c),
    "jenkins": (0xe0a38690, 0x8f415600, 0x2e0cc8f3, 0x9c617573, 0xdf0e44c8, 0xa3dcf444),
}


def random_keys(seed: int, n: int, low: int = 0) -> list[bytes]:
    """Distinct keys of 1..60 bytes a memcached key may hold (no space, control or DEL byte),
    high bytes included; low=0 allows any byte and the empty key."""
    rng = random.Random(seed)
    alphabet = bytes(range(256)) if low == 0 else bytes(c for c in range(0x21, 0x100) if c != 0x7F)
    keys = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1 if low else 0, 60)))
            for _ in range(n)]
    return list(dict.fromkeys(keys))


# ---- the hashes ----

def test_twelve_hashes_and_only_those():
    assert sorted(HASHES) == sorted(KAT) == sorted(ref.HASHES)


@pytest.mark.parametrize("name", sorted(KAT))
def test_each_hash_gives_its_known_answers(name):
    assert Route(name, "modula", 3).hash_of(KAT_KEYS).tolist() == list(KAT[name])


@pytest.mark.parametrize("name", sorted(KAT))
def test_each_hash_matches_the_independent_reading_on_random_keys(name):
    keys = random_keys(1, 3000) + [bytes(range(i)) for i in range(40)] + \
        [bytes(range(255, 255 - i, -1)) for i in range(40)]
    want = [ref.HASHES[name](k) if k else 0 for k in keys]  # the proxy hashes no empty key
    assert Route(name, "ketama", 2).hash_of(keys).tolist() == want


def test_md5_at_every_padding_boundary_against_hashlib():
    """md5.c pads to one or two final blocks: lengths 0..300 cross 55/56 and 63/64 often."""
    keys = [bytes((i * 7 + j) & 0xFF for j in range(i)) for i in range(1, 301)]
    assert Route("md5", "modula", 2).hash_of(keys).tolist() == [ref.md5(k) for k in keys]


def test_hash_of_takes_every_packed_form():
    r = Route("murmur", "ketama", 3)
    keys = [b"abcd", b"efgh", b"ijkl"]
    arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(3, 4)
    pair = (np.frombuffer(b"".join(keys), dtype=np.uint8), np.array([0, 4, 8, 12]))
    want = r.shard_of(keys).tolist()
    assert r.shard_of(arr).tolist() == want and r.shard_of(pair).tolist() == want
    assert r.shard_of([]).tolist() == [] and r.shard_of(keys).dtype == np.uint32


# ---- whole pools ----

def _random_pool(rng: random.Random):
    n = rng.choice([1, 2, 3, 5, 12, 40])
    names = list(dict.fromkeys(rng.choice(["", "s", "cache-", "10.0.0."]) + str(rng.randrange(1000))
                               for _ in range(n)))
    weights = [rng.randint(1, 9) for _ in names] if rng.random() < 0.5 else None
    tag = rng.choice([None, "{}", "::", "ab"])
    return rng.choice(sorted(HASHES)), rng.choice(["ketama", "modula"]), names, weights, tag


@pytest.mark.parametrize("seed", range(24))
def test_random_pools_route_as_the_independent_reading(seed):
    rng = random.Random(seed)
    hash_, dist, names, weights, tag = _random_pool(rng)
    keys = random_keys(seed, 1500)
    keys += [b"{" + k[:5] + b"}" + k[5:] for k in keys[:300]] + [b"a:" + k + b":b" for k in keys[:200]]
    route = Route(hash_, dist, names=names, weights=weights, hash_tag=tag)
    pool = ref.Pool(hash_, dist, names, weights, tag)
    assert route.shard_of(keys).tolist() == [pool.shard_of(k) for k in keys]


def test_ketama_with_many_servers_and_uneven_weights():
    """Weights decide each server's points through the proxy's float arithmetic."""
    names = [f"shard{i}" for i in range(100)]
    weights = [1 + (i * 37) % 11 for i in range(100)]
    keys = random_keys(5, 4000)
    route = Route("fnv1a_64", "ketama", names=names, weights=weights)
    pool = ref.Pool("fnv1a_64", "ketama", names, weights)
    assert route.shard_of(keys).tolist() == [pool.shard_of(k) for k in keys]


def test_hash_tags_route_by_the_tagged_part():
    r = Route("md5", "ketama", 7, hash_tag="{}")
    h = r.hash_of
    assert h([b"{user1}:a", b"x{user1}y{z}", b"user1"]).tolist() == [ref.md5(b"user1")] * 3
    # no tag, an empty tag, no closing character: the whole key
    for k in (b"plain", b"{}x", b"x{abc", b"}abc{"):
        assert h([k]).tolist() == [ref.md5(k)], k
    assert h([b"a}{b}"]).tolist() == [ref.md5(b"b")]  # the first '{', then the next '}'
    assert len(set(r.shard_of([b"{t}" + bytes([i]) for i in range(100)]).tolist())) == 1


def test_a_pool_of_one_sends_everything_to_it():
    keys = random_keys(2, 100)
    for dist in ("ketama", "modula"):
        assert Route("crc32", dist, 1).shard_of(keys).tolist() == [0] * len(keys)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hash="sha1", distribution="ketama", shards=3), "unknown hash 'sha1'"),
    (dict(hash="md5", distribution="random", shards=3), "cannot be computed offline"),
    (dict(hash="md5", distribution="rendezvous", shards=3), "unknown distribution"),
    (dict(hash="md5", distribution="ketama", shards=0), "1..65535 servers"),
    (dict(hash="md5", distribution="ketama", names=["a", "b", "a"]), "both named 'a'"),
    (dict(hash="md5", distribution="ketama", names=["a", ""]), "no name"),
    (dict(hash="md5", distribution="ketama", shards=2, weights=[1, 0]), "weights must be"),
    (dict(hash="md5", distribution="ketama", shards=2, weights=[1]), "2 servers but 1 weights"),
    (dict(hash="md5", distribution="ketama", shards=2, hash_tag="{"), "not two characters"),
    (dict(hash=b"md5", distribution="ketama", shards=2), "hash must be a string"),
    (dict(hash="md5", distribution="ketama", names=["a\0b", "c"]), "NUL"),
    (dict(hash="md5", distribution="ketama"), "the number of shards, or the servers' names"),
])
def test_bad_pools_are_refused_with_one_clear_message(kwargs, message):
    with pytest.raises(lsmtrie.InvalidArgumentError, match=message):
        Route(**kwargs)


# ---- nutcracker configurations ----

def write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_configuration_gives_names_weights_and_hash_tag(tmp_path):
    conf = write(tmp_path / "n.yml", """
alpha:
  listen: 127.0.0.1:22121
  hash: murmur
  distribution: modula
  hash_tag: "{}"
  servers:
    - 127.0.0.1:11211:2
    - 10.0.0.7:11212:1
    - 10.0.0.8:11211:3 big
    - /var/run/mc.sock:1
beta:
  listen: 127.0.0.1:22122
  servers:
    - 127.0.0.1:11211:1 one
""")
    r = Route.from_config(conf, "alpha")
    # unnamed: the host alone on 11211 (libmemcached's way), else host:port; a socket "path:"
    assert r.names == ("127.0.0.1", "10.0.0.7:11212", "big", "/var/run/mc.sock:")
    assert (r.hash, r.distribution, r.weights, r.hash_tag) == ("murmur", "modula", (2, 1, 3, 1), "{}")
    b = Route.from_config(conf, "beta")
    assert (b.hash, b.distribution, b.names) == ("fnv1a_64", "ketama", ("one",))  # the defaults
    assert resolve(f"{conf}:alpha", 4).names == r.names
    with pytest.raises(lsmtrie.InvalidArgumentError, match="pools alpha, beta: name one"):
        Route.from_config(conf)
    with pytest.raises(lsmtrie.InvalidArgumentError, match="has no pool 'gamma'"):
        Route.from_config(conf, "gamma")
    with pytest.raises(lsmtrie.InvalidArgumentError, match="4 servers but the load is one of 3"):
        resolve(f"{conf}:alpha", 3)


@pytest.mark.parametrize("body, message", [
    ("p:\n  servers:\n    - 127.0.0.1:11211\n", "is not \"host:port:weight"),
    ("p:\n  servers:\n    - 127.0.0.1:11211:0\n", "invalid weight"),
    ("p:\n  servers:\n    - 127.0.0.1:99999:1\n", "invalid port"),
    ("p:\n  servers:\n    - 127.0.0.1:11211:1  two-spaces\n", "invalid weight"),
    ("p:\n  hash_tag: {}\n  servers:\n    - 127.0.0.1:11211:1\n", "hash_tag is not a string"),
    ("p:\n  hash_tag: \"{\"\n  servers:\n    - 127.0.0.1:11211:1\n", "not two characters"),
    ("p:\n  listen: 127.0.0.1:1\n", "no servers list"),
    ("p: [unclosed\n", "not YAML"),
    ("- just a list\n", "no pools"),
    ("p:\n  distribution: random\n  servers:\n    - 127.0.0.1:11211:1 a\n    - 127.0.0.1:11212:1 b\n",
     "cannot be computed offline"),
])
def test_bad_configurations_are_refused_with_one_clear_message(tmp_path, body, message):
    conf = write(tmp_path / "bad.yml", body)
    with pytest.raises(lsmtrie.InvalidArgumentError, match=message) as e:
        Route.from_config(conf)
    assert "\n" not in str(e.value)


def test_a_missing_configuration_is_named(tmp_path):
    with pytest.raises(lsmtrie.InvalidArgumentError, match="neither HASH:DISTRIBUTION"):
        resolve(str(tmp_path / "none.yml"), 3)
    with pytest.raises(lsmtrie.InvalidArgumentError, match="cannot read it"):
        Route.from_config(tmp_path / "none.yml")


# ---- against a real nutcracker and real memcached servers ----

@pytest.fixture(scope="module")
def memcached():
    """Three memcached servers on 127.0.0.1: their ports."""
    binary, user = tool("memcached"), pwd.getpwuid(os.geteuid()).pw_name
    procs = []
    try:
        for _ in range(3):
            procs.append(start_server(
                lambda p: [binary, "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-m", "64", "-u", user],
                "memcached"))
        yield [port for _, port in procs]
    finally:
        for proc, _ in procs:
            stop(proc)


def server_lines(ports, names, weights):
    return "".join(f"    - 127.0.0.1:{p}:{w}{' ' + n if n else ''}\n"
                   for p, n, w in zip(ports, names, weights))


def nutcracker_conf(path, ports, hash_, dist, names, weights, tag) -> str:
    """A one-pool configuration whose server i is memcached ports[i % len(ports)] (names, not
    addresses, must differ); the listening port is filled in by start_nutcracker (LISTEN)."""
    addresses = [ports[i % len(ports)] for i in range(len(names))]
    return write(path, "beta:\n  listen: 127.0.0.1:LISTEN\n"
                       f"  hash: {hash_}\n  distribution: {dist}\n  auto_eject_hosts: false\n"
                       + (f'  hash_tag: "{tag}"\n' if tag else "")
                       + "  servers:\n" + server_lines(addresses, names, weights))


def flush(ports) -> None:
    for port in ports:
        c = client(port)
        try:
            c.flush_all(noreply=False)
        finally:
            c.close()


TAG_KEYS = [b"{user%d}:%d" % (i % 50, i) for i in range(600)] + [b"{}x%d" % i for i in range(50)]
ROUTER_CASES = (
    [(h, "ketama", None, None, None) for h in sorted(HASHES)]
    + [(h, "modula", None, None, None) for h in ("fnv1a_64", "crc32a", "crc32", "murmur")]
    + [("md5", "ketama", ["zeta", "alpha", "mid"], [3, 1, 5], None),  # out of the proxy's order
       ("fnv1a_64", "modula", ["zeta", "alpha", "mid"], [3, 1, 5], None),
       ("murmur", "ketama", None, None, "{}"),
       ("fnv1a_64", "ketama", ["", "", ""], [1, 2, 1], None),  # unnamed: named host:port
       ("hsieh", "modula", ["", "", ""], [2, 1, 1], "::"),
       # 25 servers (on the 3 memcached): the proxy's float arithmetic gives each 156 points
       ("fnv1a_64", "ketama", [f"shard{i}" for i in range(25)], [1] * 25, None)]
)


@pytest.mark.parametrize("hash_, dist, names, weights, tag", ROUTER_CASES)
def test_keys_through_nutcracker_land_where_the_route_says(memcached, tmp_path, hash_, dist,
                                                           names, weights, tag):
    names = names or [f"shard{i}" for i in range(3)]
    weights = weights or [1] * len(names)
    conf = nutcracker_conf(tmp_path / "n.yml", memcached, hash_, dist, names, weights, tag)
    keys = random_keys(sum(hash_.encode()), 3000, low=0x21)
    if tag:
        keys += [k.replace(b"{", tag[0].encode()).replace(b"}", tag[1].encode()) for k in TAG_KEYS]
    flush(memcached)
    proxy, port = start_nutcracker(conf, tmp_path)
    try:
        write_through(port, keys)
    finally:
        stop(proxy)
    landed = where_keys_landed(memcached, keys)
    assert None not in landed
    on = len(memcached)  # server i is on memcached i % 3
    route = Route.from_config(conf)
    assert (route.shard_of(keys) % on).tolist() == landed
    if names[0]:  # the same pool given directly, not through its configuration
        direct = Route(hash_, dist, names=names, weights=weights, hash_tag=tag)
        assert (direct.shard_of(keys) % on).tolist() == landed


def test_files_copied_by_libmemcached_tools_through_nutcracker(memcached, tmp_path):
    """Another client: memccp writes files (keyed by name) through the proxy, memccat reads
    them back through it, and each lies on the server the route names."""
    memccp, memccat = tool("memccp"), tool("memccat")
    conf = nutcracker_conf(tmp_path / "n.yml", memcached, "fnv1a_64", "ketama",
                           [f"shard{i}" for i in range(3)], [1, 1, 1], None)
    files = []
    (tmp_path / "f").mkdir()
    for i in range(60):
        files.append(tmp_path / "f" / f"file-{i}.txt")
        files[-1].write_bytes(b"contents %d" % i)
    flush(memcached)
    proxy, port = start_nutcracker(conf, tmp_path)
    try:
        servers = f"--servers=127.0.0.1:{port}"
        subprocess.run([memccp, servers, *map(str, files)], check=True, timeout=60,
                       capture_output=True)
        out = subprocess.run([memccat, servers, "file-7.txt", "file-42.txt"], check=True,
                             timeout=60, capture_output=True).stdout
        assert b"contents 7" in out and b"contents 42" in out
    finally:
        stop(proxy)
    keys = [f.name.encode() for f in files]
    assert Route.from_spec("fnv1a_64:ketama", 3).shard_of(keys).tolist() == \
        where_keys_landed(memcached, keys)


# ---- lsmtrie load --shard I/N --route ----

def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lsmtrie", "load", *map(str, args)],
                          capture_output=True, env=env, timeout=300)


def contents(path) -> dict:
    with lsmtrie.open(str(path), read_only=True) as db:
        return dict(db.items())


def check_shards(stores, model, route):
    """The stores' union is the model, they are disjoint, and each holds only its shard."""
    held = [contents(s) for s in stores]
    assert sum(len(h) for h in held) == len(model)
    assert {k: v for h in held for k, v in h.items()} == model
    for i, h in enumerate(held):
        assert h and set(route.shard_of(list(h)).tolist()) == {i}


def items(seed, n):
    rng = random.Random(seed)
    keys = random_keys(seed, n)
    return [(k, rng.randbytes(rng.randint(0, 30))) for k in keys]


def test_three_shards_loaded_by_the_command(tmp_path):
    data = items(7, 4000)
    (tmp_path / "in.tsv").write_bytes(format_items(data, "tsv"))
    stores = [tmp_path / f"s{i}" for i in range(3)]
    other = 0
    for i, s in enumerate(stores):
        r = cli(s, tmp_path / "in.tsv", "--shard", f"{i}/3", "--route", "murmur:ketama", "--json",
                "--no-progress")
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["items_read"] == len(data)
        assert summary["items_loaded"] + summary["items_other_shards"] == len(data)
        other += summary["items_other_shards"]
    assert other == 2 * len(data)
    check_shards(stores, dict(data), Route("murmur", "ketama", 3))


def test_three_shards_of_a_configured_pool_through_the_api(tmp_path):
    conf = write(tmp_path / "n.yml", "a:\n  hash: crc32a\n  distribution: modula\n"
                                     "  hash_tag: \"{}\"\n  servers:\n"
                 + server_lines([11211, 11212, 11213], ["zeta", "alpha", "mid"], [3, 1, 5]))
    data = items(8, 3000) + [(b"{same}%d" % i, b"v") for i in range(200)]
    (tmp_path / "in.csv").write_bytes(format_items(data, "csv"))
    stores = [tmp_path / f"s{i}" for i in range(3)]
    for i, s in enumerate(stores):
        lsmtrie.load(str(s), [str(tmp_path / "in.csv")], format="csv", shard=(i, 3),
                     route=f"{conf}:a")
    route = Route.from_config(conf)
    check_shards(stores, dict(data), route)
    assert len({i for i in route.shard_of([k for k, _ in data[-200:]]).tolist()}) == 1


def test_generated_items_split_into_two_shards(tmp_path):
    route = Route("jenkins", "modula", 2)
    s = [lsmtrie.load(str(tmp_path / f"g{i}"), generate=20_000, shard=(i, 2), route=route)
         for i in range(2)]
    assert [x["items_loaded"] + x["items_other_shards"] for x in s] == [20_000, 20_000]
    assert s[0]["items_loaded"] + s[1]["items_loaded"] == 20_000
    for i in range(2):
        keys = list(contents(tmp_path / f"g{i}"))
        assert len(keys) == s[i]["items_loaded"] and set(route.shard_of(keys).tolist()) == {i}


def test_a_shard_load_resumes_and_its_route_belongs_to_its_identity(tmp_path, monkeypatch):
    """A load of batches killed after its checkpoints resumes to the shard's items; a resume
    with another shard or another route is refused."""
    monkeypatch.setattr(bulk, "CHECKPOINT_BYTES", 1)  # a checkpoint after every batch
    data = items(9, 6000)
    batches = [([k for k, _ in data[i:i + 500]], [v for _, v in data[i:i + 500]])
               for i in range(0, len(data), 500)]

    def killed_after(n):
        for i, b in enumerate(batches):
            if i == n:
                raise KeyboardInterrupt
            yield b
    path, spec = str(tmp_path / "db"), "fnv1a_32:ketama"
    with pytest.raises(KeyboardInterrupt):
        lsmtrie.load(path, killed_after(7), shard=(1, 3), route=spec)
    for shard, other in (((2, 3), spec), ((1, 3), "fnv1a_32:modula")):
        with pytest.raises(lsmtrie.InvalidArgumentError, match="other arguments"):
            lsmtrie.load(path, iter(batches), shard=shard, route=other, resume=True)
    s = lsmtrie.load(path, iter(batches), shard=(1, 3), route=spec, resume=True)
    route = Route.from_spec(spec, 3)
    want = {k: v for k, v in data if route.shard_of([k])[0] == 1}
    assert contents(path) == want
    assert s["items_read"] == len(data) and s["items_other_shards"] == len(data) - len(want)


def test_shards_built_offline_are_served_behind_nutcracker(tmp_path):
    """The contract end to end: items loaded offline into three shards (lsmtrie load --shard
    I/N --route), each served by lsmtrie serve, are all found through a real nutcracker; and
    items written through it land in the shards the offline function names."""
    values = random.Random(21)
    data = [(k, values.randbytes(values.randint(0, 40))) for k in random_keys(21, 3000, low=0x21)]
    (tmp_path / "in.tsv").write_bytes(format_items(data, "tsv"))
    for i in range(3):
        r = cli(tmp_path / f"s{i}", tmp_path / "in.tsv", "--shard", f"{i}/3", "--route",
                "murmur:ketama", "--no-progress")
        assert r.returncode == 0, r.stderr
    new = [k for k in random_keys(22, 1000, low=0x21) if k not in dict(data)]
    with contextlib.ExitStack() as stack:
        dbs = [stack.enter_context(lsmtrie.open(str(tmp_path / f"s{i}"))) for i in range(3)]
        ports = [stack.enter_context(lsmtrie.Server(db, "127.0.0.1", 0)).address[1] for db in dbs]
        conf = nutcracker_conf(tmp_path / "n.yml", ports, "murmur", "ketama",
                               [f"shard{i}" for i in range(3)], [1, 1, 1], None)
        proxy, port = start_nutcracker(conf, tmp_path)
        try:
            found = get_all(port, [k for k, _ in data])
            write_through(port, new)
        finally:
            stop(proxy)
        assert found == dict(data)
        shards = Route.from_spec("murmur:ketama", 3).shard_of(new).tolist()
        assert [[dbs[i].get(k) is not None for i in range(3)] for k in new] == \
            [[i == s for i in range(3)] for s in shards]


@pytest.mark.parametrize("flags, message", [
    (["--shard", "1/3"], "go together"),
    (["--route", "fnv1a_64:ketama"], "go together"),
    (["--shard", "3/3", "--route", "fnv1a_64:ketama"], "is not I/N"),
    (["--shard", "one/3", "--route", "fnv1a_64:ketama"], "is not I/N"),
    (["--shard", "0/3", "--route", "fnv1a_64:random"], "cannot be computed offline"),
    (["--shard", "0/3", "--route", "fnv1a_64"], "not HASH:DISTRIBUTION"),
    (["--shard", "0/3", "--route", "sha1:ketama"], "neither HASH:DISTRIBUTION"),
    (["--shard", "0/4", "--route", "CONF"], "3 servers but the load is one of 4"),
    (["--shard", "0/3", "--route", "CONF:nopool"], "no pool 'nopool'"),
])
def test_bad_shard_flags_exit_2_with_one_line(tmp_path, flags, message):
    conf = write(tmp_path / "n.yml", "p:\n  servers:\n" + server_lines([1, 2, 3], "abc", [1, 1, 1]))
    (tmp_path / "in.tsv").write_bytes(b"k\tv\n")
    r = cli(tmp_path / "db", tmp_path / "in.tsv", *[f.replace("CONF", conf) for f in flags])
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "db").exists()  # refused before the store was touched


def test_select_splits_a_packed_batch_into_its_shards():
    """ltr_route_select over 5,000 items (runs of kept items across its chunks of 1,024 keys):
    the shards' items, in order, together the batch."""
    from lsmtrie._binding import ffi
    from lsmtrie._packing import pack
    from lsmtrie._parse import Parser
    data = items(11, 5000)
    k, v = pack([x for x, _ in data], "keys"), pack([y for _, y in data], "values")
    route = Route("crc16", "ketama", 3)
    out = Parser.new_items()
    shards = route.shard_of((k.data, k.offsets)).tolist()
    for s in range(3):
        got = route.select_packed(s, k.data, k.offsets, v.data, v.offsets, k.n, out)
        keys = bytes(ffi.buffer(got.keys.data, got.keys.len))
        vals = bytes(ffi.buffer(got.values.data, got.values.len))
        offs = np.frombuffer(ffi.buffer(got.koffs.data, got.koffs.len), np.int64)
        voffs = np.frombuffer(ffi.buffer(got.voffs.data, got.voffs.len), np.int64)
        kept = [(keys[offs[i]:offs[i + 1]], vals[voffs[i]:voffs[i + 1]]) for i in range(got.n)]
        assert kept == [d for d, t in zip(data, shards) if t == s]
    with pytest.raises(lsmtrie.InvalidArgumentError, match="shard 3 of a pool of 3"):
        route.select_packed(3, k.data, k.offsets, v.data, v.offsets, k.n, out)
