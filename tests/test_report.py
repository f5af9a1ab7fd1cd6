"""`lsmtrie report` (issue 24): the whole command at tiny sizes with every engine, run once for
the module; then what it wrote is checked against itself (JSON, TSV, Markdown), write
amplification against its bytes, the figures as images; a missing peer, bad arguments and a
runtime failure. Nothing here depends on the machine's speed."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from lsmtrie import report_engines, report_md
from lsmtrie.report import COLUMNS

SIZES = (10_000, 20_000)
GETS = 500
ENGINES = report_engines.ENGINES
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(args, shim: str = "", **kw):
    """python -m lsmtrie ARGS in a new process; `shim` runs first (to hide a package)."""
    code = f"import sys\n{shim}\nfrom lsmtrie.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    work = tmp_path_factory.mktemp("work")
    run = run_cli(["report", "--out", str(out), "--sizes", ",".join(map(str, SIZES)),
                   "--engines", ",".join(ENGINES), "--gets", str(GETS), "--seed", "3",
                   "--dir", str(work / "stores")])
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "results.json") as f:
        results = json.load(f)
    with open(out / "results.tsv", newline="") as f:
        tsv = list(csv.DictReader(f, delimiter="\t"))
    md = (out / "report.md").read_text()
    return {"out": out, "work": work, "stderr": run.stderr, "json": results, "tsv": tsv,
            "md": md}


def test_every_file_is_written_and_every_engine_ran(report):
    names = set(os.listdir(report["out"]))
    figures = {"wa_vs_size.png", "throughput_vs_written.png", "bytes_by_kind.png",
               "space_amp.png", "get_rates.png"}
    assert {"report.md", "results.json", "results.tsv"} | figures <= names
    assert set(report["json"]["figures"]) == figures
    runs = report["json"]["runs"]
    assert sorted((r["engine"], r["items"]) for r in runs) == sorted(
        (e, n) for e in ENGINES for n in SIZES)
    assert report["json"]["skipped"] == {}
    # the stores are removed, and the work directory too when the command made it
    assert not os.path.exists(report["work"] / "stores")
    # progress went to stderr: engine, size, phase
    assert "rocksdb 20,000 load" in report["stderr"] and "leveldb 10,000 read" in report["stderr"]


def test_results_tsv_has_one_row_per_run_matching_the_json(report):
    runs = {(r["engine"], r["items"]): r for r in report["json"]["runs"]}
    assert len(report["tsv"]) == len(runs)
    header = list(report["tsv"][0])
    assert header[:len(COLUMNS)] == [c for c, _ in COLUMNS]
    for line in report["tsv"]:
        r = runs[(line["engine"], int(line["items"]))]
        load, read = r["load"], r["read"]
        pairs = {"ops_sec": load["items_per_s"], "w_amp": load["wa_os"],
                 "w_amp_engine": load["wa_engine"], "w_amp_device": load["wa_device"],
                 "space_amp": load["space_amp"], "rss_mb": load["peak_rss_bytes"] / 1e6,
                 "u_cpu": load["cpu_user_s"], "p50": read["get_hit_single_p50_us"],
                 "p99": read["get_hit_single_p99_us"], "batch_ops": read["get_hit_batched_per_s"]}
        for column, value in pairs.items():
            assert float(line[column]) == pytest.approx(value, rel=1e-5), column
        assert line["githash"] == (report["json"]["setup"]["git_revision"] or "")


def _md_tables(md: str) -> dict:
    """{(items, engine): {heading: cell}} from the Markdown's tables under each size."""
    out = {}
    for section in re.split(r"^## ", md, flags=re.M):
        m = re.match(r"([\d,]+) items\n", section)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        for block in re.findall(r"(\| engine \|.*?)(?:\n\n|\Z)", section, flags=re.S):
            lines = block.strip().splitlines()
            heads = [h.strip() for h in lines[0].strip("|").split("|")]
            for line in lines[2:]:
                cells = [c.strip() for c in line.strip("|").split("|")]
                out.setdefault((n, cells[0]), {}).update(zip(heads[1:], cells[1:]))
    return out


def _decimals(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


def test_markdown_tables_agree_with_the_tsv(report):
    tables = _md_tables(report["md"])
    assert set(tables) == {(int(t["items"]), t["engine"]) for t in report["tsv"]}
    specs = report_md.WRITE_TABLE + report_md.READ_TABLE
    checked = 0
    for line in report["tsv"]:
        cells = tables[(int(line["items"]), line["engine"])]
        for column, heading, _ in specs:
            cell = cells[heading]
            if line[column] == "":
                assert cell == "n/a", (column, line["engine"])
                continue
            shown = float(cell.replace(",", ""))
            # the cell is the value rounded to its decimals; the TSV keeps 6 digits
            tolerance = 0.5 * 10 ** -_decimals(cell) + 1e-5 * abs(float(line[column]))
            assert abs(shown - float(line[column])) <= tolerance, (column, line["engine"])
            checked += 1
    assert checked >= len(report["tsv"]) * 20


def test_write_amplification_is_bytes_over_user_bytes_for_each_source(report):
    w = report["json"]["workload"]
    for r in report["json"]["runs"]:
        load = r["load"]
        user = r["items"] * (w["key_size"] + w["value_size"])
        assert load["user_bytes"] == user
        assert load["wa_os"] == pytest.approx(load["os_bytes"] / user)
        by_kind = load["engine_bytes_by_kind"]
        assert by_kind and load["engine_bytes"] == sum(by_kind.values())
        assert load["wa_engine"] == pytest.approx(sum(by_kind.values()) / user)
        if load["device_bytes"] is None:  # a file system without a block device: said so
            assert load["wa_device"] is None and load["device_not_counted"]
        else:
            assert load["wa_device"] == pytest.approx(load["device_bytes"] / user)
            assert load["device_bytes"] >= load["os_bytes"] * 0.5  # the device saw the writes
        # every engine wrote at least its data once, by every count
        assert load["os_bytes"] > 0.5 * user and load["engine_bytes"] > 0.9 * user, r["engine"]
        assert load["space_amp"] == pytest.approx(load["dir_bytes_at_rest"] / user)
        assert load["dir_bytes_peak"] >= load["dir_bytes_at_rest"] > 0.5 * user


def test_engine_counters_name_their_kinds(report):
    kinds = {r["engine"]: set(r["load"]["engine_bytes_by_kind"]) for r in report["json"]["runs"]}
    assert {"log", "flush"} <= kinds["lsmtrie"] and "log" not in kinds["lsmtrie-bulk"]
    assert "load" in kinds["lsmtrie-load"]
    assert {"wal", "flush"} <= kinds["rocksdb"]
    assert "wal (computed)" in kinds["leveldb"]
    assert any(k.startswith("into L") for k in kinds["leveldb"])


def test_samples_and_reads_are_recorded(report):
    for r in report["json"]["runs"]:
        samples = r["load"]["samples"]
        assert samples and samples[-1]["items"] == r["items"]
        assert all(a["t"] <= b["t"] for a, b in zip(samples, samples[1:]))
        chunks = r["load"]["chunk_seconds"]  # each chunk's end, timed (the throughput figure)
        assert len(chunks) == -(-r["items"] // r["load"]["chunk_items"])
        assert all(0 < a <= b for a, b in zip(chunks, chunks[1:]))
        read = r["read"]
        for kind in ("get_hit_single", "get_miss_single", "get_hit_batched", "get_miss_batched"):
            assert read[f"{kind}_per_s"] > 0
            assert 0 < read[f"{kind}_p50_us"] <= read[f"{kind}_p99_us"]
        if r["engine"].startswith("lsmtrie"):
            assert 1.0 <= read["reads_per_hit"] <= 2.1 and read["reads_per_miss"] <= 1.1
            assert sum(read["hits_by_level"]) == read["gets"]
        else:
            assert "reads_per_hit" not in read


def test_report_md_states_the_setup_and_computed_findings(report):
    md, res = report["md"], report["json"]
    for needle in ("command:      python -m lsmtrie report --out", "CPU:", "kernel:",
                   "file system:", "device rates:", "versions:", "revision:",
                   "no fsync per write", "bloom_filter_bits=10", "10-bit full Bloom filter"):
        assert needle in md, needle
    dev = res["setup"]["device_baseline"]
    assert dev["why"] or (dev["seq_write_mb_per_s"] > 0 and dev["rand_read_iops_qd1"] > 0)
    for f in res["figures"]:
        assert f"]({f})" in md
    # the findings quote the table's numbers
    rows = {(t["engine"], int(t["items"])): t for t in report["tsv"]}
    top = max(SIZES)
    lsm, rocks = rows[("lsmtrie", top)], rows[("rocksdb", top)]
    assert f"{float(lsm['w_amp']):.2f} against {float(rocks['w_amp']):.2f}" in res["findings"]
    ratio = float(lsm["w_amp"]) / float(rocks["w_amp"])
    assert f"{ratio:.2f} x RocksDB's bytes" in res["findings"]
    assert res["findings"] in md


def test_figures_are_images_with_content(report):
    import matplotlib.image
    for name in report["json"]["figures"]:
        path = report["out"] / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = matplotlib.image.imread(path)
        h, w = img.shape[:2]
        assert h >= 300 and w >= 600, name
        colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 100, name  # lines, bars, text: not a blank canvas
        # not mostly one colour: the background leaves room for what is drawn
        white = np.all(img[..., :3] > 0.98, axis=-1).mean()
        assert white < 0.97, name


def test_leveldb_log_bytes_computed_match_its_log_file(tmp_path):
    """The LevelDB log size the report computes (LevelDB counts none) equals the log file
    LevelDB writes, for batches that stay in its memtable."""
    plyvel = pytest.importorskip("plyvel")
    log = report_engines.LevelDBLog()
    db = plyvel.DB(str(tmp_path / "l"), create_if_missing=True)
    rng = np.random.default_rng(5)
    for count in (1, 7, 300, 2000, 50):
        with db.write_batch(sync=False) as wb:
            for _ in range(count):
                wb.put(rng.bytes(16), rng.bytes(100))
        log.add_batch(count, 16, 100)
    logs = [f for f in os.listdir(tmp_path / "l") if f.endswith(".log")]
    size = sum(os.path.getsize(tmp_path / "l" / f) for f in logs)
    db.close()
    assert log.bytes == size


def test_a_missing_peer_is_skipped_with_its_extra(tmp_path):
    run = run_cli(["report", "--out", str(tmp_path / "out"), "--sizes", "3000",
                   "--engines", "lsmtrie,leveldb", "--gets", "100", "--dir", str(tmp_path / "w")],
                  shim="sys.modules['plyvel'] = None  # import plyvel fails")
    assert run.returncode == 0, run.stderr[-2000:]
    line = "leveldb skipped: the plyvel package is not installed (pip install 'lsmtrie[report]')"
    assert f"lsmtrie report: {line}" in run.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["skipped"] == {"leveldb": line}
    assert [r["engine"] for r in res["runs"]] == ["lsmtrie"]
    assert line in (tmp_path / "out" / "report.md").read_text()
    assert not os.path.exists(tmp_path / "w" / "leveldb-3000")


@pytest.mark.parametrize("args, message", [
    (["--sizes", "abc"], "not a number of items"),
    (["--sizes", "0"], "not a whole number of items from 1"),
    (["--sizes", "1e6,2.5"], "not a whole number of items from 1"),
    (["--engines", "lsmtrie,sqlite"], "unknown engine sqlite"),
    (["--gets", "0"], "must be at least 1"),
    (["--key-size", "-3"], "must be at least 1"),
    (["--value-size", "x"], "not a whole number"),
    (["--seed", "s"], "invalid int value"),
])
def test_bad_arguments_exit_2_with_a_usage_line(tmp_path, capsys, args, message):
    from lsmtrie.cli import main
    with pytest.raises(SystemExit) as e:
        main(["report", "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lsmtrie report") and message in err
    assert not os.path.exists(tmp_path / "o")


def test_bad_arguments_in_a_process_one_error_line_no_traceback(tmp_path):
    run = run_cli(["report", "--sizes", "1e6"])  # --out is required
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines[0].startswith("usage: lsmtrie report")
    assert lines[-1] == "lsmtrie report: error: the following arguments are required: --out"
    assert "Traceback" not in run.stderr


def test_a_runtime_failure_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    run = run_cli(["report", "--out", str(blocker / "out"), "--sizes", "1000",
                   "--engines", "lsmtrie", "--dir", str(tmp_path / "w")])
    assert run.returncode == 1
    assert run.stderr.startswith("lsmtrie report: ") and run.stderr.count("\n") == 1
    assert "Traceback" not in run.stderr


def test_a_failed_measuring_process_is_one_line(tmp_path):
    """A measurement process that fails hands its error over as one line (no traceback)."""
    from lsmtrie import report
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RuntimeError) as e:
        report._child(["load", "lsmtrie", 1000, 16, 100, 1, str(blocker / "store")],
                      "lsmtrie at 1,000 items, loading")
    message = str(e.value)
    assert message.startswith("lsmtrie at 1,000 items, loading failed: ")
    assert "\n" not in message and "Traceback" not in message
