"""The benchmarks' measuring code (bench/measure.py), which bench/store.py and bench/htable.py
print: its figures are there, checked, and sane on tiny loads (no figure is compared with a
target here: speed is the benchmarks' business)."""

import os
import sys

import pytest

import lsmtrie

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import measure  # noqa: E402

from test_store_api import corrupt_first_buckets, open_tiny  # noqa: E402


def test_benchmark_measures_the_loading_and_a_new_process(tmp_path):
    """bench/store.py's measurement on a tiny load: every level holds data, every value read
    back was checked (measure_reads raises otherwise), and the reads are measured twice, in
    the loading process and in a new one that opens the store read-only afterwards."""
    r = measure.measure_store(n=20_000, levels=3, reads=2_000, single=500, directory=str(tmp_path))
    assert all(t > 0 for t in r["tables_per_level"][1:]), r["tables_per_level"]
    assert r["reads_per_get_miss"] <= 1.05
    for figures in (r, r["reopened"]):
        assert figures["get_hit_per_s_batched"] > 0 and figures["get_hit_per_s_single"] > 0
        assert figures["get_miss_per_s_batched"] > 0
        assert figures["floor_reads_per_s"] > 0 and figures["floor_cpu_us_per_read"] > 0
        assert "get_hit_cpu_us_above_floor" in figures
    assert r["disk_bytes_at_rest"] > 0 and r["peak_disk_bytes"] >= r["disk_bytes_at_rest"]
    assert r["depth"] == 3 and 0 < r["last_level_item_fraction"] < 1
    assert 1.0 <= r["data_reads_per_hit"] <= 1.05 and r["data_reads_per_miss"] <= 0.05
    assert r["cluster_reads_per_hit"] + r["data_reads_per_hit"] == pytest.approx(r["reads_per_get_hit"])
    assert "reopened by a new process" in measure.store_summary(r)
    assert "bucket reads alone" in measure.store_summary(r)
    # the hypervisor's steal time beside the rates: counted on Linux, and never negative
    for steal in (r["load_steal_cores"], r["get_hit_steal_cores_batched"],
                  r["reopened"]["get_hit_steal_cores_batched"]):
        assert steal is not None and steal >= 0
    assert "the hypervisor took" in measure.store_summary(r)


def test_steal_time_readings():
    a = measure.steal_seconds()
    b = measure.steal_seconds()
    assert a is not None and 0 <= a <= b
    assert measure.steal_cores(1.0, 1.5, 2.0) == 0.25
    assert measure.steal_cores(None, 1.5, 2.0) is None and measure.steal_cores(1.0, 1.5, 0) is None


def test_read_floor_reads_and_checks_random_buckets(tmp_path):
    """measure.read_floor, the benchmark's floor under batched hits, reads random buckets of the
    store's tables as lookups do, CRC checked (a corrupt first bucket in each table, among 200
    or so buckets, fails it when 20,000 reads are asked), on the threads asked for, and leaves
    the statistics alone."""
    path = tmp_path / "db"
    with open_tiny(path) as db:
        db.put_many([b"floor-%d" % i for i in range(4000)], [b"v" * 30] * 4000)
        db.flush()
        before = db.stats()
        wall, cpu = measure.read_floor(db, 20_000, 2)
        assert wall > 0 and cpu > 0
        after = db.stats()
        for k in ("gets", "bucket_reads", "cluster_reads"):
            assert after[k] == before[k], k
        with pytest.raises(lsmtrie.InvalidArgumentError, match="threads must be 1..8"):
            measure.read_floor(db, 10, 0)
        with pytest.raises(OverflowError):  # n is unsigned
            measure.read_floor(db, -1)
        tables = sum(before["tables_per_level"])
    assert 3 <= tables <= 40, tables
    corrupt_first_buckets(path)
    with lsmtrie.open(str(path), read_only=True) as db:
        with pytest.raises(lsmtrie.CorruptionError):
            measure.read_floor(db, 20_000, 1)
    with pytest.raises(lsmtrie.ClosedError):
        measure.read_floor(db, 10)
    with lsmtrie.open(str(tmp_path / "empty"), create=True) as db:
        with pytest.raises(lsmtrie.InvalidArgumentError, match="no tables"):
            measure.read_floor(db, 10)



def test_the_demo_checks_the_store_it_loaded(tmp_path):

    r = measure.measure_store(n=20_000, levels=3, reads=2_000, single=500, directory=str(tmp_path),
                           verify=True)
    assert r["verified"]["items"] >= 20_000 and r["verified"]["tables"] == sum(r["tables_per_level"])
    assert "verified            sound:" in measure.store_summary(r)


def test_the_load_benchmark_prints_the_issue_keys_for_generated_and_file_input(tmp_path):
    """bench/load.py on a tiny load (no peers: they are the [bench] extra's): its JSON names
    every figure the loader's issue asks for, from --generate and from a file it made."""
    import json
    import subprocess
    bench = os.path.join(os.path.dirname(measure.__file__), "load.py")
    keys = {"load_items_per_s", "wa_os", "peak_rss_bytes", "peak_disk_bytes", "store_bytes",
            "reads_per_hit", "reads_per_miss", "data_reads_per_hit", "cluster_reads_per_hit",
            "single_gets_per_s", "batched_gets_per_s", "last_level_item_fraction"}
    for extra in ([], ["--input", str(tmp_path / "in.tsv"), "--make-input"]):
        r = subprocess.run([sys.executable, bench, "--n", "30000", "--reads", "2000", "--peers", "none",
                            "--dir", str(tmp_path), "--json", *extra], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)["engines"]["lsmtrie"]
        assert keys <= set(out), keys - set(out)
        assert out["items_loaded"] == 30000 and out["last_level_item_fraction"] == 1.0
        assert out["data_reads_per_hit"] >= 1.0 and out["cluster_reads_per_miss"] == 1.0
    assert out["load_input_bytes_per_s"] > 0
    assert [p for p in os.listdir(tmp_path) if p.startswith("lsmtrie-bench")] == []  # removed


def test_the_direct_benchmark_sets_direct_reads_against_the_device(tmp_path):
    """bench/store.py --direct on a tiny store: every figure the issue names is there (the
    device's rate at depth 1 and at the batched gets' depth, both ways, and the ratios), every
    value was checked (direct_reads_of_store raises otherwise), and the reads per hit and miss
    are counted. Rates are not judged."""
    from lsmtrie import _binding
    depth = _binding.lib.LTR_BATCH_READ_DEPTH
    path = str(tmp_path / "db")
    with open_tiny(path) as db:
        measure.load(db, 3000, 1)  # the benchmark's own items, which it samples again
    r = measure.measure_direct(path, None, 3000, 1, 500, 200, None, 1, 0.2)
    for key in ("get_hit_per_s_single_direct", "get_hit_per_s_batched_direct",
                "device_read_iops_qd1", f"device_read_iops_qd{depth}",
                "single_direct_vs_device_qd1", f"batched_direct_vs_device_qd{depth}",
                "get_hit_per_s_single_direct_from_c", "single_direct_from_c_vs_device_qd1"):
        assert r[key] > 0, key
    assert r["batch_read_depth"] == depth == 32
    assert r["single_direct_vs_device_qd1"] == pytest.approx(
        r["get_hit_per_s_single_direct"] / r["device_read_iops_qd1"])
    for d in (1, depth):
        ways = r["device_read_iops_by_way"][f"qd{d}"]
        assert set(ways) == {"threads", "uring"} and r[f"device_read_iops_qd{d}"] == max(
            ways["threads"][0], ways["uring"][0])
    assert 1.0 <= r["data_reads_per_hit_direct"] <= 1.5 and r["data_reads_per_miss_direct"] < 0.2
    assert "engine" in r["reads_counted_by"]
    assert r["device_files"] == len([f for f in os.listdir(path) if f.endswith(".ht")])
    assert "device at queue depth 32" in measure.direct_summary(r)
    assert "ltr_store_get_each" in measure.direct_summary(r)


def test_get_each_counts_the_keys_found_and_raises_on_errors(tmp_path):
    """ltr_store_get_each, the benchmark's single gets from C: it finds what get() finds (values
    longer than its buffer included), counts absent keys as not found, and raises a store error
    (here a corrupt bucket) instead of counting it."""
    from lsmtrie import _binding
    from lsmtrie._packing import pack
    path = tmp_path / "db"
    keys = [b"e-%d" % i for i in range(3000)]
    with open_tiny(path) as db:
        db.put_many(keys, [b"x" * (5000 if i % 7 == 0 else 30) for i in range(3000)])
        db.flush()
        k = pack(keys[:100] + [b"absent-%d" % i for i in range(50)])
        assert measure._get_each(db, pack(keys)) > 0  # (raises unless all 3,000 are found)
        with db._use() as h:
            got = _binding.lib.ltr_store_get_each(h, _binding.ptr_u8(k.data),
                                                 _binding.ptr_i64(k.offsets), k.n)
        assert got == 100
    corrupt_first_buckets(path)
    with lsmtrie.open(str(path), read_only=True) as db:
        with pytest.raises(lsmtrie.CorruptionError):
            measure._get_each(db, pack(keys))


def test_the_overwrite_benchmark_reports_space_by_round_and_the_peak(tmp_path):
    """--values overwrite: a tiny run's figures: a round of loading and two of overwrites, the
    space after each against the live bytes, every value checked at the end, and the sampled
    peak at least every round's size and the size at rest."""
    r = measure.measure_overwrites(6000, 40, 2, directory=str(tmp_path))
    assert r["live_bytes"] == 40 * (16 + 6000) and r["values_checked"] is True
    assert [x["round"] for x in r["by_round"]] == [0, 1, 2]
    assert all(x["disk_bytes"] > 0 and x["space_amplification"] > 0 for x in r["by_round"])
    assert r["by_round"][0]["blob_bytes_written"] >= 40 * 6000  # large values: value logs
    # the value logs' live bytes as the store counts them: at least the live records' bytes
    assert all(x["blob_bytes"] >= x["blob_live_bytes"] >= 40 * 6000 for x in r["by_round"])
    assert r["peak_disk_bytes"] >= max(x["disk_bytes"] for x in r["by_round"])
    assert r["peak_disk_bytes"] >= r["disk_bytes_at_rest"] > 0
    assert r["peak_vs_rest"] == r["peak_disk_bytes"] / r["disk_bytes_at_rest"]
    assert not os.path.exists(os.path.join(str(tmp_path), "store"))  # removed unless kept
