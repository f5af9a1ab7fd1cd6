"""What a 4 KB pread from the page cache costs as the same bytes lie in more files.

A store at bench/store.py's 10 M shape keeps about 6,400 tables of 50 buckets (1.3 GB), one file
each, and a lookup preads one bucket of a random table. This writes the same total bytes as 6,400,
800 and 20 files in turn (alternated, --rounds times), reads random pages with one thread, and
prints the CPU microseconds per read of each layout. The files go to a temporary directory under
--dir and are deleted as each layout is done. Needs gcc.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="where to write the files (default: $TMPDIR)")
    p.add_argument("--mb", type=int, default=1300, help="total size of each layout")
    p.add_argument("--reads", type=int, default=400_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, nargs="+", default=[6400, 800, 20])
    a = p.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        exe = os.path.join(tmp, "pread_files")
        subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "pread_files.c")], check=True)
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        out = subprocess.run([exe, data, str(a.mb), str(a.reads), str(a.rounds),
                              *map(str, a.files)], check=True, capture_output=True, text=True)
    by_files: dict[int, list[float]] = {}
    for line in out.stdout.splitlines():
        files, us = line.split("\t")
        by_files.setdefault(int(files), []).append(float(us))
    base = statistics.median(by_files[a.files[0]])
    print(f"4 KB preads of random pages, {a.mb} MB in all, page cache, one thread")
    for files, us in by_files.items():
        med = statistics.median(us)
        print(f"  {files:>6} files: {med:.3f} us CPU/read (rounds: "
              f"{', '.join(f'{u:.3f}' for u in us)}); {med / base:.2f} of {a.files[0]} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
