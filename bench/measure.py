"""The benchmarks' shared measuring code (bench/store.py, bench/htable.py): a benchmark harness,
not part of the package, so the package needs none of what it uses (pybloomfiltermmap3).

- The store (`measure_store`): load N generated items through put_many, flush, read present and
  absent keys back one by one and batched, and report load rate, write amplification (engine
  counters and the kernel's /proc/self/io), reads per get and memory.
- One HTable (`measure`): build one table, read every key back, probe absent keys.

Items are 16-byte random keys with values of uniform length 1..200 bytes, generated with numpy
from seeded generators, chunk by chunk, and handed over as packed buffers; value bytes are cut
from a 64 MiB pool of random bytes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import lsmtrie
import lsmtrie.store as _store
from lsmtrie import _binding
from lsmtrie._packing import pack
from lsmtrie.bulk import _DiskPeak, _dir_bytes
from lsmtrie.htable import HTable, HTableBuilder, Lookup, TableOptions

KEY_BYTES = 16
VALUE_MAX = 200
HERE = os.path.dirname(os.path.abspath(__file__))


def generate(n: int, seed: int):
    """n random items: (keys uint8[n,16], value data uint8[], value offsets int64[n+1])."""
    return chunk(seed, 0, n)


def _candidates(options: TableOptions) -> int:
    mean_item = 1 + 2 + KEY_BYTES + (1 + VALUE_MAX) / 2
    return int(options.fill * options.buckets * 4080 / mean_item * 1.1) + 100


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor has taken from this machine's CPUs so far (the "steal" column
    of /proc/stat, all CPUs together), or None where it is not counted. On a shared virtual
    machine it tells a slow measurement from a slow program."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def steal_cores(s0: float | None, s1: float | None, wall: float) -> float | None:
    """Cores taken by the hypervisor on average between two steal_seconds() readings."""
    return None if s0 is None or s1 is None or wall <= 0 else (s1 - s0) / wall


def _timed(fn, repeat: int, cpu: list | None = None, steal: list | None = None) -> list[float]:
    """Wall seconds of each of `repeat` calls; their process CPU seconds go to `cpu`, and the
    cores the hypervisor took meanwhile (steal_cores) to `steal`."""
    out = []
    for _ in range(repeat):
        t0, c0, s0 = time.perf_counter(), process_cpu(), steal_seconds()
        fn()
        out.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(process_cpu() - c0)
        if steal is not None:
            steal.append(steal_cores(s0, steal_seconds(), out[-1]))
    return out


def _median_or_none(xs: list):
    return None if not xs or any(x is None for x in xs) else statistics.median(xs)


def _build(path, options, keys, vdata, voffs):
    t0 = time.perf_counter()
    with HTableBuilder(options) as b:
        taken = b.add_many(keys, (vdata, voffs))
        st = b.finish(path)
    return taken, st, time.perf_counter() - t0


def _pybloom_false_positive_rate(present, absent) -> float | None:
    """pybloomfiltermmap3 at the same 16 bits per key, as a peer for the false-positive rate."""
    try:
        import pybloomfilter
    except ImportError:  # an optional peer; the figure is then reported as None
        return None
    bf = pybloomfilter.BloomFilter(len(present), 4.58e-4)  # sized to 16 bits/key, 11 probes
    bf.update(bytes(r) for r in present)
    hits = sum(1 for r in absent if bytes(r) in bf)
    return hits / len(absent)


def measure(buckets=8191, fill=0.95, absent=1_000_000, single=None, seed=1, directory=None,
            peers=True) -> dict:
    """Builds one table and measures it. `single` caps the keys looked up one by one."""
    options = TableOptions(buckets=buckets, fill=fill, sync=True)
    keys, vdata, voffs = generate(_candidates(options), seed)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "demo.htable")
        taken, st, durable_s = _build(path, options, keys, vdata, voffs)
        nosync = TableOptions(buckets=buckets, fill=fill, sync=False)
        build_s = min(_build(path + ".nosync", nosync, keys, vdata, voffs)[2] for _ in range(3))
        keys = keys[:taken]
        with HTable(path) as t:
            r = _measure_reads(t, keys, vdata, voffs, absent, single, seed)
            info = t.info
    filter_data = info["filter_bytes"] - 4 * (buckets + 1)
    r.update(
        items=taken,
        table_bytes=st.file_bytes,
        build_items_per_s=taken / build_s,
        build_items_per_s_durable=taken / durable_s,
        cached_migration_bytes=info["cached_record_bytes"],
        cached_records=info["cached_records"],
        migration_records=st.records,
        overflow_items=st.overflow_items,
        bits_per_key=filter_data * 8 / taken,
        filter_memory_bits_per_key=info["filter_bytes"] * 8 / taken,
        bloom_probes=info["bloom_probes"],
    )
    if peers:
        r.update(_peers(keys, vdata, voffs, absent, seed))
    return r


def _measure_reads(t, keys, vdata, voffs, absent, single, seed) -> dict:
    status, data, vo = t.lookup_many_packed(keys)  # warm-up pass; also the correctness check
    if not (status == Lookup.FOUND).all() or data != vdata[: voffs[len(keys)]].tobytes():
        raise AssertionError("a stored item did not read back intact")
    t.reset_stats()
    batched = _timed(lambda: t.lookup_many_packed(keys), 3)
    st = t.read_stats()
    reads = (st["bucket_reads"] + st["overflow_reads"]) / st["lookups"]
    n_single = len(keys) if single is None else min(single, len(keys))
    one_by_one = [bytes(k) for k in keys[:n_single]]
    get = t.get
    single_s = _timed(lambda: [get(k) for k in one_by_one], 1)[0]
    miss = np.random.default_rng(seed + 1).integers(0, 256, size=(absent, KEY_BYTES), dtype=np.uint8)
    t.reset_stats()
    miss_s = _timed(lambda: t.lookup_many_packed(miss), 1)[0]
    ms = t.read_stats()
    return dict(
        lookup_items_per_s_batched=len(keys) / statistics.median(batched),
        lookup_items_per_s_single=n_single / single_s,
        absent_lookups_per_s_batched=absent / miss_s,
        reads_per_present_lookup=reads,
        absent_keys=absent,
        filter_false_positive_rate=ms["filter_false_positives"] / absent,
        reads_per_absent_lookup=(ms["bucket_reads"] + ms["overflow_reads"]) / absent,
    )


def _peers(keys, vdata, voffs, absent, seed) -> dict:
    """The same reads against an in-memory Python dict, and pybloomfiltermmap3's filter."""
    kb = [bytes(k) for k in keys]
    d = dict(zip(kb, (vdata[voffs[i]: voffs[i + 1]].tobytes() for i in range(len(kb)))))
    dict_s = min(_timed(lambda: [d.get(k) for k in kb], 3))
    n_fp = min(absent, 200_000)
    miss = np.random.default_rng(seed + 1).integers(0, 256, size=(n_fp, KEY_BYTES), dtype=np.uint8)
    return dict(
        peer_dict_lookup_items_per_s=len(kb) / dict_s,
        peer_pybloom_false_positive_rate=_pybloom_false_positive_rate(keys, miss),
    )


SUMMARY = """\
HTable: {buckets} buckets of 4 KB, {items:,} items (16-byte keys, values 1..200 bytes), {table_mb:.1f} MB file
  build            {build_items_per_s:>12,.0f} items/s  (page cache; {build_items_per_s_durable:,.0f} items/s with fsync)
  lookups batched  {lookup_items_per_s_batched:>12,.0f} items/s  (page cache; a Python dict does {peer_dict:,.0f}/s)
  lookups single   {lookup_items_per_s_single:>12,.0f} items/s
  absent batched   {absent_lookups_per_s_batched:>12,.0f} keys/s
  bucket reads per present lookup   {reads_per_present_lookup:.4f}
  cached migration records          {cached_records} ({cached_migration_bytes:,} bytes) of {migration_records}
  filter false positives            {fp_pct:.4f}% of {absent_keys:,} absent keys ({bits_per_key:.2f} bits/key, {bloom_probes} probes; pybloomfiltermmap3 at 16 bits/key: {peer_fp})
"""


def summary(r: dict, buckets: int) -> str:
    peer_fp = r.get("peer_pybloom_false_positive_rate")
    return SUMMARY.format(
        buckets=buckets, table_mb=r["table_bytes"] / 2**20,
        fp_pct=100 * r["filter_false_positive_rate"],
        peer_dict=r.get("peer_dict_lookup_items_per_s") or 0,
        peer_fp="n/a" if peer_fp is None else f"{100 * peer_fp:.4f}%", **r,
    )


# ---- the store ----

CHUNK = 100_000
ITEM_BYTES = 1 + 2 + 16 + 100.5 + 0.4  # encoded: varints, key, mean value (+ 2-byte varints)


_POOLS: dict = {}
POOL_BYTES = 64 << 20


def _value_pool(seed: int) -> np.ndarray:
    """64 MiB of random bytes per seed; a chunk's values are a window of it at a random offset
    (random bytes all the same, at no cost per chunk: generating them was a tenth of the load)."""
    if seed not in _POOLS:
        _POOLS.clear()
        _POOLS[seed] = np.frombuffer(np.random.default_rng([seed, 2**31]).bytes(POOL_BYTES), np.uint8)
    return _POOLS[seed]


def chunk(seed: int, c: int, n: int, value_size: int | None = None):
    """Items [c*CHUNK, c*CHUNK + n): keys uint8[n,16], value data, value offsets. Values are
    uniform in 1..VALUE_MAX bytes, or all value_size bytes."""
    rng = np.random.default_rng([seed, c])
    keys = np.frombuffer(rng.bytes(16 * n), np.uint8).reshape(n, 16)
    lengths = (rng.integers(1, VALUE_MAX + 1, size=n) if value_size is None
               else np.full(n, value_size, dtype=np.int64))
    voffs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=voffs[1:])
    total, pool = int(voffs[-1]), _value_pool(seed)
    if total > len(pool) // 2:
        return keys, np.frombuffer(rng.bytes(total), np.uint8), voffs
    at = int(rng.integers(0, len(pool) - total))
    return keys, pool[at: at + total], voffs


def choose_buckets(n: int, levels: int, node_tables: int, fill: float) -> int:
    """Tables small enough that about 1.5x the data needed to reach the last level is loaded."""
    flushes_to_last = node_tables ** (levels - 1)
    table_bytes = n * ITEM_BYTES / (1.5 * flushes_to_last)
    return int(max(1, min(8191, table_bytes / (fill * 4080))))


def read_floor(db, n: int, threads: int = 2, seed: int = 0) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of n reads of random buckets of the store's tables, each
    read and checked as a lookup reads it (ltr_store_read_floor): the machine's floor under a
    batched lookup, which hit rates are compared with."""
    ffi, lib = _binding.ffi, _binding.lib
    wall, cpu = ffi.new("double *"), ffi.new("double *")
    with db._use() as h:
        _binding.check(lib.ltr_store_read_floor(h, n, threads, seed, wall, cpu))
    return wall[0], cpu[0]


def _status(*fields) -> dict:
    """Fields of /proc/self/status, in bytes."""
    out = {}
    for line in open("/proc/self/status"):
        name = line.split(":")[0]
        if name in fields:
            out[name] = int(line.split()[1]) * 1024
    return out


class _MemPeak:
    """Samples the process's resident memory every 0.2 s: its anonymous part (what the store
    and Python allocated) apart from its file-backed part (mapped files: the BloomClusters'
    pages a probe touched, which are the page cache's and go when the kernel needs them)."""

    def __init__(self):
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            st = _status("RssAnon", "RssFile")
            self.anon = max(self.anon, st.get("RssAnon", 0))
            self.file = max(self.file, st.get("RssFile", 0))

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.anon, self.file


def proc_io() -> dict:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def process_cpu() -> float:
    """CPU seconds of this process so far, every thread (the store's background ones too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(db, n: int, seed: int, value_size: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the store) to load n items and flush; the CPU time spent
    generating the items is left out."""
    t0, c0, gen = time.perf_counter(), process_cpu(), 0.0
    for c in range((n + CHUNK - 1) // CHUNK):
        m = min(CHUNK, n - c * CHUNK)
        g0 = time.thread_time()
        keys, vdata, voffs = chunk(seed, c, m, value_size)
        gen += time.thread_time() - g0
        db.put_many(keys, (vdata, voffs))
    db.flush()
    return time.perf_counter() - t0, process_cpu() - c0 - gen


def sample_present(n: int, seed: int, count: int, value_size: int | None = None, draw: int = 0):
    """count present keys with their values, drawn from random chunks (another draw: others)."""
    rng = np.random.default_rng(seed + 7 + draw)
    chunks = (n + CHUNK - 1) // CHUNK
    keys, values = [], []
    per = max(1, count // min(chunks, 20))
    for c in rng.choice(chunks, size=min(chunks, 20), replace=False):
        m = min(CHUNK, n - c * CHUNK)
        k, vd, vo = chunk(seed, int(c), m, value_size)
        for i in rng.choice(m, size=min(per, m), replace=False):
            keys.append(k[i].tobytes())
            values.append(vd[vo[i]:vo[i + 1]].tobytes())
    return keys[:count], values[:count]


def fresh_keys(n: int, seed: int, count: int, value_size, keys) -> tuple[list, list]:
    """Present keys other than `keys`, with their values: a first pass of single gets."""
    seen = set(keys)
    fk, fv = sample_present(n, seed, count, value_size, draw=4)
    pairs = [(k, v) for k, v in zip(fk, fv) if k not in seen]
    return [k for k, _ in pairs], [v for _, v in pairs]


def delta(after: dict, before: dict, key: str):
    a, b = after[key], before[key]
    return [x - y for x, y in zip(a, b)] if isinstance(a, list) else a - b


BATCH = 1_000  # the common batch size of a user's get_many (issue 23)


def in_batches(get_many, keys, size: int = BATCH) -> list:
    out = []
    for i in range(0, len(keys), size):
        out.extend(get_many(keys[i:i + size]))
    return out


def first_pass(get, get_many, keys, values, fresh, fresh_values) -> dict:
    """The first reads of present keys after the load: `keys` in batches of BATCH, then
    `fresh` (other keys) one by one, each checked against its value. A store just loaded has
    the page cache full of what the load wrote; these passes show what a user's first reads
    meet (issue 23, part 5)."""
    io0, t = proc_io()["read_bytes"], time.perf_counter()
    got = in_batches(get_many, keys)
    batched_s, io1 = time.perf_counter() - t, proc_io()["read_bytes"]
    if got != values:
        raise AssertionError("a present key did not read back its value")
    t = time.perf_counter()
    got = [get(k) for k in fresh]
    single_s, io2 = time.perf_counter() - t, proc_io()["read_bytes"]
    if got != fresh_values:
        raise AssertionError("a present key did not read back its value")
    # what the first passes read from the device: pages the load wrote and the page cache no
    # longer held (this machine's host reclaims file pages left unused for about a minute)
    return dict(get_hit_per_s_batched_first_pass=len(keys) / batched_s,
                get_hit_per_s_single_first_pass=len(fresh) / single_s if fresh else None,
                first_pass_device_bytes_batched=io1 - io0,
                first_pass_device_bytes_single=io2 - io1 if fresh else None)


def measure_reads(db, keys, values, misses, single: int, fresh=None) -> dict:
    """Read counts from one pass over the keys in batches of BATCH (which also checks every
    value, and with `fresh` = (keys, values) is timed as the first pass, with a first pass of
    single gets over those other keys); rates from the median of three more passes, as
    bench/htable.py does (the first pass warms the caches)."""
    st0 = db.stats()
    if fresh:
        r0 = first_pass(db.get, db.get_many, keys, values, *fresh)
    else:
        r0 = {}
        if in_batches(db.get_many, keys) != values:
            raise AssertionError("a present key did not read back its value")
    st1 = db.stats()
    if fresh:  # batches that waited for the device and deepened (store_batch.c)
        r0["first_pass_batches_deepened"] = delta(st1, st0, "batches_deepened")
    # (the fresh keys' single gets read too: their counts go with the hits')
    status, _, _ = db.get_many_packed(misses)
    if status.any():
        raise AssertionError("an absent key was found")
    st2 = db.stats()
    hit_cpu, single_cpu, hit_steal = [], [], []
    hit_s = statistics.median(_timed(lambda: db.get_many(keys), 3, hit_cpu, hit_steal))
    hit_1000_s = statistics.median(_timed(lambda: in_batches(db.get_many, keys), 3))
    miss_s = statistics.median(_timed(lambda: db.get_many_packed(misses), 3))
    get = db.get
    one = keys[:single]
    for k in one:  # warm-up, as for the batches
        get(k)

    def singles():
        for k in one:
            get(k)

    single_s = statistics.median(_timed(singles, 3, single_cpu))
    # the floor under batched hits: as many bucket reads alone, on the same two threads
    floor = [read_floor(db, len(keys), 2, seed=r) for r in range(3)]
    floor_s = statistics.median(w for w, _ in floor)
    floor_cpu = statistics.median(c for _, c in floor)
    hits = delta(st1, st0, "hits_per_level")  # table hits of the batched pass and the fresh keys
    hreads = delta(st1, st0, "hit_reads_per_level")
    miss_reads = delta(st2, st1, "bucket_reads") + delta(st2, st1, "cluster_reads")
    by_level = [round(r / h, 4) if h else None for r, h in zip(hreads, hits)]
    upper_h, upper_r = sum(hits[:-1]), sum(hreads[:-1])
    return dict(
        **r0,
        get_hit_per_s_batched=len(keys) / hit_s,
        get_hit_per_s_batched_1000=len(keys) / hit_1000_s,
        get_hit_steal_cores_batched=_median_or_none(hit_steal),
        get_miss_per_s_batched=len(misses) / miss_s,
        floor_reads_per_s=len(keys) / floor_s,
        floor_cpu_us_per_read=floor_cpu / len(keys) * 1e6,
        get_hit_cpu_us_above_floor=(statistics.median(hit_cpu) - floor_cpu) / len(keys) * 1e6,
        get_hit_per_s_single=len(one) / single_s,
        get_hit_cpu_us_batched=statistics.median(hit_cpu) / len(keys) * 1e6,
        get_hit_cpu_us_single=statistics.median(single_cpu) / len(one) * 1e6,
        reads_per_get_hit=sum(hreads) / sum(hits),
        reads_per_get_hit_upper_levels=upper_r / upper_h if upper_h else None,
        reads_per_get_hit_last_level=by_level[-1],
        reads_per_get_hit_by_level=by_level,
        hits_by_level=hits,
        reads_per_get_miss=miss_reads / len(misses),
        # the data device's reads (buckets, overflow) apart from the BloomClusters' (which
        # metadata_path puts on another device)
        # (per hit answered by a table, as reads_per_get_hit: a memtable's answer reads nothing)
        data_reads_per_hit=delta(st1, st0, "bucket_reads") / sum(hits),
        cluster_reads_per_hit=delta(st1, st0, "cluster_reads") / sum(hits),
        data_reads_per_miss=delta(st2, st1, "bucket_reads") / len(misses),
        cluster_reads_per_miss=delta(st2, st1, "cluster_reads") / len(misses),
    )


def measure_store(n=200_000, bulk=False, levels=5, buckets=None, reads=200_000, single=50_000,
                  metadata=False, seed=1, directory=None, keep=False, verify=False,
                  value_size=None, direct=False, direct_rounds=3, device_seconds=2.0) -> dict:
    """Loads n items into a new store and measures it (see the module docstring). With
    verify, the store is then read whole and checked (Store.verify), after the measurements.
    With direct, a new process then reads it with direct_io against the device's own rate
    (measure_direct)."""
    # a growing trie (levels 0) takes the default table size; a fixed one is sized so that
    # every level holds data
    buckets = buckets or (8191 if not levels else choose_buckets(n, levels, 8, 0.95))
    base = directory or tempfile.mkdtemp(prefix="lsmtrie-")
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, "store")
    meta = os.path.join(base, "meta") if metadata else None
    shutil.rmtree(path, ignore_errors=True)
    io0 = proc_io()
    disk = None
    try:
        os.makedirs(path)
        disk = _DiskPeak([p for p in (path, meta) if p])  # sampled every half second
        mem = _MemPeak()
        with _store.open(path, metadata_path=meta, bulk=bulk, table_buckets=buckets,
                         levels=levels) as db:
            s0 = steal_seconds()
            load_s, load_cpu = load(db, n, seed, value_size)
            load_steal = steal_cores(s0, steal_seconds(), load_s)
            rss_load = _status("VmHWM")["VmHWM"]
            io1 = proc_io()
            st = db.stats()
            keys, values = sample_present(n, seed, min(reads, n), value_size)
            fresh = fresh_keys(n, seed, single, value_size, keys)
            misses = np.random.default_rng(seed + 99).integers(0, 256, (reads, 16), np.uint8)
            r = measure_reads(db, keys, values, misses, single, fresh)
            if verify:
                t = time.perf_counter()
                r["verified"] = db.verify()
                r["verified"]["seconds"] = time.perf_counter() - t
        peak_disk = disk.stop()  # up to close(), whose checkpoint releases the logs
        rss_anon, rss_file = mem.stop()
        at_rest = _dir_bytes([p for p in (path, meta) if p])
        reopened = measure_reopened(path, meta, n, seed, min(reads, n), single, value_size)
        uncached = (measure_direct(path, meta, n, seed, min(reads, n), single, value_size,
                                   direct_rounds, device_seconds) if direct else {})
    finally:
        if disk:
            disk.stop()
        if not keep:
            shutil.rmtree(base if not directory else path, ignore_errors=True)
    user = st["user_bytes_written"]
    os_bytes = (io1["write_bytes"] - io0["write_bytes"]) - (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"])
    return dict(
        n=n, bulk=bulk, levels=levels, table_buckets=buckets, value_size=value_size,
        load_items_per_s=n / load_s, load_seconds=load_s, load_cpu_us_per_item=load_cpu / n * 1e6,
        load_steal_cores=load_steal,
        wa_engine=st["write_amplification"], wa_os=os_bytes / user,
        bytes_written_by_kind=st["bytes_written_by_kind"],
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        peak_rss_bytes_load=rss_load, peak_rss_anon_bytes=rss_anon, peak_rss_file_bytes=rss_file,
        metadata_memory_bytes_per_item=st["metadata_memory_bytes"] / n,
        tables_per_level=st["tables_per_level"], items_per_level=st["items_per_level"],
        depth=st["levels"], peak_disk_bytes=peak_disk, disk_bytes_at_rest=at_rest,
        last_level_item_fraction=(st["items_per_level"][-1] / sum(st["items_per_level"])
                                  if sum(st["items_per_level"]) else None),
        flushes=st["flushes"], compactions=st["compactions"], gcs=st["gcs"],
        write_stalls=st["write_stalls"], **r, reopened=reopened, **uncached,
    )


# ---- a store of real files (issue 23, part 6: mixed value sizes) ----

FILE_BATCH = 2_000


def _regular_files(root: str):
    """Every regular file under root (symbolic links not followed), in a sorted walk."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


def file_batches(root: str, skipped: dict, batch: int = FILE_BATCH):
    """(keys, values) batches: paths relative to root, and contents. Unreadable files and
    files over the value limit are counted in `skipped`, not stored."""
    keys, values = [], []
    for p in _regular_files(root):
        try:
            if os.path.getsize(p) > lsmtrie.MAX_VALUE_BYTES:
                skipped["too_large"] = skipped.get("too_large", 0) + 1
                continue
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            continue
        keys.append(os.fsencode(os.path.relpath(p, root)))
        values.append(data)
        if len(keys) == batch:
            yield keys, values
            keys, values = [], []
    if keys:
        yield keys, values


def measure_files(root: str, directory=None, keep=False) -> dict:
    """Every regular file under root into a new store with default options (paths as keys,
    contents as values, put_many in batches of 2,000, the log on): load rate, write
    amplification, space at rest after close() against the bytes stored, the peak while
    loading; then a new process's read-only open reads every file back and compares it."""
    base = directory or tempfile.mkdtemp(prefix="lsmtrie-files-")
    path = os.path.join(base, "store")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    io0, skipped, files, put_s = proc_io(), {}, 0, 0.0
    disk = _DiskPeak([path])
    try:
        with _store.open(path) as db:
            for keys, values in file_batches(root, skipped):
                t = time.perf_counter()
                db.put_many(keys, values)
                put_s += time.perf_counter() - t
                files += len(keys)
            t = time.perf_counter()
            db.flush()
            put_s += time.perf_counter() - t
            st = db.stats()
            io1 = proc_io()
        peak_disk = disk.stop()
        at_rest = _dir_bytes([path])
        checked = check_files(root, path)
    finally:
        disk.stop()
        if not keep:
            shutil.rmtree(base if not directory else path, ignore_errors=True)
    user = st["user_bytes_written"]
    os_bytes = ((io1["write_bytes"] - io0["write_bytes"]) -
                (io1["cancelled_write_bytes"] - io0["cancelled_write_bytes"]))
    return dict(
        values=f"files:{root}", files=files, skipped=skipped, user_bytes=user,
        load_items_per_s=files / put_s, load_mb_per_s=user / put_s / 1e6, load_seconds=put_s,
        wa_engine=st["write_amplification"], wa_os=os_bytes / user,
        bytes_written_by_kind=st["bytes_written_by_kind"],
        disk_bytes_at_rest=at_rest, space_amplification=at_rest / user,
        peak_disk_bytes=peak_disk, tables_per_level=st["tables_per_level"],
        items_per_level=st["items_per_level"],
        table_bytes_per_level=st.get("table_bytes_per_level"), depth=st["levels"],
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        read_back=checked)


def measure_overwrites(value_size: int, n: int, rounds: int, directory=None, seed: int = 1,
                       keep=False) -> dict:
    """Large values overwritten at random (issue 23 part 6, the value logs' garbage): n items of
    value_size bytes (16-byte random keys) through put_many with the log, then `rounds` rounds
    each overwriting n random keys (some several times, some not at all) with new values, each
    round followed by flush(). After every round, and after close and a reopen that lets the
    background work settle: the directory's size against the live bytes (n items), write
    amplification, and the value logs. Every value is checked at the end."""
    base = directory or tempfile.mkdtemp(prefix="lsmtrie-overwrite-")
    path = os.path.join(base, "store")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    live = n * (16 + value_size)
    versions = np.zeros(n, dtype=np.int64)  # the round that wrote each key's value

    def values_for(idx, round_):
        """Each key's value of a round: its index and the round, repeated (checkable)."""
        v = np.empty((len(idx), value_size), dtype=np.uint8)
        for j, i in enumerate(idx):
            v[j] = np.frombuffer((b"%012d%04d" % (i, round_)) * (value_size // 16 + 1),
                                 dtype=np.uint8)[:value_size]
        return v

    batch = max(1, (64 << 20) // value_size)
    out = {"value_size": value_size, "n": n, "rounds": rounds, "live_bytes": live, "by_round": []}
    disk = None
    try:
        disk = _DiskPeak([path])  # sampled every half second, and after each round below
        with _store.open(path) as db:
            for r in range(rounds + 1):
                idx = np.arange(n) if r == 0 else rng.integers(0, n, size=n)
                for lo in range(0, len(idx), batch):
                    part = idx[lo:lo + batch]
                    db.put_many(keys[part], values_for(part, r))
                versions[idx] = r
                db.flush()
                st = db.stats()
                out["by_round"].append({
                    "round": r, "disk_bytes": _dir_bytes([path]),
                    "space_amplification": _dir_bytes([path]) / live,
                    "wa_engine": st["write_amplification"], "blob_files": st["blob_files"],
                    "blob_bytes": st["blob_bytes"], "blob_live_bytes": st["blob_live_bytes"],
                    "blob_bytes_written": st["bytes_written_by_kind"]["blobs"]})
        with _store.open(path) as db:  # a reopen: recovery, then the background work settles
            db.flush()
            st = db.stats()
            ok = True
            for lo in range(0, n, batch):  # a batch at a time: n values may not fit in memory
                got = db.get_many_packed(keys[lo:lo + batch])
                values = got[1]
                ok = ok and all(values[got[2][j]:got[2][j + 1]] ==
                                values_for([lo + j], int(versions[lo + j])).tobytes()
                                for j in range(len(got[2]) - 1))
        out.update(disk_bytes_at_rest=_dir_bytes([path]),
                   space_amplification=_dir_bytes([path]) / live,
                   wa_engine=st["write_amplification"], blob_files=st["blob_files"],
                   bytes_written_by_kind=st["bytes_written_by_kind"], values_checked=ok)
        out["peak_disk_bytes"] = max([disk.stop()] + [r["disk_bytes"] for r in out["by_round"]])
        # issue 23 part 1: the directory's peak while writing against its size at rest
        out["peak_vs_rest"] = out["peak_disk_bytes"] / out["disk_bytes_at_rest"]
    finally:
        if disk:
            disk.stop()
        if not keep:
            shutil.rmtree(base if not directory else path, ignore_errors=True)
    return out


def check_files(root: str, path: str) -> dict:
    """Reads every file back through a new process's read-only open and compares it."""
    code = ("import json, sys; import measure; "
            "print(json.dumps(measure.compare_files(*json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.path.dirname(here),
                                                    env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", code, json.dumps([root, path])], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare_files(root: str, path: str) -> dict:
    """(in the new process) Every file's contents against the store's value for its path."""
    files = differ = 0
    t = time.perf_counter()
    with _store.open(path, read_only=True) as db:
        for keys, values in file_batches(root, {}):
            got = db.get_many(keys)
            differ += sum(g != v for g, v in zip(got, values))
            files += len(keys)
    if differ:
        raise AssertionError(f"{differ} of {files} files read back differently")
    return dict(files=files, identical=files, seconds=time.perf_counter() - t)


_READ_RATES = ("get_hit_per_s_batched", "get_hit_per_s_batched_1000", "get_hit_cpu_us_batched", "get_hit_per_s_single",
               "get_hit_cpu_us_single", "get_miss_per_s_batched", "floor_reads_per_s",
               "floor_cpu_us_per_read", "get_hit_cpu_us_above_floor", "get_hit_steal_cores_batched")


def reads_of_store(path, meta, n: int, seed: int, reads: int, single: int,
                   value_size: int | None = None) -> dict:
    """The read rates of an existing store (measure_reads), opened read-only."""
    with _store.open(path, metadata_path=meta, read_only=True) as db:
        keys, values = sample_present(n, seed, reads, value_size)
        misses = np.random.default_rng(seed + 99).integers(0, 256, (reads, 16), np.uint8)
        r = measure_reads(db, keys, values, misses, single)
    return {k: r[k] for k in _READ_RATES}


def _in_new_process(function: str, *args) -> dict:
    """measure.<function>(*args) run by a new Python process; its JSON result."""
    code = ("import json, sys; import measure; "
            f"print(json.dumps(measure.{function}(*json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    paths = [HERE, os.path.dirname(HERE), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    run = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                         capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"measure.{function} failed in its process:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure_reopened(path, meta, n: int, seed: int, reads: int, single: int,
                     value_size: int | None = None) -> dict:
    """The same reads by a new process that opens the store afterwards, as a user of an
    existing store sees them. (In the process that loaded it they cost somewhat more CPU per
    key: the metadata a lookup walks was allocated piecemeal over the load, see the README.)"""
    return _in_new_process("reads_of_store", path, meta, n, seed, reads, single, value_size)


# ---- uncached reads: direct_io against the device's own rate (issue 23) ----

READS_COUNTED_BY = ("the engine's counters: stats() bucket_reads (bucket pages and overflow "
                    "records read from table files, with O_DIRECT: the data device) and "
                    "cluster_reads (BloomCluster columns, mapped: the page cache, or the device "
                    "of metadata_path); device_reads_per_*_sysfs beside them count every read "
                    "the block device holding the store completed meanwhile, other processes' too")


def device_tool(directory: str) -> str:
    """bench/device_reads.c built into directory (needs gcc)."""
    exe = os.path.join(directory, "device_reads")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "device_reads.c"), "-lpthread"],
                   check=True)
    return exe


def device_read_rate(exe: str, directory: str, files: list, depth: int, mode: str,
                     seconds: float) -> tuple[float, float]:
    """(reads/s, CPU us per read) of random 4 KB O_DIRECT reads of whole blocks of files (names
    in directory, picked by size) at queue depth `depth` for `seconds`: `threads` (as many
    threads, each waiting for one pread) or `uring` (one io_uring kept that deep)."""
    run = subprocess.run([exe, str(seconds), str(depth), mode], cwd=directory,
                         input="\n".join(files), capture_output=True, text=True,
                         timeout=10 * seconds + 60)
    if run.returncode:
        raise RuntimeError(f"device_reads {depth} {mode} failed: {run.stderr.strip()}")
    reads, wall, cpu = run.stdout.split()
    return int(reads) / float(wall), float(cpu) / max(1, int(reads)) * 1e6


def block_device_reads(path: str) -> int | None:
    """Reads completed so far by the block device holding path (/sys/dev/block/M:m/stat), or
    None where it cannot be told."""
    st = os.stat(path)
    try:
        with open(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _per(delta, count):
    return None if delta is None or not count else delta / count


def _direct_counts(db, path, keys, values, misses) -> dict:
    """Reads per hit and per miss of a direct_io store: the engine's counters (bucket pages
    and overflow records, BloomCluster columns) and the block device's own count."""
    st0, d0 = db.stats(), block_device_reads(path)
    if db.get_many(keys) != values:
        raise AssertionError("a present key did not read back its value (direct_io)")
    st1, d1 = db.stats(), block_device_reads(path)
    if db.get_many_packed(misses)[0].any():
        raise AssertionError("an absent key was found (direct_io)")
    st2, d2 = db.stats(), block_device_reads(path)
    hits = sum(delta(st1, st0, "hits_per_level"))
    return dict(
        data_reads_per_hit_direct=delta(st1, st0, "bucket_reads") / hits,
        cluster_reads_per_hit_direct=delta(st1, st0, "cluster_reads") / hits,
        data_reads_per_miss_direct=delta(st2, st1, "bucket_reads") / len(misses),
        cluster_reads_per_miss_direct=delta(st2, st1, "cluster_reads") / len(misses),
        device_reads_per_hit_sysfs=_per(None if d0 is None else d1 - d0, len(keys)),
        device_reads_per_miss_sysfs=_per(None if d1 is None else d2 - d1, len(misses)),
        reads_counted_by=READS_COUNTED_BY,
    )


def _device_round(exe, path, files, depth, seconds, rates, cpus):
    """One measurement of each way of reading at depth `depth`, appended to rates and cpus."""
    for mode in ("threads", "uring"):
        rate, cpu = device_read_rate(exe, path, files, depth, mode, seconds)
        rates.setdefault(mode, []).append(rate)
        cpus.setdefault(mode, []).append(cpu)


def direct_reads_of_store(path, meta, n: int, seed: int, reads: int, single: int,
                          value_size: int | None = None, rounds: int = 3,
                          seconds: float = 2.0) -> dict:
    """The uncached figures of bench/store.py --direct: the store opened read-only with
    direct_io; a first pass checks every value and counts reads per hit and per miss; then
    `rounds` rounds, each of the device's random 4 KB O_DIRECT reads over the store's table
    files at queue depth 1, single gets, the device's reads at the batched gets' depth, and
    batched gets, each round with keys of its own (the same blocks read again could come from
    a cache below the guest: this machine's disk is cached by its host). Rates are medians over
    the rounds; the device's rate at a depth is, each round, the better of its two ways
    (threads or io_uring)."""
    depth = _binding.lib.LTR_BATCH_READ_DEPTH
    files = sorted(f for f in os.listdir(path) if f.endswith(".ht"))
    keys, values = sample_present(n, seed, reads, value_size)
    misses = np.random.default_rng(seed + 99).integers(0, 256, (reads, 16), np.uint8)
    singles = [sample_present(n, seed, single, value_size, draw=1000 + r)[0] for r in range(rounds)]
    from_c = [pack(sample_present(n, seed, single, value_size, draw=3000 + r)[0])
              for r in range(rounds)]
    batches = [sample_present(n, seed, reads, value_size, draw=2000 + r)[0] for r in range(rounds)]
    dev = {1: ({}, {}), depth: ({}, {})}  # depth: (reads/s by way, CPU us by way)
    single_rates, single_cpu, batch_rates, batch_cpu, c_rates = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, \
            _store.open(path, metadata_path=meta, read_only=True, direct_io=True) as db:
        exe = device_tool(tmp)
        r = _direct_counts(db, path, keys, values, misses)
        get = db.get
        for rnd in range(rounds):
            _device_round(exe, path, files, 1, seconds, *dev[1])
            one = singles[rnd]
            wall = _timed(lambda: [get(k) for k in one], 1, single_cpu)[0]
            single_rates.append(len(one) / wall)
            c_rates.append(_get_each(db, from_c[rnd]))
            _device_round(exe, path, files, depth, seconds, *dev[depth])
            batch = batches[rnd]
            wall = _timed(lambda: db.get_many(batch), 1, batch_cpu)[0]
            batch_rates.append(len(batch) / wall)
    best = {d: [max(pair) for pair in zip(*dev[d][0].values())] for d in dev}
    med = statistics.median
    single_s, batched, qd1, qdd = med(single_rates), med(batch_rates), med(best[1]), med(best[depth])
    r.update({
        "batch_read_depth": depth,
        "get_hit_per_s_single_direct": single_s,
        "get_hit_per_s_batched_direct": batched,
        "get_hit_cpu_us_single_direct": med(single_cpu) / single * 1e6,
        "get_hit_cpu_us_batched_direct": med(batch_cpu) / reads * 1e6,
        "device_read_iops_qd1": qd1,
        f"device_read_iops_qd{depth}": qdd,
        "single_direct_vs_device_qd1": single_s / qd1,
        # the same single gets from C (ltr_store_get_each): the store without the Python call
        "get_hit_per_s_single_direct_from_c": med(c_rates),
        "single_direct_from_c_vs_device_qd1": med(c_rates) / qd1,
        f"batched_direct_vs_device_qd{depth}": batched / qdd,
        "direct_rounds": {"single": single_rates, "single_from_c": c_rates,
                          "batched": batch_rates},
        "device_read_iops_by_way": {f"qd{d}": dev[d][0] for d in dev},
        "device_read_cpu_us_by_way": {f"qd{d}": dev[d][1] for d in dev},
        "device_files": len(files),
        "device_file_bytes": sum(os.path.getsize(os.path.join(path, f)) for f in files),
    })
    return r


def _get_each(db, k) -> float:
    """Single gets of the packed keys k from C, one after the other (ltr_store_get_each): gets/s.
    Every key must be found."""
    lib = _binding.lib
    with db._use() as h:
        t = time.perf_counter()
        found = lib.ltr_store_get_each(h, _binding.ptr_u8(k.data), _binding.ptr_i64(k.offsets), k.n)
        wall = time.perf_counter() - t
    _binding.check(found if found < 0 else 0)
    if found != k.n:
        raise AssertionError(f"{k.n - found} present keys were not found")
    return k.n / wall


def measure_direct(path, meta, n: int, seed: int, reads: int, single: int,
                   value_size: int | None = None, rounds: int = 3, seconds: float = 2.0) -> dict:
    """direct_reads_of_store in a new process (its page cache holds no table it read)."""
    return _in_new_process("direct_reads_of_store", path, meta, n, seed, reads, single,
                           value_size, rounds, seconds)


STORE_SUMMARY = """\
lsmtrie store: {n:,} items (16-byte keys, values 1..200 bytes), {levels} levels, tables of {table_buckets} buckets, {mode}
  load                {load_items_per_s:>12,.0f} items/s  ({load_seconds:.1f} s, until compactions settled; {load_cpu_us_per_item:.2f} us CPU/item{load_steal})
  write amplification {wa_os:>12.2f} (OS write_bytes)   {wa_engine:.2f} (engine counters)
  gets, hits batched  {get_hit_per_s_batched:>12,.0f} /s  ({get_hit_cpu_us_batched:.2f} us CPU/key{hit_steal})
  gets, hits single   {get_hit_per_s_single:>12,.0f} /s  ({get_hit_cpu_us_single:.2f} us CPU/key)
  gets, misses batch  {get_miss_per_s_batched:>12,.0f} /s
  bucket reads alone  {floor_reads_per_s:>12,.0f} /s  ({floor_cpu_us_per_read:.2f} us CPU/read: random buckets read and checked on two threads, the floor under batched hits; a hit costs {get_hit_cpu_us_above_floor:.2f} us more)
  reopened by a new process: hits batched {reopened[get_hit_per_s_batched]:,.0f} /s ({reopened[get_hit_cpu_us_batched]:.2f} us CPU/key), single {reopened[get_hit_per_s_single]:,.0f} /s, misses batched {reopened[get_miss_per_s_batched]:,.0f} /s, bucket reads alone {reopened[floor_reads_per_s]:,.0f} /s (a hit {reopened[get_hit_cpu_us_above_floor]:.2f} us more)
  reads per hit       {reads_per_get_hit:.4f} overall; by level {reads_per_get_hit_by_level}
  reads per miss      {reads_per_get_miss:.4f}
  peak RSS            {peak_rss_mb:,.0f} MB;  metadata memory {metadata_memory_bytes_per_item:.2f} bytes/item
  tables per level    {tables_per_level};  items per level {items_per_level}
"""




def _steal_note(cores) -> str:
    return "" if cores is None else f"; the hypervisor took {cores:.2f} cores meanwhile"


def store_summary(r: dict) -> str:
    text = STORE_SUMMARY.format(mode="bulk (no log)" if r["bulk"] else "with the log",
                                peak_rss_mb=r["peak_rss_bytes"] / 2**20,
                                load_steal=_steal_note(r["load_steal_cores"]),
                                hit_steal=_steal_note(r["get_hit_steal_cores_batched"]), **r)
    if "verified" in r:
        text += VERIFIED.format(**r["verified"])
    if "get_hit_per_s_single_direct" in r:
        text += direct_summary(r)
    return text


def direct_summary(r: dict) -> str:
    d = r["batch_read_depth"]
    return DIRECT.format(d=d, qdd=r[f"device_read_iops_qd{d}"],
                         batched_vs=r[f"batched_direct_vs_device_qd{d}"],
                         rounds=len(r["direct_rounds"]["single"]), **r)


DIRECT = """\
  direct_io (new process, read-only; medians of {rounds} rounds against the device's own random 4 KB O_DIRECT reads over the store's {device_files:,} table files)
    single gets       {get_hit_per_s_single_direct:>12,.0f} /s  ({get_hit_cpu_us_single_direct:.2f} us CPU/key); device at queue depth 1 {device_read_iops_qd1:,.0f} /s: {single_direct_vs_device_qd1:.1%}
    the same from C   {get_hit_per_s_single_direct_from_c:>12,.0f} /s  (ltr_store_get_each, without the Python call): {single_direct_from_c_vs_device_qd1:.1%}
    batched gets      {get_hit_per_s_batched_direct:>12,.0f} /s  ({get_hit_cpu_us_batched_direct:.2f} us CPU/key); device at queue depth {d} {qdd:,.0f} /s: {batched_vs:.1%}
    data reads        {data_reads_per_hit_direct:.4f} per hit, {data_reads_per_miss_direct:.4f} per miss (engine counters; BloomCluster columns {cluster_reads_per_hit_direct:.4f} / {cluster_reads_per_miss_direct:.4f})
"""


VERIFIED = """\
  verified            sound: {tables:,} tables ({items:,} items) and {clusters:,} BloomClusters read whole and checked in {seconds:.1f} s
"""
