"""Processes and a raw client for the tests of `lsmtrie serve` (tests/test_serve.py,
tests/test_serve_twemproxy.py).

`Fleet` starts servers as subprocesses and kills whatever is still running when the test ends:
`lsmtrie serve` (with `--port 0`, its port read from the one line it prints, under a deadline),
Debian's `memcached` (the reference the shared parts of the tests are checked against) and
`nutcracker` (twemproxy). `Conn` is a client on a raw socket: it sends bytes and reads exact
replies under a timeout, and its failures show the exchange (what was sent, what came back).
Everything listens and connects on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # a Python process on a shared, busy machine
REPLY_TIMEOUT = 30.0
LISTENING = re.compile(rb"lsmtrie serve: listening on (\S+):(\d+)\n")
# The largest value of a store that keeps flags (16 MiB less the 4 bytes of flags)
MAX_VALUE = 16 * 1024 * 1024 - 4


def env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def tool(name):
    """The path of an installed program; a clear failure (not a skip) when it is missing."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)
    if path is None:
        pytest.fail(f"{name} is not installed: the serve tests need Debian's memcached, "
                    f"nutcracker and libmemcached-tools (apt-get install memcached nutcracker "
                    f"libmemcached-tools)", pytrace=False)
    return path


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def show(data: bytes, limit=400) -> str:
    """bytes for a failure message, the middle of long ones left out."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit // 2]!r} ...({len(data) - limit} bytes)... {data[-limit // 2:]!r}"


class Server:
    """A server process listening on HOST:port; kind is "lsmtrie", "memcached" or
    "nutcracker"."""

    def __init__(self, kind, proc, port, stderr_path, args):
        self.kind, self.proc, self.port = kind, proc, port
        self.stderr_path, self.args = stderr_path, args
        self.stdout_rest = b""

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def conn(self, timeout=REPLY_TIMEOUT):
        return Conn(self.port, timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=60.0) -> int:
        """Sends sig and waits for the exit; the exit status (a kill after the timeout fails the
        test)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"{self.kind} did not exit within {timeout}s of signal {sig!r}; "
                        f"stderr: {self.stderr()}")
        if self.proc.stdout is not None:
            self.stdout_rest = self.proc.stdout.read()
            self.proc.stdout.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()


def read_line_until(fd, deadline):
    """One line from a pipe (its bytes up to and with the newline), b"" at end of file,
    None at the deadline."""
    got = b""
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1)  # one byte at a time: nothing after the line is taken
        if not chunk:
            return got
        got += chunk
    return got


def connectable(port, timeout=1.0):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class Fleet:
    """Starts servers for one test and kills every one still running at its end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.count = 0

    def _stderr_file(self, kind):
        self.count += 1
        return os.path.join(self.tmp, f"{kind}-{self.count}.stderr")

    def spawn_lsmtrie(self, store, *args, port=0, host=HOST):
        """`python -m lsmtrie serve` started, not waited for: (Popen, stderr path, argv)."""
        argv = [sys.executable, "-m", "lsmtrie", "serve", str(store), "--host", host,
                "--port", str(port), *map(str, args)]
        err = self._stderr_file("lsmtrie")
        with open(err, "wb") as ef:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=ef, stdin=subprocess.DEVNULL,
                                    env=env(), cwd=self.tmp)
        self.procs.append(proc)
        return proc, err, argv

    def lsmtrie(self, store, *args, port=0, timeout=START_TIMEOUT) -> Server:
        """A running `lsmtrie serve STORE --host 127.0.0.1 --port PORT ARGS`, once it printed
        its listening line."""
        proc, err, argv = self.spawn_lsmtrie(store, *args, port=port)
        line = read_line_until(proc.stdout.fileno(), time.monotonic() + timeout)
        m = LISTENING.fullmatch(line or b"")
        if m is None:
            status = proc.poll()
            proc.kill()
            proc.wait(30)
            with open(err, "rb") as f:
                stderr = f.read().decode(errors="replace")
            pytest.fail(f"{' '.join(argv[1:])}: no listening line within {timeout}s "
                        f"(stdout {line!r}, exit status {status}); stderr: {stderr}")
        host, got_port = m.group(1).decode(), int(m.group(2))
        assert host == HOST, f"listening on {host}, asked for {HOST}"
        if port:
            assert got_port == port, f"listening on port {got_port}, asked for {port}"
        assert got_port > 0
        return Server("lsmtrie", proc, got_port, err, argv)

    def _until_listening(self, kind, argv, port, timeout):
        err = self._stderr_file(kind)
        with open(err, "wb") as ef:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=ef,
                                    stdin=subprocess.DEVNULL, cwd=self.tmp)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None, err  # the port was taken meanwhile, or a bad configuration
            if connectable(port, 0.5):
                return Server(kind, proc, port, err, argv), err
            time.sleep(0.02)
        proc.kill()
        proc.wait(30)
        pytest.fail(f"{kind} did not listen on {port} within {timeout}s")

    def memcached(self, *args, port=0, timeout=START_TIMEOUT) -> Server:
        """Debian's memcached (TCP only) on port, or on a free loopback port."""
        exe = tool("memcached")
        user = ["-u", "root"] if os.geteuid() == 0 else []
        for _ in range(1 if port else 5):
            p = port or free_port()
            argv = [exe, "-l", HOST, "-p", str(p), "-U", "0", *user, *map(str, args)]
            server, err = self._until_listening("memcached", argv, p, timeout)
            if server is not None:
                return server
        with open(err) as f:
            pytest.fail(f"memcached would not start: {f.read()}")

    def nutcracker(self, conf_text, timeout=START_TIMEOUT) -> Server:
        """twemproxy on a free loopback port with the pool configuration conf_text, in which
        {listen} stands for its address."""
        exe = tool("nutcracker")
        for attempt in range(5):
            port, stats = free_port(), free_port()
            conf = os.path.join(self.tmp, f"nutcracker-{self.count + 1}.yml")
            with open(conf, "w") as f:
                f.write(conf_text.format(listen=f"{HOST}:{port}"))
            log = os.path.join(self.tmp, f"nutcracker-{self.count + 1}.log")
            argv = [exe, "-c", conf, "-s", str(stats), "-a", HOST, "-o", log, "-v", "6"]
            server, err = self._until_listening("nutcracker", argv, port, timeout)
            if server is not None:
                server.conf, server.log = conf, log
                return server
        with open(log, errors="replace") as f:
            pytest.fail(f"nutcracker would not start: {f.read()[-2000:]}")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                pass
            if p.stdout is not None and not p.stdout.closed:
                p.stdout.close()


class Closed(AssertionError):
    pass


class Conn:
    """A client connection on a raw socket. Replies are read under a deadline; a mismatch
    fails with the last bytes sent and what came back."""

    def __init__(self, port, host=HOST, timeout=REPLY_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.sent = b""  # the last requests, for failure messages

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sent = (self.sent + data)[-4096:]
        self.sock.sendall(data)

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete reply ({what}) within {self.timeout}s; "
                                 f"sent {show(self.sent)}, received {show(self.buf)}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            chunk = None
        except ConnectionResetError:
            chunk = b""
        if chunk == b"":
            raise Closed(f"connection closed by the server ({what}); sent {show(self.sent)}, "
                         f"received {show(self.buf)}")
        if chunk:
            self.buf += chunk

    def read_exact(self, n, timeout=None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline, f"{n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self, timeout=None) -> bytes:
        """One reply line with its \\r\\n."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            self._fill(deadline, "a line")
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def expect(self, expected: bytes, timeout=None):
        """The next reply bytes are exactly `expected`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < len(expected) and expected.startswith(self.buf):
            self._fill(deadline, f"expecting {show(expected, 120)}")
        got = self.buf[:len(expected)]
        if got != expected:
            raise AssertionError(f"sent {show(self.sent)}\nexpected {show(expected)}\n"
                                 f"received {show(self.buf)}")
        self.buf = self.buf[len(expected):]

    def request(self, data: bytes, expected: bytes, timeout=None):
        self.send(data)
        self.expect(expected, timeout)

    def expect_line_prefix(self, prefix: bytes, timeout=None) -> bytes:
        line = self.read_line(timeout)
        assert line.startswith(prefix), (f"sent {show(self.sent)}\nexpected a line starting "
                                         f"{prefix!r}, received {show(line + self.buf)}")
        return line

    def values(self, cmd=b"get", keys=(), timeout=None) -> dict:
        """`get`/`gets` of keys: {key: (flags, data, cas or None)}; the reply must be
        well-formed and end in END."""
        self.send(cmd + b" " + b" ".join(keys) + b"\r\n")
        out = {}
        while True:
            line = self.read_line(timeout)
            if line == b"END\r\n":
                return out
            parts = line[:-2].split(b" ")
            assert parts[0] == b"VALUE" and len(parts) in (4, 5), \
                f"sent {show(self.sent)}: reply line {show(line)}"
            key, flags, n = parts[1], int(parts[2]), int(parts[3])
            cas = int(parts[4]) if len(parts) == 5 else None
            assert (cas is not None) == (cmd == b"gets"), f"{cmd!r} reply line {line!r}"
            assert key in keys and key not in out, f"sent {show(self.sent)}: key {key!r} again"
            data = self.read_exact(n + 2, timeout)
            assert data.endswith(b"\r\n"), f"a value of {n} bytes not ended by \\r\\n: {show(data)}"
            out[key] = (flags, data[:-2], cas)

    def get(self, key: bytes):
        """(flags, data) of key, or None."""
        got = self.values(b"get", [key]).get(key)
        return None if got is None else got[:2]

    def set(self, key: bytes, data: bytes, flags=0, cmd=b"set"):
        self.request(b"%s %s %d 0 %d\r\n%s\r\n" % (cmd, key, flags, len(data), data),
                     b"STORED\r\n")

    def version(self) -> bytes:
        self.send(b"version\r\n")
        line = self.expect_line_prefix(b"VERSION ")
        assert len(line) > len(b"VERSION \r\n"), line
        return line

    def stats(self) -> dict:
        self.send(b"stats\r\n")
        out = {}
        while True:
            line = self.read_line()
            if line == b"END\r\n":
                return out
            parts = line[:-2].decode().split(" ", 2)
            assert parts[0] == "STAT" and len(parts) == 3, f"stats reply line {line!r}"
            out[parts[1]] = parts[2]

    def in_step(self, version_line: bytes):
        """The connection still answers in order: version, then a miss, and nothing before."""
        self.request(b"version\r\nget in-step-probe\r\n", version_line + b"END\r\n")

    def closed_by_server(self, timeout=None) -> bool:
        """True when the server closes the connection (with nothing more sent) in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while True:
                self._fill(deadline, "waiting for the close")
                if self.buf:
                    return False
        except Closed:
            return not self.buf
        except AssertionError:
            return False


@pytest.fixture
def fleet(tmp_path):
    """A Fleet whose processes are killed when the test ends (import it into a test module)."""
    f = Fleet(str(tmp_path))
    yield f
    f.close()


class FlagSerde:
    """pymemcache serde whose values are (flags, bytes) pairs, sent with those flags."""

    def serialize(self, key, value):
        return value[1], value[0]

    def deserialize(self, key, value, flags):
        return (flags, value)


def wait_for(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it is true; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not so within {timeout}s")
        time.sleep(interval)
