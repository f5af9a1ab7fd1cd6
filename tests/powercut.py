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


def env(base: dict, library: str, watch: list[str], shadow: str, at: int | None = None) -> dict:
    """base with the library preloaded (after any preload already there: a sanitizer runtime
    must stay first), watching `watch` and keeping its image in `shadow` (emptied here); with
    `at`, the process cuts its power (kills itself) at its at-th sync of the watched files."""
    shutil.rmtree(shadow, ignore_errors=True)
    os.makedirs(shadow)
    e = dict(base)
    e["LD_PRELOAD"] = (e.get("LD_PRELOAD", "") + " " + library).strip()
    e["POWERCUT_WATCH"] = ":".join(os.path.realpath(w) for w in watch)
    e["POWERCUT_SHADOW"] = shadow
    e.pop("POWERCUT_AT", None)
    if at is not None:
        e["POWERCUT_AT"] = str(at)
    return e


def trace(shadow: str) -> list[tuple[int, str, str]]:
    """The syncs of the watched files that took effect, in order: (n, kind, path), kind "f" (a
    file), "d" (a directory) or "s" (syncfs or sync)."""
    path = os.path.join(shadow, "trace")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(n), kind, p) for n, kind, p in (line.rstrip("\n").split(" ", 2) for line in f)]


def image(shadow: str, index: int) -> dict[str, bytes]:
    """The durable files of watched directory `index`: name -> bytes (empty when the file was
    never synced: its name survived, its data did not)."""
    return {name: data for name, (_, data) in _listing(shadow, index)[0].items()}


def _listing(shadow: str, index: int):
    """({file name: (inode, durable bytes)}, {subdirectory names}) of watched directory index."""
    files, dirs = {}, set()
    with open(os.path.join(shadow, "d-%d" % index)) as f:
        for line in f:
            kind, ino, gen, name = line.rstrip("\n").split(" ", 3)
            if kind == "d":
                dirs.add(name)
                continue
            data = os.path.join(shadow, "f-%s-%s" % (ino, gen))
            if os.path.exists(data):
                with open(data, "rb") as g:
                    files[name] = (int(ino), g.read())
            else:
                files[name] = (int(ino), b"")
    return files, dirs


def _bytes_now(d: str, inodes: set) -> dict[int, bytes]:
    """inode -> what it holds now, for the files of d with one of these inodes."""
    out = {}
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.stat(p).st_ino in inodes:
            with open(p, "rb") as f:
                out[os.stat(p).st_ino] = f.read()
    return out


def apply_image(shadow: str, watch: list[str], rng=None) -> None:
    """Replaces each watched directory by its durable image, outer directories first (a watched
    directory that its watched parent's image does not name is gone). With rng (a
    random.Random), a file whose bytes now extend its durable bytes keeps a random part of the
    extension, as if the device had written some of it before the cut: between nothing (a pure
    power cut) and all (a SIGKILL)."""
    watch = [os.path.realpath(w) for w in watch]
    images = []
    for i, d in enumerate(watch):  # everything read before anything changes
        files, dirs = _listing(shadow, i)
        now = _bytes_now(d, {ino for ino, _ in files.values()}) if rng and os.path.isdir(d) else {}
        images.append((d, files, dirs, now))
    for d, files, dirs, now in sorted(images, key=lambda im: im[0].count(os.sep)):
        if not os.path.isdir(d):
            continue  # its parent's image does not name it
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                if name not in dirs:
                    shutil.rmtree(p)
            else:
                os.unlink(p)
        for name, (ino, data) in sorted(files.items()):
            cur = now.get(ino, b"")
            if len(cur) > len(data) and cur.startswith(data):
                data = cur[:rng.randint(len(data), len(cur))]
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
