"""The bulk loader's core over an open store (ltr_load_* in native/include/lsmtrie.h).

`Loader` takes packed batches of items, checkpoints on request (the caller's input position is
kept with the durable state, for a resume), and installs everything at once in `finish()`.
The command and `lsmtrie.load` drive it; nothing here reads input.
"""

from __future__ import annotations

from . import _binding as b
from ._binding import check, ffi, lib
from ._packing import pack

PHASES = {lib.LTR_LOAD_ADDING: "adding", lib.LTR_LOAD_BUILDING: "building",
          lib.LTR_LOAD_INSTALLING: "installing", lib.LTR_LOAD_DONE: "done"}


def plan_options(expected_bytes: int, expected_items: int = 0) -> dict:
    """Options for a new store that is to receive about expected_bytes (encoded: keys, values
    and two to eight bytes each) in one load: the table size that puts the load in the last
    level, a table a node (the store's trie, which grows, is deepened to it by the load)."""
    o = ffi.new("ltr_store_opts *")
    lib.ltr_store_opts_default(o)
    lib.ltr_load_plan_options(int(expected_bytes), int(expected_items), o)
    return {"table_buckets": o.table_buckets}


class Loader:
    """One load into `store` (open for writing). With resume=True it takes up the unfinished
    load recorded in the store, whose identity must equal `identity`."""

    def __init__(self, store, *, memory: int = 0, tmp: str | None = None,
                 expected_bytes: int = 0, identity: str = "", resume: bool = False,
                 values_are_items: bool = False):
        self._ptr = None
        self._store = store
        o = ffi.new("ltr_load_opts *")
        o.memory_bytes = int(memory)
        self._tmp = ffi.new("char[]", tmp.encode()) if tmp else ffi.NULL
        o.tmp_dir = self._tmp
        o.expected_bytes = int(expected_bytes)
        self._identity = ffi.new("char[]", identity.encode())
        o.identity = self._identity
        o.values_are_items = bool(values_are_items)
        out = ffi.new("ltr_load **")
        with store._use() as h:
            check((lib.ltr_load_resume if resume else lib.ltr_load_begin)(h, o, out))
        self._ptr = out[0]

    def _call(self, fn, *args):
        if self._ptr is None:
            raise ValueError("the load is closed")
        with self._store._use():  # the store stays open while the load works on it
            return check(fn(self._ptr, *args))

    def add(self, keys, values) -> None:
        k, v = pack(keys, "keys"), pack(values, "values")
        if k.n != v.n:
            raise ValueError(f"{k.n} keys but {v.n} values")
        self.add_packed(k.data, k.offsets, v.data, v.offsets, k.n)

    def add_packed(self, kdata, koffs, vdata, voffs, n: int) -> None:
        self._call(lib.ltr_load_add, b.ptr_u8(kdata), b.ptr_i64(koffs), kdata.size,
                   b.ptr_u8(vdata), b.ptr_i64(voffs), vdata.size, n)

    def add_items(self, it) -> None:
        """Adds a C batch (ltr_items, as a parser fills it) without copying it."""
        if it.n:
            self._call(lib.ltr_load_add, it.keys.data, ffi.cast("int64_t *", it.koffs.data),
                       it.keys.len, it.values.data, ffi.cast("int64_t *", it.voffs.data),
                       it.values.len, it.n)

    def checkpoint(self, position: bytes) -> None:
        self._call(lib.ltr_load_checkpoint, position, len(position))

    @property
    def position(self) -> bytes:
        buf = ffi.new("ltr_buf *")
        try:
            self._call(lib.ltr_load_position, buf)
            return bytes(ffi.buffer(buf.data, buf.len)) if buf.len else b""
        finally:
            lib.ltr_buf_free(buf)

    def finish(self) -> None:
        self._call(lib.ltr_load_finish)

    def stats(self) -> dict:
        if self._ptr is None:
            raise ValueError("the load is closed")
        st = ffi.new("ltr_load_stats *")
        lib.ltr_load_stats_get(self._ptr, st)
        out = {name: getattr(st, name) for name, _ in ffi.typeof("ltr_load_stats").fields}
        out["phase"] = PHASES[out["phase"]]
        return out

    def close(self) -> None:
        """Frees the handle; an unfinished load stays on disk for a resume."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.ltr_load_free(ptr)

    def abort(self) -> None:
        """Frees the handle and removes all the load wrote: the store is as before it."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            lib.ltr_load_abort(ptr)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()
