"""lsmtrie command line.

usage: lsmtrie demo [--n N] [--bulk] [--json]
       lsmtrie demo --htable [--buckets N] [--absent N] [--json]
       lsmtrie verify PATH [--metadata-path DIR] [--json]
       lsmtrie stats PATH [--metadata-path DIR] [--json]
       python -m lsmtrie demo ...

Commands:
  demo   load N generated items (16-byte keys, values 1..200 bytes) into a new store in a
         temporary directory, read present and absent keys back, print the load rate, the
         write amplification, reads per get and memory, and check the store (verify). With
         --htable: build one HTable instead and print its build and lookup rates, bucket reads
         per lookup, cached migration bytes and filter false-positive rate.
  verify open the store at PATH read-only (beside its writer, if one runs: the state as of
         opening), read every table and BloomCluster whole and check it (Store.verify). Exit
         status 0: sound; 1: damaged files, each named on standard error; 2: the store could
         not be opened or read.
  stats  open the store at PATH read-only and print what it holds by level (tables, items,
         bytes) and what writing it cost (bytes written by kind, write amplification): the
         byte counters are the store's own, kept across reopens (Store.stats).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import demo
from . import errors
from . import load
from . import store


def cmd_demo(args) -> int:
    if args.htable:
        r = demo.measure(buckets=args.buckets, absent=args.absent, single=args.single,
                         directory=args.dir, peers=not args.no_peers)
        text = demo.summary(r, args.buckets)
    else:
        r = demo.measure_store(n=args.n, bulk=args.bulk, levels=args.levels,
                               reads=min(args.absent, args.n), single=args.single or 20_000,
                               directory=args.dir, verify=True)
        text = demo.store_summary(r)
    print(json.dumps(r) if args.json else text, end="\n" if args.json else "")
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


def stats_text(path: str, st: dict) -> str:
    """A store's contents by level and its write costs, as `lsmtrie stats` prints them."""
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
    out.append(f"    log {human_bytes(by['log'])}, flushes {human_bytes(by['flush'])}, compactions "
               f"{human_bytes(sum(by['compaction'].values()))}, garbage collection "
               f"{human_bytes(by['gc'])}, BloomClusters {human_bytes(by['clusters'])}, manifest "
               f"{human_bytes(by['manifest'])}")
    if st.get("load_unfinished"):
        out.append("  an unfinished load waits: run the same lsmtrie load with --resume to finish "
                   "it (a new load starts over)")
    per_item = st["metadata_memory_bytes"] / sum(items) if sum(items) else 0.0
    out.append(f"  metadata in memory: {human_bytes(st['metadata_memory_bytes'])}"
               f" ({per_item:.2f} bytes per item)")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lsmtrie", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="load generated items into a store and read them back")
    p.add_argument("--n", type=int, default=300_000, help="items to load (default 300000)")
    p.add_argument("--levels", type=int, default=3,
                   help="trie levels (default 3; tables are sized so that every level holds data)")
    p.add_argument("--bulk", action="store_true", help="load without the write-ahead log")
    p.add_argument("--htable", action="store_true", help="build and measure one HTable instead")
    p.add_argument("--buckets", type=int, default=1024, help="with --htable: buckets (default 1024, 4 MB)")
    p.add_argument("--absent", type=int, default=200_000, help="absent keys to probe (default 200000)")
    p.add_argument("--single", type=int, default=None, help="cap on keys looked up one by one")
    p.add_argument("--dir", default=None, help="directory for the data (default: a temporary one)")
    p.add_argument("--no-peers", action="store_true", help="skip the dict and pybloomfiltermmap3 peers")
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
    load.add_arguments(p)
    p.set_defaults(func=load.run_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
