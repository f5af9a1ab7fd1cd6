"""What `lsmtrie report` states about the machine: CPU, memory, kernel, the work directory's file
system and block device, package versions, the git revision; and the device's own sequential
write and random 4 KB read rates, measured with O_DIRECT (the baseline the engines are read
against). Also the block device's sectors written, one of the report's three byte counts.
"""

from __future__ import annotations

import mmap
import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata

SECTOR = 512


def _first(path: str, prefix: str, sep: str = ":") -> str | None:
    """The value of the first line of a file that starts with prefix (after sep)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(sep, 1)[1].strip()
    except OSError:
        pass
    return None


def mount_of(path: str) -> dict:
    """The mount holding path (/proc/self/mountinfo): mount point, file system type, source
    and options; the deepest mount point above path wins."""
    path = os.path.realpath(path)
    best = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields, tail = left.split(), right.split()
            point = fields[4].replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best.get("mount_point", "")):
                best = {"mount_point": point, "fs_type": tail[0], "source": tail[1],
                        "options": fields[5]}
    return best


def block_device(path: str) -> dict:
    """The block device of path's file system: its name and the stat file that counts its
    sectors; `stat` is None (with `why`) where the file system has no block device (tmpfs,
    overlay, network) or the device keeps no statistics."""
    st = os.stat(path)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sysdir = f"/sys/dev/block/{major}:{minor}"
    out = {"dev": f"{major}:{minor}", "name": None, "stat": None, "why": None}
    if not os.path.exists(sysdir):
        out["why"] = (f"the file system ({mount_of(path).get('fs_type')}) has no block device "
                      f"({major}:{minor}): sectors written are not counted")
        return out
    out["name"] = _first(os.path.join(sysdir, "uevent"), "DEVNAME=", "=") or None
    stat = os.path.join(sysdir, "stat")
    if os.path.exists(stat) and sectors_written(stat) is not None:
        out["stat"] = stat
    else:
        out["why"] = f"the device {out['name']} keeps no statistics: sectors written are not counted"
    return out


def sectors_written(stat: str | None) -> int | None:
    """Sectors written so far by a block device (field 7 of its stat file), or None."""
    if not stat:
        return None
    try:
        with open(stat) as f:
            return int(f.read().split()[6])
    except (OSError, ValueError, IndexError):
        return None


def device_bytes_written(stat: str | None) -> int | None:
    """The device's bytes written so far, after a sync (so what the page cache held is in)."""
    os.sync()
    s = sectors_written(stat)
    return None if s is None else s * SECTOR


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("lsmtrie", "numpy", "cffi", "plyvel", "rocksdict", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import plyvel
        out["leveldb (library)"] = plyvel.__leveldb_version__
    except ImportError:
        pass
    return out


def git_revision() -> str | None:
    """The lsmtrie checkout's revision (with "-dirty" when files differ), or None outside one."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine(workdir: str) -> dict:
    mem = _first("/proc/meminfo", "MemTotal:")
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or None,
        "cores": os.cpu_count(),
        "memory_bytes": int(mem.split()[0]) * 1024 if mem else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "file_system": mount_of(workdir),
        "block_device": block_device(workdir),
        "versions": versions(),
        "git_revision": git_revision(),
        "python_executable": sys.executable,
    }


# ---- the device's own rates (O_DIRECT: no page cache) ----

BLOCK = 4096
WRITE_BLOCK = 1 << 20


def device_baseline(workdir: str, file_bytes: int = 256 << 20, read_seconds: float = 3.0) -> dict:
    """Sequential O_DIRECT writes of 1 MiB blocks over a new file of file_bytes (then fsync),
    and random 4 KB O_DIRECT reads of it at queue depth 1 (one read at a time) for
    read_seconds; the file is removed. Buffers come from mmap, which is page-aligned as
    O_DIRECT needs. Where the file system refuses O_DIRECT, the figures are None and `why`
    says so."""
    path = os.path.join(workdir, "device-baseline.tmp")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    except OSError as e:
        return {"seq_write_mb_per_s": None, "rand_read_iops_qd1": None,
                "why": f"O_DIRECT refused on this file system ({e.strerror})"}
    try:
        return {**_write_rate(fd, file_bytes), **_read_rate(fd, file_bytes, read_seconds),
                "file_bytes": file_bytes, "why": None}
    except OSError as e:
        return {"seq_write_mb_per_s": None, "rand_read_iops_qd1": None,
                "why": f"O_DIRECT I/O failed ({e.strerror})"}
    finally:
        os.close(fd)
        os.unlink(path)


def _write_rate(fd: int, file_bytes: int) -> dict:
    buf = mmap.mmap(-1, WRITE_BLOCK)
    buf.write(os.urandom(WRITE_BLOCK))
    t0 = time.perf_counter()
    for off in range(0, file_bytes, WRITE_BLOCK):
        os.pwrite(fd, buf, off)
    os.fsync(fd)
    return {"seq_write_mb_per_s": file_bytes / (time.perf_counter() - t0) / 1e6}


def _read_rate(fd: int, file_bytes: int, seconds: float) -> dict:
    buf = mmap.mmap(-1, BLOCK)
    blocks, rng = file_bytes // BLOCK, random.Random(1)
    reads, lat = 0, []
    t0 = end = time.perf_counter()
    while end - t0 < seconds:
        at = rng.randrange(blocks) * BLOCK
        os.preadv(fd, [buf], at)
        now = time.perf_counter()
        lat.append(now - end)
        end = now
        reads += 1
    lat.sort()
    return {"rand_read_iops_qd1": reads / (end - t0),
            "rand_read_p50_us": lat[len(lat) // 2] * 1e6,
            "rand_read_p99_us": lat[int(len(lat) * 0.99)] * 1e6}
