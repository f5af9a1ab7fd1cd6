"""Bulk loading: `lsmtrie.load(path, inputs, ...)` and the `lsmtrie load` command.

The input is read in large chunks (decompressed by suffix), parsed into packed batches by the C
parsers (lsmtrie/_parse.py), and handed to the C loader (lsmtrie/_loader.py), which partitions,
builds each trie node's tables and installs all of them at once (docs/design.md "The loader").
No Python work per item or line: the per-chunk loop below runs a few hundred times a gigabyte.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import errors
from ._loader import Loader, plan_options
from .route import resolve as resolve_route
from .store import VALUE_FORMATS, Store

ITEMS = "memcached-items"  # a store of memcached items, fed values that already are items
LOAD_VALUE_FORMATS = (*VALUE_FORMATS, ITEMS)

CHUNK = 8 << 20                # input bytes parsed at a time
CHECKPOINT_BYTES = 256 << 20   # input between durable points (a resume re-reads at most this)
GENERATE_BATCH = 1 << 20       # generated items at a time
FORMATS = ("tsv", "csv", "jsonl", "fixed", "lenprefix")
ENCODINGS = ("utf8", "hex", "base64")
# Average encoded bytes a line of a text format holds per item byte, for estimates without
# --expected-items: a line's key and value plus their header, against the line's length.
COMPRESSION_GUESS = 4.0        # a compressed input's expansion, when nothing better is known


class LoadError(errors.Error):
    """A load that could not run or finish: bad input (with file, line and reason), a refused
    resume, too little disk. The store is as it was (or, after a crash, resumable)."""


@dataclass
class LoadOptions:
    format: str = "tsv"
    key_encoding: str = "utf8"
    value_encoding: str = "utf8"
    generate: int | None = None
    key_size: int = 16
    value_size: int = 16
    seed: int = 0
    on_bad_line: str = "fail"
    expected_items: int | None = None
    memory: int = 1 << 30
    tmp: str | None = None
    resume: bool = False
    progress: bool = False
    metadata_path: str | None = None
    shard: tuple[int, int] | None = None  # (i, n): load only what the route sends to shard i of n
    route: object = None                  # a Route, "HASH:DISTRIBUTION" or "FILE[:POOL]"
    value_format: str | None = None       # "memcached": the values are stored as memcached items

    def check(self) -> None:
        if self.format not in FORMATS:
            raise errors.InvalidArgumentError(f"unknown format {self.format!r}; one of {', '.join(FORMATS)}")
        for what in ("key_encoding", "value_encoding"):
            if getattr(self, what) not in ENCODINGS:
                raise errors.InvalidArgumentError(f"unknown {what} {getattr(self, what)!r}; one of {', '.join(ENCODINGS)}")
        if self.on_bad_line not in ("fail", "skip"):
            raise errors.InvalidArgumentError("on_bad_line must be 'fail' or 'skip'")
        if self.memory < (16 << 20):
            raise errors.InvalidArgumentError("memory must be at least 16 MiB")
        if self.generate is not None and self.generate < 0:
            raise errors.InvalidArgumentError("generate must be at least 0")
        if not (0 <= self.key_size <= 65535 and 0 <= self.value_size <= 16 << 20):
            raise errors.InvalidArgumentError("key_size must be 0..65535 and value_size 0..16 MiB")
        if self.value_format not in (None, *LOAD_VALUE_FORMATS):
            raise errors.InvalidArgumentError(f"value_format must be one of "
                                              f"{', '.join(LOAD_VALUE_FORMATS)}, got {self.value_format!r}")
        self._check_shard()

    def _check_shard(self) -> None:
        """shard and route come together; the route is resolved here (a configuration read and
        checked against n) so that a bad one fails before the store is touched."""
        if (self.shard is None) != (self.route is None):
            raise errors.InvalidArgumentError("shard and route go together: give both or neither")
        if self.shard is None:
            return
        try:
            i, n = self.shard
            ok = all(isinstance(x, int) and not isinstance(x, bool) for x in (i, n)) and 0 <= i < n
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise errors.InvalidArgumentError(f"shard must be (i, n) with 0 <= i < n, got {self.shard!r}")
        self.shard = (i, n)
        self.route = resolve_route(self.route, n)


# ---- inputs ----

def open_input(name: str):
    """A binary stream of an input file (`-`: standard input), decompressed by its suffix."""
    if name == "-":
        return sys.stdin.buffer
    if name.endswith(".gz"):
        return gzip.open(name, "rb")
    if name.endswith(".bz2"):
        return bz2.open(name, "rb")
    if name.endswith(".xz"):
        return lzma.open(name, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise LoadError(f"{name}: reading .zst needs the zstandard package "
                            "(pip install 'lsmtrie[load]')") from None
        return zstandard.ZstdDecompressor().stream_reader(open(name, "rb"))
    return open(name, "rb")


def _input_size(name: str) -> tuple[int | None, bool]:
    """(bytes on disk, compressed) of an input; None for standard input."""
    if name == "-":
        return None, False
    return os.path.getsize(name), name.endswith((".gz", ".bz2", ".xz", ".zst"))


@dataclass
class Progress:
    """The load's live line on stderr (tqdm): the phase, input bytes read (with percent and ETA
    when the input's size is known), items and items/s, bytes written and the write
    amplification so far."""
    enabled: bool
    total_bytes: int | None
    written0: int = 0
    items_read: int = 0
    started: float = field(default_factory=time.monotonic)
    bar: object = None

    def __post_init__(self):
        if self.enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, file=sys.stderr,
                            desc="reading", dynamic_ncols=True, mininterval=1.0)

    def update(self, nbytes: int, items: int, user_bytes: int) -> None:
        self.items_read += items
        if self.bar is not None:
            rate = self.items_read / max(time.monotonic() - self.started, 1e-9)
            written = _write_bytes() - self.written0
            wa = f"{written / user_bytes:.2f}" if user_bytes else "-"
            self.bar.set_postfix(items=f"{self.items_read:,}", items_s=f"{rate:,.0f}",
                                 written=f"{written / 1e6:,.0f}MB", wa=wa, refresh=False)
            self.bar.update(nbytes)

    def set_phase(self, phase: str) -> None:
        if self.bar is not None:
            self.bar.set_description(phase)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pipelined(produce):
    """The items of the generator `produce`, made on a thread of its own while the caller
    works on the one before: reading and parsing (C, the GIL released) overlap the loader's
    hashing and partitioning (C, the GIL released) on the other core. At most one item waits;
    an exception of the producer is raised here, and the producer stops when the caller does."""
    q: queue.Queue = queue.Queue(maxsize=1)
    stop, done = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in produce():
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer as it is
            put(_Failure(e))

    t = threading.Thread(target=work, name="lsmtrie-load-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        t.join()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


# ---- the load ----

def _identity(inputs, o: LoadOptions) -> str:
    """What a resume must repeat: everything that decides the loaded contents."""
    what = {"inputs": [os.path.abspath(i) if i != "-" else "-" for i in inputs or []],
            "format": o.format, "key_encoding": o.key_encoding, "value_encoding": o.value_encoding,
            "generate": o.generate, "key_size": o.key_size, "value_size": o.value_size,
            "seed": o.seed, "on_bad_line": o.on_bad_line}
    if o.shard is not None:  # (absent otherwise: the identity of a load without them is as it was)
        what.update(shard=list(o.shard), route=o.route.describe())
    if o.value_format is not None:
        what.update(value_format=o.value_format)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _dir_bytes(paths) -> int:
    """Bytes the directories take on disk (each file once: the loader hard-links its tables)."""
    seen, total = set(), 0
    for top in paths:
        for root, _, files in os.walk(top):
            for f in files:
                try:
                    st = os.stat(os.path.join(root, f))
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


class _DiskPeak:
    """Samples the store's (and the spill directory's) size every half second while it runs."""

    def __init__(self, paths):
        self.paths, self.peak, self._stop = paths, _dir_bytes(paths), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, _dir_bytes(self.paths))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _dir_bytes(self.paths))
        return self.peak


def _write_bytes() -> int:
    """Bytes this process made the kernel write (less what it cancelled): /proc/self/io."""
    try:
        f = dict(line.split(":") for line in open("/proc/self/io"))
        return int(f["write_bytes"]) - int(f["cancelled_write_bytes"])
    except OSError:
        return 0


def _peak_rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _generated(n: int, o: LoadOptions, start_batch: int):
    """Batches of the seeded generator from batch start_batch on: (keys, values, key offsets,
    value offsets, count). Batch b's items depend on (seed, b) only, so a resume regenerates
    exactly the batches after its checkpoint."""
    for b in range(start_batch, (n + GENERATE_BATCH - 1) // GENERATE_BATCH):
        m = min(GENERATE_BATCH, n - b * GENERATE_BATCH)
        rng = np.random.default_rng([o.seed, b])
        keys = rng.integers(0, 256, m * o.key_size, dtype=np.uint8)
        values = rng.integers(0, 256, m * o.value_size, dtype=np.uint8)
        yield b, keys, np.arange(m + 1, dtype=np.int64) * o.key_size, values, \
            np.arange(m + 1, dtype=np.int64) * o.value_size, m


def _estimate(inputs, o: LoadOptions) -> tuple[int, int]:
    """(encoded bytes, items) expected: from --generate, --expected-items, or the inputs' sizes."""
    if o.generate is not None:
        return o.generate * (o.key_size + o.value_size + 4), o.generate
    size = 0
    for name in inputs:
        n, compressed = _input_size(name)
        size += int((n or 0) * (COMPRESSION_GUESS if compressed else 1))
    items = o.expected_items or 0
    return (max(size, items * 34) if items else size), items


def _check_space(store_path: str, tmp: str | None, data: int) -> None:
    """Refuses a load that cannot fit: the partitions (about the data) and the tables (about as
    much again, less the partitions removed as their tables are written) at their peak."""
    need = int(data * 1.25) + (64 << 20)
    where = tmp or store_path
    probe = where
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    free = shutil.disk_usage(probe).free
    if need > free:
        raise LoadError(f"not enough disk space for this load in {where}: it needs about "
                        f"{need / 1e9:.1f} GB and {free / 1e9:.1f} GB are free "
                        "(give --expected-items if the estimate from the input's size is wrong)")


def _progress_total(files, o: LoadOptions) -> int | None:
    """The bytes the progress line counts to: the generated keys and values, or the input
    files when none is compressed or standard input (else unknown: no percent, no ETA)."""
    if o.generate is not None:
        return o.generate * (o.key_size + o.value_size)
    if not files or any(_input_size(f)[0] is None or _input_size(f)[1] for f in files):
        return None
    return sum(_input_size(f)[0] for f in files)


def load(path: str, inputs=None, **options) -> dict:
    """Loads a data set into the store at `path` (created when missing, with options chosen
    for the data) and returns the summary (the command's --json): items_read, items_loaded,
    bad_lines, duplicates, seconds, items_per_s, user_bytes, bytes_written,
    write_amplification, store_bytes, peak_rss_bytes, peak_disk_bytes; and close_error when
    the load got in but closing the store afterwards failed (a full disk, say).

    `inputs`: file names (`-` is standard input) in a format (`format`: tsv, csv, jsonl, fixed,
    lenprefix; docs/format/load-input.md), or a pair of packed/array key and value batches, or
    an iterator of (keys, values) batches; or `generate=N` items from a seeded generator.
    A later item of a key beats an earlier one and the load beats what the store held; the
    store shows all of the load or none of it. `resume=True` continues a load that was killed,
    given the same arguments.

    `shard=(i, n)` with `route` (a lsmtrie.route.Route, "HASH:DISTRIBUTION" over servers named
    shard0.., or a nutcracker configuration "FILE[:POOL]" of n servers) loads only the items
    twemproxy sends to shard i, and the summary gets items_other_shards: those it left out.

    `value_format="memcached"` loads into a store of memcached items (one `lsmtrie serve`
    made, or a new one made so): each value is stored as an item with flags 0. A store of
    memcached items takes a load only with it, or with `value_format="memcached-items"` when
    the values already are items (4 bytes of flags, then the data: a dump of such a store),
    stored as they are."""
    o = LoadOptions(**options)
    o.check()
    if o.generate is not None and inputs:
        raise errors.InvalidArgumentError("give inputs or generate, not both")
    files = None
    if o.generate is None:
        if inputs is None or isinstance(inputs, (str, os.PathLike)):
            inputs = ["-"] if inputs is None else [inputs]
        if isinstance(inputs, (list, tuple)) and all(isinstance(i, (str, os.PathLike)) for i in inputs):
            files = [os.fspath(i) for i in inputs]
    started = time.monotonic()
    data, items = _estimate(files or [], o)
    exists = os.path.exists(os.path.join(path, "CURRENT"))
    store_opts = {} if exists or not data else plan_options(data, items)
    if o.value_format is not None:  # a new store's; an existing one's must match
        store_opts["value_format"] = "memcached" if o.value_format == ITEMS else o.value_format
    if not o.resume:
        _check_space(path, o.tmp, data)
    written0 = _write_bytes()
    db = Store(path, metadata_path=o.metadata_path, **store_opts)
    if db.options["value_format"] == "memcached" and o.value_format is None:
        db.close()
        raise errors.InvalidArgumentError(
            "the store keeps memcached items (lsmtrie serve): load with value_format "
            "'memcached' (--value-format memcached), which stores each value with flags 0, or "
            "'memcached-items' for values that already hold their flags (a dump of such a store)")
    disk = _DiskPeak([p for p in (path, o.tmp) if p])
    progress = Progress(o.progress, _progress_total(files, o), written0)
    try:
        summary = _run(db, files, inputs, o, data, progress)
    except BaseException:
        disk.stop()
        progress.close()
        try:
            db.close()
        except errors.Error:
            # The load's own failure is the one to report: on a full disk the store's close
            # fails too (its last checkpoint), and its error would hide which step failed.
            pass
        raise
    progress.close()
    try:
        db.close()
    except errors.Error as e:
        # The load is in and durable (its install ended with a forced checkpoint, its journal
        # was removed): what failed is the store's own work after it (a cluster's manifest
        # edit, the counters), which its next open redoes. Raising would report a failed load
        # and a store as it was, when the store holds all of the load.
        summary["close_error"] = str(e)
    seconds = time.monotonic() - started
    user = summary["user_bytes"]
    written = _write_bytes() - written0
    summary.update(
        seconds=seconds,
        items_per_s=summary["items_read"] / seconds if seconds else 0.0,
        bytes_written=written,
        write_amplification=written / user if user else None,
        store_bytes=_dir_bytes([path]),
        peak_rss_bytes=_peak_rss(),
        peak_disk_bytes=disk.stop(),
    )
    return summary


def _position(**fields) -> bytes:
    return json.dumps(fields, sort_keys=True).encode()


class _Keep:
    """The items of one shard of each batch (a load's shard and route): chosen in C a batch at a
    time (GIL released) into C batches of their own, which take turns as the parser's do: one
    being filled, one waiting, one being added."""

    def __init__(self, route, shard: int):
        from ._parse import Parser
        self.route, self.shard = route, shard
        self.turns = [Parser.new_items() for _ in range(3)]
        self.k = 0

    def _turn(self):
        self.k += 1
        return self.turns[self.k % 3]

    def items(self, it):
        """(the shard's items, how many went elsewhere) of a C batch."""
        if not it.n:
            return it, 0
        kept = self.route.select_items(self.shard, it, self._turn())
        return kept, it.n - kept.n

    def packed(self, kdata, koffs, vdata, voffs, n: int):
        kept = self.route.select_packed(self.shard, kdata, koffs, vdata, voffs, n, self._turn())
        return kept, n - kept.n


class _Run:
    """One load's loop: the source's batches into the loader, with checkpoints."""

    def __init__(self, db, o: LoadOptions, identity: str, data: int, progress: Progress):
        self.o, self.progress = o, progress
        # --resume with no journal: the load was killed before its first checkpoint, and
        # nothing of it is durable; it starts over
        resume = o.resume and os.path.exists(os.path.join(db.path, "load", "JOURNAL"))
        self.loader = Loader(db, memory=o.memory, tmp=o.tmp, expected_bytes=data,
                             identity=identity, resume=resume,
                             values_are_items=o.value_format == ITEMS)
        pos = self.loader.position
        self.start = json.loads(pos) if pos else {}
        self.items_read = self.start.get("items_read", 0)
        self.others = self.start.get("items_other_shards", 0)
        self.bad_lines = self.start.get("bad_lines", 0)
        self.bad_examples: list[str] = []
        self.since_checkpoint = 0
        self.keep = _Keep(o.route, o.shard[0]) if o.shard is not None else None

    @property
    def adding(self) -> bool:
        return self.loader.stats()["phase"] == "adding"

    def add(self, kdata, koffs, vdata, voffs, n: int, nbytes: int) -> None:
        if self.keep is None:
            self.loader.add_packed(kdata, koffs, vdata, voffs, n)
            self.count(n, nbytes)
            return
        kept, others = self.keep.packed(kdata, koffs, vdata, voffs, n)
        self.loader.add_items(kept)
        self.count(n, nbytes, others)

    def count(self, n: int, nbytes: int, others: int = 0) -> None:
        """n items read (of which `others` went to other shards) from nbytes of input."""
        self.items_read += n
        self.others += others
        self.since_checkpoint += nbytes
        if self.progress.bar is not None:
            self.progress.update(nbytes, n, self.loader.stats()["user_bytes"])

    def checkpoint_due(self) -> bool:
        return self.since_checkpoint >= CHECKPOINT_BYTES

    def checkpoint(self, **where) -> None:
        self.loader.checkpoint(_position(items_read=self.items_read, bad_lines=self.bad_lines,
                                         items_other_shards=self.others, **where))
        self.since_checkpoint = 0

    def finish(self) -> dict:
        self.progress.set_phase("building")
        self.loader.finish()
        st = self.loader.stats()
        self.loader.close()
        out = {"items_read": self.items_read, "items_loaded": st["items_loaded"],
               "bad_lines": self.bad_lines, "duplicates": st["duplicates"],
               "user_bytes": st["user_bytes"], "bad_line_examples": self.bad_examples}
        if self.keep is not None:
            out["items_other_shards"] = self.others
        return out


def _skip(f, name: str, n: int) -> None:
    """Reads past the first n bytes of an input (a resume), by seeking where the file allows."""
    if name == "-":
        raise LoadError("cannot resume a load that reads standard input: its data is gone")
    try:
        f.seek(n)
        return
    except (OSError, io.UnsupportedOperation, AttributeError):
        pass
    while n > 0:
        chunk = f.read(min(n, CHUNK))
        if not chunk:
            raise LoadError(f"{name} is shorter than when the load was interrupted")
        n -= len(chunk)


def _parsed(files, o: LoadOptions, start: dict, keep: _Keep | None):
    """The inputs read a chunk at a time and parsed by the C parser (on the reader thread):
    ("batch", items, items read, those routed to other shards, input bytes, position after
    them) and, at the end of each file, ("file", name, bad lines, their descriptions). Three
    C batches take turns: the one being filled, the one waiting and the one the loader is
    adding. With `keep` (a shard's load) the batch holds that shard's items only, chosen here,
    beside the parsing, while the loader adds the previous batch."""
    from ._parse import Parser
    fixed = o.format == "fixed"
    parser = Parser(o.format, o.key_encoding, o.value_encoding, o.key_size if fixed else 0,
                    o.value_size if fixed else 0, o.on_bad_line)
    turns = [parser.new_items() for _ in range(3)]
    first, offset0 = start.get("input", 0), start.get("offset", 0)
    k = 0
    for idx in range(first, len(files)):
        name = files[idx]
        parser.reset()
        with open_input(name) as f:
            offset = 0
            if idx == first and offset0:
                _skip(f, name, offset0)
                parser.seek(start.get("consumed", 0))
                offset = offset0
            while True:
                chunk = f.read(CHUNK)
                try:
                    it = parser.feed_c(chunk, final=not chunk, items=turns[k % 3])
                except errors.InvalidArgumentError as e:
                    raise LoadError(f"{name}: {e}") from None
                k += 1
                offset += len(chunk)
                pending, consumed = parser.position()
                read = it.n
                it, others = keep.items(it) if keep else (it, 0)
                yield ("batch", it, read, others, len(chunk),
                       dict(input=idx, offset=offset - pending, consumed=consumed,
                            file_bad_lines=parser.bad_lines))
                if not chunk:
                    break
        yield ("file", idx, name, parser.bad_lines, parser.bad_line_descriptions)


def _load_files(run: _Run, files, o: LoadOptions) -> None:
    """The inputs through the C parser (a thread of their own) into the loader. A checkpoint
    records the input, the byte offset where the parser's pending record starts, and the
    records before it, so a resume reads on from exactly there."""
    first = run.start.get("input", 0)
    for event in _pipelined(lambda: _parsed(files, o, run.start, run.keep)):
        if event[0] == "batch":
            _, it, read, others, nbytes, where = event
            run.loader.add_items(it)
            run.count(read, nbytes, others)
            if nbytes and run.checkpoint_due():
                run.checkpoint(**where)
            continue
        _, idx, name, bad, described = event
        for d in described:
            if len(run.bad_examples) < 10:
                run.bad_examples.append(f"{name}: {d}")
        # (a resumed file's bad lines before the checkpoint were counted then)
        run.bad_lines += bad + (run.start.get("file_bad_lines", 0) if idx == first else 0)


def _load_generated(run: _Run, o: LoadOptions) -> None:
    first = run.start.get("batch", 0)
    for b, k, ko, v, vo, m in _pipelined(lambda: _generated(o.generate, o, first)):
        run.add(k, ko, v, vo, m, k.size + v.size)
        if run.checkpoint_due():
            run.checkpoint(batch=b + 1)


def _load_batches(run: _Run, inputs) -> None:
    """A program's batches: a (keys, values) pair, or an iterator of such pairs."""
    from ._packing import pack
    if isinstance(inputs, tuple) and len(inputs) == 2:
        inputs = [inputs]
    first = run.start.get("batch", 0)
    for b, (keys, values) in enumerate(inputs):
        if b < first:
            continue
        k, v = pack(keys, "keys"), pack(values, "values")
        if k.n != v.n:
            raise errors.InvalidArgumentError(f"batch {b}: {k.n} keys but {v.n} values")
        run.add(k.data, k.offsets, v.data, v.offsets, k.n, k.data.size + v.data.size)
        if run.checkpoint_due():
            run.checkpoint(batch=b + 1)


def _run(db, files, inputs, o: LoadOptions, data: int, progress: Progress) -> dict:
    run = _Run(db, o, _identity(files, o), data, progress)
    try:
        if run.adding:
            if o.generate is not None:
                _load_generated(run, o)
            elif files is not None:
                _load_files(run, files, o)
            else:
                _load_batches(run, inputs)
        return run.finish()
    except LoadError:
        run.loader.abort()  # bad input: the store stays exactly as it was
        raise
    except BaseException:
        run.loader.close()  # killed or failed: a resume may go on from the last checkpoint
        raise


# ---- the command: python -m lsmtrie load STORE [INPUT ...] [options] ----

def parse_size(text: str) -> int:
    """Bytes from '1073741824', '512M', '1G', '64K' (binary multiples)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in "KMGT" and t[-1:] else t
    try:
        value = float(number) * mult
    except ValueError:
        raise ValueError(f"not a size: {text!r} (bytes, or with K, M, G)") from None
    if value < 0:
        raise ValueError(f"not a size: {text!r}")
    return int(value)


def add_arguments(p) -> None:
    """The load command's arguments (a fixed contract: tests outside the project use it)."""
    p.add_argument("store", metavar="STORE")
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="files, read in order; - (or none) is standard input; .gz .bz2 .xz .zst "
                        "are decompressed")
    p.add_argument("--format", choices=FORMATS, default="tsv")
    p.add_argument("--key-encoding", choices=ENCODINGS, default="utf8")
    p.add_argument("--value-encoding", choices=ENCODINGS, default="utf8")
    p.add_argument("--generate", type=int, metavar="N",
                   help="N items from a seeded generator instead of inputs")
    p.add_argument("--key-size", type=int, default=16)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-bad-line", choices=("fail", "skip"), default="fail")
    p.add_argument("--expected-items", type=int, metavar="N")
    p.add_argument("--memory", type=parse_size, default=1 << 30, metavar="BYTES")
    p.add_argument("--tmp", metavar="DIR")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--progress", dest="progress", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", action="store_true")
    p.add_argument("--metadata-path", metavar="DIR")
    p.add_argument("--shard", metavar="I/N",
                   help="load only the items that twemproxy (nutcracker) routes to shard I "
                        "(0..N-1) of N; needs --route. The JSON summary then has "
                        "items_other_shards")
    p.add_argument("--route", metavar="SPEC",
                   help="the routing of --shard: HASH:DISTRIBUTION (e.g. fnv1a_64:ketama, "
                        "murmur:modula; the proxy's servers must then be named shard0 .. "
                        "shard{N-1}, weight 1, listed in that order), or a nutcracker "
                        "configuration FILE[:POOL] (its names, weights and hash_tag; "
                        "shard I is its I-th server; it must have N). docs/scale-out.md")
    p.add_argument("--value-format", choices=LOAD_VALUE_FORMATS, default=None,
                   help="memcached: the store keeps memcached items, for lsmtrie serve (each "
                        "value is stored with flags 0; a new store is made so, and a store "
                        "that serve made needs it); memcached-items: the same, for values that "
                        "already are items with their flags (a dump of such a store)")


def parse_shard(text: str) -> tuple[int, int]:
    """(i, n) from --shard's "I/N"."""
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise errors.InvalidArgumentError(f"--shard {text!r} is not I/N with 0 <= I < N (e.g. 0/3)")
    return int(i), int(n)


def _shard_route(args):
    """(shard, route) of the command, checked: usage errors raise InvalidArgumentError."""
    if (args.shard is None) != (args.route is None):
        raise errors.InvalidArgumentError("--shard and --route go together: give both or neither")
    if args.shard is None:
        return None, None
    shard = parse_shard(args.shard)
    return shard, resolve_route(args.route, shard[1])


def run_command(args) -> int:
    """Runs `lsmtrie load` for parsed args: 0 done, 1 bad input or a failed load (one line on
    stderr, no traceback). Usage errors (2) are argparse's, and ours: inputs beside
    --generate, a bad --shard or --route."""
    if args.generate is not None and args.inputs:
        print("lsmtrie load: give INPUT files or --generate, not both", file=sys.stderr)
        return 2
    try:
        shard, route = _shard_route(args)
    except errors.Error as e:
        print(f"lsmtrie load: {e}", file=sys.stderr)
        return 2
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        summary = load(args.store, None if args.generate is not None else (args.inputs or ["-"]),
                       format=args.format, key_encoding=args.key_encoding,
                       value_encoding=args.value_encoding, generate=args.generate,
                       key_size=args.key_size, value_size=args.value_size, seed=args.seed,
                       on_bad_line=args.on_bad_line, expected_items=args.expected_items,
                       memory=args.memory, tmp=args.tmp, resume=args.resume, progress=progress,
                       metadata_path=args.metadata_path, shard=shard, route=route,
                       value_format=args.value_format)
    except (errors.Error, OSError, ValueError) as e:
        print(f"lsmtrie load: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lsmtrie load: interrupted; --resume with the same arguments goes on",
              file=sys.stderr)
        return 1
    for line in summary.pop("bad_line_examples", []):
        print(f"lsmtrie load: skipped {line}", file=sys.stderr)
    if "close_error" in summary:
        print("lsmtrie load: the load is complete, but closing the store then failed: "
              f"{summary.pop('close_error')}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        elsewhere = (f"{summary['items_other_shards']:,} for other shards, "
                     if "items_other_shards" in summary else "")
        print(f"loaded {summary['items_loaded']:,} items ({summary['items_read']:,} read, "
              f"{elsewhere}{summary['duplicates']:,} duplicates, {summary['bad_lines']:,} bad "
              f"lines) in {summary['seconds']:.1f} s: {summary['items_per_s']:,.0f} items/s, write "
              f"amplification {summary['write_amplification'] or 0:.2f}")
    return 0
