"""HTables: immutable hash tables of 4 KB buckets (docs/format/htable.md).

`HTableBuilder` stages items and writes one table; `HTable` reads one. Both wrap the C core;
every per-item step (hashing, placement, filters, migration, lookups) runs in C over whole
batches. Thread safety: an `HTable` may be shared by threads (lookups run in parallel with the
GIL released); an `HTableBuilder` must be used by one thread at a time.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Iterator

import numpy as np

from . import _binding as b
from ._packing import check_bytes, pack, pack_mask, pack_one
from .errors import ClosedError, InvalidArgumentError

ffi, lib = b.ffi, b.lib


class Lookup(enum.IntEnum):
    """The three answers a table gives for a key."""

    ABSENT = 0
    FOUND = 1
    DELETED = 2


def _int_option(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")


def _c_defaults():
    """The core's option defaults (LTR_DEFAULT_* in lsmtrie.h, fill included)."""
    o = ffi.new("ltr_table_opts *")
    lib.ltr_table_opts_default(o)
    return o


_DEFAULTS = _c_defaults()


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """Geometry and tuning of one HTable.

    Attributes:
        buckets: number of 4096-byte buckets, 1..65535 (8191 makes a 32 MB table).
        fill: fraction of the bucket payload a table accepts before it is full (0 < fill <= 1).
        bloom_bits_per_key: bits of per-bucket Bloom filter per item, 0 (none) to 64.
        hash_seed: seed of the key digest, 0..2**32-1; recorded in the table.
        max_cached_records: cap on the migration records a reader keeps in memory.
        sync: fsync the table and its directory when it is written.
    """

    buckets: int = _DEFAULTS.buckets
    fill: float = _DEFAULTS.fill
    bloom_bits_per_key: int = _DEFAULTS.bloom_bits_per_key
    hash_seed: int = 0
    max_cached_records: int = _DEFAULTS.max_cached_records
    sync: bool = True

    def __post_init__(self):
        _int_option("buckets", self.buckets, 1, lib.LTR_MAX_BUCKETS)
        if not isinstance(self.fill, (int, float)) or isinstance(self.fill, bool):
            raise TypeError(f"fill must be a number, not {type(self.fill).__name__}")
        if not 0 < self.fill <= 1:
            raise ValueError(f"fill must be in (0, 1], got {self.fill}")
        _int_option("bloom_bits_per_key", self.bloom_bits_per_key, 0, 64)
        _int_option("hash_seed", self.hash_seed, 0, 2**32 - 1)
        _int_option("max_cached_records", self.max_cached_records, 0, 2**31 - 1)
        if not isinstance(self.sync, bool):
            raise TypeError("sync must be a bool")

    def _c(self):
        o = ffi.new("ltr_table_opts *")
        o.buckets, o.fill = self.buckets, float(self.fill)
        o.bloom_bits_per_key, o.hash_seed = self.bloom_bits_per_key, self.hash_seed
        o.max_cached_records, o.sync = self.max_cached_records, int(self.sync)
        return o


@dataclasses.dataclass(frozen=True)
class BuildStats:
    """What writing one table did."""

    items: int
    tombstones: int
    data_bytes: int
    file_bytes: int
    migrated_items: int
    overflow_items: int
    records: int
    cached_records: int
    max_chain: int
    overloaded_buckets: int
    expected_reads: float

    @classmethod
    def _from_c(cls, st) -> "BuildStats":
        return cls(**{f.name: getattr(st, f.name) for f in dataclasses.fields(cls)})


def _options(options: TableOptions | None, kwargs) -> TableOptions:
    if options is not None and kwargs:
        raise TypeError("pass either options or keyword options, not both")
    return options if options is not None else TableOptions(**kwargs)


class HTableBuilder:
    """Stages items for one HTable, then writes it with `finish(path)`.

    A later item with the same key replaces the earlier one. Items are admitted until the fill
    budget (``fill * buckets * 4080`` bytes of encoded items) is reached; `add` then returns False
    and `add_many` returns how many leading items it took, so nothing is ever dropped silently.
    An empty builder takes its first item whatever its size, so every valid item fits somewhere.
    """

    def __init__(self, options: TableOptions | None = None, **kwargs):
        self.options = _options(options, kwargs)
        out = ffi.new("ltr_hbuild **")
        b.check(lib.ltr_hbuild_new(self.options._c(), out))
        self._h = b.Handle(out[0], lib.ltr_hbuild_free, "HTableBuilder")

    def add_many(self, keys, values, deleted=None) -> int:
        """Stages items in order; returns how many were taken (fewer than given when full).
        `deleted[i]` true makes item i a tombstone. On error (types, sizes) nothing is staged."""
        k = pack(keys, "keys")
        v = pack(values, "values")
        if k.n != v.n:
            raise ValueError(f"got {k.n} keys but {v.n} values")
        return self._add(k, v, pack_mask(deleted, k.n))

    def _add(self, k, v, mask) -> int:
        taken = ffi.new("size_t *")
        mptr = b.ptr_u8(mask) if mask is not None else ffi.NULL
        with self._h as h:
            b.check(lib.ltr_hbuild_add(h, b.ptr_u8(k.data), b.ptr_i64(k.offsets), k.data.size,
                                       b.ptr_u8(v.data), b.ptr_i64(v.offsets), v.data.size,
                                       mptr, k.n, taken))
        return taken[0]

    def add(self, key, value) -> bool:
        """Stages one item; False (and nothing staged) when the table is full."""
        return self._add(pack_one(key, "key"), pack_one(value, "value"), None) == 1

    def delete(self, key) -> bool:
        """Stages a tombstone for key; False when the table is full."""
        return self._add(pack_one(key, "key"), pack_one(b"", "value"), np.ones(1, np.uint8)) == 1

    @property
    def items(self) -> int:
        with self._h as h:
            return lib.ltr_hbuild_items(h)

    @property
    def data_bytes(self) -> int:
        with self._h as h:
            return lib.ltr_hbuild_data_bytes(h)

    @property
    def capacity(self) -> int:
        with self._h as h:
            return lib.ltr_hbuild_capacity(h)

    def finish(self, path) -> BuildStats:
        """Places, filters and balances the items and writes the table to path durably
        (temporary file, fsync, rename, directory fsync). Raises DiskFullError or StorageError
        on I/O failure, leaving neither path nor a temporary file behind."""
        st = ffi.new("ltr_build_stats *")
        with self._h as h:
            b.check(lib.ltr_hbuild_finish(h, os.fsencode(path), st))
        return BuildStats._from_c(st)

    def finish_at(self, path, offset: int, max_bytes: int) -> BuildStats:
        """Writes the table into bytes [offset, offset + max_bytes) of the existing file at
        path instead of a file of its own, and fdatasyncs the file (with the default sync
        option). offset must be a multiple of 4096; the file grows when the table passes its
        end, and nothing else in it changes. The stats' file_bytes is the table's length,
        which HTable(path, offset=, length=) needs to open it. ValueError, naming the size
        needed, before anything is written when the table needs more than max_bytes; the
        builder can then be finished again."""
        _int_option("offset", offset, 0, 2**62)
        _int_option("max_bytes", max_bytes, 0, 2**62)
        st = ffi.new("ltr_build_stats *")
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            with self._h as h:
                rc = b.check(lib.ltr_hbuild_finish_at(h, fd, os.fsencode(path), offset,
                                                      max_bytes, st))
        finally:
            os.close(fd)
        if rc == lib.LTR_EAGAIN:
            raise ValueError(f"the table needs {st.file_bytes} bytes, over max_bytes={max_bytes}")
        return BuildStats._from_c(st)

    def close(self) -> None:
        self._h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_htable(path, keys, values, deleted=None, *, options=None, **kwargs) -> BuildStats:
    """Writes one HTable holding exactly the given items; ValueError if they do not all fit."""
    with HTableBuilder(options, **kwargs) as builder:
        k, v = pack(keys, "keys"), pack(values, "values")
        if k.n != v.n:
            raise ValueError(f"got {k.n} keys but {v.n} values")
        taken = builder._add(k, v, pack_mask(deleted, k.n))
        if taken < k.n:
            raise ValueError(
                f"only {taken} of {k.n} items fit in one table of {builder.options.buckets} "
                f"buckets at fill {builder.options.fill}; use more buckets or split the items"
            )
        return builder.finish(path)


_INFO_FIELDS = ("buckets", "hash_seed", "bloom_bits_per_key", "bloom_probes", "items", "tombstones",
                "data_bytes", "file_bytes", "overflow_items", "records", "cached_records",
                "cached_record_bytes", "filter_bytes", "overflow_index_bytes")
_STAT_FIELDS = ("lookups", "found", "deleted", "bucket_reads", "overflow_reads",
                "filter_negatives", "filter_false_positives")


class HTable:
    """A reader of one HTable: a file of its own, or an extent of a larger file.

    Args:
        path: the table file, or the file holding it at offset.
        offset, length: where the table lies in path (from HTableBuilder.finish_at: offset a
            multiple of 4096, length its stats' file_bytes); by default all of path.
        load_filters: keep the per-bucket Bloom filters in memory (the store skips them for
            last-level tables, whose filters live in BloomClusters).
        use_mmap: read buckets through a read-only mapping advised MADV_RANDOM (default) or
            with pread. Either way only the buckets a lookup needs are touched.
        max_cached_records: migration records kept in memory; None keeps the builder's choice.
        direct_io: read with O_DIRECT into aligned buffers, bypassing the page cache (never
            mapped: use_mmap is then ignored); not for a table at an offset. A file system that
            refuses O_DIRECT raises InvalidArgumentError.
    """

    def __init__(self, path, *, offset=None, length=None, load_filters=True, use_mmap=True,
                 max_cached_records=None, direct_io=False):
        flags = ((0 if load_filters else lib.LTR_OPEN_NO_FILTERS) | (0 if use_mmap else lib.LTR_OPEN_PREAD)
                 | (lib.LTR_OPEN_DIRECT if direct_io else 0))
        cached = -1 if max_cached_records is None else max_cached_records
        _int_option("max_cached_records", cached, -1, 2**31 - 1)
        if (offset is None) != (length is None):
            raise TypeError("offset and length go together: give both or neither")
        out = ffi.new("ltr_htable **")
        self.path = os.fspath(path)
        if offset is None:
            b.check(lib.ltr_htable_open(os.fsencode(path), flags, cached, out))
            close = lib.ltr_htable_close
        else:
            _int_option("offset", offset, 0, 2**62)
            _int_option("length", length, 0, 2**62)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                b.check(lib.ltr_htable_open_at(fd, os.fsencode(path), offset, length, flags,
                                               cached, out))
            except BaseException:
                os.close(fd)
                raise

            def close(ptr, fd=fd):  # the table first: it reads through fd until then
                lib.ltr_htable_close(ptr)
                os.close(fd)
        self._h = b.Handle(out[0], close, f"HTable {self.path}")
        info = ffi.new("ltr_table_info *")
        lib.ltr_htable_info(out[0], info)
        self._info = {name: getattr(info, name) for name in _INFO_FIELDS}

    @property
    def info(self) -> dict:
        """Geometry, counts and memory use of the table (a copy)."""
        with self._h:
            return dict(self._info)

    def __len__(self) -> int:
        with self._h:
            return self._info["items"]

    def lookup(self, key) -> tuple[Lookup, bytes | None]:
        """(FOUND, value), (DELETED, None) or (ABSENT, None)."""
        key = check_bytes(key, "key")
        vlen, status = ffi.new("size_t *"), ffi.new("int *")
        with self._h as h:
            vbuf = ffi.new("uint8_t[]", 4096)
            rc = b.check(lib.ltr_htable_get(h, ffi.from_buffer(key), len(key), vbuf, 4096, vlen, status))
            if rc == lib.LTR_EAGAIN:  # a value larger than a bucket: ask again with room for it
                vbuf = ffi.new("uint8_t[]", vlen[0])
                b.check(lib.ltr_htable_get(h, ffi.from_buffer(key), len(key), vbuf, vlen[0], vlen, status))
        if status[0] == lib.LTR_FOUND:
            return Lookup.FOUND, ffi.unpack(ffi.cast("char *", vbuf), vlen[0])
        return Lookup(status[0]), None

    def get(self, key, default=None):
        """The value of key, or default when it is absent or deleted."""
        status, value = self.lookup(key)
        return value if status == Lookup.FOUND else default

    def lookup_many_packed(self, keys) -> tuple[np.ndarray, bytes, np.ndarray]:
        """One C call for the whole batch: (status int8[n], value bytes, value offsets int64[n+1])."""
        return b.get_many_packed(lib.ltr_htable_get_many, self._h, pack(keys, "keys"))

    def lookup_many(self, keys) -> tuple[np.ndarray, list]:
        """(status array, values list): values[i] is bytes when status[i] is FOUND, else None."""
        return b.get_many_list(lib.ltr_htable_get_many, self._h, pack(keys, "keys"))

    def get_many(self, keys) -> list:
        """Values in key order; None for absent or deleted keys."""
        return self.lookup_many(keys)[1]

    def scan_packed(self, batch: int = 65536) -> Iterator[tuple[bytes, np.ndarray, bytes, np.ndarray, np.ndarray]]:
        """Yields batches (keys, key offsets, values, value offsets, deleted flags) of the whole
        table, each item once, in no particular order."""
        out = ffi.new("ltr_scan **")
        with self._h as h:
            b.check(lib.ltr_scan_new(h, out))
        scan = b.Handle(out[0], lib.ltr_scan_free, "scan")
        items = ffi.new("ltr_items *")
        try:
            while True:
                with self._h, scan as s:
                    b.check(lib.ltr_scan_next(s, batch, items))
                n = items.n
                if n == 0:
                    return
                kinds = np.frombuffer(ffi.buffer(items.deleted.data, n), dtype=np.uint8)
                if (kinds == 2).any():
                    raise InvalidArgumentError(
                        f"{self.path}: a value of this table is kept in its store's value log; "
                        "read it through the store")
                yield (
                    bytes(ffi.buffer(items.keys.data, items.keys.len)),
                    np.frombuffer(ffi.buffer(items.koffs.data, 8 * (n + 1)), dtype=np.int64).copy(),
                    bytes(ffi.buffer(items.values.data, items.values.len)),
                    np.frombuffer(ffi.buffer(items.voffs.data, 8 * (n + 1)), dtype=np.int64).copy(),
                    kinds.astype(bool),
                )
        finally:
            scan.close()
            lib.ltr_items_free(items)

    def items(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every item once, as (key, value); value is None for a tombstone."""
        for keys, koffs, values, voffs, deleted in self.scan_packed():
            ko, vo, dl = koffs.tolist(), voffs.tolist(), deleted.tolist()
            for i in range(len(dl)):
                yield keys[ko[i]:ko[i + 1]], (None if dl[i] else values[vo[i]:vo[i + 1]])

    def read_stats(self) -> dict:
        """Counters of this reader since open or reset_stats()."""
        st = ffi.new("ltr_read_stats *")
        with self._h as h:
            lib.ltr_htable_read_stats(h, st)
        return {name: getattr(st, name) for name in _STAT_FIELDS}

    def reset_stats(self) -> None:
        with self._h as h:
            lib.ltr_htable_reset_stats(h)

    @property
    def closed(self) -> bool:
        return self._h.closed

    def close(self) -> None:
        """Closes the table; idempotent. Later calls raise ClosedError."""
        self._h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} items"
        return f"<HTable {self.path!r} {state}>"


__all__ = ["HTable", "HTableBuilder", "BuildStats", "TableOptions", "Lookup", "build_htable", "ClosedError"]
