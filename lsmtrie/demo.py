"""The HTable demonstration and benchmark: build one table from generated items, read every key
back, probe absent keys, and report the figures of the foundation issue. `python -m lsmtrie demo`
runs it on a small table; `bench/htable.py` runs it on a default 32 MB table.

Items are 16-byte random keys with values of uniform length 1..200 bytes, generated with numpy
and handed to the builder as packed buffers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from .htable import HTable, HTableBuilder, Lookup, TableOptions

KEY_BYTES = 16
VALUE_MAX = 200


def generate(n: int, seed: int):
    """n random items: (keys uint8[n,16], value data uint8[], value offsets int64[n+1])."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, size=(n, KEY_BYTES), dtype=np.uint8)
    lengths = rng.integers(1, VALUE_MAX + 1, size=n)
    voffs = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=voffs[1:])
    vdata = rng.integers(0, 256, size=int(voffs[-1]), dtype=np.uint8)
    return keys, vdata, voffs


def _candidates(options: TableOptions) -> int:
    mean_item = 1 + 2 + KEY_BYTES + (1 + VALUE_MAX) / 2
    return int(options.fill * options.buckets * 4080 / mean_item * 1.1) + 100


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


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
