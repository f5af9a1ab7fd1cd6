"""Log space and crash recovery through a long load (issue 20).

Loads N items (16-byte random keys, 16-byte values by default) through put_many in batches, with
the log on and default options, sampling once a second the bytes of the store's logs (`*.wal`)
and of its whole directory. Then the loading process dies without close() (SIGKILL), and the store
is reopened read-only and then for writing, each in a new process, timing the open and its peak
RSS, and checking sampled keys.

    .venv/bin/python bench/log_space.py --n 300000000 --dir /work/tmp/logspace

Figures (JSON): user_bytes, log_bytes_written, wal_bytes_peak, wal_files_peak, dir_bytes_peak,
dir_bytes_after_load, load_items_per_s; reopen_read_only_s, reopen_read_only_rss_bytes,
reopen_writable_s, reopen_writable_rss_bytes, keys_checked. The bound: wal_bytes_peak <= 2 GiB
plus one batch's record.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

LOADER = r'''
import os, sys, time
import numpy as np
import lsmtrie

path, n, batch, klen, vlen = sys.argv[1], *map(int, sys.argv[2:6])
db = lsmtrie.open(path)
rng = np.random.default_rng(20)
done = 0
while done < n:
    m = min(batch, n - done)
    keys = rng.integers(0, 256, size=(m, klen), dtype=np.uint8)
    db.put_many(keys, np.repeat(keys[:, :1], vlen, axis=1) if vlen else np.zeros((m, 0), np.uint8))
    done += m
    st = db.stats()
    print(done, st["user_bytes_written"], st["bytes_written_by_kind"]["log"], flush=True)
print("loaded", flush=True)
time.sleep(3600)  # killed by the parent: no close()
'''

REOPEN = r'''
import json, sys, time
import numpy as np
import lsmtrie

path, mode, n, batch, klen, vlen = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
t = time.perf_counter()
db = lsmtrie.open(path, read_only=mode == "ro")
opened = time.perf_counter() - t
rng = np.random.default_rng(20)
checked, done = 0, 0
while done < n:  # the first key of every batch, and its value
    m = min(batch, n - done)
    keys = rng.integers(0, 256, size=(m, klen), dtype=np.uint8)
    k = bytes(keys[0])
    assert db.get(k) == bytes([keys[0, 0]]) * vlen, k
    checked += 1
    done += m
rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
db.close()
print(json.dumps({"s": opened, "rss": rss, "checked": checked}))
'''


def dir_bytes(path):
    wal = total = files = 0
    for f in os.listdir(path):
        try:
            size = os.stat(os.path.join(path, f)).st_blocks * 512
        except FileNotFoundError:
            continue
        total += size
        if f.endswith(".wal"):
            wal += size
            files += 1
    return wal, files, total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000_000)
    p.add_argument("--batch", type=int, default=1_000_000)
    p.add_argument("--key-size", type=int, default=16)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--dir", required=True, help="the store (emptied first, removed after)")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    args = [str(a.n), str(a.batch), str(a.key_size), str(a.value_size)]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    t0 = time.perf_counter()
    loader = subprocess.Popen([sys.executable, "-c", LOADER, a.dir, *args], env=env,
                              stdout=subprocess.PIPE, text=True)
    lines = []  # the loader's progress, read by a thread while this one samples the directory
    threading.Thread(target=lambda: lines.extend(loader.stdout), daemon=True).start()
    peak = {"wal": 0, "files": 0, "dir": 0}
    last, loaded_at, seen = None, None, 0
    while loaded_at is None:
        if loader.poll() is not None:
            sys.exit(f"the loader exited with status {loader.returncode}")
        if os.path.isdir(a.dir):
            wal, files, total = dir_bytes(a.dir)
            peak = {"wal": max(peak["wal"], wal), "files": max(peak["files"], files),
                    "dir": max(peak["dir"], total)}
        while seen < len(lines):
            line, seen = lines[seen], seen + 1
            if line.strip() == "loaded":
                loaded_at = time.perf_counter()
            else:
                last = line.split()
        time.sleep(1.0)
    loader.send_signal(signal.SIGKILL)
    loader.wait()
    after = dir_bytes(a.dir)[2]
    out = {"n": a.n, "batch": a.batch, "user_bytes": int(last[1]), "log_bytes_written": int(last[2]),
           "load_items_per_s": a.n / (loaded_at - t0), "wal_bytes_peak": peak["wal"],
           "wal_files_peak": peak["files"], "dir_bytes_peak": peak["dir"],
           "dir_bytes_after_load": after}
    for mode in ("ro", "rw"):
        r = subprocess.run([sys.executable, "-c", REOPEN, a.dir, mode, *args], env=env,
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout)
        name = "read_only" if mode == "ro" else "writable"
        out[f"reopen_{name}_s"] = res["s"]
        out[f"reopen_{name}_rss_bytes"] = res["rss"]
        out["keys_checked"] = res["checked"]
    print(json.dumps(out, indent=1))
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
