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
    listing = os.path.join(shadow, "d-%d" % index)
    out = {}
    with open(listing) as f:
        for line in f:
            name, ino, gen = line.rsplit(" ", 2)
            data = os.path.join(shadow, "f-%s-%s" % (ino, gen.strip()))
            if os.path.exists(data):
                with open(data, "rb") as g:
                    out[name] = g.read()
            else:
                out[name] = b""
    return out


def apply_image(shadow: str, watch: list[str]) -> None:
    """Replaces each watched directory by its durable image."""
    for i, d in enumerate(watch):
        files = image(shadow, i)
        shutil.rmtree(d)
        os.makedirs(d)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
