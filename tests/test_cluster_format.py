"""BloomCluster files against docs/format/cluster.md, read by an independent Python parser:
version 2 (a column directory per unit, a CRC per column) as written now, version 1 (no
directory) still read, and a damaged column reported, never answered from."""

import os
import random
import struct

import pytest

import lsmtrie
from formatlib import crc32c, read_varint, varint

LL = dict(table_buckets=16, node_tables=2, levels=2)
FOOTER = 64
ENTRY = 12
DIR = 8


def _load(db, model, tag, rounds, rng):
    for r in range(rounds):
        ks = [b"%s-%d-%d" % (tag, r, i) for i in range(5000)]
        vs = [rng.randbytes(rng.randint(10, 60)) for _ in ks]
        db.put_many(ks, vs)
        model.update(zip(ks, vs))
    db.flush()


def _store(path, rounds=8, seed=5):
    model = {}
    with lsmtrie.open(path, **LL) as db:
        _load(db, model, b"c", rounds, random.Random(seed))
        assert db.stats()["bytes_written_by_kind"]["clusters"] > 0
    return model


def _cluster_files(path):
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".bc"))


def parse(data: bytes) -> dict:
    """Every rule of cluster.md checked; returns the header fields and each column's filters."""
    ft = data[-FOOTER:]
    magic, version, fsize, buckets, tables, probes, cpu, units, index_off, node, index_crc = \
        struct.unpack_from("<8sHHIIIIIQQI", ft)
    assert magic == b"LTRBCLU1" and fsize == FOOTER
    assert struct.unpack_from("<I", ft, 60)[0] == crc32c(ft[:60])
    assert units == (buckets + cpu - 1) // cpu
    index = data[index_off: index_off + (units + 1) * ENTRY]
    assert index_off + len(index) + FOOTER == len(data)
    assert crc32c(index) == index_crc
    offs = [struct.unpack_from("<QI", index, u * ENTRY) for u in range(units + 1)]
    assert offs[0][0] == 0 and offs[-1][0] == index_off
    columns = []
    for u in range(units):
        unit = data[offs[u][0]: offs[u + 1][0]]
        assert crc32c(unit) == offs[u][1], f"unit {u}: CRC"
        k = min(cpu, buckets - u * cpu)
        if version == 1:
            pos, spans = 0, []
            for _ in range(k):
                start = pos
                for _ in range(tables):
                    n, pos = read_varint(unit, pos, len(unit))
                    pos += n
                spans.append((start, pos))
            body = unit
        else:
            assert version == 2
            body, start, spans = unit[DIR * k:], 0, []
            for i in range(k):
                end, ccrc = struct.unpack_from("<II", unit, DIR * i)
                assert start <= end <= len(body)
                assert ccrc == crc32c(body[start:end], crc32c(struct.pack("<I", u * cpu + i)))
                spans.append((start, end))
                start = end
        assert spans[-1][1] == len(body), f"unit {u}: bytes after the last column"
        for start, end in spans:
            filters, pos = [], start
            for _ in range(tables):
                n, pos = read_varint(body, pos, end)
                filters.append(body[pos: pos + n])
                pos += n
            assert pos == end, "a column's entries must span it exactly"
            columns.append(filters)
    assert len(columns) == buckets
    return dict(version=version, buckets=buckets, tables=tables, cpu=cpu, units=units,
                node=node, columns=columns, probes=probes)


def to_version1(info: dict) -> bytes:
    """The same cluster in the version-1 layout (cluster.md), built from the parsed columns."""
    units = []
    for u in range(info["units"]):
        unit = bytearray()
        for filters in info["columns"][u * info["cpu"]: (u + 1) * info["cpu"]]:
            for f in filters:
                unit += varint(len(f)) + f
        units.append(bytes(unit))
    return rebuild(dict(info, version=1), units)


def rebuild(info: dict, units: list) -> bytes:
    """A cluster file around the given unit bytes, with a valid index and footer."""
    out, index = bytearray(), bytearray()
    for unit in units:
        index += struct.pack("<QI", len(out), crc32c(bytes(unit)))
        out += unit
    index_off = len(out)
    index += struct.pack("<QI", index_off, 0)
    ft = bytearray(struct.pack("<8sHHIIIIIQQI", b"LTRBCLU1", info["version"], FOOTER,
                               info["buckets"], info["tables"], info["probes"], info["cpu"],
                               len(units), index_off, info["node"], crc32c(bytes(index))))
    ft += bytes(60 - len(ft))
    ft += struct.pack("<I", crc32c(bytes(ft)))
    return bytes(out + index + ft)


def test_unit_shorter_than_its_directory_is_corruption(tmp_path):
    """Checksums that match do not make a unit's directory trustworthy: a unit too short to
    hold its directory is refused before any entry is read."""
    path = str(tmp_path / "db")
    model = _store(path, rounds=4)
    for f in _cluster_files(path):
        data = open(f, "rb").read()
        info = parse(data)
        index_off = struct.unpack_from("<Q", data, len(data) - FOOTER + 32)[0]
        offs = [struct.unpack_from("<Q", data, index_off + u * ENTRY)[0]
                for u in range(info["units"] + 1)]
        units = [data[offs[u]: offs[u + 1]] for u in range(info["units"])]
        units = [u[:4] for u in units]  # each cut to half a directory entry
        with open(f, "wb") as fh:
            fh.write(rebuild(info, units))
    with lsmtrie.open(path, read_only=True) as db:
        with pytest.raises(lsmtrie.CorruptionError, match="shorter than its directory"):
            db.get_many(sorted(model))


def test_cluster_files_follow_the_format(tmp_path):
    path = str(tmp_path / "db")
    _store(path)
    files = _cluster_files(path)
    assert files, "the store wrote no cluster"
    for f in files:
        info = parse(open(f, "rb").read())
        assert info["version"] == 2
        assert info["buckets"] == LL["table_buckets"]
        assert any(len(x) for col in info["columns"] for x in col), f"{f}: every filter is empty"


def test_version1_clusters_are_still_read_and_rewritten_as_version2(tmp_path):
    path = str(tmp_path / "db")
    model = _store(path)
    for f in _cluster_files(path):
        info = parse(open(f, "rb").read())
        v1 = to_version1(info)
        assert parse(v1)["columns"] == info["columns"]
        with open(f, "wb") as fh:
            fh.write(v1)
    keys = sorted(model)
    with lsmtrie.open(path) as db:
        c0 = db.stats()["cluster_reads"]
        assert db.get_many(keys) == [model[k] for k in keys]
        assert db.stats()["cluster_reads"] > c0, "no lookup read a (version-1) cluster"
        _load(db, model, b"d", 8, random.Random(9))  # clusters rewritten from version-1 ones
        keys = sorted(model)
        assert db.get_many(keys) == [model[k] for k in keys]
    versions = [parse(open(f, "rb").read())["version"] for f in _cluster_files(path)]
    assert 2 in versions, "no cluster was rewritten"
    with lsmtrie.open(path, read_only=True) as db:
        assert db.get_many(keys) == [model[k] for k in keys]


def _damage_column_crcs(f):
    data = bytearray(open(f, "rb").read())
    info = parse(bytes(data))
    index_off = struct.unpack_from("<Q", data, len(data) - FOOTER + 32)[0]
    for u in range(info["units"]):
        at = struct.unpack_from("<Q", data, index_off + u * ENTRY)[0]
        for i in range(min(info["cpu"], info["buckets"] - u * info["cpu"])):
            data[at + DIR * i + 4] ^= 0x01
    with open(f, "wb") as fh:
        fh.write(data)


def test_damage_met_by_the_second_thread_of_a_batch_is_reported(tmp_path):
    """A batch of 512 keys or more runs on two threads: an error on the second one reaches the
    caller with its message (error messages are kept per thread)."""
    path = str(tmp_path / "db")
    model = _store(path, rounds=4)
    _damage_column_crcs(_cluster_files(path)[0])  # one node's cluster
    with lsmtrie.open(path, read_only=True) as db:
        bad, good = [], []
        for k in sorted(model):
            try:
                assert db.get(k) == model[k]
                good.append(k)
            except lsmtrie.CorruptionError:
                bad.append(k)
        assert bad and len(good) > len(bad)
        batch = (good * (5000 // len(good) + 1))[:5000] + bad[:1]
        with pytest.raises(lsmtrie.Error, match="nowhere"):  # this thread's last error now
            lsmtrie.open(str(tmp_path / "nowhere"), create=False)
        with pytest.raises(lsmtrie.CorruptionError, match="column"):
            db.get_many(batch)
        assert db.get_many(batch[:-1]) == [model[k] for k in batch[:-1]]


@pytest.mark.parametrize("what", ["column CRC", "filter byte"])
def test_damaged_cluster_column_is_corruption(tmp_path, what):
    path = str(tmp_path / "db")
    model = _store(path, rounds=4)
    for f in _cluster_files(path):
        data = bytearray(open(f, "rb").read())
        info = parse(bytes(data))
        index_off = struct.unpack_from("<Q", data, len(data) - FOOTER + 32)[0]
        for u in range(info["units"]):
            at = struct.unpack_from("<Q", data, index_off + u * ENTRY)[0]
            k = min(info["cpu"], info["buckets"] - u * info["cpu"])
            for i in range(k):
                if what == "column CRC":
                    data[at + DIR * i + 4] ^= 0x01
                else:  # the column's last byte: a filter byte (or a length byte of 0)
                    end = struct.unpack_from("<I", data, at + DIR * i)[0]
                    data[at + DIR * k + end - 1] ^= 0x10
        with open(f, "wb") as fh:
            fh.write(data)
    keys = sorted(model)
    with lsmtrie.open(path, read_only=True) as db:
        with pytest.raises(lsmtrie.CorruptionError, match="column"):
            db.get_many(keys)
        errors = 0
        for k in keys[:300]:
            try:
                value = db.get(k)
            except lsmtrie.CorruptionError:
                errors += 1
                continue
            assert value == model[k], "a damaged cluster gave a wrong answer"
        assert errors > 0
