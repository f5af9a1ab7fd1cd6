#!/usr/bin/env python3
"""Runs the power-cut trials of tests/test_store_powercut.py with random configurations and seeds
until the time is up, and reports each failure with the configuration and seed that produced it.

    .venv/bin/python scripts/powercut_stress.py --dir /tmp/stress --seconds 1200

Under AddressSanitizer, run it with the sanitizer's venv and LD_PRELOAD as docs/development.md
shows for the test suite. Trials are not reproducible exactly (the kill lands where the clock
says), but a failing configuration and seed usually fail again within a few runs.
"""

import argparse
import os
import pathlib
import random
import shutil
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import powercut  # noqa: E402
import test_store_crash as crash  # noqa: E402
import test_store_powercut as cuts  # noqa: E402

LAST = dict(table_buckets=16, node_tables=2, levels=2, memtable_bytes=2000, gc_threshold=0.2,
            max_open_files=4, **crash.FAST)


def configs(lib):
    """name -> function(tmp_path, seed) running one set of trials."""
    t = cuts.powercut_trials
    return {
        "tiny": lambda tp, s: t(tp, lib, crash.TINY_MEM, trials=8, n=800, seed=s),
        "sync": lambda tp, s: t(tp, lib, dict(crash.TINY_MEM, sync=True), trials=6, n=300,
                                seed=s, store_sync=True, gen=dict(p_sync=0.0)),
        "flush": lambda tp, s: t(tp, lib, dict(table_buckets=16, node_tables=2, levels=2,
                                               **crash.FAST),
                                 trials=6, n=1200, seed=s, flush_every=97,
                                 gen=dict(vmax=300, nkeys=2000)),
        "syncfs": lambda tp, s: t(tp, lib, crash.TINY_MEM, trials=6, n=800, seed=s,
                                  flush_every=61, hooks={"ltr_test_syncfs_min": 1}),
        "last_level": lambda tp, s: t(tp, lib, LAST, trials=6, n=900, seed=s,
                                      gen=dict(nkeys=200, vmax=200)),
        "last_level_meta": lambda tp, s: t(tp, lib, dict(LAST, metadata_path=str(tp / "meta")),
                                           trials=6, n=900, seed=s, meta=str(tp / "meta"),
                                           gen=dict(nkeys=200, vmax=200)),
        "big_values": lambda tp, s: t(tp, lib, dict(table_buckets=64, node_tables=2, levels=3,
                                                    **crash.FAST),
                                      trials=6, n=300, seed=s, gen=dict(vmax=60000, nkeys=400)),
        # values in value logs (from 32 bytes), which rotate every 32 KiB, are overwritten and
        # collected: cuts between a value log's append and the log's, and in the GC's rewrites
        "value_logs_gc": lambda tp, s: t(tp, lib, dict(table_buckets=16, node_tables=2, levels=0,
                                                    memtable_bytes=1500, min_blob_size=32,
                                                    **crash.FAST),
                                      trials=6, n=1200, seed=s, gen=dict(nkeys=300, vmax=3000),
                                      hooks={"ltr_test_blob_file_bytes": 32768}),
        "value_logs": lambda tp, s: t(tp, lib, dict(crash.TINY_MEM, min_blob_size=100),
                                      trials=6, n=300, seed=s,
                                      gen=dict(vmax=20000, nkeys=150, p_sync=0.1),
                                      hooks={"ltr_test_blob_file_bytes": 1 << 16}),
        "value_logs_sync": lambda tp, s: t(tp, lib, dict(crash.TINY_MEM, sync=True),
                                           trials=6, n=250, seed=s, store_sync=True,
                                           gen=dict(vmax=20000, nkeys=150, p_sync=0.0),
                                           hooks={"ltr_test_blob_file_bytes": 1 << 16}),
        "log_space": lambda tp, s: t(tp, lib, dict(table_buckets=16, node_tables=2, levels=3,
                                                   **crash.FAST),
                                     trials=6, n=1200, seed=s, gen=dict(vmax=300, nkeys=2000),
                                     hooks={"ltr_test_log_limits": [16384, 49152]}),
        "manifest_rotation": lambda tp, s: t(tp, lib, dict(table_buckets=4, node_tables=2,
                                                           levels=3, memtable_bytes=300,
                                                           **crash.FAST),
                                             trials=6, n=1500, seed=s,
                                             hooks={"ltr_test_manifest_rotation": 2048}),
        "deepening": lambda tp, s: t(tp, lib, dict(table_buckets=16, node_tables=2, levels=0,
                                                   memtable_bytes=1500, **crash.FAST),
                                     trials=6, n=2000, seed=s, gen=dict(nkeys=20000, vmax=200)),
        "deepening_rotation": lambda tp, s: t(tp, lib, dict(table_buckets=4, node_tables=2,
                                                            levels=0, memtable_bytes=300,
                                                            **crash.FAST),
                                              trials=6, n=1500, seed=s,
                                              gen=dict(nkeys=20000, vmax=100),
                                              hooks={"ltr_test_manifest_rotation": 2048}),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, help="scratch directory (emptied first)")
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--only", default=None, help="one configuration by name")
    a = p.parse_args()
    root = pathlib.Path(a.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    lib = powercut.build(str(root))
    table = configs(lib)
    names = [a.only] if a.only else sorted(table)
    rng = random.Random()
    deadline, runs, fails = time.time() + a.seconds, 0, 0
    while time.time() < deadline:
        name, seed = rng.choice(names), rng.randrange(1 << 20)
        tp = root / f"{name}-{seed}"
        tp.mkdir()
        try:
            table[name](tp, seed)
            shutil.rmtree(tp)
        except Exception:
            fails += 1
            print(f"FAIL {name} seed {seed} (kept in {tp}):\n{traceback.format_exc()[-2000:]}",
                  flush=True)
        runs += 1
        print(f"{runs} runs, {fails} failed", flush=True)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
