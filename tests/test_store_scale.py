"""The store at the sizes it exists for, without writing them all: varints of every width,
counters, file numbers and log offsets near the top of their ranges, and logs that stay within
their bound through long loads of every write call.

A store once became unreadable after 32 GiB (the varint decoder took 5 bytes while writers wrote
64-bit values), and one log grew for a whole load (a memtable filled inside a batch kept the full
one's log floor, so the floor never moved and no log was ever rotated). The manifest of that store
is kept in tests/data/manifest-past-32GiB.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import formatlib as fl
import lsmtrie
from lsmtrie import _binding

lib, ffi = _binding.lib, _binding.ffi
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVIDENCE = os.path.join(ROOT, "tests", "data", "manifest-past-32GiB")

# values of every varint width, 1 to 10 bytes: the smallest and largest of each, and the value
# that broke the old decoder (bytes written by the store of the evidence manifest)
WIDTH_VALUES = sorted({0, 34_412_791_124, 2**35 - 1, 2**35, 2**63, 2**64 - 1}
                      | {2**(7 * w) - 1 for w in range(1, 10)} | {2**(7 * w) for w in range(1, 10)})


def decode(data):
    v = ffi.new("uint64_t *")
    n = lib.ltr_test_varint_decode(data, len(data), v)
    return n, v[0]


def test_width_values_cover_every_width():
    assert {len(fl.varint(v)) for v in WIDTH_VALUES} == set(range(1, 11))


@pytest.mark.parametrize("value", WIDTH_VALUES)
def test_varint_decoder_takes_every_width(value):
    enc = fl.varint(value)
    assert decode(enc) == (len(enc), value)
    assert decode(enc + b"\xff\x01") == (len(enc), value)  # what follows is not read


@pytest.mark.parametrize("data, expected", [
    (b"\x80\x00", (2, 0)),                      # longer than needed: still a 64-bit value
    (b"\xff" * 9 + b"\x01", (10, 2**64 - 1)),
    (b"\x80" * 9 + b"\x01", (10, 2**63)),
])
def test_varint_decoder_accepts_every_valid_encoding(data, expected):
    assert decode(data) == expected
    assert fl.read_varint(data, 0, len(data))[::-1] == expected


@pytest.mark.parametrize("data", [
    b"",
    b"\x80",                                    # truncated
    fl.varint(2**63)[:-1],                      # truncated after nine bytes
    b"\xff" * 9 + b"\x02",                      # a 65th bit
    b"\xff" * 9 + b"\x81",                      # an eleventh byte announced
    b"\x80" * 10 + b"\x00",                     # eleven bytes
])
def test_varint_decoder_rejects_what_is_no_64_bit_value(data):
    assert decode(data)[0] == 0
    with pytest.raises(fl.FormatError):
        fl.read_varint(data, 0, len(data))


# ---- the manifest decoder ----

def summary(path):
    out = ffi.new("ltr_manifest_summary *")
    _binding.check(lib.ltr_test_manifest_read(os.fsencode(str(path)), out))
    return out


def counters_of_every_width():
    """N_COUNTERS counter values whose encodings take every width from 1 to 10 bytes."""
    vals = [v for v in WIDTH_VALUES if v]
    return [vals[(i * 3) % len(vals)] for i in range(fl.N_COUNTERS)]


def test_manifest_values_of_every_width_read_back(tmp_path):
    counters = counters_of_every_width()
    assert {len(fl.varint(v)) for v in counters} == set(range(1, 11))
    ops = [(fl.OP_NEXT_FILE, 2**64 - 1), (fl.OP_LOG_FLOOR, 2**62 + 5), (fl.OP_LOG_OFFSET, 2**40 + 9),
           (fl.OP_COUNTERS, counters)]
    fl.write_manifest(str(tmp_path), fl.manifest_options(levels=3), [fl.manifest_edit(ops)])
    s = summary(tmp_path)
    assert (s.next_file, s.log_floor, s.log_offset) == (2**64 - 1, 2**62 + 5, 2**40 + 9)
    assert list(s.counters)[:s.ncounters] == counters

    # the store reads them back as its statistics (a read-only open writes nothing)
    with lsmtrie.open(str(tmp_path), read_only=True) as db:
        st = db.stats()
    kinds = st["bytes_written_by_kind"]
    assert st["user_bytes_written"] == counters[0]
    assert [kinds[k] for k in ("log", "flush", "clusters", "manifest")] == counters[1:5]
    assert [st["flushes"], st["compactions"], st["gcs"], kinds["gc"]] == counters[5:9]
    assert kinds["compaction"] == {1: counters[10], 2: counters[11]}


def _open_error(tmp_path, options, ops):
    fl.write_manifest(str(tmp_path), options, [fl.manifest_edit(ops)])
    with pytest.raises(lsmtrie.CorruptionError) as e:
        lsmtrie.open(str(tmp_path), read_only=True)
    return str(e.value)


def test_manifest_option_wider_than_its_field_is_corruption(tmp_path):
    # a table_buckets of 2^32 + 64 read into a 32-bit field would be 64, a valid store
    msg = _open_error(tmp_path, fl.manifest_options(table_buckets=2**32 + 64), [])
    assert "options record is malformed" in msg


def test_manifest_value_format(tmp_path):
    for d in "abcd":
        (tmp_path / d).mkdir()
    fl.write_manifest(str(tmp_path / "a"), fl.manifest_options(value_format=1), [fl.manifest_edit([])])
    with lsmtrie.open(str(tmp_path / "a"), read_only=True) as db:
        assert db.options["value_format"] == "memcached"
    # a value this build does not know: written by a newer one
    fl.write_manifest(str(tmp_path / "b"), fl.manifest_options(value_format=2), [fl.manifest_edit([])])
    with pytest.raises(lsmtrie.VersionError, match="values of format 2"):
        lsmtrie.open(str(tmp_path / "b"), read_only=True)
    # raw is never written: an explicit 0 is damage, as is a field that does not end the record
    msg = _open_error(tmp_path / "c", fl.manifest_options() + b"\x00", [])
    assert "options record is malformed" in msg
    msg = _open_error(tmp_path / "d", fl.manifest_options(value_format=1) + b"\x01", [])
    assert "options record is malformed" in msg


def test_manifest_node_outside_the_trie_is_corruption(tmp_path):
    # a 3-level trie has 1 + 8 + 64 = 73 nodes; node 73 would index past its last level
    msg = _open_error(tmp_path, fl.manifest_options(levels=3), [(fl.OP_ADD_TABLE, 73, 5)])
    assert "out of range" in msg


def test_manifest_varint_of_eleven_bytes_is_corruption(tmp_path):
    fl.write_manifest(str(tmp_path), fl.manifest_options(), [
        fl.manifest_edit([(fl.OP_NEXT_FILE, 7)])[:1] + b"\x80" * 10 + b"\x00"])
    with pytest.raises(lsmtrie.CorruptionError, match="malformed edit"):
        lsmtrie.open(str(tmp_path), read_only=True)


def test_the_manifest_of_a_store_past_32_gib_reads_back(tmp_path):
    """The evidence: a manifest of about 950 million items whose record 401 holds a counter of
    34,412,791,124 bytes, a 6-byte varint. The C decoder must read all of it, as the independent
    reader in formatlib does; the store then stops only at the table files, which are not kept."""
    for name in ("CURRENT", "MANIFEST-00000001"):
        shutil.copy(os.path.join(EVIDENCE, name), tmp_path / name)
    data = (tmp_path / "MANIFEST-00000001").read_bytes()
    _, edits, good = fl.read_manifest_ops(data)
    assert good == len(data) and len(edits) > 400
    assert 34_412_791_124 in next(op for op in edits[399] if op[0] == fl.OP_COUNTERS)[1]

    expect = {"added": 0, "removed": 0, "clusters": 0}
    for ops in edits:
        for op in ops:
            kind = op[0]
            if kind == fl.OP_ADD_TABLE:
                expect["added"] += 1
            elif kind == fl.OP_REMOVE_TABLE:
                expect["removed"] += 1
            elif kind == fl.OP_SET_CLUSTER:
                expect["clusters"] += 1
            elif kind == fl.OP_NEXT_FILE:
                expect["next_file"] = op[1]
            elif kind == fl.OP_LOG_FLOOR:
                expect["floor"], expect["offset"] = op[1], 0
            elif kind == fl.OP_LOG_OFFSET:
                expect["offset"] = op[1]
            elif kind == fl.OP_COUNTERS:
                expect["counters"] = op[1] + [0] * (fl.N_COUNTERS - len(op[1]))
    s = summary(tmp_path)
    got = {"added": s.tables_added, "removed": s.tables_removed, "clusters": s.clusters_set,
           "next_file": s.next_file, "floor": s.log_floor, "offset": s.log_offset,
           "counters": list(s.counters)[:s.ncounters]}
    assert got == expect
    assert max(expect["counters"]) >= 2**35

    with pytest.raises(OSError) as e:  # the first table the manifest names is not here
        lsmtrie.open(str(tmp_path), read_only=True)
    assert not isinstance(e.value, lsmtrie.CorruptionError) and ".ht" in str(e.value)


# ---- a store near the top of its ranges, through a crash ----

@pytest.fixture
def log_hooks():
    yield lib
    lib.ltr_test_log_base(0)
    lib.ltr_test_log_limits(-1, -1)
    lib.ltr_test_checkpoint_policy(-1, -1)


TOP_WRITER = r'''
import json, os, sys
import lsmtrie
from lsmtrie import _binding

path, cfg = sys.argv[1], json.loads(sys.argv[2])
_binding.lib.ltr_test_log_base(cfg["log_base"])
db = lsmtrie.open(path, **cfg["open"])
with db._use() as h:
    _binding.lib.ltr_test_store_bump(h, cfg["counter_base"], cfg["next_file"])
print("open", flush=True)
for r in range(cfg["rounds"]):
    keys = [b"k%d" % ((r * 37 + i) % cfg["keys"]) for i in range(cfg["per_round"])]
    db.put_many(keys, [b"r%d:" % r + k for k in keys])
    if r % 7 == 6:
        db.flush()  # a checkpoint
    print(r, flush=True)
print("done", flush=True)
os._exit(0)
'''


def top_state(rounds, per_round, nkeys):
    want = {}
    for r in range(rounds):
        for i in range(per_round):
            k = b"k%d" % ((r * 37 + i) % nkeys)
            want[k] = b"r%d:" % r + k
    return want


def start_writer(script, path, cfg, timeout=600):
    """The writer script in a process of its own, killed after `timeout` seconds whatever it does
    (a writer that hangs fails the test instead of hanging the suite)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, str(script), path, json.dumps(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    watchdog = threading.Timer(timeout, p.kill)
    watchdog.daemon = True
    watchdog.start()
    return p


def check_store(db, want):
    keys = sorted(want)
    assert db.get_many(keys) == [want[k] for k in keys]
    assert db.verify()["items"] >= 0


def test_store_near_the_top_of_its_ranges_survives_a_crash(tmp_path, log_hooks):
    """Counters from 2^63, file numbers from 2^62 and logs whose records start at 2^40 (a hole
    before them): writes, flushes, compactions and checkpoints, then SIGKILL mid-load, then
    read-only and writable reopens, more writes and a clean reopen."""
    base = 2**40
    probe = tmp_path / "sparse"
    with open(probe, "wb") as f:
        try:
            f.truncate(base + 4096)
        except OSError as e:
            pytest.fail(f"this file system cannot hold a sparse file of 1 TiB: {e}")
    probe.unlink()
    path = str(tmp_path / "db")
    opts = dict(table_buckets=16, levels=3, node_tables=2)
    cfg = {"log_base": base, "counter_base": 2**63, "next_file": 2**62, "rounds": 400,
           "per_round": 300, "keys": 2000, "open": opts}
    script = tmp_path / "writer.py"
    script.write_text(TOP_WRITER)
    p = start_writer(script, path, cfg)
    acked = -1
    for line in p.stdout:  # kill once 60 rounds are acknowledged: loads, flushes, compactions
        if line.strip().isdigit():
            acked = int(line)
            if acked == 60:
                break
    p.send_signal(signal.SIGKILL)
    rest = p.stdout.read()  # (not communicate(): it skips lines already in p.stdout's buffer)
    p.wait(timeout=60)
    err = p.stderr.read()
    assert acked == 60, err
    acked = max([acked] + [int(x) for x in rest.split() if x.isdigit()])

    lib.ltr_test_log_base(base)
    s = summary(path)
    assert s.next_file >= 2**62 and s.log_offset >= base
    assert min(list(s.counters)[:6]) >= 2**63
    with lsmtrie.open(path, read_only=True) as db:  # reads the logs from 2^40 on
        # every acknowledged round, and perhaps the one under way (each round is one record)
        rounds = acked + 1 if db.get(b"k%d" % ((acked + 1) * 37 % cfg["keys"])) in \
            (None, top_state(acked + 1, cfg["per_round"], cfg["keys"]).get(
                b"k%d" % ((acked + 1) * 37 % cfg["keys"]))) else acked + 2
        want = top_state(rounds, cfg["per_round"], cfg["keys"])
        check_store(db, want)
    with lsmtrie.open(path, **opts) as db:
        check_store(db, want)
        st = db.stats()
        assert st["user_bytes_written"] >= 2**63 and st["flushes"] >= 2**63 and st["compactions"] > 2**63
        numbers = [int(f.split(".")[0]) for f in os.listdir(path) if f[0].isdigit()]
        assert numbers and min(numbers) >= 2**62
        db.put_many([b"after"], [b"crash"])
        db.flush()
        want[b"after"] = b"crash"
    with lsmtrie.open(path, **opts) as db:
        check_store(db, want)
    s = summary(path)
    assert s.log_offset == base and s.next_file > 2**62


def test_read_only_open_reads_a_log_from_its_floor_not_into_memory(tmp_path, log_hooks):
    """A log whose records start at 1 TiB: the old reader read every log whole into memory, so
    a read-only open (after a crash during a long load) needed the log's size in memory."""
    lib.ltr_test_log_base(2**40)
    path = str(tmp_path / "db")
    db = lsmtrie.open(path, table_buckets=16)
    db.put_many([b"a", b"b"], [b"1", b"2"])
    ro = lsmtrie.open(path, read_only=True)  # the writer's log is open, unflushed
    assert ro.get_many([b"a", b"b"]) == [b"1", b"2"]
    ro.close()
    db.close()
    logs = [f for f in os.listdir(path) if f.endswith(".wal")]
    assert logs and os.path.getsize(os.path.join(path, logs[0])) >= 2**40


# ---- logs on disk stay bounded through long loads ----

LOAD_WRITER = r'''
import json, os, sys
import lsmtrie
from lsmtrie import _binding

path, cfg = sys.argv[1], json.loads(sys.argv[2])
lib = _binding.lib
lib.ltr_test_log_limits(cfg["rotate"], cfg["disk"])
lib.ltr_test_checkpoint_policy(-1, cfg["ckpt_log"])
db = lsmtrie.open(path, **cfg["open"])
value = b"v" * cfg["vlen"]


def wal_bytes():
    total = 0
    for f in os.listdir(path):
        if f.endswith(".wal"):
            try:
                total += os.path.getsize(os.path.join(path, f))
            except FileNotFoundError:  # unlinked meanwhile by the checkpoint thread
                pass
    return total


def phase(name, calls):
    start = db.stats()["bytes_written_by_kind"]["log"]
    peak = 0
    for call in calls:
        call()
        peak = max(peak, wal_bytes())
    logged = db.stats()["bytes_written_by_kind"]["log"] - start
    print(json.dumps({"phase": name, "peak": peak, "logged": logged}), flush=True)


target = cfg["per_phase"]
item = 16 + cfg["vlen"] + 3
n_items = target // item


def puts():
    for i in range(0, n_items, 200):
        def call(i=i):
            for j in range(i, min(i + 200, n_items)):
                db.put(b"put%012d" % j, value)
        yield call


def many(tag, batch):
    for i in range(0, n_items, batch):
        keys = [b"%s%012d" % (tag, j) for j in range(i, min(i + batch, n_items))]
        yield lambda keys=keys: db.put_many(keys, [value] * len(keys))


def batches(batch):
    for i in range(0, n_items, batch):
        def call(i=i):
            with db.write_batch() as b:
                for j in range(i, min(i + batch, n_items)):
                    b.put(b"wb%012d" % j, value)
        yield call


def rewrites():  # counters: the same 50 keys again and again; the memtable does not grow
    for r in range(n_items // 500):
        keys = [b"ctr%03d" % (j % 50) for j in range(500)]
        yield lambda keys=keys, r=r: db.put_many(keys, [b"%08d" % r + value[8:]] * len(keys))


phase("put", puts())
phase("put_many_small", many(b"ms", cfg["small_batch"]))
phase("put_many_large", many(b"ml", cfg["large_batch"]))
phase("write_batch", batches(cfg["wb_batch"]))
phase("rewrites", rewrites())
print("loaded", flush=True)
for i, call in enumerate(many(b"tail", cfg["large_batch"])):
    call()
    print("tail %d" % i, flush=True)
os._exit(0)
'''


def test_logs_on_disk_stay_bounded_through_every_write_call(tmp_path, log_hooks):
    """Several logs' worth through each write call (single puts, put_many in batches smaller and
    larger than a memtable, write_batch, rewrites of the same keys), with the default memtable
    size (a memtable fills by its builder's budget, inside a batch): the logs on disk never hold
    more than their bound plus one record, however much was logged. Then the writer is killed
    mid-load, and the store reopens read-only and writable with every write it acknowledged."""
    path = str(tmp_path / "db")
    vlen = 100
    cfg = {"rotate": 256 << 10, "disk": 3 << 20, "ckpt_log": 1 << 20, "vlen": vlen,
           "per_phase": 14 << 20, "small_batch": 1000, "large_batch": 12000, "wb_batch": 6000,
           "open": {"table_buckets": 64, "levels": 3}}
    memtable = int(0.95 * 64 * 4080)
    assert cfg["small_batch"] * (16 + vlen) < memtable < cfg["large_batch"] * (16 + vlen)
    record = cfg["large_batch"] * (16 + vlen + 8)  # the largest record a call writes, at most
    script = tmp_path / "load.py"
    script.write_text(LOAD_WRITER)
    p = start_writer(script, path, cfg)
    phases, tail = {}, -1
    for line in p.stdout:
        if line.startswith("{"):
            r = json.loads(line)
            phases[r["phase"]] = r
        elif line.startswith("tail "):
            tail = int(line.split()[1])
            if tail == 3:
                break
    p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert tail == 3, err
    assert list(phases) == ["put", "put_many_small", "put_many_large", "write_batch", "rewrites"]
    for name, r in phases.items():
        # every phase logged four times the bound, yet the logs never held more than the bound
        # and one record (before the fix a single log held everything logged)
        assert r["logged"] >= 4 * cfg["disk"], (name, r)
        assert r["peak"] <= cfg["disk"] + record, (name, r)

    n_items = cfg["per_phase"] // (16 + vlen + 3)
    value = b"v" * vlen
    want = {}
    for tag in (b"put", b"ms", b"ml", b"wb"):
        for j in range(0, n_items, 997):
            want[b"%s%012d" % (tag, j)] = value
    want.update({b"ctr%03d" % j: b"%08d" % (n_items // 500 - 1) + value[8:] for j in range(50)})
    tail_keys = [b"tail%012d" % j for j in range(0, (tail + 1) * cfg["large_batch"], 499)]
    want.update({k: value for k in tail_keys})
    with lsmtrie.open(path, read_only=True) as db:
        check_store(db, want)
    with lsmtrie.open(path, **cfg["open"]) as db:
        check_store(db, want)
    wal = [f for f in os.listdir(path) if f.endswith(".wal")]
    assert sum(os.path.getsize(os.path.join(path, f)) for f in wal) <= cfg["disk"] + record
