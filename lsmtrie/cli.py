"""lsmtrie command line.

usage: lsmtrie demo [--buckets N] [--absent N] [--json]
       python -m lsmtrie demo ...

Commands:
  demo   build one HTable from generated items (16-byte keys, values 1..200 bytes), read every
         key back batched and one by one, probe absent keys, and print build and lookup rates,
         bucket reads per lookup, cached migration bytes and the filter false-positive rate.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import demo


def cmd_demo(args) -> int:
    r = demo.measure(buckets=args.buckets, absent=args.absent, single=args.single,
                     directory=args.dir, peers=not args.no_peers)
    print(json.dumps(r) if args.json else demo.summary(r, args.buckets), end="\n" if args.json else "")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lsmtrie", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build an HTable from generated items and read it back")
    p.add_argument("--buckets", type=int, default=1024, help="buckets in the table (default 1024, 4 MB)")
    p.add_argument("--absent", type=int, default=200_000, help="absent keys to probe (default 200000)")
    p.add_argument("--single", type=int, default=None, help="cap on keys looked up one by one")
    p.add_argument("--dir", default=None, help="directory for the table (default: a temporary one)")
    p.add_argument("--no-peers", action="store_true", help="skip the dict and pybloomfiltermmap3 peers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
