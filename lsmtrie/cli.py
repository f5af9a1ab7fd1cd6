"""lsmtrie command line.

usage: lsmtrie demo [--n N] [--levels L] [--htable] [--json]
       lsmtrie verify PATH [--metadata-path DIR] [--json]
       lsmtrie stats PATH [--metadata-path DIR] [--json]
       lsmtrie load STORE [INPUT ...] [options]            (lsmtrie load --help)
       lsmtrie dump STORE [--format tsv|csv|jsonl|lenprefix] [-o FILE]
       lsmtrie get STORE KEY / put STORE KEY VALUE / delete STORE KEY
       lsmtrie report --out DIR [--sizes 1e6,1e7,1e8] [--engines ...] [options]
       lsmtrie serve STORE [--host 127.0.0.1] [--port 11211] [--read-only] [options]
       python -m lsmtrie demo ...

Commands:
  demo   a short demonstration: a store in a temporary directory gets single writes, a
         batch, N generated items (put_many), reads them back, prints what it holds and what
         writing it cost, checks every file and is removed. With --htable: one HTable built
         and read back. (Measurements: bench/store.py, bench/htable.py.)
  verify open the store at PATH read-only (beside its writer, if one runs: the state as of
         opening), read every table and BloomCluster whole and check it (Store.verify). Exit
         status 0: sound; 1: damaged files, each named on standard error; 2: the store could
         not be opened or read.
  stats  open the store at PATH read-only and print what it holds by level (tables, items,
         bytes) and what writing it cost (bytes written by kind, write amplification): the
         byte counters are the store's own, kept across reopens (Store.stats).
  load   a data set into a store, straight into the trie (lsmtrie/bulk.py). With --shard I/N
         --route SPEC only the items twemproxy routes to shard I of N (docs/scale-out.md).
  dump   every live item of a store (opened read-only) in a format load reads back; to FILE
         (compressed by its suffix .gz .bz2 .xz .zst; written whole, then renamed into place)
         or standard output. --key-encoding/--value-encoding utf8, hex or base64 (text
         formats). Exit status 0 done; 1 failed (one line on stderr); 2 usage.
  get    one key's value, then a newline, in --value-encoding (utf8: the bytes as they are).
         Exit status 0 found; 1 not found; 2 usage or failure (one line on stderr).
  put    one item, durable (fsync) before the command returns; the store is created when
         missing. delete: one key, durably (absent keys are fine). KEY and VALUE are taken in
         --key-encoding/--value-encoding (utf8: the argument's bytes). Exit status 0 done;
         1 failed (for example the store is open for writing elsewhere); 2 usage.
  report write amplification, load throughput, space and GET rates of lsmtrie beside LevelDB
         and RocksDB on one generated workload: report.md, results.json, results.tsv and
         figures in DIR (lsmtrie/report.py; peers and plots: pip install 'lsmtrie[report]').
         Exit status 0 done; 1 failed (one line on stderr); 2 usage.
  serve  the store over the memcached text protocol (get, gets, set, add, replace, delete,
         stats, version), for memcached clients and routers such as twemproxy
         (docs/scale-out.md). Prints `lsmtrie serve: listening on HOST:PORT` once it listens;
         SIGTERM or SIGINT closes the store cleanly. A store it creates keeps each item's
         flags. Exit status 0 after a clean stop; 1 failed (one line on stderr); 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time

from . import demo
from . import export
from . import errors
from . import bulk
from . import report
from . import serve
from . import store


def cmd_demo(args) -> int:
    if args.htable:
        r = demo.htable_demo(n=args.n, directory=args.dir)
        text = demo.htable_text(r)
    else:
        r = demo.store_demo(n=args.n, levels=args.levels, directory=args.dir)
        text = demo.store_text(r)
    print(json.dumps(r, default=str) if args.json else text, end="\n" if args.json else "")
    return 0


def _existing(args):
    """The store at args.path, opened read-only (never created)."""
    return store.open(args.path, create=False, read_only=True, metadata_path=args.metadata_path)


def cmd_verify(args) -> int:
    t0 = time.perf_counter()
    try:
        with _existing(args) as db:
            r = db.verify()
    except errors.CorruptionError as e:
        print(f"lsmtrie verify: {e}", file=sys.stderr)
        return 1
    except (errors.Error, OSError) as e:
        print(f"lsmtrie verify: {e}", file=sys.stderr)
        return 2
    r["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.path}: sound: {r['tables']:,} tables ({r['table_bytes']:,} bytes, "
              f"{r['items']:,} items) and {r['clusters']:,} BloomClusters "
              f"({r['cluster_bytes']:,} bytes) checked in {r['seconds']:.1f} s")
    return 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


_SHOWN = {"tables_per_level", "items_per_level", "table_bytes_per_level", "bytes_written",
          "user_bytes_written", "write_amplification", "bytes_written_by_kind", "load_unfinished",
          "levels"}


def stats_text(path: str, st: dict) -> str:
    """A store's contents by level and its write costs, as `lsmtrie stats` prints them; then
    every other counter of Store.stats() by name (so a new counter shows without an edit)."""
    tables, items = st["tables_per_level"], st["items_per_level"]
    tbytes, by = st["table_bytes_per_level"], st["bytes_written_by_kind"]
    out = [f"{path}: {sum(items):,} items in {sum(tables):,} tables "
           f"({human_bytes(sum(tbytes))}) on {len(tables)} levels",
           f"  {'level':>5} {'tables':>9} {'items':>14} {'table bytes':>12} {'written into it':>16}"]
    for lvl in range(len(tables)):
        into = by["flush"] if lvl == 0 else by["compaction"].get(lvl, 0)
        if lvl == len(tables) - 1:
            into += by["gc"]
        out.append(f"  {lvl:>5} {tables[lvl]:>9,} {items[lvl]:>14,} {human_bytes(tbytes[lvl]):>12}"
                   f" {human_bytes(into):>16}")
    wa = st["write_amplification"]
    if wa is None:
        out.append("  written: nothing yet")
    else:
        out.append(f"  written: {human_bytes(st['bytes_written'])} for "
                   f"{human_bytes(st['user_bytes_written'])} of keys and values "
                   f"(write amplification {wa:.2f})")
    kinds = [f"{kind} {human_bytes(sum(v.values()) if isinstance(v, dict) else v)}"
             for kind, v in by.items()]
    out.append("    by kind: " + ", ".join(kinds))
    if st.get("load_unfinished"):
        out.append("  an unfinished load waits: run the same lsmtrie load with --resume to finish "
                   "it (a new load starts over)")
    for name, value in st.items():
        if name not in _SHOWN:
            shown = (", ".join(f"{x:,}" for x in value) if isinstance(value, list)
                     else f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
            out.append(f"  {name.replace('_', ' ')}: {shown}")
    return "\n".join(out) + "\n"


def cmd_stats(args) -> int:
    try:
        with _existing(args) as db:
            st = db.stats()
    except (errors.Error, OSError) as e:
        print(f"lsmtrie stats: {e}", file=sys.stderr)
        return 2
    print(json.dumps(st) if args.json else stats_text(args.path, st), end="\n" if args.json else "")
    return 0


def cmd_dump(args) -> int:
    try:
        export.dump(args.store, args.output, format=args.format, key_encoding=args.key_encoding,
                    value_encoding=args.value_encoding, metadata_path=args.metadata_path)
    except BrokenPipeError:
        # the reader (head, a pager) stopped: quietly, as other commands do; stdout goes to
        # /dev/null so that Python's flush at exit does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (errors.Error, OSError) as e:
        print(f"lsmtrie dump: {e}", file=sys.stderr)
        return 1
    return 0


def _arg_bytes(text: str, encoding: str, what: str) -> bytes:
    """A KEY or VALUE argument's bytes: utf8 the argument as given (os.fsencode: bytes that
    are not UTF-8 come back as they were), else decoded from hex or base64."""
    try:
        if encoding == "hex":
            return binascii.unhexlify(text)
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise errors.InvalidArgumentError(f"{what} is not valid {encoding}") from None
    return os.fsencode(text)


def _shown(value: bytes, encoding: str) -> bytes:
    if encoding == "hex":
        return value.hex().encode()
    if encoding == "base64":
        return base64.b64encode(value)
    return value


def cmd_get(args) -> int:
    try:
        key = _arg_bytes(args.key, args.key_encoding, "KEY")
        with store.open(args.store, create=False, read_only=True,
                        metadata_path=args.metadata_path) as db:
            value = db.get(key)
    except (errors.Error, OSError) as e:
        print(f"lsmtrie get: {e}", file=sys.stderr)
        return 2
    if value is None:
        print("lsmtrie get: not found", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(_shown(value, args.value_encoding) + b"\n")
    sys.stdout.buffer.flush()
    return 0


def cmd_put_delete(args) -> int:
    try:
        key = _arg_bytes(args.key, args.key_encoding, "KEY")
        value = _arg_bytes(args.value, args.value_encoding, "VALUE") if args.command == "put" else None
        with store.open(args.store, metadata_path=args.metadata_path) as db:
            if value is None:
                db.delete(key, sync=True)
            else:
                db.put(key, value, sync=True)
    except (errors.Error, OSError) as e:
        print(f"lsmtrie {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


def _add_one_key_commands(sub) -> None:
    encodings = ("utf8", "hex", "base64")
    for name, func, what in (("get", cmd_get, "print one key's value"),
                             ("put", cmd_put_delete, "write one item, durably"),
                             ("delete", cmd_put_delete, "delete one key, durably")):
        p = sub.add_parser(name, help=what)
        p.add_argument("store", metavar="STORE")
        p.add_argument("key", metavar="KEY")
        if name == "put":
            p.add_argument("value", metavar="VALUE")
        p.add_argument("--key-encoding", choices=encodings, default="utf8")
        if name != "delete":
            p.add_argument("--value-encoding", choices=encodings, default="utf8")
        p.add_argument("--metadata-path", default=None, metavar="DIR")
        p.set_defaults(func=func)


def _one_line_error(command: str):
    def error(message: str):
        print(f"lsmtrie {command}: {message} (lsmtrie {command} --help)", file=sys.stderr)
        sys.exit(2)
    return error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lsmtrie", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="a short demonstration of a store (or of one HTable)")
    p.add_argument("--n", type=int, default=300_000, help="items to load (default 300000)")
    p.add_argument("--levels", type=int, default=3, help="trie levels (default 3)")
    p.add_argument("--htable", action="store_true", help="build and read one HTable instead")
    p.add_argument("--dir", default=None, help="directory for the data (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_demo)
    for name, func, what, json_help in (
            ("verify", cmd_verify, "read a store whole and check every file",
             "print one JSON object"),
            ("stats", cmd_stats, "what a store holds by level, and what writing it cost",
             "print Store.stats() as one JSON object")):
        p = sub.add_parser(name, help=what)  # commands on an existing store, opened read-only
        p.add_argument("path", help="the store's directory")
        p.add_argument("--metadata-path", default=None,
                       help="the directory of its BloomClusters, if it was opened with one")
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(func=func)
    p = sub.add_parser("load", help="load a data set into a store, straight into the trie")
    bulk.add_arguments(p)
    p.set_defaults(func=bulk.run_command)
    p = sub.add_parser("dump", help="every live item of a store, in a format load reads back")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--format", choices=export.FORMATS, default="tsv")
    p.add_argument("-o", "--output", default="-", metavar="FILE",
                   help="the output file (default: standard output)")
    p.add_argument("--key-encoding", choices=("utf8", "hex", "base64"), default="utf8")
    p.add_argument("--value-encoding", choices=("utf8", "hex", "base64"), default="utf8")
    p.add_argument("--metadata-path", default=None, metavar="DIR")
    p.set_defaults(func=cmd_dump)
    _add_one_key_commands(sub)
    p = sub.add_parser("report", help="write amplification and speed beside LevelDB and RocksDB",
                       description=report.__doc__.split("\n\n")[0])
    report.add_arguments(p)
    p.set_defaults(func=report.run_command)
    p = sub.add_parser("serve", help="serve a store over the memcached text protocol",
                       description=serve.__doc__.split("\n\n")[0])
    serve.add_arguments(p)
    p.error = _one_line_error("serve")  # a server's supervisor logs lines: no usage block
    p.set_defaults(func=serve.run_command)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser (serve's is one line)
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
