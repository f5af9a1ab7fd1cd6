"""The engines `lsmtrie report` measures, behind one small interface (used by
lsmtrie/_report_run.py, in a process per engine and size).

Each engine loads the workload's chunks (lsmtrie/workload.py) and settles, counts the bytes it
wrote by kind with its own counters where it has them, and reads keys back one at a time and in
batches. `OPTIONS` and `DURABILITY` state every option that differs from the engine's defaults;
the report prints them.
"""

from __future__ import annotations

import re
import threading
import time

from . import workload

ENGINES = ("lsmtrie", "lsmtrie-bulk", "lsmtrie-load", "leveldb", "rocksdb")
# the package each engine needs beyond lsmtrie's own, and the extra that installs it
PACKAGES = {"leveldb": "plyvel", "rocksdb": "rocksdict"}
EXTRA = "pip install 'lsmtrie[report]'"

DURABILITY = {
    "lsmtrie": "its write-ahead log on, no fsync per write (sync=False)",
    "lsmtrie-bulk": "no log (bulk=True): writes are durable at flush() and close()",
    "lsmtrie-load": "no log (the loader's journal): the load is durable when it returns",
    "leveldb": "its log on, no fsync per write (sync=False)",
    "rocksdb": "its WAL on, no fsync per write (default WriteOptions)",
}

OPTIONS = {
    "lsmtrie": "lsmtrie.open(path, sync=False) with default options (32 MB tables, 16-bit "
               "Bloom filters, a trie that deepens with the data); put_many of each chunk; "
               "settled by flush()",
    "lsmtrie-bulk": "as lsmtrie, with bulk=True",
    "lsmtrie-load": "lsmtrie.load(path, chunks, expected_items=N) into a store created with "
                    "the loader's own plan for N items of this size; default memory (1 GiB)",
    "leveldb": "plyvel.DB(path, create_if_missing=True, bloom_filter_bits=10), otherwise "
               "LevelDB's defaults (4 MiB write buffer, 2 MiB files, 4 KiB blocks, Snappy, "
               "8 MiB block cache); one WriteBatch per chunk (a Python call per item); the "
               "memtable written out by compact_range over an empty key range, then settled "
               "when leveldb.stats stayed unchanged for 3 s",
    "rocksdb": "rocksdict Options(raw_mode=True), create_if_missing, statistics enabled, "
               "block-based tables with a 10-bit full Bloom filter, otherwise RocksDB's "
               "defaults (64 MiB write buffer, level compaction, Snappy where built in); one "
               "WriteBatch per chunk (a Python call per item); settled by flush(), then until "
               "no compaction is pending or running",
}


class Engine:
    """One engine's load and reads. `load` runs the whole load phase; `track` (the caller's
    tracker) gets `items` as chunks go in and `phase` = "settle" when the last one has."""
    counters_while_loading = True  # False: counters() works only after the load

    def __init__(self, key_size: int, value_size: int):
        self.key_size, self.value_size = key_size, value_size
        self.db = None
        self.lock = threading.Lock()  # a sampling thread reads counters() while it loads

    def load(self, path: str, chunks, track) -> None:
        self.open_writer(path)
        for keys, values in chunks:
            self.write(keys, values)
            track.chunk_done(len(keys))
        track.phase = "settle"
        track.mark("close", self.settle())
        track.final_counters = self.counters()
        self.close()

    def sample_counters(self) -> dict | None:
        """counters() from another thread: None unless the engine is open for its load."""
        if not self.counters_while_loading:
            return None
        with self.lock:
            return None if self.db is None else self.counters()

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None

    def get_many(self, keys: list) -> list:
        return self.db.get_many(keys)

    def get(self, key: bytes):
        return self.db.get(key)


class Lsmtrie(Engine):
    bulk = False

    def open_writer(self, path):
        from . import store
        self.db = store.open(path, create=True, sync=False, bulk=self.bulk)

    def write(self, keys, values):
        self.db.put_many(keys, values)

    def settle(self):
        self.db.flush()
        return None  # settled now

    def counters(self):
        return lsmtrie_kinds(self.db.stats())

    def open_reader(self, path):
        from . import store
        self.db = store.open(path, create=False, read_only=True)


class LsmtrieBulk(Lsmtrie):
    bulk = True


class LsmtrieLoad(Lsmtrie):
    counters_while_loading = False

    def load(self, path, chunks, track):
        from . import store
        from ._loader import plan_options
        from .bulk import load
        n = track.n
        # the plan lsmtrie.load makes from --generate's sizes; an iterator of batches tells it
        # the item count only
        planned = plan_options(n * (self.key_size + self.value_size + 4), n)
        store.open(path, create=True, **planned).close()

        def counted():
            for keys, values in chunks:
                yield keys, values
                track.chunk_done(len(keys))
            track.phase = "settle"  # the loader builds and installs the tables now

        load(path, counted(), expected_items=n)
        track.mark("close")  # (load() closed the store: its close is in the settling)
        with store.open(path, create=False, read_only=True) as db:
            track.final_counters = lsmtrie_kinds(db.stats())

    def counters(self):
        return None


def lsmtrie_kinds(st: dict) -> dict:
    """Store.stats()'s bytes written by kind, flat: compaction by the level written to."""
    out = {}
    for kind, value in st["bytes_written_by_kind"].items():
        if isinstance(value, dict):
            for level, b in sorted(value.items()):
                out[f"compaction L{level}"] = b
        else:
            out[kind] = value
    return {k: v for k, v in out.items() if v}


class RocksDB(Engine):
    def _options(self):
        from rocksdict import BlockBasedOptions, Options
        opt = Options(raw_mode=True)
        opt.create_if_missing(True)
        opt.enable_statistics()
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)
        opt.set_block_based_table_factory(table)
        return opt

    def open_writer(self, path):
        from rocksdict import Rdict
        self.opt = self._options()
        self.db = Rdict(path, self.opt)

    def write(self, keys, values):
        from rocksdict import WriteBatch
        wb = WriteBatch(raw_mode=True)
        for k, v in zip(*workload.as_bytes(keys, values)):
            wb.put(k, v)
        self.db.write(wb)

    def settle(self, timeout: float = 6 * 3600):
        self.db.flush()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pending = self.db.property_int_value("rocksdb.compaction-pending") or 0
            running = self.db.property_int_value("rocksdb.num-running-compactions") or 0
            flushes = self.db.property_int_value("rocksdb.num-running-flushes") or 0
            if not (pending or running or flushes):
                return None  # (within the half second of a poll)
            time.sleep(0.5)
        raise RuntimeError("RocksDB's compactions did not settle")

    TICKERS = {"wal": "rocksdb.wal.bytes", "flush": "rocksdb.flush.write.bytes",
               "compaction": "rocksdb.compact.write.bytes"}

    def counters(self):
        text = self.opt.get_statistics() or ""
        out = {}
        for kind, ticker in self.TICKERS.items():
            m = re.search(rf"^{re.escape(ticker)} COUNT : (\d+)", text, re.M)
            out[kind] = int(m.group(1)) if m else 0
        return out

    def open_reader(self, path):
        from rocksdict import AccessType, Rdict
        self.db = Rdict(path, self._options(), access_type=AccessType.read_only())

    def get_many(self, keys):
        return self.db.get(keys)  # a list: RocksDB's MultiGet


class LevelDB(Engine):
    def open_writer(self, path):
        import plyvel
        self.db = plyvel.DB(path, create_if_missing=True, bloom_filter_bits=10)
        self.log = LevelDBLog()

    def write(self, keys, values):
        with self.db.write_batch(sync=False) as wb:
            for k, v in zip(*workload.as_bytes(keys, values)):
                wb.put(k, v)
        self.log.add_batch(len(keys), self.key_size, self.value_size)

    def settle(self, quiet: float = 3.0, timeout: float = 6 * 3600):
        """LevelDB has no flush and no property telling a pending compaction: a compaction
        over an empty key range writes the memtable out (and compacts nothing), then the
        background work is taken as done once leveldb.stats (updated at the end of every
        compaction) has not changed for `quiet` seconds; a compaction here moves about 25 MB,
        well under a second."""
        self.db.compact_range(start=b"", stop=b"")
        end, last, since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < end:
            now = self.db.get_property(b"leveldb.stats")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return since  # settled when the last compaction ended
            time.sleep(0.5)
        raise RuntimeError("LevelDB's compactions did not settle")

    def counters(self):
        out = {"wal (computed)": self.log.bytes}
        text = self.db.get_property(b"leveldb.stats").decode()
        for level, write_mb in leveldb_level_writes(text).items():
            out[f"into L{level}"] = write_mb
        return {k: v for k, v in out.items() if v}

    def open_reader(self, path):
        import plyvel
        self.db = plyvel.DB(path, bloom_filter_bits=10)

    def get_many(self, keys):
        get = self.db.get
        return [get(k) for k in keys]  # LevelDB has no multi-get


def leveldb_level_writes(stats: str) -> dict:
    """Bytes written into each level, from leveldb.stats' Write(MB) column (whole MB: LevelDB
    prints no finer): compactions and memtable flushes together (LevelDB places a flushed
    memtable in level 0, 1 or 2 and counts it there)."""
    out = {}
    for line in stats.splitlines():
        f = line.split()
        if len(f) == 6 and f[0].isdigit():
            out[int(f[0])] = int(float(f[5]) * 1048576)
    return out


class LevelDBLog:
    """The bytes LevelDB's log writer writes for our batches, computed (LevelDB counts none):
    each batch is one record of a 12-byte header and, per put, a tag, two varint lengths, the
    key and the value; records are cut into fragments with 7-byte headers in 32 KiB blocks, a
    block's tail under 7 bytes padded."""
    BLOCK, HEADER = 32768, 7

    def __init__(self):
        self.bytes, self.offset = 0, 0

    def add_batch(self, count: int, key_size: int, value_size: int) -> None:
        left = 12 + count * (1 + varint_len(key_size) + key_size + varint_len(value_size) +
                             value_size)
        first = True
        while left > 0 or first:
            first = False
            room = self.BLOCK - self.offset
            if room < self.HEADER:
                self.bytes += room
                self.offset, room = 0, self.BLOCK
            fragment = min(left, room - self.HEADER)
            self.bytes += self.HEADER + fragment
            self.offset += self.HEADER + fragment
            left -= fragment


def varint_len(x: int) -> int:
    n = 1
    while x >= 128:
        x >>= 7
        n += 1
    return n


CLASSES = {"lsmtrie": Lsmtrie, "lsmtrie-bulk": LsmtrieBulk, "lsmtrie-load": LsmtrieLoad,
           "leveldb": LevelDB, "rocksdb": RocksDB}


def make(name: str, key_size: int, value_size: int) -> Engine:
    return CLASSES[name](key_size, value_size)


def missing_package(name: str) -> str | None:
    """The package an engine needs that does not import here, or None."""
    package = PACKAGES.get(name)
    if package is None:
        return None
    try:
        __import__(package)
    except ImportError:
        return package
    return None
