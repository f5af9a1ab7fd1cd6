"""Streaming parsers of bulk-load input and their formatters, over native/src/parse.c and
parse_json.c (docs/format/load-input.md): `lsmtrie load` reads through Parser, `lsmtrie dump`
writes through Formatter."""

from __future__ import annotations

import numpy as np

from ._binding import check, ffi, lib

__all__ = ["Parser", "Batch", "Formatter", "format_items", "FORMATS", "ENCODINGS"]

FORMATS = {"tsv": lib.LTR_FMT_TSV, "csv": lib.LTR_FMT_CSV, "jsonl": lib.LTR_FMT_JSONL,
           "fixed": lib.LTR_FMT_FIXED, "lenprefix": lib.LTR_FMT_LENPREFIX}
ENCODINGS = {"utf8": lib.LTR_ENC_UTF8, "hex": lib.LTR_ENC_HEX, "base64": lib.LTR_ENC_BASE64}
ON_BAD = {"fail": lib.LTR_BAD_FAIL, "skip": lib.LTR_BAD_SKIP}


def _opts(fmt, key_encoding, value_encoding, key_size, value_size, on_bad_line):
    o = ffi.new("ltr_parser_opts *")
    try:
        o.format = FORMATS[fmt]
        o.key_encoding = ENCODINGS[key_encoding]
        o.value_encoding = ENCODINGS[value_encoding]
        o.on_bad_line = ON_BAD[on_bad_line]
    except KeyError as e:
        from .errors import InvalidArgumentError
        raise InvalidArgumentError(f"unknown choice {e.args[0]!r}") from None
    o.key_size = key_size
    o.value_size = value_size
    return o


def _bytes(buf) -> bytes:
    return bytes(ffi.buffer(buf.data, buf.len)) if buf.len else b""


class Batch:
    """Packed items: keys and values (bytes) with int64 offsets koffs, voffs (n+1 each)."""

    def __init__(self, keys: bytes, koffs: np.ndarray, values: bytes, voffs: np.ndarray):
        self.keys, self.koffs, self.values, self.voffs = keys, koffs, values, voffs

    def __len__(self) -> int:
        return len(self.koffs) - 1

    def items(self) -> list[tuple[bytes, bytes]]:
        k, v, ko, vo = self.keys, self.values, self.koffs.tolist(), self.voffs.tolist()
        return [(k[ko[i]:ko[i + 1]], v[vo[i]:vo[i + 1]]) for i in range(len(ko) - 1)]


class Parser:
    def __init__(self, format: str = "tsv", key_encoding: str = "utf8", value_encoding: str = "utf8",
                 key_size: int = 0, value_size: int = 0, on_bad_line: str = "fail"):
        self._opts = _opts(format, key_encoding, value_encoding, key_size, value_size, on_bad_line)
        out = ffi.new("ltr_parser **")
        check(lib.ltr_parser_new(self._opts, out))
        self._p = ffi.gc(out[0], lib.ltr_parser_free)
        self._items = ffi.gc(ffi.new("ltr_items *"), lib.ltr_items_free)

    def feed_packed(self, data: bytes, final: bool = False) -> Batch:
        it = self._items
        for b in (it.keys, it.values, it.koffs, it.voffs, it.deleted):
            b.len = 0
        it.n = 0
        check(lib.ltr_parser_feed(self._p, data, len(data), int(final), it))
        koffs = np.frombuffer(_bytes(it.koffs), dtype=np.int64) if it.koffs.len else np.zeros(1, np.int64)
        voffs = np.frombuffer(_bytes(it.voffs), dtype=np.int64) if it.voffs.len else np.zeros(1, np.int64)
        return Batch(_bytes(it.keys), koffs, _bytes(it.values), voffs)

    @staticmethod
    def new_items():
        """A C batch (ltr_items) for feed_c, freed with its last reference."""
        return ffi.gc(ffi.new("ltr_items *"), lib.ltr_items_free)

    def feed_c(self, data, final: bool = False, items=None):
        """Parses a chunk into a C batch (ltr_items: `items`, or the parser's own, valid until
        the next call) and returns it: the loader hands it to C as it is, with no copy."""
        it = self._items if items is None else items
        for b in (it.keys, it.values, it.koffs, it.voffs, it.deleted):
            b.len = 0
        it.n = 0
        check(lib.ltr_parser_feed(self._p, ffi.from_buffer(data), len(data), int(final), it))
        return it

    def position(self) -> tuple[int, int]:
        """(bytes held of a record split across chunks, lines or bytes consumed before them)."""
        pending, consumed = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        lib.ltr_parser_position(self._p, pending, consumed)
        return pending[0], consumed[0]

    def seek(self, consumed: int) -> None:
        """Continues the numbering from `consumed` (an input resumed at that record)."""
        lib.ltr_parser_seek(self._p, consumed)

    def feed(self, data: bytes, final: bool = False) -> list[tuple[bytes, bytes]]:
        return self.feed_packed(data, final).items()

    @property
    def bad_lines(self) -> int:
        return lib.ltr_parser_bad_lines(self._p)

    @property
    def bad_line_descriptions(self) -> list[str]:
        out = []
        for i in range(min(self.bad_lines, lib.LTR_BAD_KEPT)):
            out.append(ffi.string(lib.ltr_parser_bad_line(self._p, i)).decode("utf-8", "replace"))
        return out

    def reset(self) -> None:
        lib.ltr_parser_reset(self._p)


class Formatter:
    """Formats C batches (ltr_items, as a store's scan yields them) into one reused buffer."""

    def __init__(self, format: str = "tsv", key_encoding: str = "utf8", value_encoding: str = "utf8"):
        self._opts = _opts(format, key_encoding, value_encoding, 0, 0, "fail")
        self._buf = ffi.gc(ffi.new("ltr_buf *"), lib.ltr_buf_free)

    def format_c(self, it):
        """The batch's bytes (a buffer valid until the next call)."""
        self._buf.len = 0
        check(lib.ltr_format_items(self._opts, it.keys.data, ffi.cast("int64_t *", it.koffs.data),
                                   it.values.data, ffi.cast("int64_t *", it.voffs.data), it.n,
                                   self._buf))
        return ffi.buffer(self._buf.data, self._buf.len)


def format_items(items, format: str = "tsv", key_encoding: str = "utf8", value_encoding: str = "utf8",
                 key_size: int = 0, value_size: int = 0) -> bytes:
    """items: a list of (key, value) byte pairs, or a Batch."""
    if not isinstance(items, Batch):
        keys = [k for k, _ in items]
        values = [v for _, v in items]
        koffs = np.zeros(len(keys) + 1, np.int64)
        voffs = np.zeros(len(keys) + 1, np.int64)
        np.cumsum([len(k) for k in keys], out=koffs[1:])
        np.cumsum([len(v) for v in values], out=voffs[1:])
        items = Batch(b"".join(keys), koffs, b"".join(values), voffs)
    o = _opts(format, key_encoding, value_encoding, key_size, value_size, "fail")
    buf = ffi.gc(ffi.new("ltr_buf *"), lib.ltr_buf_free)
    ko = np.ascontiguousarray(items.koffs, np.int64)
    vo = np.ascontiguousarray(items.voffs, np.int64)
    check(lib.ltr_format_items(o, ffi.from_buffer(items.keys), ffi.cast("int64_t *", ko.ctypes.data),
                               ffi.from_buffer(items.values), ffi.cast("int64_t *", vo.ctypes.data),
                               len(ko) - 1, buf))
    return _bytes(buf)
