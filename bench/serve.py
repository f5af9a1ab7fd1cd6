"""Serve benchmark (issue 25): `lsmtrie serve` beside memcached 1.6 under the same load generator.

Both servers run on this machine with the generator beside them (127.0.0.1 only): memcached
(Debian's `memcached`, -m 1024, as many worker threads as lsmtrie's event loops) and
`python -m lsmtrie serve` on a new store in --dir. The generator is libmemcached's memaslap
(Debian's `memcaslap`): --generator-threads threads, --concurrency simulated clients, each
keeping a window of requests, a mix of gets and sets (--set-proportion, default 0.1, memaslap's
own default), values of --value-size bytes, and --division keys per get (1: single gets;
memaslap's multi-get otherwise). memaslap's keys start with 8 binary bytes, so lsmtrie serves
with --allow-control-keys (memcached accepts any byte but space and newline).

Rounds alternate the servers (the order swapped each round) on this shared, noisy machine;
each round runs memaslap for --seconds against one server. Figures: the median operations per
second of each (`memcached_ops_per_s`, `lsmtrie_ops_per_s`), their ratio
(`lsmtrie_vs_memcached`; issue 25's target: >= 0.5), every round's figures, the servers' peak
RSS, and whether any request failed (memaslap's get_misses and the servers' errors).
--python-baseline adds a third server, bench/serve_python.py (asyncio with uvloop over the
Python API, get and set only): `python_asyncio_ops_per_s`, the measurement behind serving in C.
--twemproxy N drives each kind through a nutcracker over N servers of it (docs/scale-out.md):
peak_rss_bytes then sums a side's processes.

    .venv/bin/python bench/serve.py --dir /work/tmp/serve --seconds 20 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


def start_memcached(port: int, threads: int) -> subprocess.Popen:
    exe = shutil.which("memcached")
    if not exe:
        raise SystemExit("bench/serve.py: memcached is not installed (apt-get install memcached)")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    return subprocess.Popen([exe, *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                             "-m", "1024", "-t", str(threads)])


def start_lsmtrie(port: int, threads: int, store: str, sync: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lsmtrie", "serve", store, "--port", str(port),
           "--threads", str(threads), "--allow-control-keys"] + (["--sync"] if sync else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, cwd=ROOT)


def start_python(port: int, store: str) -> subprocess.Popen:
    """bench/serve_python.py: the same protocol served by asyncio over the Python API."""
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "serve_python.py"),
                             store, str(port)], cwd=ROOT)


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def memaslap(port: int, a) -> dict:
    exe = shutil.which("memcaslap") or shutil.which("memaslap")
    if not exe:
        raise SystemExit("bench/serve.py: memaslap is not installed (apt-get install libmemcached-tools)")
    cfg = None
    cmd = [exe, "-s", f"127.0.0.1:{port}", "-T", str(a.generator_threads), "-c", str(a.concurrency),
           "-t", f"{a.seconds}s", "-X", str(a.value_size), "-d", str(a.division)]
    if a.set_proportion != 0.1:  # memaslap takes other mixes from a configuration file
        cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
        cfg.write("key\n16 16 1\nvalue\n%d %d 1\ncmd\n0 %g\n1 %g\n"
                  % (a.value_size, a.value_size, a.set_proportion, 1 - a.set_proportion))
        cfg.close()
        cmd += ["-F", cfg.name]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + 60).stdout
    finally:
        if cfg:
            os.unlink(cfg.name)
    fields = {k: int(v) for k, v in re.findall(r"^(cmd_get|cmd_set|get_misses): (\d+)$", out, re.M)}
    m = re.search(r"Run time: ([\d.]+)s Ops: (\d+) TPS: (\d+)", out)
    if not m:
        raise RuntimeError(f"memaslap printed no summary:\n{out[-2000:]}")
    errors = len(re.findall(r"ERROR", out))
    return {"ops_per_s": int(m.group(3)), "ops": int(m.group(2)), "seconds": float(m.group(1)),
            **fields, "error_lines": errors}


def revision() -> str | None:
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None


def start_nutcracker(port: int, backends: list[int], workdir: str) -> subprocess.Popen:
    """A twemproxy pool over backends (fnv1a_64, ketama, servers named shard0..)."""
    exe = shutil.which("nutcracker")
    if not exe:
        raise SystemExit("bench/serve.py: nutcracker is not installed (apt-get install nutcracker)")
    conf = os.path.join(workdir, f"nutcracker-{port}.yml")
    with open(conf, "w") as f:
        f.write(f"pool:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n"
                "  auto_eject_hosts: false\n  timeout: 2000\n  servers:\n")
        f.writelines(f"    - 127.0.0.1:{b}:1 shard{i}\n" for i, b in enumerate(backends))
    return subprocess.Popen([exe, "-c", conf, "-s", str(free_port()), "-p",
                             os.path.join(workdir, f"nutcracker-{port}.pid")])


def start_server(name: str, port: int, a, store: str) -> subprocess.Popen:
    if name == "memcached":
        return start_memcached(port, a.server_threads)
    if name == "python":
        return start_python(port, store + "-python")
    return start_lsmtrie(port, a.server_threads, store, a.sync)


def start_side(name: str, a, store: str) -> tuple[int, list[subprocess.Popen]]:
    """One server (the port memaslap drives), or with --twemproxy N, N of them behind a proxy."""
    if not a.twemproxy:
        port = free_port()
        p = start_server(name, port, a, store)
        wait_listening(port, p)
        return port, [p]
    ports = [free_port() for _ in range(a.twemproxy)]
    procs = [start_server(name, port, a, f"{store}-{name}-{i}") for i, port in enumerate(ports)]
    for port, p in zip(ports, procs):
        wait_listening(port, p)
    front = free_port()
    procs.append(start_nutcracker(front, ports, a.dir))
    wait_listening(front, procs[-1])
    return front, procs


def run(a) -> dict:
    store = os.path.join(a.dir, "store")
    shutil.rmtree(store, ignore_errors=True)
    names = ["memcached", "lsmtrie"] + (["python"] if a.python_baseline else [])
    sides = {}
    rounds = []
    try:
        for name in names:
            sides[name] = start_side(name, a, store)
        for r in range(a.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                rounds.append({"server": name, "round": r, **memaslap(sides[name][0], a)})
        rss = {name: sum(peak_rss(p.pid) for p in procs) for name, (_, procs) in sides.items()}
    finally:
        for _, procs in sides.values():
            for p in procs:
                p.terminate()
        for _, procs in sides.values():
            for p in procs:
                p.wait(timeout=60)
    procs = {name: procs[0] for name, (_, procs) in sides.items()}
    med = {name: statistics.median(x["ops_per_s"] for x in rounds if x["server"] == name)
           for name in procs}
    extra = {}
    if a.python_baseline:
        extra = {"python_asyncio_ops_per_s": med["python"],
                 "python_asyncio_vs_memcached": round(med["python"] / med["memcached"], 3)}
    return {
        **extra,
        "memcached_ops_per_s": med["memcached"],
        "lsmtrie_ops_per_s": med["lsmtrie"],
        "lsmtrie_vs_memcached": round(med["lsmtrie"] / med["memcached"], 3),
        "peak_rss_bytes": rss,
        "lsmtrie_exit_status": procs["lsmtrie"].returncode,
        "workload": {"generator": "memaslap (libmemcached-tools)", "set_proportion": a.set_proportion,
                     "value_size": a.value_size, "keys_per_get": a.division,
                     "concurrency": a.concurrency, "generator_threads": a.generator_threads,
                     "server_threads": a.server_threads, "seconds": a.seconds, "sync": a.sync,
                     "twemproxy_shards": a.twemproxy},
        "rounds": rounds,
        "revision": revision(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="where lsmtrie's store goes (default: a temporary directory)")
    p.add_argument("--seconds", type=int, default=10, help="memaslap's run per round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the servers (default 3)")
    p.add_argument("--concurrency", type=int, default=64, help="memaslap's simulated clients (default 64)")
    p.add_argument("--generator-threads", type=int, default=2, help="memaslap's threads (default 2)")
    p.add_argument("--server-threads", type=int, default=2, help="each server's worker threads (default 2)")
    p.add_argument("--value-size", type=int, default=100, help="value bytes (default 100)")
    p.add_argument("--set-proportion", type=float, default=0.1, help="share of sets (default 0.1)")
    p.add_argument("--division", type=int, default=1, help="keys per get (default 1)")
    p.add_argument("--sync", action="store_true", help="lsmtrie fsyncs every write before replying")
    p.add_argument("--twemproxy", type=int, default=0, metavar="N",
                   help="drive each kind through nutcracker over N servers of it (fnv1a_64, ketama)")
    p.add_argument("--python-baseline", action="store_true",
                   help="also run bench/serve_python.py (asyncio, uvloop when installed, over the "
                        "Python API): the design a C server was chosen over")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    tmp = None
    if a.dir is None:
        tmp = tempfile.mkdtemp(prefix="lsmtrie-serve-bench-")
        a.dir = tmp
    os.makedirs(a.dir, exist_ok=True)
    try:
        r = run(a)
    finally:
        shutil.rmtree(os.path.join(a.dir, "store"), ignore_errors=True)
        for name in os.listdir(a.dir):
            if name.startswith("store-") or name.startswith("nutcracker-"):
                path = os.path.join(a.dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"memcached {r['memcached_ops_per_s']:,.0f} ops/s, lsmtrie {r['lsmtrie_ops_per_s']:,.0f} "
              f"ops/s: {r['lsmtrie_vs_memcached']:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
