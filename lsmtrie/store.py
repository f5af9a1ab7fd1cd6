"""The store: `lsmtrie.open(path, ...)` (docs/design.md).

Writes go to a write-ahead log and a memtable in C; full memtables become HTables at the root of
the trie, and a background thread compacts nodes into their children while reads and writes go on.
Thread safety: a `Store` may be shared by threads; every call runs in C with the GIL released.
A `Store` must not be used in a process forked after it was opened (open it in the child).
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import numpy as np

from . import _binding as b
from ._packing import Packed, check_bytes, pack, pack_mask, pack_one
from .errors import ClosedError, CorruptionError, Error

ffi, lib = b.ffi, b.lib

LOG_CHUNK = 64 << 20  # put_many writes one atomic log record per chunk of this many bytes

_VBUF = 4096  # a single get's value buffer (per thread); larger values take a second call
_NONE = b.lib.LTR_NONE
_VERIFY_REPORT = 1 << 16  # bytes of verify()'s list of damaged files: a longer list is cut (the count is not)
_STREAM_MIN = 4096  # batch gets from this size on are streamed (get_many)
_MISSING = object()

_OPTIONS = {
    # name: (bit, type, default shown in docs)
    "table_buckets": (lib.LTR_OPT_TABLE_BUCKETS, int),
    "fill": (lib.LTR_OPT_FILL, float),
    "levels": (lib.LTR_OPT_LEVELS, int),
    "node_tables": (lib.LTR_OPT_NODE_TABLES, int),
    "bloom_bits_per_key": (lib.LTR_OPT_BLOOM_BITS, int),
    "memtable_bytes": (lib.LTR_OPT_MEMTABLE_BYTES, int),
    "hash_seed": (lib.LTR_OPT_HASH_SEED, int),
    "gc_threshold": (lib.LTR_OPT_GC_THRESHOLD, float),
    "value_format": (lib.LTR_OPT_VALUE_FORMAT, str),
}
# value_format: what the values are, for the tools that read them (the store never looks)
VALUE_FORMATS = {"raw": lib.LTR_VALUE_RAW, "memcached": lib.LTR_VALUE_MEMCACHED}


def _format_name(code: int) -> str:
    return next(name for name, c in VALUE_FORMATS.items() if c == code)


def _c_options(options: dict):
    o = ffi.new("ltr_store_opts *")
    lib.ltr_store_opts_default(o)
    for name, value in options.items():
        if name not in _OPTIONS:
            raise TypeError(f"unknown option {name!r}; options are {', '.join(sorted(_OPTIONS))}")
        bit, kind = _OPTIONS[name]
        if kind is str:
            if value not in VALUE_FORMATS:
                raise ValueError(f"option {name} must be one of {', '.join(VALUE_FORMATS)}, "
                                 f"got {value!r}")
            setattr(o, name, VALUE_FORMATS[value])
            o.given |= bit
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise TypeError(f"option {name} must be {kind.__name__}, not {type(value).__name__}")
        if value < 0 or (kind is int and value >= 2**63):
            raise ValueError(f"option {name} must not be negative, got {value}")
        setattr(o, name, value)
        o.given |= bit
    return o


def open(path, create: bool = True, metadata_path=None, sync: bool = False, read_only: bool = False,
         bulk: bool = False, checkpoint_interval: float = 1.0, max_open_files=None,
         working_memory=None, direct_io: bool = False, min_blob_size=None,
         **options) -> "Store":
    """Opens (or creates) the store at path.

    Args:
        path: the store's directory.
        create: create the store when it does not exist.
        metadata_path: a directory, ideally on a small fast device, for the BloomClusters (the
            last level's filters). A store created with one must always be opened with one.
        sync: default durability of writes: when True each write returns only once it is on disk.
        read_only: read from another process without taking the writer lock; the store is seen
            as it was when opened (later writes of a writer process are not visible).
        bulk: skip the write-ahead log. Writes are then durable only after `flush()` or
            `close()`; a crash before that loses them. For bulk loads.
        checkpoint_interval: seconds (0 to 3600) between checkpoints, which make background
            work (flushed and compacted tables) durable and let the files it replaced go. Writes
            are durable through the log meanwhile; a crash redoes what the last checkpoint did
            not record. Shorter: less to redo after a crash, more fsyncs. A background
            checkpoint also waits four times as long as the previous one took (so on a busy
            store they take about a fifth of the time), unless 1 GiB of log was written since.
            Not recorded.
        max_open_files: table files kept open at once (each table reads through its own
            descriptor). Beyond it, the tables read least lately are closed and reopened when
            next read. None (the default): the soft limit on open files (`ulimit -n`) at open
            less a quarter of it, or less 64 when that is more (at least 16); -1: no bound.
            Not recorded.
        working_memory: bytes the store's working memory may take: its memtables and the
            buffers of flushes and compactions (docs/design.md, "Memory"; what grows with the
            data, the filters above the last level and the cached HashMarks, is apart). The
            store then sizes its memtables (by bytes and by items: small items cost more index
            than bytes), its compaction windows and how many compactions run at once to fit.
            A cap below what default memtables need makes them smaller than a table: fewer
            bytes a flush, more writes. None (the default): memtables of memtable_bytes and two
            compactions at once (about 200 MB with the default options). Too small a value
            raises ValueError naming the least. Not recorded.
        direct_io: read the table files with O_DIRECT, bypassing the page cache (for data much
            larger than memory, where caching random buckets only evicts what is worth keeping):
            every get, batch, scan and verify reads tables into aligned buffers, a get costing
            one device read in the common case; the BloomClusters stay mapped (cached). Batched
            gets then keep `LTR_BATCH_READ_DEPTH` (32) reads in flight on as many threads. A
            file system that refuses O_DIRECT fails the open with InvalidArgumentError (never a
            silent fallback). Compactions still read their inputs through the cache. Not
            recorded: a store may be opened with and without it.
        min_blob_size: values of at least this many bytes (32 to 16 MiB) are written to value
            logs (`NNNNNNNN.vlog`) at put time, and the log, memtables and tables hold a 20-byte
            pointer in their place (docs/design.md "Value logs"): large values are written
            once instead of once per level, and tables hold small items only. A get of such a
            value costs one more read. 0 keeps every value in the tables. None (the default):
            4096, the values that cannot share a bucket. Not recorded: a store reads both kinds
            whatever it was opened with.
        **options: table_buckets, fill, levels, node_tables, bloom_bits_per_key, memtable_bytes,
            hash_seed, gc_threshold, value_format. They are recorded in the store; on reopen,
            an option given must equal the recorded value. levels=0 (the default) lets the trie
            deepen as the data grows (`stats()["levels"]` is its depth); 1..12 fixes the depth.
            value_format "raw" (the default) or "memcached" says what the values are, for the
            tools that read them: "memcached" values are memcached items, 4 bytes of flags
            (little-endian) and then the data, as `lsmtrie serve` keeps them
            (`lsmtrie.memcached_item`/`memcached_split`). The store itself never looks inside.

    Raises:
        LockError: another process has the store open for writing.
        StorageError: the directory cannot be used (FileNotFoundError's errno when create=False
            and there is no store).
    """
    return Store(path, create=create, metadata_path=metadata_path, sync=sync, read_only=read_only,
                 bulk=bulk, checkpoint_interval=checkpoint_interval,
                 max_open_files=max_open_files, working_memory=working_memory,
                 direct_io=direct_io, min_blob_size=min_blob_size, **options)


class Store:
    """A store opened with `lsmtrie.open`. See that function for the arguments."""

    def __init__(self, path, *, create=True, metadata_path=None, sync=False, read_only=False,
                 bulk=False, checkpoint_interval=1.0, max_open_files=None, working_memory=None,
                 direct_io=False, min_blob_size=None,
                 **options):
        o = _c_options(options)
        o.create, o.read_only, o.sync, o.use_log = bool(create), bool(read_only), bool(sync), not bulk
        o.direct_io = bool(direct_io)
        if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, (int, float)):
            raise TypeError("checkpoint_interval must be a number of seconds, not "
                            f"{type(checkpoint_interval).__name__}")
        o.checkpoint_interval = checkpoint_interval
        if max_open_files is not None:
            if isinstance(max_open_files, bool) or not isinstance(max_open_files, int):
                raise TypeError("max_open_files must be an int or None, not "
                                f"{type(max_open_files).__name__}")
            if max_open_files == 0 or max_open_files < -1 or max_open_files >= 2**63:
                raise ValueError("max_open_files must be -1 (no bound) or at least 1, got "
                                 f"{max_open_files}")
            o.max_open_files = max_open_files
        if working_memory is not None:
            if isinstance(working_memory, bool) or not isinstance(working_memory, int):
                raise TypeError("working_memory must be an int (bytes) or None, not "
                                f"{type(working_memory).__name__}")
            if working_memory < 1 or working_memory >= 2**63:
                raise ValueError(f"working_memory must be a positive number of bytes, got {working_memory}")
            o.working_memory = working_memory
        if min_blob_size is not None:
            if isinstance(min_blob_size, bool) or not isinstance(min_blob_size, int):
                raise TypeError("min_blob_size must be an int (bytes) or None, not "
                                f"{type(min_blob_size).__name__}")
            if min_blob_size < 0 or min_blob_size >= 2**32:
                raise ValueError(f"min_blob_size must be 0 or 32..{lib.LTR_MAX_VALUE} bytes, "
                                 f"got {min_blob_size}")
            o.min_blob_size = min_blob_size
        self.path = os.fspath(path)
        meta = ffi.new("char[]", os.fsencode(metadata_path)) if metadata_path is not None else ffi.NULL
        o.metadata_path = meta
        out = ffi.new("ltr_store **")
        b.check(lib.ltr_store_open(os.fsencode(path), o, out))
        self._h = b.Handle(out[0], self._close_handle, f"store {self.path}")
        self._pid = os.getpid()
        self._forks = b.forks[0]
        self._tls = threading.local()
        self._close_rc = 0
        eff = ffi.new("ltr_store_opts *")
        lib.ltr_store_options(out[0], eff)
        self.options = {name: getattr(eff, name) for name in _OPTIONS}
        self.options["value_format"] = _format_name(eff.value_format)
        self.read_only, self.bulk, self.sync = bool(read_only), bool(bulk), bool(sync)
        self.direct_io = bool(direct_io)

    # ---- handle ----

    def _close_handle(self, ptr):
        # A child forked while the store was open must not close it: its background threads
        # do not exist there, and the log and lock belong to the parent. The child just drops it.
        if os.getpid() == self._pid:
            self._close_rc = lib.ltr_store_close(ptr)

    def _use(self):
        if self._forks != b.forks[0] and self._pid != os.getpid():
            raise Error("this Store was opened in another process (before a fork); open it again here")
        return self._h

    def close(self) -> None:
        """Waits for running calls, stops background work, makes acknowledged writes durable and
        releases the lock. Idempotent; later calls raise ClosedError."""
        if self._h.closed:
            return
        self._h.close()
        b.check(self._close_rc)

    @property
    def closed(self) -> bool:
        return self._h.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<lsmtrie.Store {self.path!r}{' closed' if self.closed else ''}>"

    # ---- writes ----

    def _write(self, k: Packed, v: Packed, mask, sync) -> None:
        sync = -1 if sync is None else int(bool(sync))
        mptr = b.ptr_u8(mask) if mask is not None else ffi.NULL
        with self._use() as h:
            b.check(lib.ltr_store_write(h, b.ptr_u8(k.data), b.ptr_i64(k.offsets), k.data.size,
                                        b.ptr_u8(v.data), b.ptr_i64(v.offsets), v.data.size,
                                        mptr, k.n, sync))

    def put(self, key, value, *, sync: bool | None = None) -> None:
        """Stores value under key (both bytes-like). sync overrides the store's default."""
        self._write(pack_one(key, "key"), pack_one(value, "value"), None, sync)

    def __setitem__(self, key, value) -> None:
        self.put(key, value)

    def delete(self, key, *, sync: bool | None = None) -> None:
        """Deletes key (a tombstone; deleting an absent key is not an error)."""
        self._write(pack_one(key, "key"), pack_one(b"", "value"), np.ones(1, np.uint8), sync)

    def __delitem__(self, key) -> None:
        self.delete(key)

    def put_many(self, keys, values, *, sync: bool | None = None) -> None:
        """Stores many items: lists of bytes, 2-D uint8 arrays or (data, offsets) pairs. Written
        as one atomic log record per 64 MiB chunk; write_batch() is atomic as a whole."""
        k, v = pack(keys, "keys"), pack(values, "values")
        if k.n != v.n:
            raise ValueError(f"got {k.n} keys but {v.n} values")
        for lo, hi in _chunks(k, v):
            self._write(_slice(k, lo, hi), _slice(v, lo, hi), None, sync)

    def write_batch(self, *, sync: bool | None = None) -> "WriteBatch":
        """A batch applied atomically (all or nothing, across a crash too) when the `with`
        block ends without an exception; discarded otherwise."""
        return WriteBatch(self, sync)

    # ---- reads ----

    def _out(self):
        """The per-thread value buffer of single gets (a get allocates nothing else), and a cffi
        buffer over it, a slice of which is the value's bytes (cheaper than ffi.unpack: a get
        of a 100-byte value from the memtable took 1.08 µs against 1.12)."""
        try:
            return self._tls.out
        except AttributeError:
            vbuf = ffi.new("char[]", _VBUF)
            self._tls.out = (vbuf, ffi.buffer(vbuf))
            return self._tls.out

    def get(self, key, default=None):
        """The value of key, or default. The path of every single get, kept short (Python's own
        work per call is about a quarter of a lookup's): the other forms call it."""
        if type(key) is bytes:  # cffi passes a bytes object's buffer as it is
            kp = key
        else:
            key = check_bytes(key, "key")
            kp = ffi.from_buffer(key)
        try:
            vbuf, view = self._tls.out
        except AttributeError:
            vbuf, view = self._out()
        if self._forks != b.forks[0]:
            self._use()
        handle = self._h  # `with handle` written out (see Handle): two method calls fewer
        users = handle.users
        users.append(None)
        try:
            h = handle.ptr
            if h is None:
                raise handle.closed_error()
            n = lib.ltr_store_get(h, kp, len(key), vbuf, _VBUF)
            while n > _VBUF and n > len(vbuf):  # larger than the buffer: again with room for it
                vbuf = ffi.new("char[]", n)
                view = ffi.buffer(vbuf)
                n = lib.ltr_store_get(h, kp, len(key), vbuf, n)
        finally:
            users.pop()
        if n >= 0:
            return view[:n]
        if n == _NONE:
            return default
        b.check(n)

    def __getitem__(self, key) -> bytes:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def get_many_packed(self, keys) -> tuple[np.ndarray, bytes, np.ndarray]:
        """(status int8[n] of Lookup values, value bytes, value offsets int64[n+1]); large
        batches run on two cores, or on up to 32 threads when their reads wait for the device
        (with direct_io, the keys that must read a table run on 32 threads, each with a read in
        flight)."""
        return b.get_many_packed(lib.ltr_store_get_many, self._use(), pack(keys, "keys"))

    def get_many(self, keys) -> list:
        """Values in key order; None where a key is absent. From 512 keys on, two threads look
        the keys up (up to 32 while batches wait for the device: pages not in the page cache),
        and from 4,096 this one makes the values' bytes objects meanwhile (with direct_io, 32
        threads each keep a read in flight; in smaller batches, only the keys that must read a
        table go to them, the others are answered first on this thread)."""
        k = pack(keys, "keys")
        if k.n >= _STREAM_MIN:
            return b.get_many_streamed(self._use(), k)
        return b.get_many_list(lib.ltr_store_get_many, self._use(), k)[1]

    def _scan_batches(self, max_items: int = 65536):
        """Every live item once, as C batches (ltr_items, each valid until the next is asked
        for): for callers that hand the batches on to C whole (`lsmtrie dump`)."""
        out = ffi.new("ltr_sscan **")
        with self._use() as h:
            b.check(lib.ltr_store_scan_new(h, out))
        scan = b.Handle(out[0], lib.ltr_store_scan_free, "scan")
        items = ffi.new("ltr_items *")
        try:
            while True:
                with self._use(), scan as sc:
                    b.check(lib.ltr_store_scan_next(sc, max_items, items))
                if items.n == 0:
                    return
                yield items
        finally:
            scan.close()
            lib.ltr_items_free(items)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live item once (newest version, no deleted keys), in no particular order, as
        of the call."""
        for items in self._scan_batches():
            n = items.n
            keys = bytes(ffi.buffer(items.keys.data, items.keys.len))
            values = bytes(ffi.buffer(items.values.data, items.values.len))
            ko = np.frombuffer(ffi.buffer(items.koffs.data, 8 * (n + 1)), dtype=np.int64).tolist()
            vo = np.frombuffer(ffi.buffer(items.voffs.data, 8 * (n + 1)), dtype=np.int64).tolist()
            for i in range(n):
                yield keys[ko[i]:ko[i + 1]], values[vo[i]:vo[i + 1]]

    def __iter__(self):
        return (k for k, _ in self.items())

    # ---- maintenance ----

    def flush(self) -> None:
        """Writes the memtable out and waits until no flush or compaction is pending. Retries
        background work that failed (for example after disk space was freed)."""
        with self._use() as h:
            b.check(lib.ltr_store_flush(h))

    def verify(self) -> dict:
        """Reads every table and BloomCluster of the store whole and checks it: each table
        file's footer and trailer as they are on disk now, each bucket page, overflow record
        and cluster unit against its checksum, each table's item count against its footer, and
        each item's place in the trie (its key's hash prefix is its node's). It sees the state
        as of the call; reads, writes and compactions go on meanwhile. The manifest and the log
        were checked when the store opened; memtables are not files.

        Returns counts of what was found sound: `tables`, `items` (shadowed versions and
        tombstones included), `table_bytes`, `clusters`, `cluster_bytes`. A damaged file does
        not stop the check: every one is named, a line each, in the `CorruptionError` raised
        at the end. An I/O error stops it (`StorageError`)."""
        st = ffi.new("ltr_verify_stats *")
        report = ffi.new("char[]", _VERIFY_REPORT)
        with self._use() as h:
            rc = lib.ltr_store_verify(h, st, report, _VERIFY_REPORT)
        if rc == lib.LTR_ECORRUPT and st.bad_files:
            lines = ffi.string(report).decode("utf-8", "replace")
            raise CorruptionError(f"{st.bad_files} damaged file(s) in {self.path}:\n{lines}")
        b.check(rc)
        return {"tables": st.tables, "items": st.items, "table_bytes": st.table_bytes,
                "clusters": st.clusters, "cluster_bytes": st.cluster_bytes}

    def stats(self) -> dict:
        """Counters, all counted inside the engine. Byte counters persist across reopens.

        Made from the C struct ltr_store_stats field by field (_stats_dict), so a counter added
        there appears here: per-level arrays as lists over the store's levels, the `written_*`
        byte counters under `bytes_written_by_kind` (compaction by the level written to), and
        `write_amplification`, bytes written over user bytes."""
        st = ffi.new("ltr_store_stats *")
        with self._use() as h:
            lib.ltr_store_stats_get(h, st)
        return _stats_dict(st)


_PER_LEVEL = lib.LTR_MAX_LEVELS


def _stats_dict(st) -> dict:
    """ltr_store_stats as a dict (Store.stats)."""
    levels = st.levels
    out, by_kind = {}, {}
    for name, field in ffi.typeof("ltr_store_stats").fields:
        value = getattr(st, name)
        if name == "levels":
            continue
        if field.type.kind == "array":
            value = list(value)[:levels] if field.type.length == _PER_LEVEL else list(value)
        if name.startswith("written_"):
            kind = name[len("written_"):]
            by_kind[kind] = ({lvl: value[lvl] for lvl in range(1, levels)}
                             if isinstance(value, list) else value)
        else:
            out[name] = value
    out["levels"] = levels  # in use: a growing trie's depth now
    user = out["user_bytes_written"]
    out["write_amplification"] = out["bytes_written"] / user if user else None
    out["bytes_written_by_kind"] = by_kind
    return out


class WriteBatch:
    """Collects puts and deletes; applied atomically by the `with` block's normal exit."""

    def __init__(self, store: Store, sync):
        self._store, self._sync = store, sync
        self._keys, self._values, self._deleted = [], [], []
        self._done = False

    def put(self, key, value) -> None:
        self._keys.append(bytes(check_bytes(key, "key")))
        self._values.append(bytes(check_bytes(value, "value")))
        self._deleted.append(False)

    def delete(self, key) -> None:
        self._keys.append(bytes(check_bytes(key, "key")))
        self._values.append(b"")
        self._deleted.append(True)

    def __len__(self):
        return len(self._keys)

    def write(self) -> None:
        """Applies the batch now (the `with` block calls this)."""
        if self._done:
            raise Error("this batch was already written")
        self._done = True
        if self._keys:
            k, v = pack(self._keys, "keys"), pack(self._values, "values")
            self._store._write(k, v, pack_mask(self._deleted, k.n), self._sync)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.write()
        self._keys = self._values = self._deleted = []


def _slice(p: Packed, lo: int, hi: int) -> Packed:
    offs = p.offsets[lo:hi + 1]
    return Packed(p.data, offs, hi - lo)


def _chunks(k: Packed, v: Packed):
    """Index ranges of at most LOG_CHUNK bytes of keys and values (at least one item each)."""
    sizes = (k.offsets - k.offsets[0]) + (v.offsets - v.offsets[0])
    lo = 0
    while lo < k.n:
        hi = int(np.searchsorted(sizes, sizes[lo] + LOG_CHUNK, side="right")) - 1
        hi = max(hi, lo + 1)
        yield lo, min(hi, k.n)
        lo = min(hi, k.n)
