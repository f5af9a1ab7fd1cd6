"""One measurement of `lsmtrie report`, in a process of its own (so memory figures do not mix):

    python -m lsmtrie._report_run load ENGINE N KEY_SIZE VALUE_SIZE SEED PATH
    python -m lsmtrie._report_run read ENGINE N KEY_SIZE VALUE_SIZE SEED PATH GETS

`load` loads the workload (lsmtrie/workload.py) into a new store at PATH, lets it settle and
closes it, sampling once a second; `read` reopens the store and times warm GETs. Each prints
one JSON object on stdout and its progress on stderr; a failure is one line on stderr and exit
status 1.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

from . import report_engines, report_setup, workload
from .bulk import _dir_bytes, _peak_rss, _write_bytes

SAMPLE_SECONDS = 1.0
BATCH = 1_000  # keys a batched GET asks for


class Tracker:
    """What the load has done so far, for the sampler: items handed over and the phase (each
    phase's start time is kept)."""

    def __init__(self, n: int):
        self.n, self.items, self.final_counters = n, 0, None
        self.started = {"load": time.monotonic()}
        self.chunk_seconds = []  # when each chunk had gone in, from the start

    def chunk_done(self, count: int) -> None:
        self.items += count
        self.chunk_seconds.append(round(time.monotonic() - self.started["load"], 4))

    @property
    def phase(self) -> str:
        return max(self.started, key=self.started.get)

    @phase.setter
    def phase(self, name: str) -> None:
        self.mark(name)

    def mark(self, name: str, at: float | None = None) -> None:
        """Phase `name` started at `at` (a time.monotonic() reading; default now)."""
        self.started[name] = time.monotonic() if at is None else at


def _status(field: str) -> int:
    """A memory field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    return _status("VmRSS")


class Sampler:
    """Samples the load every SAMPLE_SECONDS on a thread of its own (the directory's size twice
    as often, for its peak) and shows the progress line (tqdm) on stderr."""

    def __init__(self, engine, track: Tracker, path: str, item_bytes: int, label: str):
        from tqdm import tqdm
        self.engine, self.track, self.path, self.item_bytes = engine, track, path, item_bytes
        self.samples, self.peak_dir = [], 0
        self.io0, self.t0 = _write_bytes(), track.started["load"]
        self.label = label
        self.bar = tqdm(total=track.n, unit=" items", unit_scale=True, file=sys.stderr,
                        desc=f"{label} load", mininterval=1.0, dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="report-sampler", daemon=True)
        self._thread.start()

    def _run(self):
        tick = 0
        while not self._stop.wait(SAMPLE_SECONDS / 2):
            self.peak_dir = max(self.peak_dir, _dir_bytes([self.path]))
            tick += 1
            if tick % 2 == 0:
                self.sample()

    def sample(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        t, items, phase = time.monotonic() - self.t0, self.track.items, self.track.phase
        try:
            counters = self.engine.sample_counters()
        except Exception:  # noqa: BLE001 - closing under it; the sample goes without
            counters = None
        s = {"t": round(t, 3), "phase": phase, "items": items,
             "user_bytes": items * self.item_bytes, "os_bytes": _write_bytes() - self.io0,
             "engine_bytes": sum(counters.values()) if counters else None,
             "dir_bytes": _dir_bytes([self.path]), "rss_bytes": _rss(),
             "cpu_user_s": ru.ru_utime, "cpu_system_s": ru.ru_stime}
        self.samples.append(s)
        self.bar.set_description(f"{self.label} {phase}")
        self.bar.set_postfix(items_s=f"{items / max(t, 1e-9):,.0f}",
                             written=f"{s['os_bytes'] / 1e6:,.0f}MB", refresh=False)
        self.bar.update(items - self.bar.n)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        if self.track.final_counters:  # the engine is closed now: its last counts
            self.samples[-1]["engine_bytes"] = sum(self.track.final_counters.values())
        self.bar.close()
        self.peak_dir = max(self.peak_dir, _dir_bytes([self.path]))


def run_load(engine_name: str, n: int, ks: int, vs: int, seed: int, path: str) -> dict:
    """Loads, settles, closes; every figure of the load phase."""
    device = report_setup.block_device(os.path.dirname(os.path.abspath(path)) or ".")
    engine = report_engines.make(engine_name, ks, vs)
    harness = _harness_rss(seed)
    dev0 = report_setup.device_bytes_written(device["stat"])
    io0, ru0 = _write_bytes(), resource.getrusage(resource.RUSAGE_SELF)
    track = Tracker(n)
    sampler = Sampler(engine, track, path, ks + vs, f"{engine_name} {n:,}")
    try:
        engine.load(path, workload.chunks(n, ks, vs, seed), track)
    finally:
        sampler.stop()
    closed = time.monotonic()
    settled = track.started.get("close", closed)
    os_bytes = _write_bytes() - io0
    dev1 = report_setup.device_bytes_written(device["stat"])
    ru = resource.getrusage(resource.RUSAGE_SELF)
    user = n * (ks + vs)
    load_s = track.started["settle"] - track.started["load"]
    total_s = settled - track.started["load"]
    engine_by_kind = track.final_counters or {}
    engine_bytes = sum(engine_by_kind.values()) if track.final_counters else None
    device_bytes = None if dev0 is None or dev1 is None else dev1 - dev0
    at_rest = _dir_bytes([path])
    return {
        "items": n, "user_bytes": user,
        "ingest_seconds": load_s, "settle_seconds": total_s - load_s, "seconds": total_s,
        "close_seconds": closed - settled,
        "items_per_s": n / total_s, "ingest_items_per_s": n / load_s,
        "mb_per_s": user / total_s / 1e6,
        "engine_bytes_by_kind": engine_by_kind, "engine_bytes": engine_bytes,
        "os_bytes": os_bytes, "device_bytes": device_bytes,
        "device": device["name"], "device_not_counted": device["why"],
        "wa_engine": engine_bytes / user if engine_bytes is not None else None,
        "wa_engine_no_log": (_no_log(engine_by_kind) / user if engine_bytes is not None else None),
        "wa_os": os_bytes / user,
        "wa_device": device_bytes / user if device_bytes is not None else None,
        "dir_bytes_at_rest": at_rest, "dir_bytes_peak": max(sampler.peak_dir, at_rest),
        "space_amp": at_rest / user, "peak_space_amp": max(sampler.peak_dir, at_rest) / user,
        "cpu_user_s": ru.ru_utime - ru0.ru_utime, "cpu_system_s": ru.ru_stime - ru0.ru_stime,
        "peak_rss_bytes": _peak_rss(), "harness_rss_bytes": harness,
        "samples": sampler.samples, "chunk_items": workload.CHUNK,
        "chunk_seconds": track.chunk_seconds,
    }


def _harness_rss(seed: int) -> int:
    """This process's resident memory before the engine opens, the workload's value pool made:
    the harness's share of every peak RSS reported (Python, numpy, cffi, the pool)."""
    workload.chunk(seed, 0, 1, 1, 1)
    return _rss()


def _no_log(by_kind: dict) -> int:
    """Bytes written less the log's (RocksDB's benchmark.sh leaves the WAL out of w_amp)."""
    return sum(v for k, v in by_kind.items() if not k.startswith(("log", "wal")))


def _timed_each(fn, items) -> tuple[float, list]:
    """(seconds for all, seconds of each call) of fn over items."""
    lat = []
    clock = time.perf_counter
    t0 = last = clock()
    for x in items:
        fn(x)
        now = clock()
        lat.append(now - last)
        last = now
    return last - t0, lat


def _rate(count: int, seconds: float, lat: list, prefix: str) -> dict:
    lat = sorted(lat)
    return {f"{prefix}_per_s": count / seconds,
            f"{prefix}_p50_us": lat[len(lat) // 2] * 1e6,
            f"{prefix}_p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6}


def _batches(keys: list) -> list:
    return [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]


def run_read(engine_name: str, n: int, ks: int, vs: int, seed: int, path: str, gets: int) -> dict:
    """Warm GETs of a reopened store: one untimed pass (which checks every answer and counts
    lsmtrie's reads per GET), then single and batched hits and misses, each timed."""
    keys, values = workload.present(n, ks, vs, seed, min(gets, n))
    misses = workload.absent(gets, ks, seed)
    engine = report_engines.make(engine_name, ks, vs)
    harness = _rss()
    engine.open_reader(path)
    label = f"{engine_name} {n:,} read"
    try:
        r = _warm_pass(engine, keys, values, misses, exact=ks >= 8)
        for what, fn, items, count in (
                ("get_hit_single", engine.get, keys, len(keys)),
                ("get_miss_single", engine.get, misses, len(misses)),
                ("get_hit_batched", engine.get_many, _batches(keys), len(keys)),
                ("get_miss_batched", engine.get_many, _batches(misses), len(misses))):
            seconds, lat = _timed_each(fn, items)
            r.update(_rate(count, seconds, lat, what))
            print(f"{label}: {what.replace('_', ' ')} {count / seconds:,.0f}/s", file=sys.stderr)
        # resident now, by kind: mapped table files (LevelDB maps them) are file-backed pages
        r.update(rss_anon_bytes=_status("RssAnon"), rss_file_bytes=_status("RssFile"))
    finally:
        engine.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    r.update(gets=len(keys), misses=len(misses), batch_keys=BATCH, peak_rss_bytes=_peak_rss(),
             harness_rss_bytes=harness, cpu_user_s=ru.ru_utime, cpu_system_s=ru.ru_stime)
    return r


def _warm_pass(engine, keys, values, misses, exact: bool) -> dict:
    """Reads every key once in batches, checking the answers; for lsmtrie, the reads per GET
    (by the level that answered) from its counters."""
    stats = getattr(engine.db, "stats", None)
    st0 = stats() if stats else None
    got = [v for b in _batches(keys) for v in engine.get_many(b)]
    bad = sum(g is None or len(g) != len(v) or (exact and g != v) for g, v in zip(got, values))
    if bad:
        raise RuntimeError(f"{bad} of {len(keys)} present keys did not read back their values")
    st1 = stats() if stats else None
    found = sum(v is not None for b in _batches(misses) for v in engine.get_many(b))
    if found:
        raise RuntimeError(f"{found} of {len(misses)} absent keys were found")
    if not stats:
        return {}
    st2 = stats()
    hits = [b - a for a, b in zip(st0["hits_per_level"], st1["hits_per_level"])]
    reads = [b - a for a, b in zip(st0["hit_reads_per_level"], st1["hit_reads_per_level"])]
    miss_reads = sum(st2[k] - st1[k] for k in ("bucket_reads", "cluster_reads"))
    return {"reads_per_hit": sum(reads) / max(1, sum(hits)),
            "reads_per_hit_by_level": [r / h if h else None for r, h in zip(reads, hits)],
            "hits_by_level": hits, "reads_per_miss": miss_reads / len(misses)}


def main(argv: list) -> int:
    try:
        phase, engine, path = argv[0], argv[1], argv[6]
        n, ks, vs, seed = (int(x) for x in argv[2:6])
        if phase == "load":
            r = run_load(engine, n, ks, vs, seed, path)
        else:
            r = run_read(engine, n, ks, vs, seed, path, int(argv[7]))
    except Exception as e:  # noqa: BLE001 - reported as one line by the parent
        print(json.dumps({"error": f"{type(e).__name__}: {e}".replace("\n", " ")}))
        return 1
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
