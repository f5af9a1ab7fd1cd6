"""report.md of `lsmtrie report`, from its results (lsmtrie/report.py): the setup block, the
workload, durability and options, a table per size (the rows the TSV has, with the same
numbers), the figures and the computed findings."""

from __future__ import annotations

from .report import COLUMNS, NAMES, row

# The tables per size: (column, heading, format). Every number here is in results.tsv too.
WRITE_TABLE = [
    ("ops_sec", "items/s", "{:,.0f}"), ("mb_sec", "MB/s", "{:.2f}"),
    ("settle_sec", "settle s", "{:.2f}"), ("w_amp", "WA process", "{:.3f}"),
    ("w_amp_engine", "WA engine", "{:.3f}"), ("w_amp_engine_nolog", "WA engine, no log", "{:.3f}"),
    ("w_amp_device", "WA device", "{:.3f}"), ("space_amp", "space amp", "{:.3f}"),
    ("peak_space_amp", "peak space amp", "{:.3f}"), ("rss_mb", "peak RSS MB", "{:,.1f}"),
    ("u_cpu", "CPU user s", "{:.2f}"), ("s_cpu", "CPU sys s", "{:.2f}"),
]
READ_TABLE = [
    ("get_ops", "GET hits/s", "{:,.0f}"), ("p50", "p50 µs", "{:.2f}"), ("p99", "p99 µs", "{:.2f}"),
    ("miss_ops", "misses/s", "{:,.0f}"), ("miss_p50", "miss p50 µs", "{:.2f}"),
    ("miss_p99", "miss p99 µs", "{:.2f}"), ("batch_ops", "batched hits/s", "{:,.0f}"),
    ("batch_p50", "batch p50 µs", "{:,.0f}"), ("batch_p99", "batch p99 µs", "{:,.0f}"),
    ("batch_miss_ops", "batched misses/s", "{:,.0f}"), ("reads_per_hit", "reads/hit", "{:.3f}"),
    ("reads_per_miss", "reads/miss", "{:.3f}"), ("read_rss_mb", "read RSS MB", "{:,.1f}"),
]


def _fmt(fmt: str, v) -> str:
    return "n/a" if v is None else fmt.format(v)


def table(rows: list, spec: list) -> str:
    head = "| engine | " + " | ".join(h for _, h, _ in spec) + " |"
    sep = "|---|" + "---:|" * len(spec)
    body = ["| " + r["engine"] + " | " + " | ".join(_fmt(f, r[c]) for c, _, f in spec) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def setup_block(res: dict) -> str:
    s, dev = res["setup"], res["setup"]["device_baseline"]
    fs, bd = s["file_system"], s["block_device"]
    mem = f"{s['memory_bytes'] / 2**30:.1f} GiB" if s.get("memory_bytes") else "unknown"
    if dev.get("why"):
        device = f"not measured: {dev['why']}"
    else:
        device = (f"sequential O_DIRECT writes {dev['seq_write_mb_per_s']:,.0f} MB/s (1 MiB "
                  f"blocks over {dev['file_bytes'] >> 20} MiB, then fsync); random 4 KB O_DIRECT "
                  f"reads at queue depth 1 {dev['rand_read_iops_qd1']:,.0f}/s (p50 "
                  f"{dev['rand_read_p50_us']:.0f} µs, p99 {dev['rand_read_p99_us']:.0f} µs)")
    versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v)
    lines = [
        f"command:      {res['command']}",
        f"date:         {res['date']}",
        f"revision:     lsmtrie {s.get('git_revision') or '(not a git checkout)'}",
        f"CPU:          {s['cpu']}, {s['cores']} cores; memory {mem}",
        f"kernel:       {s['kernel']}",
        f"file system:  {fs.get('fs_type')} on {fs.get('source')} (mounted at "
        f"{fs.get('mount_point')}, {fs.get('options')})",
        f"block device: {bd.get('name') or bd.get('dev')}"
        + (f" ({bd['why']})" if bd.get("why") else ""),
        f"device rates: {device}",
        f"versions:     {versions}",
    ]
    return "```text\n" + "\n".join(lines) + "\n```"


def workload_section(res: dict) -> str:
    w = res["workload"]
    sizes = ", ".join(f"{n:,}" for n in w["sizes"])
    out = [
        "## Workload, durability and options", "",
        f"- **Items**: {sizes} items, each a {w['key_size']}-byte uniformly random key and a "
        f"{w['value_size']}-byte value of random bytes, generated in chunks of "
        f"{w['chunk_items']:,} items from seed {w['seed']}: every engine gets the same items "
        "in the same order, in a process of its own per engine and size.",
        "- **Phases**: load (one write call per chunk), settle (until the engine's background "
        "work is done), close; then a new process reopens the store and reads, warm: one "
        f"untimed pass checks every answer, then {w['gets']:,} present keys (from up to 20 "
        "random chunks) and as many absent keys (random, one byte longer than any key written) "
        "are read one at a time (a Python call each) and in batches of "
        f"{w['batch_keys']:,} keys, each timed.",
        "- **Bytes written**, three ways: the engine's own counters (lsmtrie `stats()` by kind; "
        "RocksDB's statistics tickers `rocksdb.wal.bytes`, `rocksdb.flush.write.bytes`, "
        "`rocksdb.compact.write.bytes`; LevelDB's `leveldb.stats` Write(MB) per level, whole "
        "MB, and its log bytes computed from the batches, since LevelDB counts none); the load "
        "process's `/proc/self/io` write_bytes less cancelled_write_bytes (what the kernel "
        "wrote back for it: log files deleted before writeback are not in it); the block "
        "device's sectors written from before the open to after the close, each read after a "
        "sync (the whole device: other processes' writes count too). Write amplification is "
        "each over the user bytes (keys and values). Sampled once a second while loading and "
        "settling (results.json, `samples`).",
        "- **Durability**: "
        + "; ".join(f"{e}: {d}" for e, d in res["durability"].items()) + ".",
        "- **Options** (the engines' defaults otherwise): ",
    ]
    out += [f"  - `{e}`: {o}." for e, o in res["options"].items()]
    harness = [r[p]["harness_rss_bytes"] for r in res["runs"] for p in ("load", "read")]
    if harness:
        out.append("- **Memory**: peak RSS is the process's VmHWM, the harness included: "
                   f"{min(harness) / 1e6:,.0f} to {max(harness) / 1e6:,.0f} MB before the "
                   "engine opened (Python, numpy, cffi and the workload's 64 MiB value pool; "
                   "`harness_rss_bytes` in results.json). Mapped files count too: "
                   "LevelDB maps its table files, so the pages its reads touched are in its "
                   "read process's RSS (`rss_file_bytes` beside `rss_anon_bytes`).")
    out.append("- The peers are driven through their Python bindings: a call per item to fill "
               "a batch, and LevelDB's batched GETs are a loop of single GETs (it has no "
               "multi-get); those loops are the bindings' cost and are in their rates.")
    for line in res["skipped"].values():
        out.append(f"- **Skipped**: {line}.")
    return "\n".join(out)


def size_sections(res: dict) -> str:
    rows = [row(r) for r in res["runs"]]
    out = []
    for n in res["workload"]["sizes"]:
        at = [r for r in rows if r["items"] == n]
        if not at:
            continue
        out += [f"## {n:,} items", "", "Writes:", "", table(at, WRITE_TABLE), "",
                "Reads (warm, new process):", "", table(at, READ_TABLE), ""]
        out += _bytes_by_kind(res, n) + _reads_by_level(res, n)
    return "\n".join(out)


def _reads_by_level(res: dict, n: int) -> list:
    """lsmtrie's bucket and cluster reads per GET hit by the level that answered (stats())."""
    out = []
    for r in res["runs"]:
        by_level = r["read"].get("reads_per_hit_by_level")
        if r["items"] == n and by_level:
            hits = r["read"]["hits_by_level"]
            levels = ", ".join(f"L{i} {x:.3f} ({h:,} hits)" for i, (x, h) in
                               enumerate(zip(by_level, hits)) if x is not None)
            out.append(f"- {r['engine']}: {levels}")
    return ["Reads per GET hit by the level that answered (lsmtrie's counters, the untimed "
            "pass):", "", *out, ""] if out else []


def _bytes_by_kind(res: dict, n: int) -> list:
    out = ["Bytes written by kind (the engine's own counters), MB:", ""]
    for r in res["runs"]:
        if r["items"] == n:
            kinds = r["load"]["engine_bytes_by_kind"]
            text = ", ".join(f"{k} {v / 1e6:,.1f}" for k, v in kinds.items()) or "not counted"
            out.append(f"- {r['engine']}: {text}")
    return out + [""]


FIGURE_TITLES = {
    "wa_vs_size.png": "Write amplification against data size",
    "throughput_vs_written.png": "Load throughput against data written",
    "bytes_by_kind.png": "Bytes written by kind",
    "space_amp.png": "Space amplification",
    "get_rates.png": "GET rates",
}


def markdown(res: dict) -> str:
    figures = "\n\n".join(f"![{FIGURE_TITLES.get(f, f)}]({f})" for f in res["figures"])
    columns = "\n".join(f"| `{c}` | {what} |" for c, what in COLUMNS)
    return "\n".join([
        "# lsmtrie report: write amplification, load and GET rates beside LevelDB and RocksDB",
        "",
        "Written by `lsmtrie report`: every number below was measured by the command in this "
        "run, and the findings are computed from them.",
        "", "## Setup", "", setup_block(res), "", workload_section(res), "",
        size_sections(res), "## Figures", "", figures, "",
        "## Findings", "", res["findings"], "",
        "## Columns of results.tsv", "", "| column | what |", "|---|---|", columns, "",
    ])


__all__ = ["markdown", "NAMES"]
