#!/usr/bin/env python3
"""Builds the N shard stores of a twemproxy pool from input files on a Dask cluster
(docs/scale-out.md "Building shards with Dask").

    python examples/dask_build.py --route fnv1a_64:ketama --shards 3 --out DIR \\
        [--format tsv ...] [--scheduler tcp://host:8786 | --workers 2] \\
        [--nutcracker-config nutcracker.yml --base-port 22122] INPUT...

Two steps, one task per piece of work:

1. map, one task per partition of the input: whole files, and each uncompressed file of a
   line-based format (tsv, jsonl) larger than --partition-bytes cut into byte ranges of about
   that size at line boundaries. The task parses its partition with lsmtrie's C parser, picks
   each shard's items of every parsed batch with the route in C, and appends them, written by
   lsmtrie's C formatter as lenprefix records, to a spill file of that partition and shard.
2. build, one task per shard (one writer per store): `lsmtrie.load(DIR/shardI, that shard's
   spill files in input order, format="lenprefix")`, then removes those spill files.

A later item of a key wins over an earlier one, as in one `lsmtrie load` of the inputs in
order: a key always goes to the same shard, a spill file keeps its partition's order, and the
build loads a shard's spill files in the partitions' input order (their sequence numbers, not
the order the map tasks happened to finish in), and the loader lets a later item win.

The work directory and DIR must be at the same path on every worker (a shared file system, or
a LocalCluster on one machine). Prints a JSON summary: each shard's items, bytes and seconds,
and the totals. Importable: `build(inputs, out, shards, route, client=None, ...)`. Needs
dask.distributed: `pip install 'lsmtrie[scale]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import lsmtrie
from lsmtrie.bulk import CHUNK, ENCODINGS, FORMATS, LoadError, LoadOptions, open_input, parse_size
from lsmtrie._parse import Formatter, Parser
from lsmtrie.route import Route, resolve

# Formats where an LF always ends a record, so that a byte range cut at line boundaries holds
# whole records (csv is not: a quoted field may hold an LF; fixed and lenprefix have no lines).
LINE_FORMATS = ("tsv", "jsonl")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # read whole: a stream cannot start mid-way
PARTITION_BYTES = 256 << 20
SCAN = 64 << 10              # bytes read at a time when looking for the end of a line
BAD_EXAMPLES = 10            # descriptions of bad lines kept (with --on-bad-line skip)


class BuildError(lsmtrie.Error):
    """A build refused before any work (arguments, shard stores that exist already, inputs
    that are missing) or one that did not finish in time."""


@dataclass(frozen=True)
class ParseOptions:
    format: str = "tsv"
    key_encoding: str = "utf8"
    value_encoding: str = "utf8"
    key_size: int = 16           # fixed only
    value_size: int = 16         # fixed only
    on_bad_line: str = "fail"

    def parser(self) -> Parser:
        fixed = self.format == "fixed"
        return Parser(self.format, self.key_encoding, self.value_encoding,
                      self.key_size if fixed else 0, self.value_size if fixed else 0,
                      self.on_bad_line)


@dataclass(frozen=True)
class Partition:
    seq: int                 # its place in input order: the build loads spill files in this order
    path: str
    start: int = 0
    end: int | None = None   # None: the whole file, decompressed by its suffix


# ---- planning (on the client) ----

def plan(inputs, format: str, partition_bytes: int) -> list[Partition]:
    """The partitions of the inputs, in input order."""
    parts: list[Partition] = []
    for path in inputs:
        size = os.path.getsize(path)
        if format in LINE_FORMATS and not path.endswith(COMPRESSED) and size > partition_bytes:
            for start in range(0, size, partition_bytes):
                parts.append(Partition(len(parts), path, start, min(start + partition_bytes, size)))
        else:
            parts.append(Partition(len(parts), path))
    return parts


# ---- map: a partition parsed, routed and spilled (on a worker) ----

def _past_lf(f, pos: int) -> int:
    """The offset just past the first LF at or after pos (the end of the file if none)."""
    f.seek(pos)
    while True:
        block = f.read(SCAN)
        if not block:
            return pos
        i = block.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(block)


def line_range(f, start: int, end: int) -> tuple[int, int]:
    """The bytes [first, stop) of the lines that start in [start, end) of the open file f: a
    line belongs to the range holding its first byte, so ranges that tile a file share out its
    lines, each once and whole, whatever the cut points."""
    first = start if start == 0 else _past_lf(f, start - 1)
    if first >= end:
        return first, first
    return first, _past_lf(f, end - 1)


def _whole(path: str):
    with open_input(path) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _range(path: str, pos: int, stop: int):
    with open(path, "rb") as f:
        f.seek(pos)
        while pos < stop:
            chunk = f.read(min(CHUNK, stop - pos))
            if not chunk:
                raise LoadError(f"{path} got shorter while it was read")
            pos += len(chunk)
            yield chunk


def _chunks(part: Partition):
    """(the partition's name in messages, its bytes CHUNK at a time). A range's line numbers
    count from its first line, which the name gives by its byte offset."""
    if part.end is None:
        return part.path, _whole(part.path)
    with open(part.path, "rb") as f:
        first, stop = line_range(f, part.start, part.end)
    return f"{part.path} (lines from byte {first})", _range(part.path, first, stop)


class _Spills:
    """A partition's spill files, one per shard, each opened when its shard gets an item."""

    def __init__(self, work: str, seq: int):
        self.work, self.seq = work, seq
        self.files: dict[int, object] = {}
        self.counts: dict[int, list[int]] = {}

    def path(self, shard: int) -> str:
        return os.path.join(self.work, f"p{self.seq:07d}-s{shard:05d}.lp")

    def write(self, shard: int, data, items: int) -> None:
        if shard not in self.files:
            self.files[shard] = open(self.path(shard), "wb")
            self.counts[shard] = [0, 0]
        self.files[shard].write(data)
        self.counts[shard][0] += items
        self.counts[shard][1] += len(data)

    def close(self) -> list[list]:
        """[shard, path, items, bytes] of each file written."""
        for f in self.files.values():
            f.close()
        return [[s, self.path(s), *self.counts[s]] for s in sorted(self.files)]


def _parsed(parser: Parser, name: str, chunks):
    """The C batches of the chunks (each valid until the next), the last from the final feed."""
    for chunk in itertools.chain(chunks, [b""]):
        try:
            yield parser.feed_c(chunk, final=not chunk)
        except lsmtrie.InvalidArgumentError as e:  # a bad line (with fail) or lost framing
            raise LoadError(f"{name}: {e}") from None


def spill_partition(part: Partition, route: dict, opts: ParseOptions, work: str) -> dict:
    """Map task: the partition's items, split by shard into lenprefix spill files in `work`.
    Per batch, not per item: the C parser, then per shard one C selection and one C format."""
    r, parser, fmt = Route(**route), opts.parser(), Formatter("lenprefix")
    picked = Parser.new_items()
    name, chunks = _chunks(part)
    spills, read = _Spills(work, part.seq), 0
    try:
        for batch in _parsed(parser, name, chunks):
            read += batch.n
            if not batch.n:
                continue
            # (a pass over the batch per shard: cheap beside parsing for a few shards, but
            # for hundreds a one-pass split in C would be wanted)
            for shard in range(len(r)):
                mine = r.select_items(shard, batch, picked)
                if mine.n:
                    spills.write(shard, fmt.format_c(mine), mine.n)
    finally:
        written = spills.close()
    return {"seq": part.seq, "items_read": read, "bad_lines": parser.bad_lines,
            "bad_line_examples": [f"{name}: {d}" for d in parser.bad_line_descriptions],
            "spills": written}


# ---- build: one shard's store from its spill files (on a worker) ----

def build_shard(shard: int, path: str, files: list[str], value_format: str, memory: int) -> dict:
    """Build task: loads the shard's spill files, in the order given (input order), into a new
    store at path (an empty store if the shard got no item), then removes them."""
    started = time.monotonic()
    summary = lsmtrie.load(path, files, format="lenprefix", value_format=value_format,
                           memory=memory, progress=False)
    for p in files:
        os.unlink(p)
    return {"shard": shard, "path": path, "items": summary["items_loaded"],
            "items_read": summary["items_read"], "duplicates": summary["duplicates"],
            "bytes": summary["user_bytes"], "store_bytes": summary["store_bytes"],
            "seconds": time.monotonic() - started}


# ---- the job (on the client) ----

def _distributed():
    try:
        import distributed
    except ImportError:
        raise BuildError("dask.distributed is missing: pip install 'lsmtrie[scale]'") from None
    return distributed


def shard_paths(out: str, shards: int) -> list[str]:
    return [os.path.join(out, f"shard{i}") for i in range(shards)]


def _check(inputs: list[str], out: str, shards: int, partition_bytes: int) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise BuildError(f"shards must be a count of at least 1, got {shards!r}")
    if partition_bytes < 1:
        raise BuildError(f"partition_bytes must be at least 1, got {partition_bytes}")
    if not inputs:
        raise BuildError("no input files")
    for path in inputs:
        if not os.path.isfile(path):
            raise BuildError(f"{path}: not a file (the job partitions files; standard input "
                             "cannot be shared out)")
    taken = [p for p in shard_paths(out, shards) if os.path.exists(p)]
    if taken:
        raise BuildError(f"{taken[0]} exists: build into a directory without shard stores")


def _ship_by_value() -> None:
    """Workers then need lsmtrie and dask only, not this file: its functions travel with the
    tasks (as they do anyway when it runs as a script)."""
    if __name__ != "__main__":
        import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextlib.contextmanager
def _cluster(client, workers: int):
    """The client given, or one of a LocalCluster of `workers` processes of one thread each
    (a task at a time per worker: a load's memory budget is then per worker)."""
    if client is not None:
        yield client
        return
    d = _distributed()
    with d.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc, \
            d.Client(lc) as c:
        yield c


def _step(client, step: str, fn, deadline: float | None, calls) -> tuple[list, float]:
    """Runs fn(*args) as a task for each args of calls: (their results, in order; the seconds
    from the first submission to the last result)."""
    started = time.monotonic()
    futures = [client.submit(fn, *args, pure=False) for args in calls]
    return _gather(client, futures, deadline, step), time.monotonic() - started


def _gather(client, futures, deadline: float | None, step: str) -> list:
    """The tasks' results; the first task's failure is raised as it is (a LoadError for bad
    input), and every task is cancelled when one fails or time runs out."""
    left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
    try:
        _distributed().wait(futures, timeout=left)
        return client.gather(futures)
    except TimeoutError:
        raise BuildError(f"the {step} step did not finish in time") from None
    finally:
        client.cancel([f for f in futures if not f.done()])


def _remove(work: str) -> None:
    """Removes the spill directory, renamed first: a task cancelled but still running (Dask
    cannot stop one) then fails to make a new spill file instead of leaving it behind."""
    gone = work + ".removing"
    with contextlib.suppress(FileNotFoundError):
        os.rename(work, gone)
    shutil.rmtree(gone, ignore_errors=True)


def _files_of(mapped: list[dict], shards: int) -> list[list[str]]:
    """Each shard's spill files in input order: by partition sequence number, whatever order
    the map tasks finished in. This is what keeps a later item of a key winning."""
    files: list[list[tuple[int, str]]] = [[] for _ in range(shards)]
    for m in mapped:
        for shard, path, _, _ in m["spills"]:
            files[shard].append((m["seq"], path))
    return [[p for _, p in sorted(f)] for f in files]


def _summary(route: Route, parts, mapped, built, seconds: dict) -> dict:
    read = sum(m["items_read"] for m in mapped)
    shards = [{"shard": b["shard"], "name": route.names[b["shard"]], **b}
              for b in sorted(built, key=lambda b: b["shard"])]
    totals = {k: sum(b[k] for b in shards)
              for k in ("items", "items_read", "duplicates", "bytes", "store_bytes")}
    totals.update(input_items=read, bad_lines=sum(m["bad_lines"] for m in mapped), **seconds,
                  items_per_s=read / seconds["seconds"] if seconds["seconds"] else 0.0)
    out = {"route": route.describe(), "partitions": len(parts), "shards": shards,
           "totals": totals}
    examples = [e for m in mapped for e in m["bad_line_examples"]][:BAD_EXAMPLES]
    if examples:
        out["bad_line_examples"] = examples
    return out


def build(inputs, out: str, shards: int, route="fnv1a_64:ketama", client=None, *,
          partition_bytes: int = PARTITION_BYTES, work_dir: str | None = None,
          value_format: str = "memcached", memory: int = 1 << 30, workers: int = 2,
          timeout: float | None = None, **parse) -> dict:
    """Builds out/shard0 .. out/shard{shards-1} from the input files (in that order) on the
    Dask cluster of `client` (None: a LocalCluster of `workers` processes) and returns the
    summary: each shard's items, items_read, duplicates, bytes (user bytes loaded),
    store_bytes, seconds and name; the totals (with input_items, bad_lines, map_seconds,
    build_seconds, their sum seconds, which leaves out starting a LocalCluster, and
    items_per_s: input items by seconds); the route and partitions.

    route: a lsmtrie.route.Route, "HASH:DISTRIBUTION" or a nutcracker "FILE[:POOL]" of
    `shards` servers. parse: format, key_encoding, value_encoding, key_size, value_size (fixed),
    on_bad_line, as for lsmtrie.load. value_format "memcached" (served shards keep items set
    later with their flags) or "raw". memory: each shard load's working memory. Spill files go
    to a new directory under work_dir (default out), removed at the end, failed or not.
    Raises BuildError (refused, or timeout seconds passed), LoadError (bad input, naming the
    file), InvalidArgumentError (options, route)."""
    opts = ParseOptions(**parse)
    LoadOptions(**asdict(opts), memory=memory, value_format=value_format).check()
    inputs = [os.fspath(i) for i in inputs]
    _check(inputs, out, shards, partition_bytes)
    route = resolve(route, shards)
    parts = plan(inputs, opts.format, partition_bytes)
    _ship_by_value()
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="spill-", dir=work_dir or out)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with _cluster(client, workers) as c:
            mapped, t_map = _step(c, "map", spill_partition, deadline,
                                  [(p, route.describe(), opts, work) for p in parts])
            built, t_build = _step(c, "build", build_shard, deadline,
                                   [(i, path, files, value_format, memory) for i, (path, files)
                                    in enumerate(zip(shard_paths(out, shards),
                                                     _files_of(mapped, shards)))])
    finally:
        _remove(work)
    return _summary(route, parts, mapped, built, {"seconds": t_map + t_build,
                                                  "map_seconds": t_map, "build_seconds": t_build})


def nutcracker_config(route: Route, ports, listen: str = "127.0.0.1:22121",
                      host: str = "127.0.0.1", pool: str = "lsmtrie") -> str:
    """A nutcracker (twemproxy) configuration of one pool that routes as `route` to shard i at
    host:ports[i], with ejection off (an ejected shard would move its keys elsewhere)."""
    if len(ports) != len(route):
        raise BuildError(f"{len(route)} shards but {len(ports)} ports")
    lines = [f"{pool}:", f"  listen: {listen}", f"  hash: {route.hash}",
             f"  distribution: {route.distribution}", "  auto_eject_hosts: false"]
    if route.hash_tag:
        lines.append(f"  hash_tag: {json.dumps(route.hash_tag)}")  # quoted: "{}" is not a map
    lines.append("  servers:")
    lines += [f"    - {host}:{port}:{weight} {name}"
              for port, weight, name in zip(ports, route.weights, route.names)]
    return "\n".join(lines) + "\n"


# ---- the command ----

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dask_build.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, in input order")
    p.add_argument("--route", default="fnv1a_64:ketama",
                   help="HASH:DISTRIBUTION over servers named shard0.., or a nutcracker "
                        "FILE[:POOL]")
    p.add_argument("--shards", type=int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="DIR", help="the stores go to DIR/shardI")
    p.add_argument("--format", choices=FORMATS, default="tsv")
    p.add_argument("--key-encoding", choices=ENCODINGS, default="utf8")
    p.add_argument("--value-encoding", choices=ENCODINGS, default="utf8")
    p.add_argument("--key-size", type=int, default=16, help="fixed only")
    p.add_argument("--value-size", type=int, default=16, help="fixed only")
    p.add_argument("--on-bad-line", choices=("fail", "skip"), default="fail")
    p.add_argument("--partition-bytes", type=parse_size, default=PARTITION_BYTES, metavar="BYTES",
                   help="cut larger tsv and jsonl files into ranges of about this (default 256M)")
    p.add_argument("--work-dir", metavar="DIR", help="where the spill files go (default --out)")
    p.add_argument("--value-format", choices=("memcached", "raw"), default="memcached")
    p.add_argument("--memory", type=parse_size, default=1 << 30, metavar="BYTES",
                   help="working memory of each shard's load (default 1G)")
    p.add_argument("--scheduler", metavar="ADDR", help="a Dask scheduler (tcp://host:8786); "
                   "default: a LocalCluster of --workers processes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, metavar="SECONDS")
    p.add_argument("--nutcracker-config", metavar="FILE",
                   help="also write a nutcracker configuration of the shards to FILE")
    p.add_argument("--base-port", type=int, default=22122,
                   help="shard I is served on 127.0.0.1:BASE+I in that configuration")
    p.add_argument("--listen", default="127.0.0.1:22121", help="the proxy's address in it")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    parse = {k: getattr(args, k) for k in
             ("format", "key_encoding", "value_encoding", "key_size", "value_size", "on_bad_line")}
    with contextlib.ExitStack() as stack:
        client = (stack.enter_context(_distributed().Client(args.scheduler, timeout=60))
                  if args.scheduler else None)
        summary = build(args.inputs, args.out, args.shards, args.route, client,
                        partition_bytes=args.partition_bytes, work_dir=args.work_dir,
                        value_format=args.value_format, memory=args.memory,
                        workers=args.workers, timeout=args.timeout, **parse)
    if args.nutcracker_config:
        route = resolve(args.route, args.shards)
        ports = [args.base_port + i for i in range(args.shards)]
        with open(args.nutcracker_config, "w") as f:
            f.write(nutcracker_config(route, ports, args.listen))
    return summary


def main(argv=None) -> int:
    """0 built; 1 refused or failed (one line on stderr); 2 usage (argparse)."""
    args = parse_args(argv)
    try:
        summary = run(args)
    except (lsmtrie.Error, OSError) as e:
        print(f"dask_build: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
