"""Power cuts for the crash tests: the LD_PRELOAD library of powercut.c, and the directories a
power cut would leave.

A writer process runs with the library preloaded; it records, in a shadow directory, the image
of the watched directories that the weakest POSIX model keeps after a power cut (a file's bytes
as of its last fsync, a directory's entries as of its last fsync). Once the writer is killed,
`apply_image` replaces the directories with that image, and the test reopens the store there.
"""

from __future__ import annotations

import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "powercut.c")


def build(out_dir: str) -> str:
    """Compiles the library into out_dir; its path."""
    out = os.path.join(out_dir, "powercut.so")
    cc = os.environ.get("CC", "gcc")
    r = subprocess.run([cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", out, SOURCE, "-ldl"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cannot build the power-cut library with {cc}:\n{r.stderr}")
    return out


def env(base: dict, library: str, watch: list[str], shadow: str) -> dict:
    """base with the library preloaded (after any preload already there: a sanitizer runtime
    must stay first), watching `watch` and keeping its image in `shadow` (emptied here)."""
    shutil.rmtree(shadow, ignore_errors=True)
    os.makedirs(shadow)
    e = dict(base)
    e["LD_PRELOAD"] = (e.get("LD_PRELOAD", "") + " " + library).strip()
    e["POWERCUT_WATCH"] = ":".join(os.path.realpath(w) for w in watch)
    e["POWERCUT_SHADOW"] = shadow
    return e


def image(shadow: str, index: int) -> dict[str, bytes]:
    """The durable entries of watched directory `index`: name -> bytes (empty when the file
    was never synced: its name survived, its data did not)."""
    return {name: data for name, (_, data) in _entries(shadow, index).items()}


def _entries(shadow: str, index: int) -> dict[str, tuple[int, bytes]]:
    out = {}
    with open(os.path.join(shadow, "d-%d" % index)) as f:
        for line in f:
            name, ino, gen = line.rsplit(" ", 2)
            data = os.path.join(shadow, "f-%s-%s" % (ino, gen.strip()))
            if os.path.exists(data):
                with open(data, "rb") as g:
                    out[name] = (int(ino), g.read())
            else:
                out[name] = (int(ino), b"")
    return out


def apply_image(shadow: str, watch: list[str], rng=None) -> None:
    """Replaces each watched directory by its durable image. With rng (a random.Random), a file
    whose bytes now extend its durable bytes keeps a random part of the extension, as if the
    device had written some of it before the cut: between nothing (a pure power cut) and all
    (a SIGKILL)."""
    for i, d in enumerate(watch):
        files = _entries(shadow, i)
        now = {}  # inode -> the bytes it holds now (for the inodes the image names)
        if rng is not None:
            wanted = {ino for ino, _ in files.values()}
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isfile(p) and os.stat(p).st_ino in wanted:
                    with open(p, "rb") as f:
                        now[os.stat(p).st_ino] = f.read()
        shutil.rmtree(d)
        os.makedirs(d)
        for name, (ino, data) in sorted(files.items()):
            cur = now.get(ino, b"")
            if len(cur) > len(data) and cur.startswith(data):
                data = cur[:rng.randint(len(data), len(cur))]
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
