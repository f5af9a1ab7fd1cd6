"""The load-input parsers and formatters (lsmtrie/_parse.py, native/src/parse.c).
So far tsv, fixed and lenprefix (csv and jsonl are not implemented yet)."""

import pytest
from hypothesis import given, settings, strategies as st

from lsmtrie._parse import Parser, format_items
from lsmtrie.errors import InvalidArgumentError

ENCS = ["utf8", "hex", "base64"]
items_st = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=20)


@pytest.mark.parametrize("kenc", ENCS)
@pytest.mark.parametrize("venc", ENCS)
@settings(max_examples=50, deadline=None)
@given(items=items_st)
def test_tsv_round_trip(kenc, venc, items):
    data = format_items(items, "tsv", kenc, venc)
    assert Parser("tsv", kenc, venc).feed(data, final=True) == items


def test_tsv_every_byte_and_max_sizes():
    items = [(bytes(range(256)), bytes(range(256))[::-1]), (b"", b""),
             (b"k" * 65535, b"\t\\" * (8 << 20))]
    data = format_items(items)
    assert Parser().feed(data, final=True) == items


@settings(max_examples=30, deadline=None)
@given(items=items_st, data=st.data())
def test_tsv_chunking(items, data):
    raw = format_items(items).replace(b"\n", b"\r\n")
    p = Parser()
    got, i = [], 0
    while i < len(raw):
        n = data.draw(st.integers(0, 7))
        got += p.feed(raw[i:i + n])
        i += n
    got += p.feed(b"", final=True)
    assert got == items


def test_tsv_every_split():
    raw = b"a\\tb\tc\\\\d\r\ne\tf\r\n\tx\ny\t"
    want = Parser().feed(raw, final=True)
    assert want == [(b"a\tb", b"c\\d"), (b"e", b"f"), (b"", b"x"), (b"y", b"")]
    for i in range(len(raw) + 1):
        p = Parser()
        assert p.feed(raw[:i]) + p.feed(raw[i:], final=True) == want


BAD = [
    (b"a\tb\nnotab\n", 2, "no tab"),
    (b"a\tb\n\n", 2, "no tab"),
    (b"a\tb\tc\n", 1, "more than one tab"),
    (b"ok\tx\na\\q\tb\n", 2, "unknown backslash escape"),
    (b"a\\\tb\n", 1, "backslash at the end"),
    (b"k\t" + b"v\n" + b"x" * 65536 + b"\tv\n", 2, "key longer"),
]


@pytest.mark.parametrize("raw,line,reason", BAD)
def test_tsv_bad_lines(raw, line, reason):
    with pytest.raises(InvalidArgumentError, match=f"line {line}: {reason}"):
        Parser().feed(raw, final=True)
    p = Parser(on_bad_line="skip")
    p.feed(raw + b"z\tz", final=True)
    assert p.bad_lines == 1
    assert p.bad_line_descriptions[0].startswith(f"line {line}: {reason}")


def test_encoding_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="line 1: odd number of hex digits"):
        Parser("tsv", "hex", "utf8").feed(b"abc\tv\n", final=True)
    with pytest.raises(InvalidArgumentError, match="line 2: bad base64 character"):
        Parser("tsv", "utf8", "base64").feed(b"k\tAAAA\nk\tA*AA\n", final=True)


def test_reset_restarts_numbering():
    p = Parser(on_bad_line="skip")
    assert p.feed(b"a\tb\nhalf", final=False) == [(b"a", b"b")]
    p.reset()
    assert p.bad_lines == 0
    assert p.feed(b"bad\n", final=True) == []
    assert p.bad_line_descriptions == ["line 1: no tab"]


@settings(max_examples=40, deadline=None)
@given(items=items_st, data=st.data())
def test_lenprefix_round_trip_chunked(items, data):
    raw = format_items(items, "lenprefix")
    p = Parser("lenprefix")
    got, i = [], 0
    while i < len(raw):
        n = data.draw(st.integers(0, 11))
        got += p.feed(raw[i:i + n])
        i += n
    got += p.feed(b"", final=True)
    assert got == items


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 10), ks=st.integers(0, 5), vs=st.integers(1, 5), data=st.data())
def test_fixed_round_trip_chunked(n, ks, vs, data):
    items = [(data.draw(st.binary(min_size=ks, max_size=ks)), data.draw(st.binary(min_size=vs, max_size=vs)))
             for _ in range(n)]
    raw = format_items(items, "fixed", key_size=ks, value_size=vs)
    assert len(raw) == n * (ks + vs)
    cut = data.draw(st.integers(0, len(raw)))
    p = Parser("fixed", key_size=ks, value_size=vs)
    assert p.feed(raw[:cut]) + p.feed(raw[cut:], final=True) == items


def test_binary_bad_records():
    with pytest.raises(InvalidArgumentError, match="offset 4: truncated record"):
        Parser("fixed", key_size=2, value_size=2).feed(b"abcdab", final=True)
    p = Parser("fixed", key_size=2, value_size=2, on_bad_line="skip")
    assert p.feed(b"abcdab", final=True) == [(b"ab", b"cd")]
    assert p.bad_line_descriptions == ["offset 4: truncated record (2 bytes at the end)"]
    good = format_items([(b"k", b"v")], "lenprefix")
    bad = (70000).to_bytes(4, "little") + (0).to_bytes(4, "little")
    for mode in ("fail", "skip"):  # framing is lost: an error even in skip mode
        with pytest.raises(InvalidArgumentError, match="offset 10: key length 70000 over the limit"):
            Parser("lenprefix", on_bad_line=mode).feed(good + bad, final=True)
    with pytest.raises(InvalidArgumentError, match="only the utf8"):
        Parser("lenprefix", "hex", "utf8")
    with pytest.raises(InvalidArgumentError, match="fixed format wants"):
        format_items([(b"abc", b"")], "fixed", key_size=2, value_size=0)
    with pytest.raises(InvalidArgumentError, match="key_size \\+ value_size > 0"):
        Parser("fixed", key_size=0, value_size=0)
