"""Servers the tests start and talk to, all on 127.0.0.1: free ports, processes started with a
bounded wait for their port and killed, nutcracker (twemproxy) from a configuration, `lsmtrie
serve` processes, and memcached-protocol reads and writes in chunks (pymemcache)."""

import os
import pathlib
import selectors
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHUNK = 200  # keys a get_many or set_many request


def tool(name: str) -> str:
    """The path of a command the tests need; the test fails (not skips) without it."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    if not path:
        pytest.fail(f"{name} is missing: install Debian's memcached, nutcracker and "
                    "libmemcached-tools (scripts/_env.sh does when apt-get can run)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepting(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> bool:
    """Polls until the server on port accepts a connection (True) or its process has exited or
    the time is up (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def start_server(command, what: str, tries: int = 5):
    """(process, port) of a server started by command(port) on a free port, once it accepts
    connections; a port taken meanwhile by someone else costs a retry."""
    for _ in range(tries):
        port = free_port()
        proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if accepting(port, proc):
            return proc, port
        stop(proc)
    pytest.fail(f"{what} did not start in {tries} tries")


def client(port: int):
    from pymemcache.client.base import Client
    return Client(("127.0.0.1", port), connect_timeout=5, timeout=10)


def start_nutcracker(conf: str, tmp_path):
    binary, template = tool("nutcracker"), pathlib.Path(conf).read_text()

    def command(port):
        pathlib.Path(conf).write_text(template.replace("LISTEN", str(port)))
        return [binary, "-c", conf, "-s", str(free_port()), "-a", "127.0.0.1",
                "-p", str(tmp_path / "nutcracker.pid"), "-o", str(tmp_path / "nutcracker.log")]
    return start_server(command, "nutcracker")


def get_all(port: int, keys) -> dict:
    """{key: value} of the keys the server on port has, asked CHUNK keys a request."""
    c, found = client(port), {}
    try:
        for lo in range(0, len(keys), CHUNK):
            found.update(c.get_many(keys[lo:lo + CHUNK]))
    finally:
        c.close()
    return found


def where_keys_landed(ports, keys) -> list[int | None]:
    """The index of the server holding each key (None: none), asking each directly."""
    at = {}
    for i, port in enumerate(ports):
        for k in get_all(port, keys):
            assert k not in at, f"{k!r} is on two servers"
            at[k] = i
    return [at.get(k) for k in keys]


def write_through(port: int, keys) -> None:
    c = client(port)
    try:
        for lo in range(0, len(keys), CHUNK):
            assert c.set_many({k: b"v" for k in keys[lo:lo + CHUNK]}, noreply=False) == []
    finally:
        c.close()


def _line_with(proc: subprocess.Popen, marker: bytes,
               seconds: float) -> tuple[bytes | None, bytes]:
    """(the first line of proc's stdout holding marker, or None when the process ended or the
    time is up first; what it printed until then)."""
    sel, buf = selectors.DefaultSelector(), b""
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(deadline - time.monotonic(), 0)):
                continue
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                break
            buf += data
            for line in buf.split(b"\n")[:-1]:
                if marker in line:
                    return line, buf
    finally:
        sel.close()
    return None, buf


def start_lsmtrie_serve(store, seconds: float = 30.0) -> tuple[subprocess.Popen, int]:
    """(process, port) of `python -m lsmtrie serve STORE --port 0`, from the line it prints
    once it listens ("lsmtrie serve: listening on HOST:PORT"), awaited at most `seconds`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lsmtrie", "serve", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    line, printed = _line_with(proc, b"listening on ", seconds)
    if line is None:
        stop(proc)
        pytest.fail(f"lsmtrie serve {store} did not listen within {seconds} s; it printed: "
                    f"{printed.decode(errors='replace')[-2000:]}")
    return proc, int(line.rsplit(b":", 1)[1])
