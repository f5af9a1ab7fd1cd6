"""What a 4 KB pread from the page cache costs as the same bytes lie in more files.

A store at bench/store.py's 10 M shape keeps about 6,400 tables of 50 buckets (1.3 GB), one file
each, and a lookup preads one bucket of a random table. This writes the same total bytes as 6,400,
800 and 20 files in turn (alternated, --rounds times), reads random pages with one thread, and
prints the CPU microseconds per read of each layout. The files go to a temporary directory under
--dir and are deleted as each layout is done. With --uring BATCH, each layout is also read
through io_uring, BATCH reads per submission on registered descriptors (the same pages in the
same order): what batching a get_many's system calls would save. Needs gcc.
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
    p.add_argument("--uring", type=int, default=0, metavar="BATCH",
                   help="also read each layout through io_uring, BATCH reads per submission")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        exe = os.path.join(tmp, "pread_files")
        subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "pread_files.c")], check=True)
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        out = subprocess.run([exe, data, str(a.mb), str(a.reads), str(a.rounds),
                              str(a.uring), *map(str, a.files)], check=True, capture_output=True, text=True)
    runs: dict[tuple[int, str], list[float]] = {}
    for line in out.stdout.splitlines():
        files, mode, us = line.split("\t")
        runs.setdefault((int(files), mode), []).append(float(us))
    base = statistics.median(runs[(a.files[0], "pread")])
    print(f"4 KB reads of random pages, {a.mb} MB in all, page cache, one thread"
          + (f"; io_uring: {a.uring} reads per submission" if a.uring else ""))
    for (files, mode), us in runs.items():
        med = statistics.median(us)
        print(f"  {files:>6} files, {mode:5s}: {med:.3f} us CPU/read (rounds: "
              f"{', '.join(f'{u:.3f}' for u in us)}); {med / base:.2f} of pread on {a.files[0]} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
