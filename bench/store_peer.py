"""RocksDB beside bench/store.py: the same items, the same durability and the same reads.

Run by `bench/store.py --peers rocksdb` in a process of its own (so memory figures do not mix):
RocksDB through rocksdict, a 10-bit Bloom filter and otherwise its defaults, loads the items
bench/store.py loads (measure.chunk: same keys, values and order) in one WriteBatch per chunk
with its write-ahead log on and no fsync (lsmtrie's put_many: its log, sync=False); then, once
its background work has settled, reads the same keys: a first pass in batches of 1,000 keys
(multi_get) and one of single gets over other keys, then warm passes (median of three). Prints
one JSON object. The load goes through a Python loop per item: rocksdict has no batch put that
takes packed arrays (its cost is the binding's, and is in RocksDB's load rate).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time

import measure


def open_rocksdb(path):
    from rocksdict import BlockBasedOptions, Options, Rdict
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    t = BlockBasedOptions()
    t.set_bloom_filter(10, False)
    opt.set_block_based_table_factory(t)
    return Rdict(path, opt)


def settle(db, timeout: float = 3600.0) -> None:
    """Flushes the memtable and waits until no compaction is pending or running."""
    db.flush()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pending = db.property_int_value("rocksdb.compaction-pending") or 0
        running = db.property_int_value("rocksdb.num-running-compactions") or 0
        if not pending and not running:
            return
        time.sleep(0.5)


def load(db, n: int, seed: int, value_size) -> tuple[float, int]:
    """(seconds until the background work settled, user bytes: keys and values)."""
    from rocksdict import WriteBatch
    t0, user = time.perf_counter(), 0
    for c in range((n + measure.CHUNK - 1) // measure.CHUNK):
        m = min(measure.CHUNK, n - c * measure.CHUNK)
        keys, vdata, voffs = measure.chunk(seed, c, m, value_size)
        wb = WriteBatch(raw_mode=True)
        vb = vdata.tobytes()
        for i in range(m):
            wb.put(keys[i].tobytes(), vb[voffs[i]:voffs[i + 1]])
        db.write(wb)
        user += keys.size + int(voffs[-1])
    settle(db)
    return time.perf_counter() - t0, user


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reads", type=int, default=200_000)
    p.add_argument("--single", type=int, default=50_000)
    p.add_argument("--value-size", type=int, default=None)
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    path = os.path.join(a.dir, "rocksdb")
    shutil.rmtree(path, ignore_errors=True)
    io0 = measure.proc_io()
    db = open_rocksdb(path)
    try:
        load_s, user = load(db, a.n, a.seed, a.value_size)
        io1 = measure.proc_io()
        keys, values = measure.sample_present(a.n, a.seed, min(a.reads, a.n), a.value_size)
        fresh = measure.fresh_keys(a.n, a.seed, a.single, a.value_size, keys)
        multi = db.get  # a list of keys: multi_get
        r = measure.first_pass(db.get, multi, keys, values, *fresh)
        r["get_hit_per_s_batched_1000"] = len(keys) / statistics.median(
            measure._timed(lambda: measure.in_batches(multi, keys), 3))
        r["get_hit_per_s_batched"] = len(keys) / statistics.median(
            measure._timed(lambda: multi(keys), 3))
        one = keys[:a.single]
        r["get_hit_per_s_single"] = len(one) / statistics.median(
            measure._timed(lambda: [db.get(k) for k in one], 3))
    finally:
        db.close()
    disk = measure._dir_bytes([path])
    shutil.rmtree(path, ignore_errors=True)
    os_bytes = ((io1["write_bytes"] - io0["write_bytes"]) -
                (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]))
    r.update(load_items_per_s=a.n / load_s, load_seconds=load_s, wa_os=os_bytes / user,
             disk_bytes_at_rest=disk,
             peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
             options="rocksdict defaults, 10-bit Bloom filter (full), WAL on, no fsync")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
