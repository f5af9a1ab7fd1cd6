"""`lsmtrie.dump()` and `lsmtrie dump`: every live item of a store in a format `lsmtrie load`
reads back (tsv, csv, jsonl, lenprefix; docs/format/load-input.md).

The store's scan and the formatter are C over batches of 64 Ki items; Python only moves each
batch's bytes to the output. A file output is written beside its name and renamed into place
when complete, so a dump that fails leaves no partial file behind.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import sys
import tempfile
import time

from . import errors
from ._parse import Formatter
from .store import Store

FORMATS = ("tsv", "csv", "jsonl", "lenprefix")


def _open_output(tmp_name: str, name: str):
    """A binary stream to tmp_name, compressed by the suffix of the final name."""
    if name.endswith(".gz"):
        return gzip.open(tmp_name, "wb", compresslevel=6)
    if name.endswith(".bz2"):
        return bz2.open(tmp_name, "wb")
    if name.endswith(".xz"):
        return lzma.open(tmp_name, "wb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise errors.InvalidArgumentError(
                f"{name}: writing .zst needs the zstandard package (pip install 'lsmtrie[load]')"
            ) from None
        return zstandard.ZstdCompressor().stream_writer(open(tmp_name, "wb"), closefd=True)
    return open(tmp_name, "wb")


def _write_all(db: Store, out, fmt: Formatter) -> tuple[int, int]:
    items = nbytes = 0
    for batch in db._scan_batches():
        data = fmt.format_c(batch)
        out.write(data)
        items += batch.n
        nbytes += len(data)
    return items, nbytes


def dump(path, output="-", format: str = "tsv", key_encoding: str = "utf8",
         value_encoding: str = "utf8", metadata_path=None) -> dict:
    """Writes every live item of the store at `path` (opened read-only: beside a writer it
    dumps the state as of opening) to `output` (a file name, compressed by its suffix .gz
    .bz2 .xz .zst; `-` standard output; or a writable binary stream). Returns {"items",
    "bytes" (before compression), "seconds"}."""
    if format not in FORMATS:
        raise errors.InvalidArgumentError(f"unknown dump format {format!r}; one of {', '.join(FORMATS)}")
    fmt = Formatter(format, key_encoding, value_encoding)  # checks the encodings
    t0 = time.monotonic()
    with Store(path, create=False, read_only=True, metadata_path=metadata_path) as db:
        if output == "-":
            items, nbytes = _write_all(db, sys.stdout.buffer, fmt)
            sys.stdout.buffer.flush()
        elif not isinstance(output, (str, os.PathLike)):
            items, nbytes = _write_all(db, output, fmt)
        else:
            name = os.fspath(output)
            fd, tmp = tempfile.mkstemp(prefix=".dump-", dir=os.path.dirname(os.path.abspath(name)))
            os.close(fd)
            try:
                with _open_output(tmp, name) as out:
                    items, nbytes = _write_all(db, out, fmt)
                os.replace(tmp, name)
            except BaseException:
                os.unlink(tmp)
                raise
    return {"items": items, "bytes": nbytes, "seconds": time.monotonic() - t0}
