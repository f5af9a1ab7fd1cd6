"""`lsmtrie dump`, `get`, `put` and `delete` (issue 22's contract): every format and encoding
makes a round trip store -> dump -> load -> store with the same contents; escapes, CRLF, empty
keys and values and the size limits hold; failures leave no partial output; exit statuses."""

import gzip
import os
import random
import subprocess
import sys

import pytest

import lsmtrie
from lsmtrie import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_ENCODINGS = [(k, v) for k in ("utf8", "hex", "base64") for v in ("utf8", "hex", "base64")]
CASES = [("tsv", k, v) for k, v in TEXT_ENCODINGS] + [("csv", k, v) for k, v in TEXT_ENCODINGS] \
    + [("jsonl", k, v) for k, v in TEXT_ENCODINGS] + [("lenprefix", "utf8", "utf8")]
AWKWARD = [b"\t", b"\n", b"\r", b"\r\n", b"\\", b"\\t", b",", b'"', b'""', b"{", b'"key"', b"\x00",
           b" lead", b"trail ", "\u00e9\U0001F600".encode()]


def command(*args, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lsmtrie", *map(str, args)], input=stdin,
                          capture_output=True, env=env, timeout=600)


def contents(path):
    with lsmtrie.open(str(path), read_only=True) as db:
        return dict(db.items())


def model_for(fmt, kenc, venc, seed=0, n=2000):
    """Random items with every awkward byte sequence as key and value, empty ones included;
    text only where jsonl's utf8 encoding must carry it (JSON strings hold Unicode)."""
    rng = random.Random(seed)

    def field(enc, size):
        if fmt == "jsonl" and enc == "utf8":
            return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0xD800),
                                           rng.randrange(0xE000, 0x110000)]))
                           for _ in range(size)).encode()
        return rng.randbytes(size)

    model = {field(kenc, rng.randint(0, 24)): field(venc, rng.randint(0, 60)) for _ in range(n)}
    for a in AWKWARD:
        for b in AWKWARD:
            model[a + b"|" + b] = b + a
    model[b""] = b"the empty key"
    model[b"empty value"] = b""
    return model


def fill(path, model):
    with lsmtrie.open(str(path)) as db:
        db.put_many(list(model), list(model.values()))


@pytest.mark.parametrize("fmt,kenc,venc", CASES)
def test_every_format_and_encoding_makes_a_round_trip(tmp_path, fmt, kenc, venc):
    model = model_for(fmt, kenc, venc, seed=hash((fmt, kenc, venc)) & 0xFFFF)
    fill(tmp_path / "a", model)
    enc = ["--key-encoding", kenc, "--value-encoding", venc] if fmt != "lenprefix" else []
    out = tmp_path / f"dump.{fmt}"
    assert cli.main(["dump", str(tmp_path / "a"), "--format", fmt, "-o", str(out), *enc]) == 0
    assert cli.main(["load", str(tmp_path / "b"), str(out), "--format", fmt, "--no-progress",
                     *enc]) == 0
    assert contents(tmp_path / "b") == model
    again = tmp_path / f"again.{fmt}"  # and the second store dumps the same lines
    assert cli.main(["dump", str(tmp_path / "b"), "--format", fmt, "-o", str(again), *enc]) == 0
    if fmt != "lenprefix":
        assert sorted(out.read_bytes().splitlines()) == sorted(again.read_bytes().splitlines())


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "lenprefix"])
def test_the_largest_key_and_value_make_the_round_trip(tmp_path, fmt):
    model = {b"k" * 65535: b"v" * (16 << 20), b"": b"", b"small": b"x" * 65535}
    fill(tmp_path / "a", model)
    lsmtrie.dump(str(tmp_path / "a"), str(tmp_path / "out"), format=fmt)
    lsmtrie.load(str(tmp_path / "b"), [str(tmp_path / "out")], format=fmt)
    assert contents(tmp_path / "b") == model


def test_crlf_input_loads_as_lf_input_does(tmp_path):
    model = model_for("csv", "utf8", "base64", seed=7, n=300)
    fill(tmp_path / "a", model)
    for fmt in ("tsv", "csv", "jsonl"):
        out = tmp_path / f"dump.{fmt}"
        lsmtrie.dump(str(tmp_path / "a"), str(out), format=fmt, value_encoding="base64",
                     key_encoding="hex")
        crlf = tmp_path / f"crlf.{fmt}"
        crlf.write_bytes(out.read_bytes().replace(b"\n", b"\r\n"))  # hex and base64: no LF inside
        lsmtrie.load(str(tmp_path / fmt), [str(crlf)], format=fmt, key_encoding="hex",
                     value_encoding="base64")
        assert contents(tmp_path / fmt) == model


def test_dump_to_stdout_and_compressed_files(tmp_path, capsysbinary):
    model = model_for("tsv", "utf8", "utf8", n=500)
    fill(tmp_path / "a", model)
    assert cli.main(["dump", str(tmp_path / "a")]) == 0
    plain = capsysbinary.readouterr().out
    assert cli.main(["dump", str(tmp_path / "a"), "-o", str(tmp_path / "d.tsv.gz")]) == 0
    assert gzip.decompress((tmp_path / "d.tsv.gz").read_bytes()) == plain
    r = command("load", tmp_path / "b", "--no-progress", stdin=plain)
    assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "b") == model


def test_a_dump_beside_a_writer_shows_the_state_as_of_opening(tmp_path):
    with lsmtrie.open(str(tmp_path / "a")) as db:
        db.put(b"k", b"old")
        db.flush()
        lsmtrie.dump(str(tmp_path / "a"), str(tmp_path / "d.tsv"))
        db.put(b"k", b"new")
    assert (tmp_path / "d.tsv").read_bytes() == b"k\told\n"


def test_a_failed_dump_leaves_no_file_and_says_why(tmp_path, capsys):
    fill(tmp_path / "a", {b"ok": b"v", b"\xff\xfe": b"v"})
    out = tmp_path / "d.jsonl"
    out.write_bytes(b"what was there before\n")
    assert cli.main(["dump", str(tmp_path / "a"), "--format", "jsonl", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "base64" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"what was there before\n"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".dump-")] == []
    assert cli.main(["dump", str(tmp_path / "missing"), "-o", str(out)]) == 1
    r = command("dump", tmp_path / "a", "--format", "fixed")
    assert r.returncode == 2


def test_get_put_delete_with_encodings_and_exit_statuses(tmp_path):
    db = tmp_path / "db"
    r = command("put", db, "k\u00e9", "v1")
    assert r.returncode == 0, r.stderr
    r = command("get", db, "k\u00e9")
    assert (r.returncode, r.stdout) == (0, "v1\n".encode())
    assert command("put", db, "00ff", "AAEC", "--key-encoding", "hex",
                   "--value-encoding", "base64").returncode == 0
    r = command("get", db, "AP8=", "--key-encoding", "base64", "--value-encoding", "hex")
    assert (r.returncode, r.stdout) == (0, b"000102\n")
    assert contents(db) == {"k\u00e9".encode(): b"v1", b"\x00\xff": b"\x00\x01\x02"}
    assert command("delete", db, "k\u00e9").returncode == 0
    r = command("get", db, "k\u00e9")
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr.decode().strip() == "lsmtrie get: not found"
    assert command("delete", db, "never there").returncode == 0
    for bad in (["put", db, "0", "v", "--key-encoding", "hex"],
                ["get", db, "!!", "--key-encoding", "base64"]):
        r = command(*bad)
        assert r.returncode in (1, 2) and "not valid" in r.stderr.decode()
        assert "Traceback" not in r.stderr.decode()
    r = command("get", tmp_path / "nowhere", "k")
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()
    assert command("get", db).returncode == 2  # usage
    assert command("put", db, "k" * 65536, "v").returncode == 1


def test_put_and_delete_refuse_a_store_open_for_writing_elsewhere(tmp_path):
    with lsmtrie.open(str(tmp_path / "db")) as db:
        db.put(b"k", b"v")
        db.flush()
        for args in (["put", tmp_path / "db", "k", "other"], ["delete", tmp_path / "db", "k"]):
            r = command(*args)
            assert r.returncode == 1 and "LOCK" in r.stderr.decode()
        r = command("get", tmp_path / "db", "k")  # a reader beside the writer is fine
        assert (r.returncode, r.stdout) == (0, b"v\n")
    assert contents(tmp_path / "db") == {b"k": b"v"}


def test_a_dump_into_a_closed_pipe_stops_quietly(tmp_path):
    rng = random.Random(9)  # 300,000 items: far more than a pipe holds
    fill(tmp_path / "a", {rng.randbytes(16): rng.randbytes(60) for _ in range(300_000)})
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "lsmtrie", "dump", str(tmp_path / "a")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.read(100)
    p.stdout.close()  # like `| head`
    err = p.stderr.read()
    assert p.wait(timeout=60) == 1
    assert err == b""
