"""`python -m lsmtrie serve` (issue 25's contract): the process (its listening line, signals,
startup failures, what a reopened store holds), the memcached text protocol on raw sockets
(every command, noreply, error lines and that the stream stays in step after them, limits of
keys, flags and values, read-only serving, pipelining, disconnects, 200 connections at once),
and real clients: pymemcache and the libmemcached tools.

The tests of what memcached does too run against Debian's memcached as well (the `server`
fixture's "memcached" parameter): that checks the tests and their harness against the
reference implementation. What differs on purpose (exptime, cas and friends, flags beyond 32
bits, noreply errors, read-only, persistence) is tested on lsmtrie alone. Harness:
tests/serve_harness.py."""

import os
import random
import signal
import socket
import subprocess
import sys
import threading

import pytest

import lsmtrie
from serve_harness import (HOST, MAX_VALUE, FlagSerde, env, show, tool, wait_for)
from serve_harness import fleet  # noqa: F401 (a fixture)

U32 = 2**32 - 1


def start(fleet, tmp_path, kind, *args):
    """A server of kind "lsmtrie" (on a new store) or "memcached" (items up to 2 MiB); it
    stores values of `max_ok` bytes and refuses `too_large` ones."""
    if kind == "lsmtrie":
        s = fleet.lsmtrie(tmp_path / "store", *args)
        s.max_ok, s.too_large = MAX_VALUE, MAX_VALUE + 1
    else:
        s = fleet.memcached("-I", "2m", *args)
        s.max_ok, s.too_large = 1536 * 1024, 3 * 1024 * 1024
    return s


@pytest.fixture(params=["lsmtrie", "memcached"])
def server(request, fleet, tmp_path):
    return start(fleet, tmp_path, request.param)


@pytest.fixture
def lsm(fleet, tmp_path):
    """lsmtrie serve on a new store."""
    return fleet.lsmtrie(tmp_path / "store")


@pytest.fixture
def conn(server):
    with server.conn() as c:
        c.version_line = c.version()
        yield c


@pytest.fixture
def lconn(lsm):
    with lsm.conn() as c:
        c.version_line = c.version()
        yield c


def stored(path, **kw):
    """{key: value} of the store at path, opened read-only."""
    with lsmtrie.open(str(path), read_only=True, **kw) as db:
        return dict(db.items())


def mc_item(raw):
    """(flags, data) of a value as a flags-keeping store holds it: 4 bytes of flags,
    little-endian, then the data."""
    assert len(raw) >= 4, raw
    return int.from_bytes(raw[:4], "little"), raw[4:]


def set_line(key, data, flags=0, cmd=b"set", exptime=0, extra=b""):
    return b"%s %s %d %d %d%s\r\n%s\r\n" % (cmd, key, flags, exptime, len(data), extra, data)


def serve_run(*args, timeout=60):
    """`python -m lsmtrie serve ARGS` run to its end (for the ways it must fail to start)."""
    argv = [sys.executable, "-m", "lsmtrie", "serve", *map(str, args)]
    try:
        return subprocess.run(argv, capture_output=True, env=env(), timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(argv[3:])}: still running after {timeout}s, it should have "
                    f"failed to start; stdout {e.stdout!r}")


def assert_failed_start(r, what):
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, f"{what}: exit status 0; stdout {r.stdout!r}, stderr {err!r}"
    assert b"listening" not in r.stdout, f"{what}: {r.stdout!r}"
    assert "Traceback" not in err, f"{what}: a traceback:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"{what}: stderr is not one line: {err!r}"


# --- the process ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_the_store_and_writes_are_there_on_reopen(fleet, tmp_path, sig):
    store = tmp_path / "store"
    s = fleet.lsmtrie(store)
    items = {b"k%d" % i: (i * 7919 % (U32 + 1), os.urandom(i % 50)) for i in range(300)}
    with s.conn() as c:
        for k, (flags, data) in items.items():
            c.set(k, data, flags)
        c.request(b"delete k0\r\n", b"DELETED\r\n")
    del items[b"k0"]
    rc = s.stop(sig)
    assert rc == 0, f"exit status {rc} after {sig!r}; stderr: {s.stderr()}"
    assert s.stdout_rest == b"", f"more than the listening line on stdout: {s.stdout_rest!r}"
    assert "Traceback" not in s.stderr(), s.stderr()
    with lsmtrie.open(str(store), read_only=True) as db:
        assert db.options.get("value_format") == "memcached", db.options
        assert {k: mc_item(v) for k, v in db.items()} == items
    s2 = fleet.lsmtrie(store)  # and a new server serves them
    with s2.conn() as c:
        got = c.values(b"get", list(items))
        assert {k: v[:2] for k, v in got.items()} == items
    assert s2.stop() == 0


def test_a_second_signal_during_the_close_still_exits_cleanly(fleet, tmp_path):
    """An impatient supervisor (or a second ^C) signals again while the store closes: the
    close goes on and the exit status is still 0. Four rounds, as the second signal lands at
    a moment of the close that varies."""
    store = tmp_path / "store"
    for i, second in enumerate([signal.SIGTERM, signal.SIGINT] * 2):
        s = fleet.lsmtrie(store)
        with s.conn() as c:
            c.set(b"round%d" % i, b"v%d" % i, i)
        s.proc.send_signal(signal.SIGTERM)
        s.proc.send_signal(second)
        rc = s.stop()
        assert rc == 0, f"round {i}: exit status {rc} after SIGTERM then {second!r}; " \
                        f"stderr: {s.stderr()}"
    assert {k: mc_item(v) for k, v in stored(store).items()} == \
        {b"round%d" % i: (i, b"v%d" % i) for i in range(4)}


@pytest.mark.parametrize("sync", [False, True])
def test_acknowledged_writes_survive_sigkill(fleet, tmp_path, sync):
    """A write is acknowledged after the store accepted it: once STORED/DELETED came back, a
    SIGKILL of the server loses none of it (the log is written before the reply)."""
    store = tmp_path / "store"
    s = fleet.lsmtrie(store, *(["--sync"] if sync else []))
    rng = random.Random(5)
    items = {b"key-%d" % i: rng.randbytes(rng.randint(0, 300)) for i in range(400)}
    with s.conn() as c:
        c.request(b"".join(set_line(k, v, 3) for k, v in items.items()),
                  b"STORED\r\n" * len(items))
        c.request(b"delete key-1\r\ndelete key-2\r\n", b"DELETED\r\nDELETED\r\n")
        del items[b"key-1"], items[b"key-2"]
        rc = s.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert {k: mc_item(v) for k, v in stored(store).items()} == \
        {k: (3, v) for k, v in items.items()}


def test_metadata_path(fleet, tmp_path):
    store, meta = tmp_path / "store", tmp_path / "meta"
    s = fleet.lsmtrie(store, "--metadata-path", meta)
    with s.conn() as c:
        c.set(b"a", b"alpha", 9)
        assert c.get(b"a") == (9, b"alpha")
    assert s.stop() == 0
    assert {k: mc_item(v) for k, v in stored(store, metadata_path=str(meta)).items()} == \
        {b"a": (9, b"alpha")}
    s = fleet.lsmtrie(store, "--metadata-path", meta)
    with s.conn() as c:
        assert c.get(b"a") == (9, b"alpha")


def test_startup_failures_exit_non_zero_with_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_bytes(b"not a store")
    r = serve_run(afile, "--port", "0")
    assert_failed_start(r, "a regular file as STORE")
    r = serve_run(tmp_path / "missing", "--read-only", "--port", "0")
    assert_failed_start(r, "--read-only on a missing store")
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        r = serve_run(tmp_path / "s1", "--port", taken.getsockname()[1])
        assert_failed_start(r, "a port in use")
    for flags in (["--port", "-1"], ["--port", "65536"], ["--port", "x"], ["--threads", "-1"],
                  ["--max-connections", "-1"], ["--max-key-length", "65536"],
                  ["--max-key-length", "-1"], ["--no-such-flag"]):
        r = serve_run(tmp_path / "s2", "--port", "0", *flags)
        assert_failed_start(r, " ".join(flags))
    r = serve_run("--port", "0")
    assert_failed_start(r, "no STORE")


def test_store_opened_elsewhere_for_writing_fails_to_start(fleet, tmp_path):
    store = tmp_path / "store"
    fleet.lsmtrie(store)
    r = serve_run(store, "--port", "0")
    assert_failed_start(r, "a store another server has open")


# --- the protocol, against lsmtrie and memcached ---------------------------------------------

def test_set_get_add_replace_delete(conn):
    c = conn
    c.request(set_line(b"a", b"1"), b"STORED\r\n")
    c.request(set_line(b"a", b"one", 5), b"STORED\r\n")
    c.request(set_line(b"a", b"x", cmd=b"add"), b"NOT_STORED\r\n")
    c.request(set_line(b"b", b"two", 6, cmd=b"add"), b"STORED\r\n")
    c.request(set_line(b"c", b"x", cmd=b"replace"), b"NOT_STORED\r\n")
    c.request(set_line(b"b", b"TWO", 7, cmd=b"replace"), b"STORED\r\n")
    assert c.values(b"get", [b"a", b"c", b"b", b"d"]) == \
        {b"a": (5, b"one", None), b"b": (7, b"TWO", None)}
    c.request(b"get c a\r\n", b"VALUE a 5 3\r\none\r\nEND\r\n")  # in the order asked
    c.request(b"get b a\r\n", b"VALUE b 7 3\r\nTWO\r\nVALUE a 5 3\r\none\r\nEND\r\n")
    c.request(b"delete a\r\n", b"DELETED\r\n")
    c.request(b"delete a\r\n", b"NOT_FOUND\r\n")
    c.request(b"delete b 0\r\n", b"DELETED\r\n")
    c.request(b"get a b\r\n", b"END\r\n")
    # noreply: nothing on success, and the next reply is the next command's
    c.send(set_line(b"n", b"v1", extra=b" noreply") + set_line(b"n", b"v2", cmd=b"add",
                                                              extra=b" noreply"))
    c.send(set_line(b"m", b"v3", 1, cmd=b"add", extra=b" noreply") +
           set_line(b"n", b"v4", 2, cmd=b"replace", extra=b" noreply") +
           set_line(b"zz", b"v5", cmd=b"replace", extra=b" noreply"))
    c.request(b"get n m zz\r\n", b"VALUE n 2 2\r\nv4\r\nVALUE m 1 2\r\nv3\r\nEND\r\n")
    c.request(b"delete n noreply\r\ndelete n noreply\r\ndelete m 0 noreply\r\nget n m\r\n",
              b"END\r\n")
    c.in_step(c.version_line)


def test_gets_returns_a_nonzero_cas_that_follows_the_value(conn, server):
    c = conn
    c.set(b"k", b"first", 1)
    c.set(b"j", b"other")
    got = c.values(b"gets", [b"k", b"j", b"missing"])
    assert set(got) == {b"k", b"j"} and got[b"k"][:2] == (1, b"first")
    cas1 = got[b"k"][2]
    assert cas1 > 0 and got[b"j"][2] > 0
    c.set(b"k", b"second", 1)
    cas2 = c.values(b"gets", [b"k"])[b"k"][2]
    assert cas2 > 0 and cas2 != cas1
    if server.kind == "lsmtrie":  # derived from the value: the same item, the same number
        c.set(b"k", b"first", 1)
        assert c.values(b"gets", [b"k"])[b"k"][2] == cas1


def test_a_bare_newline_ends_a_command_line(conn):
    c = conn
    c.request(b"set nl 3 0 2\nab\r\nget nl\n", b"STORED\r\nVALUE nl 3 2\r\nab\r\nEND\r\n")
    c.request(b"delete nl\ndelete nl\r\nversion\n", b"DELETED\r\nNOT_FOUND\r\n" + c.version_line)


def test_flags_round_trip(conn):
    c = conn
    for flags in (0, 1, 255, 256, 2**31, U32):
        c.set(b"f%d" % flags, b"v", flags)
    got = c.values(b"get", [b"f%d" % f for f in (0, 1, 255, 256, 2**31, U32)])
    assert {k: v[0] for k, v in got.items()} == {b"f%d" % f: f for f in
                                                 (0, 1, 255, 256, 2**31, U32)}


def test_values_and_keys_at_their_limits(conn, server):
    c = conn
    binary = b"\r\n" + bytes(range(256)) + b"\r\nEND\r\n\r\n" + b"\x00" * 10
    k250 = bytes(random.Random(1).choice(b"abcdefghijklmnopqrstuvwxyz0123456789-_.~!")
                 for _ in range(250))
    big = random.Random(2).randbytes(server.max_ok)
    for key, data in ((b"empty", b""), (b"bin", binary), (k250, b"long key"), (b"big", big)):
        c.request(set_line(key, data, 4), b"STORED\r\n", timeout=120)
        assert c.get(key) == (4, data), key
    assert c.values(b"get", [b"empty", k250]) == {b"empty": (4, b"", None),
                                                  k250: (4, b"long key", None)}
    # over the limit: refused, the block discarded, nothing stored (memcached drops the item
    # it had; lsmtrie keeps it)
    c.request(set_line(b"big", b"o" * server.too_large),
              b"SERVER_ERROR object too large for cache\r\n", timeout=120)
    c.in_step(c.version_line)
    assert c.get(b"big") == ((4, big) if server.kind == "lsmtrie" else None)


def test_protocol_errors_keep_the_stream_in_step(conn):
    c = conn
    for bad in (b"bogus\r\n", b"\r\n", b"get\r\n", b"sett k 0 0 1\r\n"):
        c.request(bad, b"ERROR\r\n")
        c.in_step(c.version_line)
    # a bad length: not a number, negative (no block follows: its size is not known)
    for bad in (b"set k 0 0 abc\r\n", b"set k 0 0 -1\r\n", b"add k 0 0 1x\r\n"):
        c.send(bad)
        c.expect_line_prefix(b"CLIENT_ERROR")
        c.in_step(c.version_line)
    # a block not followed by \r\n
    c.request(b"set k 0 0 3\r\nabcXY", b"CLIENT_ERROR bad data chunk\r\n")
    c.in_step(c.version_line)
    c.request(b"set k 0 0 3\r\nabcdefg\r\n", b"CLIENT_ERROR bad data chunk\r\n")
    c.request(b"get k\r\n", b"")  # what follows the bad block, "efg", is not a command ...
    line = c.read_line()
    assert line in (b"ERROR\r\n", b"END\r\n"), line  # ... or is skipped with its line
    if line == b"ERROR\r\n":
        c.expect(b"END\r\n")
    # a key over 250 bytes
    c.send(b"get " + b"k" * 251 + b"\r\n")
    c.expect_line_prefix(b"CLIENT_ERROR")
    c.in_step(c.version_line)
    c.request(b"get k\r\n", b"END\r\n")  # nothing was stored


def test_disconnect_in_a_data_block_stores_nothing(server, conn):
    c = conn
    c.set(b"old", b"kept")
    base = int(c.stats()["curr_connections"])
    for key in (b"old", b"new"):
        with server.conn() as d:
            d.version()
            d.send(b"set %s 0 0 100\r\n" % key + b"y" * 50)
        # the server has seen the close once its connection count is back
        wait_for(lambda: int(c.stats()["curr_connections"]) == base, 30,
                 "curr_connections back after the client went away")
    assert c.values(b"get", [b"old", b"new"]) == {b"old": (0, b"kept", None)}
    c.in_step(c.version_line)


def test_version_and_quit(conn, server):
    assert conn.version_line.startswith(b"VERSION ") and conn.version_line.endswith(b"\r\n")
    conn.send(b"quit\r\n")
    assert conn.closed_by_server(10), f"still open after quit; received {conn.buf!r}"
    with server.conn() as d:  # the server goes on
        d.in_step(conn.version_line)


def test_stats(conn, server):
    c = conn
    before = c.stats()
    for name in ("pid", "uptime", "curr_connections", "total_connections", "cmd_get",
                 "cmd_set", "get_hits", "get_misses"):
        assert name in before and before[name].isdigit(), (name, before)
    assert int(before["pid"]) == server.pid
    if server.kind == "lsmtrie":
        own = {k: v for k, v in before.items() if k.startswith("lsmtrie_")}
        assert own, f"no lsmtrie_ figures in {sorted(before)}"
        assert all(v.strip() for v in own.values()), own
    c.set(b"s1", b"v")
    c.set(b"s2", b"v")
    c.request(set_line(b"s3", b"v", cmd=b"add"), b"STORED\r\n")
    for k in (b"s1", b"s2", b"nope"):
        c.values(b"get", [k])
    after = c.stats()
    delta = {n: int(after[n]) - int(before[n]) for n in ("cmd_get", "cmd_set", "get_hits",
                                                        "get_misses")}
    assert delta == {"cmd_get": 3, "cmd_set": 3, "get_hits": 2, "get_misses": 1}, delta
    others = [server.conn() for _ in range(3)]
    try:
        for o in others:
            o.version()
        st = wait_for(lambda: (lambda s: s if int(s["curr_connections"]) ==
                               int(before["curr_connections"]) + 3 else None)(c.stats()),
                      30, "curr_connections up by 3")
        assert int(st["total_connections"]) >= int(before["total_connections"]) + 3
    finally:
        for o in others:
            o.close()
    wait_for(lambda: int(c.stats()["curr_connections"]) == int(before["curr_connections"]),
             30, "curr_connections down by 3 after the closes")


def pipeline(rng, n, version_line, lsmtrie_errors):
    """n random commands in one byte string and their replies: a list of exact byte strings
    and ("prefix", p) for lines only known by their start."""
    keys = [b"p%d" % i for i in range(25)]
    model, req, exp = {}, [], []
    kinds = ["set", "add", "replace", "delete", "get", "get", "bogus", "chunk", "version"]
    if lsmtrie_errors:
        kinds += ["unsupported", "exptime"]
    for _ in range(n):
        kind, key = rng.choice(kinds), rng.choice(keys)
        noreply = rng.random() < 0.3
        nr = b" noreply" if noreply else b""
        if kind in ("set", "add", "replace"):
            data, flags = rng.randbytes(rng.randint(0, 40)), rng.choice([0, 7, U32])
            req.append(set_line(key, data, flags, kind.encode(), extra=nr))
            ok = kind == "set" or (kind == "add") == (key not in model)
            if ok:
                model[key] = (flags, data)
            if not noreply:
                exp.append(b"STORED\r\n" if ok else b"NOT_STORED\r\n")
        elif kind == "delete":
            req.append(b"delete %s%s\r\n" % (key, nr))
            if not noreply:
                exp.append(b"DELETED\r\n" if key in model else b"NOT_FOUND\r\n")
            model.pop(key, None)
        elif kind == "get":
            ks = rng.sample(keys, rng.randint(1, 5))
            req.append(b"get " + b" ".join(ks) + b"\r\n")
            exp.append(b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k, model[k][0], len(model[k][1]),
                                                               model[k][1])
                                for k in ks if k in model) + b"END\r\n")
        elif kind == "bogus":
            req.append(b"frobnicate %s\r\n" % key)
            exp.append(b"ERROR\r\n")
        elif kind == "chunk":
            req.append(b"set %s 0 0 3\r\nabcXY" % key)
            exp.append(b"CLIENT_ERROR bad data chunk\r\n")
        elif kind == "version":
            req.append(b"version\r\n")
            exp.append(version_line)
        elif kind == "unsupported":
            req.append(rng.choice([b"incr %s 1%s\r\n" % (key, nr), b"touch %s 10%s\r\n" % (key, nr),
                                   b"append %s 0 0 2%s\r\nzz\r\n" % (key, nr),
                                   b"cas %s 0 0 2 1%s\r\nzz\r\n" % (key, nr)]))
            exp.append(("prefix", b"CLIENT_ERROR"))
        else:  # a non-zero exptime: refused even with noreply, nothing stored
            req.append(set_line(key, b"exp", exptime=rng.choice([1, 3600, -1]), extra=nr))
            exp.append(("prefix", b"CLIENT_ERROR"))
    return req, exp, model


def test_pipelined_requests_are_answered_in_order(conn, server):
    c = conn
    rng = random.Random(11)
    req, exp, model = pipeline(rng, 600, c.version_line, server.kind == "lsmtrie")
    sender = threading.Thread(target=c.send, args=(b"".join(req),))  # a single write
    sender.start()
    try:
        for i, e in enumerate(exp):
            if isinstance(e, tuple):
                c.expect_line_prefix(e[1])
            else:
                c.expect(e)
    finally:
        sender.join(60)
    got = c.values(b"get", [b"p%d" % i for i in range(25)])
    assert {k: v[:2] for k, v in got.items()} == model
    c.in_step(c.version_line)


@pytest.mark.parametrize("kind, args", [("lsmtrie", []), ("lsmtrie", ["--threads", "1"]),
                                        ("lsmtrie", ["--threads", "4"]), ("memcached", [])])
def test_200_connections_at_once(fleet, tmp_path, kind, args):
    server = start(fleet, tmp_path, kind, *args)
    n, per = 200, 15
    conns = [server.conn() for _ in range(n)]
    errors = []
    try:
        for c in conns:  # all 200 open and answering at the same time
            c.version()
        barrier = threading.Barrier(n, timeout=60)

        def work(i, c):
            try:
                barrier.wait()
                mine = {b"c%d-%d" % (i, j): b"%d:%d:" % (i, j) * (j + 1) for j in range(per)}
                for k, v in mine.items():
                    c.set(k, v, i)
                for k, v in mine.items():
                    assert c.get(k) == (i, v)
                assert {k: x[1] for k, x in c.values(b"get", list(mine)).items()} == mine
            except BaseException as e:  # noqa: collected, reported below
                errors.append(f"connection {i}: {e}")

        ts = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        assert not any(t.is_alive() for t in ts), "connections still working after 300 s"
        assert not errors, "\n".join(errors[:5])
    finally:
        for c in conns:
            c.close()
    with server.conn() as c:
        got = c.values(b"get", [b"c%d-%d" % (i, per - 1) for i in range(n)])
        assert len(got) == n


def test_an_acknowledged_write_is_seen_by_every_connection(server):
    with server.conn() as a, server.conn() as b:
        for i in range(300):
            key, value = b"seen%d" % (i % 7), b"v%d" % i
            a.set(key, value, i)  # STORED has come back: b must see it at once
            assert b.get(key) == (i, value), (i, key)
            if i % 3 == 0:
                a.request(b"delete %s\r\n" % key, b"DELETED\r\n")
                assert b.get(key) is None, (i, key)


def test_concurrent_adds_of_one_key_store_it_once(server):
    n = 40
    conns = [server.conn() for _ in range(n)]
    try:
        for round_ in range(5):
            key = b"race%d" % round_
            barrier = threading.Barrier(n, timeout=60)
            replies = [None] * n

            def add(i):
                barrier.wait()
                conns[i].send(set_line(key, b"%d" % i, cmd=b"add"))
                replies[i] = conns[i].read_line()

            ts = [threading.Thread(target=add, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
            assert sorted(set(replies)) == [b"NOT_STORED\r\n", b"STORED\r\n"], replies
            winner = replies.index(b"STORED\r\n")
            assert replies.count(b"STORED\r\n") == 1, replies
            assert conns[0].get(key) == (0, b"%d" % winner)
    finally:
        for c in conns:
            c.close()


# --- lsmtrie's own rules --------------------------------------------------------------------

UNSUPPORTED = [b"cas k 0 0 2 12345\r\nzz\r\n", b"incr k 1\r\n", b"decr k 1\r\n",
               b"touch k 10\r\n", b"gat 10 k\r\n", b"gats 10 k\r\n", b"flush_all\r\n",
               b"flush_all 0\r\n", b"append k 0 0 2\r\nzz\r\n", b"prepend k 0 0 2\r\nzz\r\n"]


@pytest.mark.parametrize("noreply", [False, True])
def test_unsupported_commands_are_client_errors(lconn, noreply):
    c = lconn
    c.set(b"k", b"10", 3)
    for cmd in UNSUPPORTED:
        if noreply:
            line, _, rest = cmd.partition(b"\r\n")
            cmd = line + b" noreply\r\n" + rest
        c.send(cmd)
        c.expect_line_prefix(b"CLIENT_ERROR")
        c.in_step(c.version_line)  # the block of cas/append/prepend was read and discarded
        assert c.get(b"k") == (3, b"10"), cmd
    c.send(b"gats 10 k\r\nget k\r\n")  # gats and gat never answer with a value
    c.expect_line_prefix(b"CLIENT_ERROR")
    c.expect(b"VALUE k 3 2\r\n10\r\nEND\r\n")


@pytest.mark.parametrize("noreply", [b"", b" noreply"])
def test_a_nonzero_exptime_is_refused_and_nothing_stored(lconn, noreply):
    c = lconn
    c.set(b"present", b"old", 1)
    for cmd, key in ((b"set", b"absent"), (b"add", b"absent"), (b"replace", b"present"),
                     (b"set", b"present")):
        for exptime in (1, 3600, 2**31, -1):
            c.send(set_line(key, b"new", 2, cmd, exptime, extra=noreply))
            c.expect_line_prefix(b"CLIENT_ERROR")
            c.in_step(c.version_line)
    assert c.values(b"get", [b"absent", b"present"]) == {b"present": (1, b"old", None)}


def test_flags_beyond_32_bits_are_client_errors(lconn):
    c = lconn
    for flags in (b"4294967296", b"18446744073709551616", b"-1", b"x"):
        c.send(b"set f %s 0 1\r\nz\r\n" % flags)
        c.expect_line_prefix(b"CLIENT_ERROR")
        c.in_step(c.version_line)
    c.request(b"get f\r\n", b"END\r\n")
    c.request(set_line(b"f", b"z", U32), b"STORED\r\n")


def test_errors_are_sent_even_with_noreply(lconn):
    c = lconn
    for cmd in (b"set k 0 0 3 noreply\r\nabcXY", set_line(b"k" * 251, b"v", extra=b" noreply"),
                set_line(b"k\x01", b"v", extra=b" noreply"), b"delete " + b"k" * 251 + b" noreply\r\n",
                b"set k 0 0 %d noreply\r\n%s\r\n" % (MAX_VALUE + 1, b"x" * (MAX_VALUE + 1))):
        c.send(cmd)
        line = c.read_line(timeout=120)
        assert line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")), (show(cmd), line)
        c.in_step(c.version_line)
    c.request(b"get k\r\n", b"END\r\n")


def test_key_rules(lconn):
    c = lconn
    c.set(b"x" * 250, b"ok")
    for bad in (b"x" * 251, b"ctl\x01key", b"tab\tkey", b"\x7f" * 3 + b"\x1f"):
        for cmd in (set_line(bad, b"v"), set_line(bad, b"v", cmd=b"add"),
                    b"get " + bad + b"\r\n", b"get ok " + bad + b"\r\n",
                    b"gets " + bad + b"\r\n", b"delete " + bad + b"\r\n"):
            c.send(cmd)
            c.expect_line_prefix(b"CLIENT_ERROR")
            c.in_step(c.version_line)  # a set's block was discarded with it
    c.request(b"get " + b"x" * 250 + b"\r\n", b"VALUE %s 0 2\r\nok\r\nEND\r\n" % (b"x" * 250))


def test_wider_keys_and_control_characters_when_allowed(fleet, tmp_path):
    s = fleet.lsmtrie(tmp_path / "store", "--max-key-length", "1000", "--allow-control-keys")
    with s.conn() as c:
        vl = c.version()
        for key in (b"k" * 1000, b"ctl\x01\x02key", b"\x7f\x1f"):
            c.set(key, key[:10], 1)
            assert c.get(key) == (1, key[:10])
        c.send(b"get " + b"k" * 1001 + b"\r\n")
        c.expect_line_prefix(b"CLIENT_ERROR")
        c.in_step(vl)
    s.kill()
    s = fleet.lsmtrie(tmp_path / "store2", "--max-key-length", "65535")
    with s.conn() as c:
        key = b"w" * 60000
        c.set(key, b"wide")
        assert c.get(key) == (0, b"wide")


def test_a_line_too_long_is_refused_and_skipped(lconn):
    c = lconn
    c.request(b"a" * (70 * 1024) + b"\r\nversion\r\n",
              b"CLIENT_ERROR line too long\r\n" + c.version_line)
    c.request(b"get " + b"b " * 40000 + b"\r\nget x\r\n",
              b"CLIENT_ERROR line too long\r\nEND\r\n")
    # a long get under the limit is fine: 200 keys of 250 bytes on one line
    keys = [b"%03d" % i + b"k" * 247 for i in range(200)]
    for k in keys[::40]:
        c.set(k, k[:3])
    got = c.values(b"get", keys)
    assert {k: v[1] for k, v in got.items()} == {k: k[:3] for k in keys[::40]}


def test_read_only_server_refuses_every_write(fleet, tmp_path):
    store = tmp_path / "store"
    s = fleet.lsmtrie(store)
    with s.conn() as c:
        c.set(b"a", b"alpha", 2)
    assert s.stop() == 0
    s = fleet.lsmtrie(store, "--read-only")
    with s.conn() as c:
        vl = c.version()
        for nr in (b"", b" noreply"):
            for cmd in (set_line(b"a", b"new", extra=nr), set_line(b"b", b"new", extra=nr),
                        set_line(b"b", b"new", cmd=b"add", extra=nr),
                        set_line(b"a", b"new", cmd=b"replace", extra=nr),
                        b"delete a%s\r\n" % nr):
                c.send(cmd)
                line = c.expect_line_prefix(b"SERVER_ERROR")
                assert b"read-only" in line.lower() or b"read only" in line.lower(), line
                c.in_step(vl)
        assert c.values(b"get", [b"a", b"b"]) == {b"a": (2, b"alpha", None)}
    assert s.stop() == 0
    assert {k: mc_item(v) for k, v in stored(store).items()} == {b"a": (2, b"alpha")}


def test_a_raw_store_is_served_with_flags_zero(fleet, tmp_path):
    store = tmp_path / "raw"
    with lsmtrie.open(str(store), create=True) as db:
        db.put(b"made", b"by the API")
    s = fleet.lsmtrie(store)
    with s.conn() as c:
        vl = c.version()
        assert c.get(b"made") == (0, b"by the API")
        c.set(b"put", b"flags zero")
        for flags in (1, U32):
            c.send(set_line(b"refused", b"v", flags))
            c.expect_line_prefix(b"SERVER_ERROR")
            c.in_step(vl)
        c.request(b"get refused\r\n", b"END\r\n")
        c.set(b"big", b"b" * (MAX_VALUE + 4))  # raw values go up to 16 MiB
        assert c.get(b"big") == (0, b"b" * (MAX_VALUE + 4))
    assert s.stop() == 0
    assert stored(store) == {b"made": b"by the API", b"put": b"flags zero",
                             b"big": b"b" * (MAX_VALUE + 4)}


@pytest.mark.parametrize("value_format", ["raw", "memcached"])
def test_a_loaded_store_is_served(fleet, tmp_path, value_format):
    """A store made by `lsmtrie load`: raw values go out with flags 0 and other flags are
    refused; with --value-format memcached it keeps flags like a store serve made."""
    tsv = tmp_path / "in.tsv"
    tsv.write_bytes(b"".join(b"load%d\tvalue %d\n" % (i, i) for i in range(100)))
    store = tmp_path / "loaded"
    r = subprocess.run([sys.executable, "-m", "lsmtrie", "load", str(store), str(tsv),
                        "--value-format", value_format, "--no-progress"],
                       capture_output=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr
    s = fleet.lsmtrie(store)
    with s.conn() as c:
        vl = c.version()
        got = c.values(b"get", [b"load%d" % i for i in range(100)])
        assert got == {b"load%d" % i: (0, b"value %d" % i, None) for i in range(100)}
        c.send(set_line(b"load1", b"flagged", 5))
        if value_format == "memcached":
            c.expect(b"STORED\r\n")
            assert c.get(b"load1") == (5, b"flagged")
        else:
            c.expect_line_prefix(b"SERVER_ERROR")
            c.in_step(vl)
            assert c.get(b"load1") == (0, b"value 1")
    assert s.stop() == 0


def test_max_connections(fleet, tmp_path):
    s = fleet.lsmtrie(tmp_path / "store", "--max-connections", "4")
    conns = [s.conn() for _ in range(4)]
    try:
        vl = [c.version() for c in conns][0]
        # a fifth is not served while four are open: closed, an error line, or no answer
        with s.conn(timeout=2) as extra:
            try:
                extra.send(b"version\r\n")
                line = extra.read_line(timeout=2)
            except (AssertionError, OSError):
                line = None
            assert line is None or not line.startswith(b"VERSION"), line
        conns.pop().close()
        # once one goes, a new connection is served (allow the server to see the close)
        def served():
            try:
                with s.conn(timeout=2) as d:
                    d.send(b"version\r\n")
                    return d.read_line(timeout=2) == vl
            except (AssertionError, OSError):
                return False
        wait_for(served, 30, "a connection served after one of the four closed")
        for c in conns:
            c.in_step(vl)
    finally:
        for c in conns:
            c.close()


# --- real clients ---------------------------------------------------------------------------

def test_pymemcache(server):
    from pymemcache import serde
    from pymemcache.client.base import Client

    c = Client((HOST, server.port), serde=FlagSerde(), default_noreply=False, timeout=30,
               connect_timeout=30)
    try:
        for flags in (0, 1, 2**31, U32):
            assert c.set(b"f", (flags, b"v%d" % flags)) is True
            assert c.get(b"f") == (flags, b"v%d" % flags)
        items = {b"m%d" % i: (i, os.urandom(i)) for i in range(100)}
        assert c.set_many(items) == []
        assert c.get_many(list(items) + [b"absent"]) == items
        assert c.add(b"m1", (0, b"x")) is False and c.add(b"new", (2, b"n")) is True
        assert c.replace(b"gone", (0, b"x")) is False and c.replace(b"m1", (3, b"r")) is True
        assert c.get(b"m1") == (3, b"r") and c.get(b"new") == (2, b"n")
        value, cas = c.gets(b"m2")
        assert value == items[b"m2"] and int(cas) > 0
        assert c.delete(b"m2") is True and c.delete(b"m2") is False
        assert c.get(b"m2") is None
        st = c.stats()
        assert int(st[b"pid"]) == server.pid and int(st[b"cmd_set"]) >= 100
        assert c.version().strip()
    finally:
        c.close()
    p = Client((HOST, server.port), serde=serde.pickle_serde, default_noreply=False, timeout=30)
    try:
        for v in ("text é", 12345, 2**70, {"a": [1, 2.5, None]}, b"raw\r\n"):
            p.set(b"py", v)
            assert p.get(b"py") == v
    finally:
        p.close()


def mtool(name, server, *args, timeout=60):
    return subprocess.run([tool(name), f"--servers={server.addr}", *map(str, args)],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_libmemcached_tools(server, tmp_path):
    data = random.Random(3).randbytes(200_000) + b"\r\nEND\r\n"
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    r = mtool("memccp", server, "--flags=77", f)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.bin"
    r = mtool("memccat", server, f"--file={out}", "blob.bin")
    assert r.returncode == 0 and out.read_bytes() == data, (r, out.stat().st_size)
    with server.conn() as c:
        assert c.get(b"blob.bin") == (77, data)
    r = mtool("memcrm", server, "blob.bin")
    assert r.returncode == 0, r.stderr
    r = mtool("memccat", server, "blob.bin")
    assert r.returncode != 0 and r.stdout == b"", r
    r = mtool("memcstat", server)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"pid: {server.pid}" in out and "curr_connections" in out, out
