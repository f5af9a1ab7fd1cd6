"""Shard routing: the server of a twemproxy (nutcracker) 0.5.0 pool that the proxy sends each key
to, computed offline by the C core (native/src/route.c, lsmtrie_route.h), so that shards built
apart (`lsmtrie load --shard I/N --route SPEC`) hold exactly the keys the proxy asks them for.

    route = Route("fnv1a_64", "ketama", 3)            # servers named shard0, shard1, shard2
    route = Route.from_spec("murmur:modula", 3)
    route = Route.from_config("nutcracker.yml", "pool")
    route.shard_of([b"k1", b"k2"])                     # numpy uint32: the server of each key

Shard i is the i-th server as configured (its servers list); docs/scale-out.md "Routing".
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from . import _binding as b
from ._binding import check, ffi, lib
from ._packing import pack
from .errors import InvalidArgumentError

__all__ = ["Route", "HASHES", "DISTRIBUTIONS", "resolve"]

HASHES = ("one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64", "fnv1_32",
          "fnv1a_32", "hsieh", "murmur", "jenkins")
DISTRIBUTIONS = ("ketama", "modula")  # and twemproxy's random, which no one can compute offline


def shard_names(n: int) -> list[str]:
    """The names of a pool given by a count: shard0 .. shard{n-1}, which the proxy's
    configuration must give its servers for the same routing."""
    return [f"shard{i}" for i in range(n)]


class Route:
    """A pool's routing: its hash, distribution, servers (names and weights, in the
    configuration's order) and hash tag. `shards` is a count (servers named shard0..) or
    `names` the servers' names. Immutable; threads may share one."""

    def __init__(self, hash: str = "fnv1a_64", distribution: str = "ketama", shards=None, *,
                 names=None, weights=None, hash_tag: str | None = None):
        if names is None:
            if isinstance(shards, bool) or not isinstance(shards, numbers.Integral):
                raise InvalidArgumentError("give the number of shards, or the servers' names")
            names = shard_names(int(shards))
        elif shards is not None and shards != len(names):
            raise InvalidArgumentError(f"{shards} shards but {len(names)} names")
        for what, value in (("hash", hash), ("distribution", distribution), ("hash_tag", hash_tag)):
            if not isinstance(value, str) and not (what == "hash_tag" and value is None):
                raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}")
        self.hash, self.distribution = hash, distribution
        self.names = tuple(str(n) for n in names)
        if any("\0" in n for n in self.names):
            raise InvalidArgumentError("a server's name holds a NUL character")
        self.weights = tuple(int(w) for w in weights) if weights is not None else (1,) * len(self.names)
        self.hash_tag = hash_tag or None
        if len(self.weights) != len(self.names):
            raise InvalidArgumentError(f"{len(self.names)} servers but {len(self.weights)} weights")
        self._r = self._make()

    def _make(self):
        if not all(1 <= w <= 0x7FFFFFFF for w in self.weights):
            raise InvalidArgumentError(f"weights must be 1..2147483647, got {list(self.weights)}")
        # (the C strings must live through the call; the route keeps no pointer to them)
        cnames = [ffi.new("char[]", n.encode()) for n in self.names]
        out = ffi.new("ltr_route **")
        check(lib.ltr_route_new(self.hash.encode(), self.distribution.encode(), len(cnames),
                                ffi.new("char *[]", cnames),
                                ffi.new("uint32_t[]", list(self.weights)),
                                self.hash_tag.encode() if self.hash_tag else ffi.NULL, out))
        return ffi.gc(out[0], lib.ltr_route_free)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"Route({self.hash!r}, {self.distribution!r}, names={list(self.names)!r}, "
                f"weights={list(self.weights)!r}, hash_tag={self.hash_tag!r})")

    def describe(self) -> dict:
        """Everything that decides the routing (a load's identity records it)."""
        return {"hash": self.hash, "distribution": self.distribution, "names": list(self.names),
                "weights": list(self.weights), "hash_tag": self.hash_tag}

    def _per_key(self, fn, keys) -> np.ndarray:
        k = pack(keys, "keys")
        out = np.zeros(k.n, dtype=np.uint32)
        check(fn(self._r, b.ptr_u8(k.data), b.ptr_i64(k.offsets), k.data.size, k.n,
                 ffi.cast("uint32_t *", ffi.from_buffer(out))))
        return out

    def shard_of(self, keys) -> np.ndarray:
        """The shard (server index, in the configuration's order) of each key: keys as a list
        of bytes, a 2-D uint8 array or a packed (data, offsets) pair. One C call, GIL released."""
        return self._per_key(lib.ltr_route_shards, keys)

    def hash_of(self, keys) -> np.ndarray:
        """The 32-bit hash the distribution gets for each key (of its hash-tagged part; 0 for
        an empty key), as twemproxy computes it."""
        return self._per_key(lib.ltr_route_hashes, keys)

    def _select(self, shard: int, out, kdata, koffs, klen: int, vdata, voffs, vlen: int, n: int):
        check(lib.ltr_route_select(self._r, shard, kdata, koffs, klen, vdata, voffs, vlen, n, out))
        return out

    def select_items(self, shard: int, items, out):
        """Fills the C batch `out` (an ltr_items, emptied first) with the items of the C batch
        `items` whose keys go to `shard`, in order; returns out. (The bulk loader's filter.)"""
        i64 = "int64_t *"
        return self._select(shard, out, items.keys.data, ffi.cast(i64, items.koffs.data),
                            items.keys.len, items.values.data, ffi.cast(i64, items.voffs.data),
                            items.values.len, items.n)

    def select_packed(self, shard: int, kdata, koffs, vdata, voffs, n: int, out):
        """select_items for a packed batch of numpy arrays (uint8 data, int64 offsets)."""
        return self._select(shard, out, b.ptr_u8(kdata), b.ptr_i64(koffs), kdata.size,
                            b.ptr_u8(vdata), b.ptr_i64(voffs), vdata.size, n)

    @classmethod
    def from_spec(cls, spec: str, shards: int) -> "Route":
        """`HASH:DISTRIBUTION` (e.g. "fnv1a_64:ketama") over `shards` servers named shard0..,
        of weight 1."""
        hash_, sep, dist = spec.partition(":")
        if not sep or not hash_ or not dist:
            raise InvalidArgumentError(f"route {spec!r} is not HASH:DISTRIBUTION (e.g. fnv1a_64:ketama)")
        return cls(hash_, dist, shards)

    @classmethod
    def from_config(cls, path, pool: str | None = None) -> "Route":
        """The pool `pool` (or the file's only pool) of a nutcracker YAML configuration: its
        hash, distribution, hash_tag and servers ("host:port:weight [name]" or
        "/path/socket:weight [name]"), read as twemproxy reads them."""
        from ._route_config import read_pool
        return cls(**read_pool(os.fspath(path), pool))


def resolve(spec, shards: int) -> Route:
    """The route of a load's --route: a Route; `HASH:DISTRIBUTION` over `shards` servers named
    shard0..; or a nutcracker configuration `FILE[:POOL]` whose server count must be `shards`."""
    if isinstance(spec, Route):
        route = spec
    elif not isinstance(spec, (str, os.PathLike)):
        raise InvalidArgumentError(f"a route is a Route or a string, not {type(spec).__name__}")
    else:
        spec = os.fspath(spec)
        first = spec.partition(":")[0]
        if first in HASHES and not os.path.exists(spec):
            return Route.from_spec(spec, shards)
        path, pool = spec, None
        if not os.path.exists(spec) and ":" in spec:
            path, _, pool = spec.rpartition(":")
        if not os.path.exists(path):
            raise InvalidArgumentError(
                f"route {spec!r} is neither HASH:DISTRIBUTION (hashes: {', '.join(HASHES)}) nor "
                "an existing nutcracker configuration FILE[:POOL]")
        route = Route.from_config(path, pool)
    if len(route) != shards:
        raise InvalidArgumentError(f"the route has {len(route)} servers but the load is one of "
                                   f"{shards} shards")
    return route
