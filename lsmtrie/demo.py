"""`python -m lsmtrie demo`: a short demonstration of a store (or, with --htable, of one HTable).

It opens a store in a temporary directory, writes single items, a batch and a deletion, loads
n generated items with put_many, reads some back one by one and in a batch, prints what the
store holds and what writing it cost, checks every file (verify), reopens it read-only, and
removes it. The measurements proper are the benchmarks' (bench/).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np

from .htable import HTable, HTableBuilder
from .store import open as open_store


def _items(n: int, seed: int = 1):
    """n items: 16-byte random keys, values of 16 to 100 random bytes (packed)."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    lengths = rng.integers(16, 101, n)
    voffs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=voffs[1:])
    values = rng.integers(0, 256, int(voffs[-1]), dtype=np.uint8)
    return keys, values, voffs


def store_demo(n: int = 300_000, levels: int = 3, directory: str | None = None) -> dict:
    base = tempfile.mkdtemp(prefix="lsmtrie-demo-", dir=directory)
    path = os.path.join(base, "store")
    out = {"path": path, "items": n}
    try:
        with open_store(path, levels=levels, table_buckets=256) as db:
            db.put(b"hello", b"world")
            with db.write_batch() as wb:
                wb.put(b"a", b"1")
                wb.put(b"b", b"2")
                wb.delete(b"hello")
            assert db.get(b"a") == b"1" and db.get(b"hello") is None
            keys, values, voffs = _items(n)
            t0 = time.perf_counter()
            db.put_many(keys, (values, voffs))
            db.flush()
            out["load_seconds"] = time.perf_counter() - t0
            sample = keys[:: max(1, n // 10_000)]
            t0 = time.perf_counter()
            got = db.get_many(sample)
            out["batched_get_seconds"] = time.perf_counter() - t0
            i = np.arange(0, n, max(1, n // 10_000))
            assert got == [values[voffs[j]:voffs[j + 1]].tobytes() for j in i]
            st = db.stats()
            out.update(items_per_level=st["items_per_level"],
                       write_amplification=st["write_amplification"],
                       reads_per_get=(st["bucket_reads"] + st["cluster_reads"]) / max(1, st["gets"]),
                       verified=db.verify())
        with open_store(path, read_only=True) as db:
            assert db.get(b"b") == b"2"
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def store_text(r: dict) -> str:
    n = r["items"]
    return (f"store in {r['path']} (removed again)\n"
            f"  put_many of {n:,} items and flush(): {r['load_seconds']:.2f} s "
            f"({n / r['load_seconds']:,.0f} items/s)\n"
            f"  get_many of {min(n, 10_000):,} of them: {r['batched_get_seconds'] * 1e3:.1f} ms, "
            f"{r['reads_per_get']:.2f} bucket and cluster reads per get\n"
            f"  items by trie level: {', '.join(f'{x:,}' for x in r['items_per_level'])}\n"
            f"  write amplification: {r['write_amplification']:.2f}\n"
            f"  verify: {r['verified']['tables']} tables, {r['verified']['items']:,} items sound\n")


def htable_demo(n: int = 100_000, directory: str | None = None) -> dict:
    base = tempfile.mkdtemp(prefix="lsmtrie-demo-", dir=directory)
    path = os.path.join(base, "table.ht")
    try:
        keys, values, voffs = _items(n)
        with HTableBuilder(buckets=max(16, n * 80 // 4000)) as b:
            b.add_many(keys, (values, voffs))
            stats = b.finish(path)
        with HTable(path) as t:
            sample = keys[:1000]
            assert t.get_many(sample) == [values[voffs[j]:voffs[j + 1]].tobytes() for j in range(1000)]
            return {"items": n, "file_bytes": os.path.getsize(path), "info": t.info,
                    "build": stats._asdict() if hasattr(stats, "_asdict") else dict(stats.__dict__)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def htable_text(r: dict) -> str:
    info = r["info"]
    return (f"one HTable of {r['items']:,} items: {info['buckets']:,} buckets of 4 KB, "
            f"{r['file_bytes'] / 1e6:.1f} MB, {info['records']} migration records, "
            f"{info['overflow_items']} items in the overflow area; 1,000 keys read back\n")
