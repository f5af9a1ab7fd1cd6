"""The load-input parsers and formatters (lsmtrie/_parse.py, native/src/parse.c and
parse_json.c): every format and encoding, with Python's csv and json modules as references."""

import csv
import io
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from lsmtrie._parse import Parser, format_items
from lsmtrie.errors import InvalidArgumentError

ENCS = ["utf8", "hex", "base64"]
items_st = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=20)


TEXT = ["tsv", "csv", "jsonl"]
text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


def items_for(fmt, kenc, venc, data):
    """Items every format and encoding can hold: jsonl holds raw bytes only when they are UTF-8."""
    def field(enc):
        if fmt == "jsonl" and enc == "utf8":
            return text_st.map(lambda t: t.encode())
        return st.binary(max_size=40)
    return data.draw(st.lists(st.tuples(field(kenc), field(venc)), max_size=20))


@pytest.mark.parametrize("fmt", TEXT)
@pytest.mark.parametrize("kenc", ENCS)
@pytest.mark.parametrize("venc", ENCS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_text_round_trip(fmt, kenc, venc, data):
    items = items_for(fmt, kenc, venc, data)
    raw = format_items(items, fmt, kenc, venc)
    assert Parser(fmt, kenc, venc).feed(raw, final=True) == items
    cut = data.draw(st.integers(0, len(raw)))  # and split anywhere
    p = Parser(fmt, kenc, venc)
    assert p.feed(raw[:cut]) + p.feed(raw[cut:], final=True) == items


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


# ---- csv ----

@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.tuples(text_st, text_st), max_size=10))
def test_csv_output_reads_back_with_pythons_csv_module(items):
    raw = format_items([(k.encode(), v.encode()) for k, v in items], "csv")
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert [tuple(r) for r in rows] == items


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.tuples(text_st, text_st), max_size=10), crlf=st.booleans())
def test_csv_reads_pythons_csv_output(items, crlf):
    out = io.StringIO(newline="")
    # (minimal quoting quotes a CR only when the line terminator holds one, as RFC 4180's does)
    csv.writer(out, lineterminator="\r\n" if crlf else "\n",
               quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL).writerows(items)
    got = Parser("csv").feed(out.getvalue().encode(), final=True)
    assert got == [(k.encode(), v.encode()) for k, v in items]


def test_csv_quotes_commas_and_newlines_at_every_split():
    raw = b'a,b\r\n"x,""y""\nz",""\n,\n"",v\r\n"\r\n",w'
    want = [(b"a", b"b"), (b'x,"y"\nz', b""), (b"", b""), (b"", b"v"), (b"\r\n", b"w")]
    assert Parser("csv").feed(raw, final=True) == want
    for i in range(len(raw) + 1):
        p = Parser("csv")
        assert p.feed(raw[:i]) + p.feed(raw[i:], final=True) == want


def test_csv_lines_count_newlines_inside_quotes():
    p = Parser("csv", on_bad_line="skip")
    p.feed(b'"a\nb\nc",v\nbad\n"x",y\n', final=True)
    assert p.bad_line_descriptions == ["line 4: one field, two wanted"]
    assert p.position() == (0, 5)


CSV_BAD = [
    (b"a,b\nonly\n", 2, "one field, two wanted"),
    (b"a,b,c\n", 1, "more than two fields"),
    (b'a"b,c\n', 1, "quote in an unquoted field"),
    (b'"a"b,c\n', 1, "text after a closing quote"),
    (b'k,v\n"open,v\nmore\n', 2, "unterminated quoted field"),
    (b"\n", 1, "one field, two wanted"),
]


# ---- jsonl ----

@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.tuples(text_st, text_st), max_size=10), ascii_only=st.booleans(),
       extra=st.dictionaries(text_st.filter(lambda t: t not in ("key", "value")),
                             st.recursive(st.none() | st.booleans() | st.integers() | st.floats(
                                 allow_nan=False, allow_infinity=False) | text_st,
                                 lambda c: st.lists(c, max_size=3) | st.dictionaries(text_st, c, max_size=3),
                                 max_leaves=8), max_size=3))
def test_jsonl_reads_pythons_json_with_other_members_ignored(items, ascii_only, extra):
    lines = [json.dumps({**extra, "key": k, "value": v}, ensure_ascii=ascii_only) for k, v in items]
    got = Parser("jsonl").feed("\n".join(lines).encode(), final=True)
    assert got == [(k.encode(), v.encode()) for k, v in items]


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.tuples(text_st, text_st), max_size=10))
def test_jsonl_output_reads_back_with_pythons_json(items):
    raw = format_items([(k.encode(), v.encode()) for k, v in items], "jsonl")
    got = [json.loads(line) for line in raw.decode().split("\n")[:-1]]
    assert got == [{"key": k, "value": v} for k, v in items]


def test_jsonl_escapes_surrogates_and_whitespace():
    raw = (b' { "value" : "a\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/\\b\\f\\r\\t" , "k\\u0065y":"\\u0000" } \r\n'
           b'{"key":"","value":""}')
    assert Parser("jsonl").feed(raw, final=True) == [
        (b"\x00", "a\u00e9\U0001F600\n\"\\/\b\f\r\t".encode()), (b"", b"")]


def test_jsonl_formatter_refuses_bytes_that_are_not_utf8():
    with pytest.raises(InvalidArgumentError, match="item 1: the key is not UTF-8.*hex or base64"):
        format_items([(b"ok", b"v"), (b"\xff", b"v")], "jsonl")
    with pytest.raises(InvalidArgumentError, match="item 0: the value is not UTF-8"):
        format_items([(b"k", b"\xed\xa0\x80")], "jsonl")  # an encoded surrogate
    raw = format_items([(b"\xff", b"\x00\x01")], "jsonl", "base64", "hex")
    assert raw == b'{"key":"/w==","value":"0001"}\n'


JSONL_BAD = [
    (b'{"key":"k","value":"v"}\n\n', 2, "not a JSON object"),
    (b'["key","value"]\n', 1, "not a JSON object"),
    (b'{"key":"k"}\n', 1, 'no "value" member'),
    (b'{"value":"v"}\n', 1, 'no "key" member'),
    (b'{"key":"k","key":"j","value":"v"}\n', 1, '"key" twice'),
    (b'{"key":1,"value":"v"}\n', 1, '"key" is not a string'),
    (b'{"key":"k","value":null}\n', 1, '"value" is not a string'),
    (b'{"key":"k","value":"v"} x\n', 1, "text after the object"),
    (b'{"key":"k","value":"v",}\n', 1, "expected a string"),
    (b'{"key":"k" "value":"v"}\n', 1, "expected ',' or '}'"),
    (b'{"key":"k\tx","value":"v"}\n', 1, "control character in a string"),
    (b'{"key":"\xff","value":"v"}\n', 1, "invalid UTF-8 in a string"),
    (b'{"key":"\xc0\x80","value":"v"}\n', 1, "invalid UTF-8 in a string"),
    (b'{"key":"\\ud800","value":"v"}\n', 1, "bad \\\\u escape"),
    (b'{"key":"\\udc00\\ud800","value":"v"}\n', 1, "bad \\\\u escape"),
    (b'{"key":"\\x","value":"v"}\n', 1, "unknown escape in a string"),
    (b'{"key":"k","value":"v","n":01}\n', 1, "expected ',' or '}'"),
    (b'{"key":"k","value":"v","n":1.}\n', 1, "bad number"),
    (b'{"key":"k","value":"v","n":tru}\n', 1, "not JSON"),
    (b'{"key":"k","value":"v","d":' + b"[" * 70 + b"]" * 70 + b"}\n", 1, "nesting deeper than 64"),
    (b'{"key":"k","value":"v\n', 1, "unterminated string"),
    (b'{"key":"k","value":"v"\n', 1, "expected ',' or '}'"),
]


@pytest.mark.parametrize("fmt,raw,line,reason", [("csv", *c) for c in CSV_BAD] +
                         [("jsonl", *j) for j in JSONL_BAD])
def test_csv_and_jsonl_bad_lines(fmt, raw, line, reason):
    """fail: an error naming the line; skip: counted, described, and the next record read
    (an unterminated csv quote swallows the rest: no record can follow it)."""
    with pytest.raises(InvalidArgumentError, match=f"line {line}: {reason}"):
        Parser(fmt).feed(raw, final=True)
    p = Parser(fmt, on_bad_line="skip")
    good = b"z,z" if fmt == "csv" else b'{"key":"z","value":"z"}'
    got = p.feed(raw + good, final=True)
    assert p.bad_lines == 1
    assert re.match(f"line {line}: {reason}", p.bad_line_descriptions[0])
    assert "unterminated quoted" in reason or got[-1] == (b"z", b"z")


def test_nesting_within_the_limit_is_fine():
    raw = b'{"key":"k","value":"v","d":' + b"[" * 63 + b"]" * 63 + b"}"
    assert Parser("jsonl").feed(raw, final=True) == [(b"k", b"v")]


@pytest.mark.parametrize("fmt", TEXT)
def test_text_limits_hold_in_every_format(fmt):
    big = [(b"k" * 65535, b"v" * (16 << 20)), (b"", b"")]
    raw = format_items(big, fmt)
    assert Parser(fmt).feed(raw, final=True) == big
    over = format_items([(b"k" * 65536, b"v")], fmt)
    with pytest.raises(InvalidArgumentError, match="line 1: key longer than 65535 bytes"):
        Parser(fmt).feed(over, final=True)


@pytest.mark.parametrize("fmt", TEXT)
def test_a_record_with_no_end_is_refused_before_it_fills_memory(fmt):
    p = Parser(fmt, on_bad_line="skip")
    chunk = b'"' + b"x" * (1 << 20)  # no LF in csv quotes or anywhere
    with pytest.raises(InvalidArgumentError, match="framing lost"):
        for _ in range(200):  # bounded: the limit is about 101 MB
            p.feed(chunk)
