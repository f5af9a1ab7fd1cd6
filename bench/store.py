"""Store benchmark: load N items through put_many, flush, then read present and absent keys.

Items are 16-byte random keys with values of uniform length 1..200 bytes, generated chunk by
chunk from seeded generators (so the load does not hold N items in memory and any key can be
regenerated for the read phase); a chunk's value bytes are a window, at a random offset, of a
64 MiB pool of random bytes (generating fresh ones took a tenth of the load's time). The table size is chosen (and printed) so that every trie level,
the last included, holds data at this N: the last level first receives data after about
node_tables ** (levels - 1) flushes.

Figures: load_items_per_s (until compactions settle: the clock stops after flush()), wa_engine
(the engine's own byte counters), wa_os (bytes the kernel was asked to write, from
/proc/self/io write_bytes minus cancelled_write_bytes, over user bytes), get rates one by one and
batched from the page cache (the median of three passes, after a first pass that checks every
value and warms the caches, as bench/htable.py does), bucket plus cluster reads per hit (overall
and by the level that answered, counted in that first pass) and per miss, peak RSS, metadata
memory per item, tables per level; then the same reads again by a new process that opens the
store read-only (`reopened`: what a user of an existing store sees; in the loading process a
lookup costs more CPU, see the README). CPU figures beside the rates (load_cpu_us_per_item: every
thread of the process, less the generation of the items; get_hit_cpu_us_*: the same passes as the
rates) help compare runs on this shared, noisy machine, where wall rates of runs minutes apart
differ by up to a third (CPU figures move less, but move too: compare builds in alternation).
load_steal_cores and get_hit_steal_cores_batched are the cores the hypervisor took from the
machine meanwhile (/proc/stat "steal"; null where it is not counted): a slow rate beside a high
steal figure was a slow machine, not a slow store.

First reads after the load (issue 23, part 5): get_hit_per_s_batched_first_pass is that
first pass, in batches of 1,000 keys (the common size); get_hit_per_s_single_first_pass reads
other keys one by one for the first time; get_hit_per_s_batched_1000 is the warm rate in such
batches; first_pass_vs_warm_* and batched_1000_vs_single are their ratios;
first_pass_device_bytes_batched/_single are the bytes the process read from the device
meanwhile (/proc/self/io: pages the page cache no longer held) and first_pass_batches_deepened
the batches that waited for the device and went on up to 32 threads. --peers rocksdb runs
the same items and reads through RocksDB (bench/store_peer.py, a process of its own) and adds
*_vs_rocksdb ratios. Memory: peak_rss_bytes (the whole run), peak_rss_bytes_load (up to the
end of the load), and the peaks of the anonymous and file-backed parts (mapped BloomCluster
pages are the page cache's). --values files:DIR stores every regular file under DIR instead
(paths as keys, contents as values; issue 23, part 6) and reports space and write amplification;
--values overwrite:BYTES loads --n values of BYTES and overwrites random keys for --rounds rounds,
reporting space against the live bytes after each (the value logs' garbage collection), and
peak_disk_bytes (sampled every half second and after each round) over disk_bytes_at_rest as
peak_vs_rest (issue 23 part 1: at most 1.3 plus 1 GiB over the size at rest).

Targets (issue #3, 2 cores, N = 10,000,000): load >= 1,000,000 items/s; wa_os <= 6 with the log,
<= 5.2 with --bulk (5 levels); reads per hit <= 1.05 above the last level and <= 2.05 at the last
level (clusters are read from disk or page cache, never from a user-space cache); reads per miss
<= 1.05; batched hits >= 500,000/s; single gets >= 200,000/s; peak RSS < 1 GB.

--direct (issue 23) adds the uncached figures: a new process opens the store read-only with
direct_io and, in alternated rounds, measures single and batched GET hits against the device's
own random 4 KB O_DIRECT reads over the store's table files (bench/device_reads.c) at queue
depth 1 and at the batched path's depth (LTR_BATCH_READ_DEPTH): get_hit_per_s_single_direct,
get_hit_per_s_batched_direct, device_read_iops_qd1, device_read_iops_qd32, their ratios
(single_direct_vs_device_qd1, batched_direct_vs_device_qd32), and data reads per hit and miss
(data_reads_per_hit_direct, ..., counted by the engine: reads_counted_by says how; the block
device's own count beside them). Targets: single >= 90% of qd1, batched >= 90% of qd32.
Beside the single gets from Python, get_hit_per_s_single_direct_from_c (and its ratio,
single_direct_from_c_vs_device_qd1) times other keys' single gets called from C one after the
other (ltr_store_get_each): the store's share of a get without the interpreter's.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's idle BLAS threads share our 2 cores

import measure as demo  # noqa: E402 (bench/measure.py, beside this script)


def first_pass_ratios(r: dict) -> dict:
    """Issue 23, part 5: the first pass after a load against a warm one (>= 0.8), and batches
    of 1,000 keys against the same keys one by one (>= 1)."""
    single = r["get_hit_per_s_single_first_pass"]  # None when every key was read already
    return dict(
        first_pass_vs_warm_single=single / r["get_hit_per_s_single"] if single else None,
        first_pass_vs_warm_batched=(r["get_hit_per_s_batched_first_pass"] /
                                    r["get_hit_per_s_batched_1000"]),
        batched_1000_vs_single=r["get_hit_per_s_batched_1000"] / r["get_hit_per_s_single"])


def peer_ratios(r: dict, peer: dict) -> dict:
    """lsmtrie over RocksDB, same reads (issue 23, part 5: batches of 1,000 >= 3 x)."""
    return {f"{k}_vs_rocksdb": r[k] / peer[k] if r[k] and peer[k] else None for k in (
        "load_items_per_s", "get_hit_per_s_batched_1000", "get_hit_per_s_batched_first_pass",
        "get_hit_per_s_single", "get_hit_per_s_single_first_pass")}


def run_peer(a) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    base = a.dir or tempfile.mkdtemp(prefix="lsmtrie-peer-")
    args = [sys.executable, os.path.join(here, "store_peer.py"), "--n", str(a.n), "--seed",
            str(a.seed), "--reads", str(a.reads), "--single", str(a.single), "--dir", base]
    if a.value_size is not None:
        args += ["--value-size", str(a.value_size)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.path.dirname(here)]))
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the RocksDB run failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--bulk", action="store_true", help="load without the write-ahead log")
    p.add_argument("--levels", type=int, default=5,
                   help="trie levels (0: the trie grows with the data, with 32 MB tables)")
    p.add_argument("--buckets", type=int, default=None, help="table size (default: chosen from n)")
    p.add_argument("--value-size", type=int, default=None,
                   help="every value this many bytes (default: uniform in 1..200)")
    p.add_argument("--reads", type=int, default=200_000, help="present and absent keys to read")
    p.add_argument("--single", type=int, default=50_000, help="gets one by one")
    p.add_argument("--metadata", action="store_true", help="BloomClusters in a separate directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", default=None, help="where to put the store (default: a temp dir under $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--peers", default="none",
                   help="rocksdb: the same items and reads through rocksdict, in its own process")
    p.add_argument("--json", action="store_true")
    p.add_argument("--values", default=None,
                   help="files:DIR: every regular file under DIR, paths as keys, contents as "
                        "values (--n and the read options do not apply); overwrite:BYTES: --n "
                        "values of BYTES overwritten at random for --rounds rounds")
    p.add_argument("--rounds", type=int, default=4, help="overwrite rounds (--values overwrite:)")
    p.add_argument("--direct", action="store_true",
                   help="also read the store with direct_io (uncached) against the device's own "
                        "random 4 KB O_DIRECT reads at the same queue depths (needs gcc)")
    p.add_argument("--direct-rounds", type=int, default=3, help="alternated rounds of --direct")
    p.add_argument("--device-seconds", type=float, default=2.0,
                   help="each measurement of the device's rate (--direct)")
    a = p.parse_args()
    if a.values:
        kind, _, arg = a.values.partition(":")
        if kind == "overwrite" and arg.isdigit() and int(arg) > 0:
            r = demo.measure_overwrites(int(arg), a.n, a.rounds, directory=a.dir, seed=a.seed,
                                        keep=a.keep)
        elif kind == "files" and arg:
            r = demo.measure_files(arg, directory=a.dir, keep=a.keep)
        else:
            p.error("--values takes files:DIR or overwrite:BYTES")
        print(json.dumps(r) if a.json else json.dumps(r, indent=1))
        return 0
    r = demo.measure_store(n=a.n, bulk=a.bulk, levels=a.levels, buckets=a.buckets, reads=a.reads,
                           single=a.single, metadata=a.metadata, seed=a.seed, directory=a.dir,
                           keep=a.keep, value_size=a.value_size, direct=a.direct,
                           direct_rounds=a.direct_rounds, device_seconds=a.device_seconds)
    r.update(first_pass_ratios(r))
    if a.peers == "rocksdb":
        r["peers"] = {"rocksdb": run_peer(a)}
        r.update(peer_ratios(r, r["peers"]["rocksdb"]))
    print(json.dumps(r) if a.json else demo.store_summary(r), end="\n" if a.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
