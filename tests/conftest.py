"""Shared fixtures and helpers for the lsmtrie test suite."""

import os
import random
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # formatlib is imported as a plain module whatever the import mode
    sys.path.insert(0, HERE)

import formatlib  # noqa: E402


def make_items(seed, n, klen=(1, 24), vlen=(0, 64), prefix=b""):
    """n distinct random (key, value) pairs, deterministic in seed."""
    rng = random.Random(seed)
    out = {}
    while len(out) < n:
        k = prefix + rng.randbytes(rng.randint(*klen))
        out[k] = rng.randbytes(rng.randint(*vlen))
    return list(out.items())


def keys_in_bucket(bucket, buckets, seed, n, klen=16, start=0, exclude=()):
    """Brute-force n distinct keys whose home bucket is `bucket` (pure Python, via mmh3)."""
    out = []
    i = start
    exclude = set(exclude)
    while len(out) < n:
        k = i.to_bytes(8, "little") + b"\xa5" * (klen - 8) if klen >= 8 else \
            i.to_bytes(klen, "little")
        i += 1
        if k in exclude:
            continue
        if formatlib.key_hash(k, seed, buckets).home == bucket:
            out.append(k)
    return out


@pytest.fixture
def lsm():
    import lsmtrie

    return lsmtrie


@pytest.fixture
def htable():
    from lsmtrie import htable

    return htable


@pytest.fixture
def build(tmp_path):
    """build(items, name=..., **opts) -> (path, stats). items: [(key, value|None)] where None is
    a tombstone. Uses sync=False unless given. Asserts every item was taken."""
    from lsmtrie import htable

    counter = [0]

    def _build(items, name=None, **opts):
        opts.setdefault("sync", False)
        counter[0] += 1
        path = str(tmp_path / (name or f"t{counter[0]}.htb"))
        with htable.HTableBuilder(**opts) as b:
            for k, v in items:
                ok = b.add(k, v) if v is not None else b.delete(k)
                assert ok, "builder refused an item the test expected to fit"
            st = b.finish(path)
        return path, st

    return _build


@pytest.fixture
def clear_faults():
    from lsmtrie import _binding

    _binding.fault_set("write", 0, 0)
    _binding.fault_set("fsync", 0, 0)
    yield _binding.fault_set
    _binding.fault_set("write", 0, 0)
    _binding.fault_set("fsync", 0, 0)
