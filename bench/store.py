"""Store benchmark: load N items through put_many, flush, then read present and absent keys.

Items are 16-byte random keys with values of uniform length 1..200 bytes, generated chunk by
chunk from seeded generators (so the load does not hold N items in memory and any key can be
regenerated for the read phase). The table size is chosen (and printed) so that every trie level,
the last included, holds data at this N: the last level first receives data after about
node_tables ** (levels - 1) flushes.

Figures: load_items_per_s (until compactions settle: the clock stops after flush()), wa_engine
(the engine's own byte counters), wa_os (bytes the kernel was asked to write, from
/proc/self/io write_bytes minus cancelled_write_bytes, over user bytes), get rates one by one and
batched from the page cache, bucket plus cluster reads per hit (overall and by the level that
answered) and per miss, peak RSS, metadata memory per item, tables per level.

Targets (issue #3, 2 cores, N = 10,000,000): load >= 1,000,000 items/s; wa_os <= 6 with the log,
<= 5.2 with --bulk (5 levels); reads per hit <= 1.05 above the last level and <= 2.05 at the last
level (clusters are read from disk or page cache, never from a user-space cache); reads per miss
<= 1.05; batched hits >= 500,000/s; single gets >= 200,000/s; peak RSS < 1 GB.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lsmtrie  # noqa: E402

CHUNK = 100_000
ITEM_BYTES = 1 + 2 + 16 + 100.5 + 0.4  # encoded: varints, key, mean value (+ 2-byte varints)


def chunk(seed: int, c: int, n: int):
    """Items [c*CHUNK, c*CHUNK + n): keys uint8[n,16], value data, value offsets."""
    rng = np.random.default_rng([seed, c])
    keys = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    lengths = rng.integers(1, 201, size=n)
    voffs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=voffs[1:])
    return keys, rng.integers(0, 256, size=int(voffs[-1]), dtype=np.uint8), voffs


def choose_buckets(n: int, levels: int, node_tables: int, fill: float) -> int:
    """Tables small enough that about 1.5x the data needed to reach the last level is loaded."""
    flushes_to_last = node_tables ** (levels - 1)
    table_bytes = n * ITEM_BYTES / (1.5 * flushes_to_last)
    return int(max(1, min(8191, table_bytes / (fill * 4080))))


def proc_io() -> dict:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def load(db, n: int, seed: int) -> float:
    t0 = time.perf_counter()
    for c in range((n + CHUNK - 1) // CHUNK):
        m = min(CHUNK, n - c * CHUNK)
        keys, vdata, voffs = chunk(seed, c, m)
        db.put_many(keys, (vdata, voffs))
    db.flush()
    return time.perf_counter() - t0


def sample_present(n: int, seed: int, count: int):
    """count present keys with their values, drawn from random chunks."""
    rng = np.random.default_rng(seed + 7)
    chunks = (n + CHUNK - 1) // CHUNK
    keys, values = [], []
    per = max(1, count // min(chunks, 20))
    for c in rng.choice(chunks, size=min(chunks, 20), replace=False):
        m = min(CHUNK, n - c * CHUNK)
        k, vd, vo = chunk(seed, int(c), m)
        for i in rng.choice(m, size=min(per, m), replace=False):
            keys.append(k[i].tobytes())
            values.append(vd[vo[i]:vo[i + 1]].tobytes())
    return keys[:count], values[:count]


def delta(after: dict, before: dict, key: str):
    a, b = after[key], before[key]
    return [x - y for x, y in zip(a, b)] if isinstance(a, list) else a - b


def measure_reads(db, keys, values, misses, single: int) -> dict:
    st0 = db.stats()
    t0 = time.perf_counter()
    got = db.get_many(keys)
    hit_s = time.perf_counter() - t0
    if got != values:
        raise AssertionError("a present key did not read back its value")
    st1 = db.stats()
    t0 = time.perf_counter()
    status, _, _ = db.get_many_packed(misses)
    miss_s = time.perf_counter() - t0
    if status.any():
        raise AssertionError("an absent key was found")
    st2 = db.stats()
    get = db.get
    one = keys[:single]
    t0 = time.perf_counter()
    for k in one:
        get(k)
    single_s = time.perf_counter() - t0
    hits = delta(st1, st0, "hits_per_level")
    hreads = delta(st1, st0, "hit_reads_per_level")
    miss_reads = delta(st2, st1, "bucket_reads") + delta(st2, st1, "cluster_reads")
    by_level = [round(r / h, 4) if h else None for r, h in zip(hreads, hits)]
    upper_h, upper_r = sum(hits[:-1]), sum(hreads[:-1])
    return dict(
        get_hit_per_s_batched=len(keys) / hit_s,
        get_miss_per_s_batched=len(misses) / miss_s,
        get_hit_per_s_single=len(one) / single_s,
        reads_per_get_hit=sum(hreads) / sum(hits),
        reads_per_get_hit_upper_levels=upper_r / upper_h if upper_h else None,
        reads_per_get_hit_last_level=by_level[-1],
        reads_per_get_hit_by_level=by_level,
        hits_by_level=hits,
        reads_per_get_miss=miss_reads / len(misses),
    )


def run(args) -> dict:
    buckets = args.buckets or choose_buckets(args.n, args.levels, 8, 0.95)
    base = args.dir or tempfile.mkdtemp(prefix="lsmtrie-bench-")
    path = os.path.join(base, "store")
    meta = os.path.join(base, "meta") if args.metadata else None
    shutil.rmtree(path, ignore_errors=True)
    io0 = proc_io()
    try:
        with lsmtrie.open(path, metadata_path=meta, bulk=args.bulk, table_buckets=buckets,
                          levels=args.levels) as db:
            load_s = load(db, args.n, args.seed)
            io1 = proc_io()
            st = db.stats()
            keys, values = sample_present(args.n, args.seed, args.reads)
            misses = np.random.default_rng(args.seed + 99).integers(0, 256, (args.reads, 16), np.uint8)
            reads = measure_reads(db, keys, values, misses, args.single)
    finally:
        if not args.keep:
            shutil.rmtree(base if not args.dir else path, ignore_errors=True)
    user = st["user_bytes_written"]
    os_bytes = (io1["write_bytes"] - io0["write_bytes"]) - (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"])
    return dict(
        n=args.n, bulk=args.bulk, levels=args.levels, table_buckets=buckets,
        load_items_per_s=args.n / load_s, load_seconds=load_s,
        wa_engine=st["write_amplification"], wa_os=os_bytes / user,
        bytes_written_by_kind=st["bytes_written_by_kind"],
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        metadata_memory_bytes_per_item=st["metadata_memory_bytes"] / args.n,
        tables_per_level=st["tables_per_level"], items_per_level=st["items_per_level"],
        flushes=st["flushes"], compactions=st["compactions"], gcs=st["gcs"],
        write_stalls=st["write_stalls"], **reads,
    )


SUMMARY = """\
lsmtrie store: {n:,} items (16-byte keys, values 1..200 bytes), {levels} levels, tables of {table_buckets} buckets, {mode}
  load                {load_items_per_s:>12,.0f} items/s  ({load_seconds:.1f} s, until compactions settled)
  write amplification {wa_os:>12.2f} (OS write_bytes)   {wa_engine:.2f} (engine counters)
  gets, hits batched  {get_hit_per_s_batched:>12,.0f} /s
  gets, hits single   {get_hit_per_s_single:>12,.0f} /s
  gets, misses batch  {get_miss_per_s_batched:>12,.0f} /s
  reads per hit       {reads_per_get_hit:.4f} overall; by level {reads_per_get_hit_by_level}
  reads per miss      {reads_per_get_miss:.4f}
  peak RSS            {peak_rss_mb:,.0f} MB;  metadata memory {metadata_memory_bytes_per_item:.2f} bytes/item
  tables per level    {tables_per_level};  items per level {items_per_level}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--bulk", action="store_true", help="load without the write-ahead log")
    p.add_argument("--levels", type=int, default=5)
    p.add_argument("--buckets", type=int, default=None, help="table size (default: chosen from n)")
    p.add_argument("--reads", type=int, default=200_000, help="present and absent keys to read")
    p.add_argument("--single", type=int, default=50_000, help="gets one by one")
    p.add_argument("--metadata", action="store_true", help="BloomClusters in a separate directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="where to put the store (default: a temp dir under $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a)
    if a.json:
        print(json.dumps(r))
    else:
        print(SUMMARY.format(mode="bulk (no log)" if a.bulk else "with the log",
                             peak_rss_mb=r["peak_rss_bytes"] / 2**20, **r), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
