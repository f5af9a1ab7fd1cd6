"""The raw binding: the only module that touches cffi (`lsmtrie._native`).

It maps C status codes to exceptions, turns packed numpy batches into C pointers, and wraps C
handles so that they close exactly once and never while a call is using them.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from . import errors
from ._native import ffi, lib

__all__ = ["ffi", "lib", "check", "Handle", "fault_set", "ptr_u8", "ptr_i64", "ptr_i8"]


def _raise_for(rc: int) -> None:
    message = ffi.string(lib.ltr_last_error()).decode("utf-8", "replace")
    message = message or ffi.string(lib.ltr_strerror(rc)).decode()
    if rc == lib.LTR_ENOSPC:
        raise errors.DiskFullError(lib.ltr_last_errno(), message)
    if rc == lib.LTR_EIO:
        raise errors.StorageError(lib.ltr_last_errno(), message)
    if rc == lib.LTR_ENOMEM:
        raise MemoryError(message)
    cls = {
        lib.LTR_ECORRUPT: errors.CorruptionError,
        lib.LTR_EVERSION: errors.VersionError,
        lib.LTR_ETOOBIG: errors.ItemTooLargeError,
        lib.LTR_EINVAL: errors.InvalidArgumentError,
        lib.LTR_ELOCKED: errors.LockError,
        lib.LTR_EREADONLY: errors.ReadOnlyError,
    }.get(rc, errors.Error)
    raise cls(message)


def check(rc: int) -> int:
    """Returns rc when it is not an error status, raises the matching exception otherwise."""
    if rc < 0 and rc != lib.LTR_EAGAIN:
        _raise_for(rc)
    return rc


forks = [0]  # forks seen by this process: a handle checks its pid only after one
os.register_at_fork(after_in_child=lambda: forks.__setitem__(0, forks[0] + 1))


class Handle:
    """Owns one C handle. `with handle as ptr:` yields the pointer for one call and keeps
    `close()` from freeing it until every such call has returned (cffi releases the GIL, so
    another thread may close while a call runs).

    No lock per call: a call appends to `users` and then reads `ptr`; close() clears `ptr`
    and then waits until `users` is empty. list.append and list.pop are atomic, so either the
    call sees ptr cleared (and leaves), or close() sees the call (and waits for it)."""

    def __init__(self, ptr, destructor, what: str):
        self.ptr = ptr
        self.users = []
        self._destructor = destructor
        self._what = what
        self._closing = threading.Lock()

    @property
    def closed(self) -> bool:
        return self.ptr is None

    def closed_error(self) -> errors.ClosedError:
        return errors.ClosedError(f"{self._what} is closed")

    def __enter__(self):
        self.users.append(None)
        ptr = self.ptr
        if ptr is None:
            self.users.pop()
            raise self.closed_error()
        return ptr

    def __exit__(self, *exc) -> None:
        self.users.pop()

    def close(self) -> None:
        with self._closing:  # one closer; the others return once it is done
            ptr, self.ptr = self.ptr, None
            if ptr is None:
                return
            delay = 1e-5
            while self.users:  # calls in flight: they take microseconds, rarely seconds
                time.sleep(delay)
                delay = min(2 * delay, 0.01)
            self._destructor(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible to do
            pass


_FAULT_OPS = {"write": lib.LTR_FAULT_WRITE, "fsync": lib.LTR_FAULT_FSYNC,
              "open": lib.LTR_FAULT_OPEN, "rename": lib.LTR_FAULT_RENAME,
              "unlink": lib.LTR_FAULT_UNLINK, "ftruncate": lib.LTR_FAULT_FTRUNCATE,
              "mkdir": lib.LTR_FAULT_MKDIR, "pread": lib.LTR_FAULT_PREAD}


def fault_set(op: str, after: int, err: int, once: bool = False) -> None:
    """Test hook: after `after` more successful `op` calls ("write", "fsync", "open", "rename",
    "unlink", "ftruncate", "mkdir" or "pread"; see LTR_FAULT_* in lsmtrie.h), fail with errno
    `err` until called again with err=0 (with `once`, only the next call fails). Process-wide."""
    lib.ltr_fault_set(_FAULT_OPS[op], after, -err if once else err)


def ptr_u8(a: np.ndarray):
    return ffi.cast("uint8_t *", ffi.from_buffer(a))


def ptr_i64(a: np.ndarray):
    return ffi.cast("int64_t *", ffi.from_buffer(a))


def ptr_i8(a: np.ndarray):
    return ffi.cast("int8_t *", ffi.from_buffer(a))


def _get_many(fn, handle: "Handle", k, finish):
    """Runs a C batch get `fn(handle, kdata, koffs, klen, n, status, voffs, ltr_buf*)` over the
    packed keys k and returns finish(status int8[n], values buffer, value offsets int64[n+1]),
    called while the C buffer is alive (it is freed afterwards)."""
    status = np.zeros(k.n, dtype=np.int8)
    voffs = np.zeros(k.n + 1, dtype=np.int64)
    buf = ffi.new("ltr_buf *")
    try:
        with handle as h:
            check(fn(h, ptr_u8(k.data), ptr_i64(k.offsets), k.data.size, k.n, ptr_i8(status),
                     ptr_i64(voffs), buf))
        return finish(status, ffi.buffer(buf.data, buf.len) if buf.len else b"", voffs)
    finally:
        lib.ltr_buf_free(buf)


def get_many_packed(fn, handle: "Handle", k):
    """(status int8[n], value bytes, value offsets int64[n+1]) of a C batch get (_get_many)."""
    return _get_many(fn, handle, k, lambda status, data, voffs: (status, bytes(data), voffs))


def get_many_list(fn, handle: "Handle", k):
    """(status int8[n], values list) of a C batch get: the values are cut straight from the C
    buffer (slices of a cffi buffer are bytes), without a copy of the whole buffer first."""
    return _get_many(fn, handle, k, lambda status, data, voffs: (status, values_list(status, data, voffs)))


def get_many_streamed(handle: "Handle", k) -> list:
    """The values list of a store batch get, made segment by segment while C threads look up
    the segments after it (ltr_store_batch_start): the bytes objects, made under the GIL, are
    made alongside the lookups instead of after them. k and status stay referenced here until
    the batch is freed (its threads read and write them)."""
    status = np.zeros(k.n, dtype=np.int8)
    out = ffi.new("ltr_batch **")
    lo, hi = ffi.new("size_t *"), ffi.new("size_t *")
    data, ends = ffi.new("uint8_t **"), ffi.new("int64_t **")
    values = []
    with handle as h:
        check(lib.ltr_store_batch_start(h, ptr_u8(k.data), ptr_i64(k.offsets), k.data.size, k.n,
                                        ptr_i8(status), out))
        batch = out[0]
        try:
            while True:
                check(lib.ltr_batch_next(batch, lo, hi, data, ends))
                a, z = lo[0], hi[0]
                if a == z:
                    return values
                voffs = np.frombuffer(ffi.buffer(ends[0], 8 * (z - a + 1)), dtype=np.int64)
                size = int(voffs[-1])
                values += values_list(status[a:z], ffi.buffer(data[0], size) if size else b"", voffs)
        finally:
            lib.ltr_batch_free(batch)


def values_list(status: np.ndarray, data, voffs: np.ndarray) -> list:
    """The values of a packed batch get as a list: bytes where found, None elsewhere."""
    offs = voffs.tolist()
    found = status == lib.LTR_FOUND
    if found.all():  # the common case, without a test per item
        return [data[s:e] for s, e in zip(offs, offs[1:])]
    return [data[s:e] if f else None for s, e, f in zip(offs, offs[1:], found.tolist())]


