"""The road not taken, measured: memcached's get and set served by Python (asyncio, with uvloop
when installed) over the Python API, for bench/serve.py --python-baseline.

Issue 25 asks that the server's design be chosen by measurement. This is the best plain-Python
design: one event loop, a protocol object per connection parsing its buffer, every request a
call of Store.get or Store.put (pipelined sets are not batched). It serves only what memaslap
sends (get, set) and is not part of the package.

    python bench/serve_python.py STORE PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import lsmtrie
from lsmtrie.serve import open_store


class Memcached(asyncio.Protocol):
    def __init__(self, db):
        self.db = db
        self.buf = b""

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                break
            parts = self.buf[:nl].split()
            if parts and parts[0] == b"set":
                n = int(parts[4])
                end = nl + 2 + n + 2
                if len(self.buf) < end:
                    break
                flags = int(parts[2])
                self.db.put(parts[1], lsmtrie.memcached_item(self.buf[nl + 2:nl + 2 + n], flags))
                out.append(b"STORED\r\n")
                self.buf = self.buf[end:]
                continue
            if parts and parts[0] == b"get":
                for k in parts[1:]:
                    v = self.db.get(k)
                    if v is not None:
                        flags, data = lsmtrie.memcached_split(v)
                        out.append(b"VALUE %s %d %d\r\n%s\r\n" % (k, flags, len(data), data))
                out.append(b"END\r\n")
            else:
                out.append(b"ERROR\r\n")
            self.buf = self.buf[nl + 2:]
        if out:
            self.t.write(b"".join(out))


async def main(path: str, port: int) -> None:
    with open_store(path) as db:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Memcached(db), "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
