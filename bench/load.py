"""The bulk loader's benchmark: `lsmtrie load` against the peers' own bulk paths, same items.

    bench/load.py --n N [--key-size 16 --value-size 16] [--dir DIR] [--json]
                  [--input FILE [--make-input] --format tsv] [--peers rocksdb,leveldb | none]
                  [--reads 200000]

lsmtrie loads through the command itself (`python -m lsmtrie load STORE --generate N --json`,
or `--input FILE`), in a process of its own; its JSON gives the load rate, the process's
write_bytes (less cancelled) over the user bytes (`wa_os`), peak RSS and peak disk. Then a new
process opens the store read-only and reads: present keys (regenerated from the same seed) and
absent ones, one by one and in batches of 1,000, with the store's own counters of bucket and
BloomCluster reads per GET. The peers (RocksDB through rocksdict, LevelDB through plyvel, each
with a 10-bit Bloom filter and otherwise defaults, no WAL, written in batches of 100,000 from the
same generator) load and read the same way in processes of their own. Stores are made inside DIR
(a temporary directory by default) and removed afterwards.

`--input FILE` times loading a file instead (lsmtrie only; `load_items_per_s` is then lines
per second and `load_input_bytes_per_s` the file's bytes per second). With `--make-input` the
file is first written (untimed) from the generator's N items in --format, through the C
formatter: a tsv of raw 16-byte keys and values is about 34.5 bytes a line (escapes included),
and since it holds the generator's items the reads are measured as after --generate.

Prints one JSON object (--json) or a short table: per engine load_items_per_s, wa_os,
peak_rss_bytes, peak_disk_bytes, store_bytes, reads_per_hit, reads_per_miss (lsmtrie: data and
cluster reads separately), single_gets_per_s, batched_gets_per_s, last_level_item_fraction.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in each engine's process: the generator of lsmtrie.bulk (the command's own), so every
# engine gets the same items in the same order.
COMMON = textwrap.dedent(r'''
    import json, os, sys, time, threading
    import numpy as np
    sys.path.insert(0, ROOT)
    from lsmtrie.bulk import LoadOptions, _generated, _dir_bytes

    def io_written():
        f = dict(line.split(":") for line in open("/proc/self/io"))
        return int(f["write_bytes"]) - int(f["cancelled_write_bytes"])

    def peak_rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def batches(n, ks, vs, seed):
        o = LoadOptions(generate=n, key_size=ks, value_size=vs, seed=seed)
        for b, k, ko, v, vo, m in _generated(n, o, 0):
            kb, vb = k.tobytes(), v.tobytes()
            yield [kb[i * ks:(i + 1) * ks] for i in range(m)], [vb[i * vs:(i + 1) * vs] for i in range(m)]

    def sample_keys(n, ks, vs, seed, count):
        """count present keys spread over the data set, and count absent ones."""
        o = LoadOptions(generate=n, key_size=ks, value_size=vs, seed=seed)
        per = max(1, count // max(1, (n + 2**20 - 1) // 2**20))
        present = []
        for b, k, ko, v, vo, m in _generated(n, o, 0):
            kb = k.tobytes()
            step = max(1, m // per)
            present += [kb[i * ks:(i + 1) * ks] for i in range(0, m, step)]
            if len(present) >= count:
                break
        rng = np.random.default_rng(12345)
        absent = [bytes(rng.integers(0, 256, ks, dtype=np.uint8)) + b"\xff" for _ in range(count)]
        return present[:count], absent

    class DiskPeak:
        def __init__(self, path):
            self.path, self.peak, self.stop_ = path, 0, threading.Event()
            self.t = threading.Thread(target=self.run, daemon=True); self.t.start()
        def run(self):
            while not self.stop_.wait(0.5):
                self.peak = max(self.peak, _dir_bytes([self.path]))
        def stop(self):
            self.stop_.set(); self.t.join()
            return max(self.peak, _dir_bytes([self.path]))
''')

PEER_LOAD = {
    "rocksdb": textwrap.dedent(r'''
        from rocksdict import AccessType, BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions
        def options():
            opt = Options(raw_mode=True)
            opt.create_if_missing(True)
            t = BlockBasedOptions()
            t.set_bloom_filter(10, False)
            opt.set_block_based_table_factory(t)
            return opt
        def open_write():
            return Rdict(PATH, options())
        WO = WriteOptions()
        WO.disable_wal = True
        def write(db, keys, values):
            wb = WriteBatch(raw_mode=True)
            for k, v in zip(keys, values):
                wb.put(k, v)
            db.write(wb, WO)
        def finish(db):
            db.flush()
            db.close()
        def reopen():
            return Rdict(PATH, options(), access_type=AccessType.read_only())
    '''),
    "leveldb": textwrap.dedent(r'''
        import plyvel
        def open_write():
            return plyvel.DB(PATH, create_if_missing=True, bloom_filter_bits=10)
        def write(db, keys, values):
            with db.write_batch(sync=False) as wb:
                for k, v in zip(keys, values):
                    wb.put(k, v)
        def finish(db):
            db.close()
        def reopen():
            return plyvel.DB(PATH, bloom_filter_bits=10)
    '''),
}

PEER_RUN = textwrap.dedent(r'''
    n, ks, vs, seed = N, KS, VS, SEED
    disk = DiskPeak(PATH)
    db = open_write()
    w0, t0 = io_written(), time.monotonic()
    for keys, values in batches(n, ks, vs, seed):
        for i in range(0, len(keys), 100_000):
            write(db, keys[i:i + 100_000], values[i:i + 100_000])
    finish(db)
    seconds = time.monotonic() - t0
    print(json.dumps(dict(load_items_per_s=n / seconds, load_seconds=seconds,
                          wa_os=(io_written() - w0) / (n * (ks + vs)), peak_rss_bytes=peak_rss(),
                          peak_disk_bytes=disk.stop(), store_bytes=_dir_bytes([PATH]))))
''')

READ = textwrap.dedent(r'''
    present, absent = sample_keys(N, KS, VS, SEED, READS)
    out = {}
    db = open_db()
    def rate(keys, single):
        t0 = time.monotonic()
        if single:
            for k in keys:
                get(db, k)
        else:
            for i in range(0, len(keys), 1000):
                get_many(db, keys[i:i + 1000])
        return len(keys) / (time.monotonic() - t0)
    c0 = counters(db)
    got = [get(db, k) for k in present[:1000]]
    assert all(g is not None for g in got), "a present key was not found"
    c1 = counters(db)
    assert all(get(db, k) is None for k in absent[:1000]), "an absent key was found"
    c2 = counters(db)
    out.update(reads(c0, c1, c2, 1000))
    out["single_gets_per_s"] = rate(present, True)
    out["batched_gets_per_s"] = rate(present, False)
    out["single_misses_per_s"] = rate(absent, True)
    out.update(extra(db))
    print(json.dumps(out))
''')

LSMTRIE_READ = textwrap.dedent(r'''
    import lsmtrie
    def open_db(): return lsmtrie.Store(PATH, read_only=True)
    def get(db, k): return db.get(k)
    def get_many(db, ks): return db.get_many(ks)
    def counters(db):
        s = db.stats(); return (s["bucket_reads"], s["cluster_reads"])
    def reads(c0, c1, c2, n):
        return {"data_reads_per_hit": (c1[0] - c0[0]) / n, "cluster_reads_per_hit": (c1[1] - c0[1]) / n,
                "data_reads_per_miss": (c2[0] - c1[0]) / n, "cluster_reads_per_miss": (c2[1] - c1[1]) / n,
                "reads_per_hit": (c1[0] - c0[0] + c1[1] - c0[1]) / n,
                "reads_per_miss": (c2[0] - c1[0] + c2[1] - c1[1]) / n}
    def extra(db):
        items = db.stats()["items_per_level"]
        return {"last_level_item_fraction": items[-1] / sum(items) if sum(items) else None}
''')

PEER_READ = {
    "rocksdb": textwrap.dedent(r'''
        def open_db(): return reopen()
        def get(db, k): return db.get(k)
        def get_many(db, ks): return db[ks]
        def counters(db): return (0, 0)
        def reads(c0, c1, c2, n): return {}
        def extra(db): return {}
    '''),
    "leveldb": textwrap.dedent(r'''
        def open_db(): return reopen()
        def get(db, k): return db.get(k)
        def get_many(db, ks): return [db.get(k) for k in ks]
        def counters(db): return (0, 0)
        def reads(c0, c1, c2, n): return {}
        def extra(db): return {}
    '''),
}


def child(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench/load.py: a measuring process failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def header(path: str, a) -> str:
    return (f"ROOT = {ROOT!r}\nPATH = {path!r}\nN = {a.n}\nKS = {a.key_size}\nVS = {a.value_size}\n"
            f"SEED = {a.seed}\nREADS = {a.reads}\n") + COMMON


def run_lsmtrie(path: str, a) -> dict:
    cmd = [sys.executable, "-m", "lsmtrie", "load", path] + ([a.input] if a.input else [])
    cmd += ["--json", "--no-progress"]
    cmd += (["--format", a.format] if a.input else
            ["--generate", str(a.n), "--key-size", str(a.key_size), "--value-size", str(a.value_size),
             "--seed", str(a.seed)])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"bench/load.py: lsmtrie load failed: {r.stderr.strip()}")
    s = json.loads(r.stdout)
    out = {"load_items_per_s": s["items_per_s"], "load_seconds": s["seconds"],
           "load_input_bytes_per_s": os.path.getsize(a.input) / s["seconds"] if a.input else None,
           "wa_os": s["write_amplification"], "peak_rss_bytes": s["peak_rss_bytes"],
           "peak_disk_bytes": s["peak_disk_bytes"], "store_bytes": s["store_bytes"],
           "items_loaded": s["items_loaded"], "command": " ".join(cmd[1:])}
    if not a.input or a.make_input:
        out.update(child(header(path, a) + LSMTRIE_READ + READ))
    return out


def make_input(a) -> None:
    """Writes the generator's N items to a.input in a.format (the C formatter, a batch at a
    time), so that a file load can be timed on the same items as --generate."""
    sys.path.insert(0, ROOT)
    from lsmtrie._parse import Batch, format_items
    from lsmtrie.bulk import LoadOptions, _generated
    o = LoadOptions(generate=a.n, key_size=a.key_size, value_size=a.value_size, seed=a.seed)
    with open(a.input, "wb") as f:
        for _, k, ko, v, vo, _ in _generated(a.n, o, 0):
            f.write(format_items(Batch(k.tobytes(), ko, v.tobytes(), vo), a.format,
                                 key_size=a.key_size, value_size=a.value_size))


def run_peer(name: str, path: str, a) -> dict:
    code = header(path, a) + PEER_LOAD[name]
    out = child(code + PEER_RUN)
    out.update(child(code + PEER_READ[name] + READ))
    return out


def revision() -> str | None:
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--key-size", type=int, default=16)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reads", type=int, default=200_000)
    p.add_argument("--dir", default=None, help="where the stores are made (default: a temporary directory)")
    p.add_argument("--input", default=None, help="time loading this file instead (lsmtrie only)")
    p.add_argument("--make-input", action="store_true",
                   help="first write --input from the generator's N items (not timed)")
    p.add_argument("--format", default="tsv")
    p.add_argument("--peers", default="rocksdb,leveldb", help="rocksdb,leveldb or none")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.make_input:
        if not a.input:
            p.error("--make-input needs --input FILE")
        make_input(a)
    base = tempfile.mkdtemp(prefix="lsmtrie-bench-load-", dir=a.dir)
    result = {"n": a.n, "key_size": a.key_size, "value_size": a.value_size, "seed": a.seed,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "revision": revision(), "command": " ".join(sys.argv), "engines": {}}
    peers = [] if a.peers == "none" or a.input else [x for x in a.peers.split(",") if x]
    try:
        for name in ["lsmtrie"] + peers:
            path = os.path.join(base, name)
            if not a.json:
                print(f"{name}: loading {a.n:,} items", file=sys.stderr)
            result["engines"][name] = run_lsmtrie(path, a) if name == "lsmtrie" else run_peer(name, path, a)
            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if a.json:
        print(json.dumps(result))
    else:
        keys = ["load_items_per_s", "wa_os", "peak_rss_bytes", "peak_disk_bytes", "store_bytes",
                "reads_per_hit", "single_gets_per_s", "batched_gets_per_s", "last_level_item_fraction"]
        print(f"{'':26}" + "".join(f"{n:>16}" for n in result["engines"]))
        for k in keys:
            row = [result["engines"][n].get(k) for n in result["engines"]]
            print(f"{k:26}" + "".join(f"{v:>16,.3f}" if isinstance(v, float) else f"{v!s:>16}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
