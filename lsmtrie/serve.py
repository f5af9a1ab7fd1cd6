"""`lsmtrie serve`: a store served over the memcached text protocol (docs/scale-out.md).

The requests are parsed and answered in C (native/src/serve.c, mc_proto.c) by event-loop
threads that never take the GIL; Python opens the store and the listening socket, starts the
loops and waits for SIGTERM or SIGINT, then closes the store cleanly.

A store that `serve` creates keeps memcached items: each value is the item's 32-bit flags
(4 bytes, little-endian) and then its data (recorded as value_format="memcached", so every tool
knows). A store made without it (the Python API, the loader without --value-format memcached)
is served too: its values go out with flags 0, and a set with other flags is refused.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import signal
import socket
import struct
import sys

from . import _binding as b
from . import errors
from . import store

ffi, lib = b.ffi, b.lib

_FLAGS = struct.Struct("<I")
PROTOCOL_VERSION = "1.6.0"  # the memcached whose text protocol this speaks
_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def memcached_item(data: bytes, flags: int = 0) -> bytes:
    """The stored form of a memcached item (what a value_format="memcached" store holds)."""
    return _FLAGS.pack(flags) + bytes(data)


def memcached_split(value: bytes) -> tuple[int, bytes]:
    """(flags, data) of a value from a value_format="memcached" store."""
    if len(value) < _FLAGS.size:
        raise errors.CorruptionError(f"a value of {len(value)} bytes is no memcached item")
    return _FLAGS.unpack_from(value)[0], bytes(value[_FLAGS.size:])


class Server:
    """A running server: event-loop threads answering on a socket it bound. The store must
    stay open while the server runs; close() stops the server (not the store).

    Args:
        db: an open Store (read-only when read_only is set).
        host, port: where to listen; port 0 lets the system choose (see `address`).
        threads: event loops (default 2); max_connections: open at once (default 1024);
        max_key_length: longest key (default 250, memcached's; up to 65535);
        allow_control_keys: accept keys with control characters;
        read_only: refuse every write.
    """

    def __init__(self, db, host: str = "127.0.0.1", port: int = 11211, *, threads: int = 0,
                 max_connections: int = 0, max_key_length: int = 0,
                 allow_control_keys: bool = False, read_only: bool = False):
        from . import __version__

        self._db = db
        self._sock = socket.create_server((host, port), backlog=1024)
        self.address = self._sock.getsockname()[:2]
        o = ffi.new("ltr_server_opts *")
        o.threads, o.max_connections = threads, max_connections
        o.max_key_length, o.allow_control_keys, o.read_only = max_key_length, allow_control_keys, read_only
        # libmemcached (memcstat, ...) reads a memcached version number first: the protocol's
        self._version = ffi.new("char[]", f"{PROTOCOL_VERSION}-lsmtrie-{__version__}".encode())
        o.version = self._version
        out = ffi.new("ltr_server **")
        self._use = db._use()  # held while the server runs: the store cannot close under it
        ptr = self._use.__enter__()
        try:
            b.check(lib.ltr_server_start(ptr, self._sock.fileno(), o, out))
        except BaseException:
            self._release()
            raise
        self._h = out[0]

    def _release(self) -> None:
        if self._use is not None:
            self._use.__exit__(None, None, None)
            self._use = None
        self._sock.close()

    @property
    def running(self) -> bool:
        return self._h is not None and bool(lib.ltr_server_running(self._h))

    def stats(self) -> dict:
        """The server's counters (connections, commands, hits, bytes)."""
        st = ffi.new("ltr_server_stats *")
        lib.ltr_server_stats_get(self._h, st)
        return {name: getattr(st, name) for name, _ in ffi.typeof("ltr_server_stats").fields}

    def stop(self) -> None:
        """Asks the loops to end (they close their connections); returns at once."""
        if self._h is not None:
            lib.ltr_server_stop(self._h)

    def close(self) -> None:
        """Stops the server and waits for it; raises the error that ended it, if one did."""
        if self._h is None:
            return
        h, self._h = self._h, None
        lib.ltr_server_stop(h)
        rc = lib.ltr_server_wait(h)
        err = None
        try:
            b.check(rc)
        except errors.Error as e:
            err = e
        lib.ltr_server_free(h)
        self._release()
        if err is not None:
            raise err

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path, *, read_only: bool = False, sync: bool = False, metadata_path=None):
    """The store at path, created when missing (keeping memcached items) unless read_only."""
    try:
        return store.open(path, create=False, read_only=read_only, sync=sync,
                          metadata_path=metadata_path)
    except errors.StorageError as e:
        if e.errno != errno.ENOENT or read_only:
            raise
    return store.open(path, create=True, sync=sync, metadata_path=metadata_path,
                      value_format="memcached")


def _raise_file_limit(want: int) -> None:
    """Connections are descriptors: lift the soft limit toward the hard one (as memcached does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def serve(path, host: str = "127.0.0.1", port: int = 11211, *, read_only: bool = False,
          sync: bool = False, metadata_path=None, threads: int = 0, max_connections: int = 1024,
          max_key_length: int = 0, allow_control_keys: bool = False, ready=None) -> None:
    """Serves the store at path until SIGTERM or SIGINT (or the server fails), then closes
    the store. ready(address) is called once it listens. Call from the main thread."""
    _raise_file_limit(max_connections + 4096)
    # The loops inherit the blocked mask, so a signal waits for the main thread's sigtimedwait;
    # a thread started before (numpy's, say) may still take one: the handlers then note it, and
    # the wait below sees the note within its timeout. Either way no signal kills the process
    # mid-close.
    stop = []
    handlers = {sig: signal.signal(sig, lambda *_: stop.append(1)) for sig in _SIGNALS}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        with open_store(path, read_only=read_only, sync=sync, metadata_path=metadata_path) as db:
            with Server(db, host, port, threads=threads, max_connections=max_connections,
                        max_key_length=max_key_length, allow_control_keys=allow_control_keys,
                        read_only=read_only) as srv:
                if ready is not None:
                    ready(srv.address)
                while srv.running and not stop and signal.sigtimedwait(_SIGNALS, 0.2) is None:
                    pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        for sig, h in handlers.items():
            signal.signal(sig, h)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", metavar="STORE", help="the store's directory (created when missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11211,
                   help="TCP port (default 11211; 0: any free one, printed when listening)")
    p.add_argument("--read-only", action="store_true", help="open the store read-only; refuse writes")
    p.add_argument("--metadata-path", default=None, metavar="P",
                   help="the directory of the store's BloomClusters, if it has one")
    p.add_argument("--sync", action="store_true",
                   help="fsync every write before acknowledging it")
    p.add_argument("--threads", type=int, default=0, help="event-loop threads (default 2)")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="connections open at once (default 1024)")
    p.add_argument("--max-key-length", type=int, default=0,
                   help="longest key in bytes (default 250, memcached's; at most 65535)")
    p.add_argument("--allow-control-keys", action="store_true",
                   help="accept keys holding control characters")


def run_command(args) -> int:
    """`lsmtrie serve`: 0 after a clean stop; 1 when it cannot start or fails (one line on
    stderr). Usage errors (2) are argparse's."""
    for name in ("port", "threads", "max_connections", "max_key_length"):
        if getattr(args, name) < 0:
            print(f"lsmtrie serve: --{name.replace('_', '-')} must not be negative", file=sys.stderr)
            return 2

    def ready(address):
        print(f"lsmtrie serve: listening on {address[0]}:{address[1]}", flush=True)

    try:
        serve(args.store, args.host, args.port, read_only=args.read_only, sync=args.sync,
              metadata_path=args.metadata_path, threads=args.threads,
              max_connections=args.max_connections, max_key_length=args.max_key_length,
              allow_control_keys=args.allow_control_keys, ready=ready)
    except (errors.Error, OSError, ValueError, OverflowError) as e:
        print(f"lsmtrie serve: {e}", file=sys.stderr)
        return 1
    return 0
