"""lsmtrie.Server in-process: the store's value formats behind the protocol, the server's own
counters and limits, and its life beside the store's (the protocol itself: test_serve.py)."""

import socket
import time

import pytest

import lsmtrie
from lsmtrie import serve
from lsmtrie._loader import Loader

DEADLINE = 10.0  # seconds any single exchange may take


def exchange(sock, data: bytes, until: bytes, lines: int = 1) -> bytes:
    """Sends data, then reads until the reply ends with `until` and holds at least `lines`
    CRLFs (bounded in time)."""
    sock.sendall(data)
    out, end = b"", time.monotonic() + DEADLINE
    sock.settimeout(DEADLINE)
    while not out.endswith(until) or out.count(b"\r\n") < lines:
        assert time.monotonic() < end, f"no {until!r} after {DEADLINE} s: got {out!r}"
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed after {out!r}"
        out += chunk
    return out


@pytest.fixture
def served(tmp_path):
    """(connect, server, db) over a new store that serve.open_store creates."""
    opened = []

    def start(path=None, **kw):
        db = serve.open_store(str(path or tmp_path / "db"), read_only=kw.pop("store_read_only", False))
        srv = lsmtrie.Server(db, "127.0.0.1", 0, **kw)
        opened.append((srv, db))

        def connect():
            return socket.create_connection(srv.address, timeout=DEADLINE)
        return connect, srv, db

    yield start
    for srv, db in reversed(opened):
        srv.close()
        db.close()


def test_a_store_serve_creates_keeps_flags(served, tmp_path):
    connect, srv, db = served()
    assert db.options["value_format"] == "memcached"
    with connect() as s:
        assert exchange(s, b"set k 4294967295 0 3\r\nabc\r\n", b"\r\n") == b"STORED\r\n"
        assert exchange(s, b"get k\r\n", b"END\r\n") == b"VALUE k 4294967295 3\r\nabc\r\nEND\r\n"
    assert lsmtrie.memcached_split(db.get(b"k")) == (2**32 - 1, b"abc")


def test_a_raw_store_is_served_with_flags_zero_and_refuses_others(served, tmp_path):
    with lsmtrie.open(str(tmp_path / "raw")) as db:
        db.put(b"old", b"value")
    connect, srv, db = served(tmp_path / "raw")
    assert db.options["value_format"] == "raw"
    with connect() as s:
        assert exchange(s, b"get old\r\n", b"END\r\n") == b"VALUE old 0 5\r\nvalue\r\nEND\r\n"
        reply = exchange(s, b"set new 1 0 1\r\nx\r\n", b"\r\n")
        assert reply.startswith(b"SERVER_ERROR") and b"flags must be 0" in reply
        assert exchange(s, b"set new 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    assert db.get(b"new") == b"x"  # raw: the bytes as sent


def test_a_value_too_short_for_flags_is_an_error_not_a_wrong_answer(served):
    connect, srv, db = served()
    db.put(b"bad", b"ab")  # written past the protocol, without flags
    db.put(b"good", lsmtrie.memcached_item(b"v", 9))
    with connect() as s:
        reply = exchange(s, b"get good bad\r\n", b"\r\n", lines=3)
        assert reply.startswith(b"VALUE good 9 1\r\nv\r\nSERVER_ERROR")
        assert b"no memcached item" in reply
        assert exchange(s, b"version\r\n", b"\r\n").startswith(b"VERSION 1.6.0-lsmtrie-")


def test_a_load_into_a_store_of_items_adds_flags_zero(served, tmp_path):
    db = serve.open_store(str(tmp_path / "db"))
    loader = Loader(db)
    loader.add([b"a", b"b"], [b"x" * 5, b""])
    loader.finish()
    loader.close()
    assert db.get(b"a") == lsmtrie.memcached_item(b"xxxxx")
    with pytest.raises(lsmtrie.ItemTooLargeError, match="memcached items"):
        loader = Loader(db)
        try:
            loader.add([b"c"], [b"x" * lsmtrie.MAX_VALUE_BYTES])
        finally:
            loader.close()
    db.close()
    connect, srv, db = served(tmp_path / "db")
    with connect() as s:
        assert exchange(s, b"get a b\r\n", b"END\r\n") == (
            b"VALUE a 0 5\r\nxxxxx\r\nVALUE b 0 0\r\n\r\nEND\r\n")


def test_counters(served):
    connect, srv, db = served()
    with connect() as s:
        exchange(s, b"set a 0 0 1\r\n1\r\nget a b\r\ndelete a\r\ndelete a\r\nbogus\r\n", b"ERROR\r\n")
        st = srv.stats()
        assert st["curr_connections"] == 1 and st["total_connections"] == 1
        assert (st["cmd_set"], st["cmd_get"], st["get_hits"], st["get_misses"]) == (1, 2, 1, 1)
        assert (st["delete_hits"], st["delete_misses"], st["errors"]) == (1, 1, 1)
        # (bytes_written is counted once send() returns, which may be after the client has the
        # answer: it is checked below, from the stats the same connection asks for next)
        assert st["bytes_read"] > 0
        stats = exchange(s, b"stats\r\n", b"END\r\n").decode()
    lines = dict(line.split(" ", 2)[1:] for line in stats.splitlines() if line.startswith("STAT "))
    assert lines["cmd_set"] == "1" and lines["lsmtrie_memtable_items"] == "1"  # the tombstone
    assert int(lines["lsmtrie_user_bytes_written"]) > 0
    assert int(lines["bytes_written"]) > 0  # the answers before this one
    assert lines["lsmtrie_blob_bytes"] == lines["lsmtrie_blob_live_bytes"] == "0"  # no value log


def test_connections_over_the_limit_are_told_and_closed(served):
    connect, srv, db = served(max_connections=2)
    a, b = connect(), connect()
    exchange(a, b"version\r\n", b"\r\n")
    exchange(b, b"version\r\n", b"\r\n")
    with connect() as c:
        c.settimeout(DEADLINE)
        assert c.recv(100) == b"SERVER_ERROR too many open connections\r\n"
        assert c.recv(100) == b""
    a.close()
    end = time.monotonic() + DEADLINE  # the server notices the close on its own time
    while srv.stats()["curr_connections"] > 1:
        assert time.monotonic() < end
        time.sleep(0.01)
    with connect() as c:
        assert exchange(c, b"version\r\n", b"\r\n").startswith(b"VERSION")
    assert srv.stats()["rejected_connections"] == 1
    b.close()


def test_a_read_only_store_needs_a_read_only_server(tmp_path):
    with lsmtrie.open(str(tmp_path / "db")) as db:
        db.put(b"k", b"v")
    with lsmtrie.open(str(tmp_path / "db"), read_only=True) as db:
        with pytest.raises(lsmtrie.InvalidArgumentError, match="serve it read-only"):
            lsmtrie.Server(db, "127.0.0.1", 0)
        with lsmtrie.Server(db, "127.0.0.1", 0, read_only=True) as srv:
            with socket.create_connection(srv.address, timeout=DEADLINE) as s:
                reply = exchange(s, b"delete k\r\n", b"\r\n")
                assert reply.startswith(b"SERVER_ERROR read-only")
                assert exchange(s, b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"


def test_closing_the_server_closes_its_connections_and_frees_the_store(served, tmp_path):
    db = serve.open_store(str(tmp_path / "db"))
    srv = lsmtrie.Server(db, "127.0.0.1", 0, threads=3)
    s = socket.create_connection(srv.address, timeout=DEADLINE)
    exchange(s, b"set a 0 0 1\r\n1\r\n", b"STORED\r\n")
    s.sendall(b"set b 0 0 10\r\n12345")  # half a value (arrived or not): never stored
    srv.close()
    assert not srv.running
    s.settimeout(DEADLINE)
    assert s.recv(100) == b""
    s.close()
    srv.close()  # idempotent
    db.close()
    with lsmtrie.open(str(tmp_path / "db"), read_only=True) as db:
        assert db.get(b"a") == lsmtrie.memcached_item(b"1") and db.get(b"b") is None


def test_bad_options(tmp_path):
    with serve.open_store(str(tmp_path / "db")) as db:
        with pytest.raises(lsmtrie.InvalidArgumentError, match="max_key_length"):
            lsmtrie.Server(db, "127.0.0.1", 0, max_key_length=70000)
        with pytest.raises(lsmtrie.InvalidArgumentError, match="threads"):
            lsmtrie.Server(db, "127.0.0.1", 0, threads=1000)
        with lsmtrie.Server(db, "127.0.0.1", 0) as srv:  # the port is taken now
            with pytest.raises(OSError):
                lsmtrie.Server(db, "127.0.0.1", srv.address[1])


def test_a_get_whose_reply_would_pass_256_mib_ends_with_an_error(served):
    connect, srv, db = served()
    big = (16 << 20) - 4  # the largest value of a store of items
    db.put(b"big", lsmtrie.memcached_item(b"v" * big))
    with connect() as s:
        s.sendall(b"get" + b" big" * 17 + b"\r\n")
        head = b"VALUE big 0 %d\r\n" % big
        error = b"SERVER_ERROR reply too large: ask for fewer keys at once\r\n"
        total, tail, end = 0, b"", time.monotonic() + 60
        s.settimeout(DEADLINE)
        while not tail.endswith(error):  # the reply streams by; only its end is kept
            assert time.monotonic() < end, "the reply never ended"
            chunk = s.recv(1 << 20)
            assert chunk, "closed"
            total += len(chunk)
            tail = (tail + chunk)[-len(error):]
        # 15 values fit under 256 MiB, the 16th would not: no END, the error ends the reply
        assert total == 15 * (len(head) + big + 2) + len(error)
        assert exchange(s, b"version\r\n", b"\r\n").startswith(b"VERSION")
