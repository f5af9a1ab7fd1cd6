"""`lsmtrie report`: write amplification, load throughput, space and GET rates of lsmtrie beside
LevelDB and RocksDB, on one deterministic workload, written to a directory as report.md,
results.json, results.tsv and PNG figures (issue 24).

Every engine and size runs in two processes of its own (lsmtrie/_report_run.py): the load
(load, settle, close; sampled once a second) and then the reads (reopened, warm). The figures
are drawn by lsmtrie/report_plot.py; the machine and the device baseline come from
lsmtrie/report_setup.py. Every sentence of the findings is computed from the numbers.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from . import report_engines, report_setup
from .report_engines import ENGINES, EXTRA

DEFAULT_SIZES = "1e6,1e7,1e8"


# ---- arguments (type functions: a bad value is argparse's error, exit status 2) ----

def sizes_arg(text: str) -> list:
    out = []
    for part in text.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of items: {part!r}") from None
        if value < 1 or value != int(value) or value > 1e12:
            raise argparse.ArgumentTypeError(f"not a whole number of items from 1: {part!r}")
        if int(value) not in out:
            out.append(int(value))
    return out


def engines_arg(text: str) -> list:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in ENGINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown engine {', '.join(unknown) or '(none)'}; choose from {','.join(ENGINES)}")
    return list(dict.fromkeys(names))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def key_size_arg(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"keys are at most 65535 bytes: {text!r}")
    return value


def value_size_arg(text: str) -> int:
    value = positive_int(text)
    if value > 1 << 20:
        raise argparse.ArgumentTypeError(f"values here are at most 1 MiB: {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="where the report is written")
    p.add_argument("--sizes", type=sizes_arg, default=sizes_arg(DEFAULT_SIZES),
                   help=f"items per run, comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--engines", type=engines_arg, default=list(ENGINES),
                   help=f"comma-separated, from {','.join(ENGINES)} (default: all)")
    p.add_argument("--key-size", type=key_size_arg, default=16, help="bytes (default 16)")
    p.add_argument("--value-size", type=value_size_arg, default=100, help="bytes (default 100)")
    p.add_argument("--gets", type=positive_int, default=200_000,
                   help="keys read by each kind of GET (default 200000)")
    p.add_argument("--seed", type=int, default=1, help="the workload's seed (default 1)")
    p.add_argument("--dir", default=None, metavar="WORKDIR",
                   help="where the stores are made (default: a temporary directory); each "
                        "store is removed after its reads")


# ---- running ----

def _child(args: list, what: str) -> dict:
    """python -m lsmtrie._report_run ARGS in a new process (its progress on our stderr)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    run = subprocess.run([sys.executable, "-m", "lsmtrie._report_run", *map(str, args)],
                         stdout=subprocess.PIPE, text=True, env=env)
    lines = run.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        out = {"error": f"exit status {run.returncode}, no result"}
    if run.returncode or "error" in out:
        raise RuntimeError(f"{what} failed: {out.get('error')}")
    return out


def run_one(engine: str, n: int, a, workdir: str) -> dict:
    path = os.path.join(workdir, f"{engine}-{n}")
    shutil.rmtree(path, ignore_errors=True)
    common = [engine, n, a.key_size, a.value_size, a.seed, path]
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        load = _child(["load", *common], f"{engine} at {n:,} items, loading")
        read = _child(["read", *common, a.gets], f"{engine} at {n:,} items, reading")
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return {"engine": engine, "items": n, "started": started, "load": load, "read": read}


def skipped_engines(engines: list) -> dict:
    """Engines whose package does not import here, each with the line that says so."""
    out = {}
    for e in engines:
        pkg = report_engines.missing_package(e)
        if pkg:
            out[e] = f"{e} skipped: the {pkg} package is not installed ({EXTRA})"
    return out


def run(a, command: str) -> dict:
    from . import report_plot  # matplotlib: checked before anything runs
    skipped = skipped_engines(a.engines)
    for line in skipped.values():
        print(f"lsmtrie report: {line}", file=sys.stderr)
    engines = [e for e in a.engines if e not in skipped]
    os.makedirs(a.out, exist_ok=True)
    workdir = a.dir or tempfile.mkdtemp(prefix="lsmtrie-report-")
    made = a.dir is None or not os.path.exists(a.dir)
    os.makedirs(workdir, exist_ok=True)
    try:
        print("lsmtrie report: the machine and its device's own rates", file=sys.stderr)
        setup = report_setup.machine(workdir)
        setup["device_baseline"] = report_setup.device_baseline(workdir)
        runs = []
        total = len(a.sizes) * len(engines)
        for n in a.sizes:
            for e in engines:
                print(f"lsmtrie report: [{len(runs) + 1}/{total}] {e}, {n:,} items",
                      file=sys.stderr)
                runs.append(run_one(e, n, a, workdir))
    finally:
        if made:
            shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "setup": setup,
        "workload": {"sizes": a.sizes, "key_size": a.key_size, "value_size": a.value_size,
                     "gets": a.gets, "seed": a.seed, "batch_keys": 1000,
                     "chunk_items": 100_000},
        "engines": engines, "skipped": skipped,
        "durability": {e: report_engines.DURABILITY[e] for e in engines},
        "options": {e: report_engines.OPTIONS[e] for e in engines},
        "runs": runs,
    }
    results["findings"] = findings(results)
    results["figures"] = report_plot.draw_all(results, a.out)
    write_outputs(results, a.out)
    return results


# ---- the table rows: one per engine and size, shared by the TSV and the Markdown ----

# (column, what it is): the TSV's header and the Markdown's tables use these names
COLUMNS = [
    ("engine", "engine"),
    ("items", "items loaded"),
    ("ops_sec", "load items/s, until settled"),
    ("mb_sec", "user MB/s (keys and values), until settled"),
    ("ingest_ops_sec", "items/s while the writes went in (before settling)"),
    ("settle_sec", "seconds from the last write until the background work settled"),
    ("user_bytes", "bytes of keys and values written"),
    ("w_amp", "write amplification: the process's /proc/self/io write_bytes less cancelled"),
    ("w_amp_engine", "write amplification by the engine's own counters, log included"),
    ("w_amp_engine_nolog", "the same less the log (RocksDB benchmark.sh's w_amp)"),
    ("w_amp_device", "write amplification by the block device's sectors written (after a sync)"),
    ("space_amp", "directory size at rest after close / user bytes"),
    ("peak_space_amp", "peak directory size while loading / user bytes"),
    ("rss_mb", "peak RSS of the load process, MB"),
    ("u_cpu", "user CPU seconds of the load process"),
    ("s_cpu", "system CPU seconds of the load process"),
    ("get_ops", "warm single GET hits/s (a Python call each)"),
    ("p50", "single GET hit latency p50, µs"),
    ("p99", "single GET hit latency p99, µs"),
    ("miss_ops", "warm single GET misses/s"),
    ("miss_p50", "single GET miss p50, µs"),
    ("miss_p99", "single GET miss p99, µs"),
    ("batch_ops", "warm batched GET hits/s (batches of 1,000 keys)"),
    ("batch_p50", "batch of 1,000 hits, p50 µs"),
    ("batch_p99", "batch of 1,000 hits, p99 µs"),
    ("batch_miss_ops", "warm batched GET misses/s"),
    ("reads_per_hit", "lsmtrie: bucket and cluster reads per GET hit"),
    ("reads_per_miss", "lsmtrie: reads per GET miss"),
    ("read_rss_mb", "peak RSS of the read process, MB"),
]


def row(r: dict) -> dict:
    load, read = r["load"], r["read"]
    return {
        "engine": r["engine"], "items": r["items"],
        "ops_sec": load["items_per_s"], "mb_sec": load["mb_per_s"],
        "ingest_ops_sec": load["ingest_items_per_s"], "settle_sec": load["settle_seconds"],
        "user_bytes": load["user_bytes"], "w_amp": load["wa_os"],
        "w_amp_engine": load["wa_engine"], "w_amp_engine_nolog": load["wa_engine_no_log"],
        "w_amp_device": load["wa_device"], "space_amp": load["space_amp"],
        "peak_space_amp": load["peak_space_amp"], "rss_mb": load["peak_rss_bytes"] / 1e6,
        "u_cpu": load["cpu_user_s"], "s_cpu": load["cpu_system_s"],
        "get_ops": read["get_hit_single_per_s"], "p50": read["get_hit_single_p50_us"],
        "p99": read["get_hit_single_p99_us"], "miss_ops": read["get_miss_single_per_s"],
        "miss_p50": read["get_miss_single_p50_us"], "miss_p99": read["get_miss_single_p99_us"],
        "batch_ops": read["get_hit_batched_per_s"], "batch_p50": read["get_hit_batched_p50_us"],
        "batch_p99": read["get_hit_batched_p99_us"],
        "batch_miss_ops": read["get_miss_batched_per_s"],
        "reads_per_hit": read.get("reads_per_hit"), "reads_per_miss": read.get("reads_per_miss"),
        "read_rss_mb": read["peak_rss_bytes"] / 1e6,
    }


def tsv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_tsv(results: dict, path: str) -> None:
    s = results["setup"]
    extra = {"date": results["date"], "version": s["versions"].get("lsmtrie"),
             "githash": s.get("git_revision")}
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow([c for c, _ in COLUMNS] + list(extra))
        for r in results["runs"]:
            rw = row(r)
            w.writerow([tsv_value(rw[c]) for c, _ in COLUMNS] + [tsv_value(v) for v in extra.values()])


def write_outputs(results: dict, out: str) -> None:
    from .report_md import markdown
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, separators=(",", ":"))  # compact: a sample a second adds up
        f.write("\n")
    write_tsv(results, os.path.join(out, "results.tsv"))
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(results))


# ---- findings: sentences computed from the numbers ----

NAMES = {"lsmtrie": "lsmtrie", "lsmtrie-bulk": "lsmtrie in bulk mode",
         "lsmtrie-load": "the lsmtrie loader", "leveldb": "LevelDB", "rocksdb": "RocksDB"}


def _by(results: dict) -> dict:
    return {(r["engine"], r["items"]): row(r) for r in results["runs"]}


def findings(results: dict) -> str:
    rows, engines = _by(results), results["engines"]
    sizes = [n for n in results["workload"]["sizes"] if any((e, n) in rows for e in engines)]
    if not sizes:
        return "No engine ran."
    base = "lsmtrie" if "lsmtrie" in engines else engines[0]
    peers = [e for e in engines if e != base]
    top = max(sizes)
    out = [_compare_at(rows, base, peers, top)] if peers else []
    out.append(_wa_trend(rows, engines, sizes))
    out.append(_reads_at(rows, base, peers, top))
    out.append(_space_at(rows, engines, top))
    out.append(_log_writeback(rows, engines, top))
    return " ".join(s for s in out if s)


def _n(n: int) -> str:
    return f"{n / 1e6:g} M" if n >= 1e6 else f"{n:,}"


def _compare_at(rows, base, peers, n) -> str:
    b = rows[(base, n)]
    parts = []
    for e in peers:
        p = rows[(e, n)]
        parts.append(f"{b['w_amp'] / p['w_amp']:.2f} x {NAMES[e]}'s bytes "
                     f"(write amplification {b['w_amp']:.2f} against {p['w_amp']:.2f}) and "
                     f"loaded {b['ops_sec'] / p['ops_sec']:.2f} x as many items/s")
    return (f"At {_n(n)} items {NAMES[base]} made the kernel write " + "; ".join(parts) +
            f" ({NAMES[base]} loaded {b['ops_sec']:,.0f} items/s until settled).")


def _wa_trend(rows, engines, sizes) -> str:
    if len(sizes) < 2:
        return ""
    lo, hi = min(sizes), max(sizes)
    parts = [f"{NAMES[e]} {rows[(e, lo)]['w_amp']:.2f} to {rows[(e, hi)]['w_amp']:.2f}"
             for e in engines]
    return (f"From {_n(lo)} to {_n(hi)} items the write amplification (process count) went: "
            + ", ".join(parts) + ".")


def _reads_at(rows, base, peers, n) -> str:
    b = rows[(base, n)]
    text = (f"Warm GET hits at {_n(n)} items from Python: {NAMES[base]} {b['get_ops']:,.0f}/s "
            f"one at a time and {b['batch_ops']:,.0f}/s in batches of 1,000")
    for e in peers:
        p = rows[(e, n)]
        text += (f"; {NAMES[e]} {p['get_ops']:,.0f}/s and {p['batch_ops']:,.0f}/s "
                 f"({NAMES[base]}'s batches {b['batch_ops'] / p['batch_ops']:.2f} x these)")
    if b["reads_per_hit"] is not None:
        text += (f"; {NAMES[base]} read {b['reads_per_hit']:.3f} buckets or clusters per hit "
                 f"and {b['reads_per_miss']:.3f} per miss")
    return text + "."


def _space_at(rows, engines, n) -> str:
    parts = [f"{NAMES[e]} {rows[(e, n)]['space_amp']:.2f} x (peak {rows[(e, n)]['peak_space_amp']:.2f} x)"
             for e in engines]
    return f"At rest after close at {_n(n)} items the directories took: " + ", ".join(parts) + \
        " the user bytes."


def _log_writeback(rows, engines, n) -> str:
    """Where the engine's own count exceeds the kernel's by a tenth: log files deleted before
    the kernel wrote them back (they count in the engine's bytes, not the process's)."""
    less = [e for e in engines if rows[(e, n)]["w_amp_engine"] is not None
            and rows[(e, n)]["w_amp_engine"] > 1.1 * rows[(e, n)]["w_amp"]]
    if not less:
        return ""
    parts = [f"{NAMES[e]} {rows[(e, n)]['w_amp_engine']:.2f} x the user bytes by its "
             f"counters, {rows[(e, n)]['w_amp']:.2f} x by the kernel's" for e in less]
    return (f"At {_n(n)} items the kernel wrote less than the engine counted for " +
            "; ".join(parts) + ": log files deleted before the kernel wrote them back count in "
            "the first, not the second.")


def run_command(args) -> int:
    """`lsmtrie report`: 0 done; 1 a runtime failure (one line on stderr); usage errors are
    argparse's (2)."""
    command = "python -m lsmtrie " + " ".join(shlex.quote(x) for x in args.argv)
    try:
        results = run(args, command)
    except ImportError as e:
        print(f"lsmtrie report: {e.name or e} is not installed ({EXTRA})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lsmtrie report: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, no traceback (the contract)
        print(f"lsmtrie report: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    print(f"lsmtrie report: wrote {os.path.join(args.out, 'report.md')}, results.json, "
          f"results.tsv and {len(results['figures'])} figures", file=sys.stderr)
    return 0
