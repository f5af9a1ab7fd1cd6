"""Argument validation, size limits, closed objects, I/O failures and garbage files."""

import errno
import os

import numpy as np
import pytest

import formatlib as fl


def packed(items):
    data = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(x) for x in items])
    return data, offs


@pytest.fixture
def table(tmp_path, htable):
    path = str(tmp_path / "t.htb")
    htable.build_htable(path, [b"a", b"b"], [b"1", b"2"], buckets=4, sync=False)
    t = htable.HTable(path)
    yield t
    t.close()


# ---------------------------------------------------------------------------------------------
# types and batch shapes


@pytest.mark.parametrize("bad", ["str", 5, None, 3.0, ["list"], {"a": 1}])
def test_builder_rejects_non_bytes_keys(htable, bad):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(TypeError):
            b.add(bad, b"v")
        with pytest.raises(TypeError):
            b.delete(bad)
        assert b.items == 0 and b.data_bytes == 0


@pytest.mark.parametrize("bad", ["str", 5, 3.0, [b"x"]])
def test_builder_rejects_non_bytes_values(htable, bad):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(TypeError):
            b.add(b"k", bad)
        assert b.items == 0


def test_reader_rejects_non_bytes_keys(table):
    for bad in ("a", 1, None, 2.5):
        with pytest.raises(TypeError):
            table.get(bad)
        with pytest.raises(TypeError):
            table.lookup(bad)
    with pytest.raises(TypeError):
        table.get_many([b"a", "b"])
    with pytest.raises(TypeError):
        table.get_many([b"a", None])
    with pytest.raises(TypeError):
        table.lookup_many(["a"])
    assert table.get(b"a") == b"1"


def test_s_dtype_arrays_refused(htable, table):
    s = np.array([b"a", b"b\x00"], dtype="S2")
    with pytest.raises(TypeError):
        table.get_many(s)
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(TypeError):
            b.add_many(s, [b"1", b"2"])
        with pytest.raises(TypeError):
            b.add_many([b"1", b"2"], s)
        assert b.items == 0
    from lsmtrie import hashing

    with pytest.raises(TypeError):
        hashing.digest_many(s)


@pytest.mark.parametrize("arr", [np.zeros((3, 4), dtype=np.int32),
                                 np.zeros((3, 4), dtype=np.float64),
                                 np.array(["ab", "cd"]),
                                 np.array([b"ab", b"cd"], dtype=object)])
def test_other_array_dtypes_refused(htable, table, arr):
    with pytest.raises((TypeError, ValueError)):
        table.get_many(arr)
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises((TypeError, ValueError)):
            b.add_many(arr, arr)
        assert b.items == 0


def test_three_dimensional_array_refused(htable):
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises((TypeError, ValueError)):
            b.add_many(arr, arr)
        assert b.items == 0


BAD_OFFSETS = {
    "decreasing": [0, 3, 2, 6],
    "last past the data": [0, 2, 4, 7],
    "far past the data": [0, 2, 4, 1 << 40],
    "negative": [-1, 2, 4, 6],
    "negative middle": [0, -2, 4, 6],
}


@pytest.mark.parametrize("name", sorted(BAD_OFFSETS))
def test_bad_offsets(htable, table, name):
    data = np.frombuffer(b"abcdef", dtype=np.uint8).copy()
    offs = np.array(BAD_OFFSETS[name], dtype=np.int64)
    good = [b"1", b"2", b"3"]
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(ValueError):
            b.add_many((data, offs), good)
        with pytest.raises(ValueError):
            b.add_many(good, (data, offs))
        assert b.items == 0 and b.data_bytes == 0
        assert b.add_many(good, good) == 3
    with pytest.raises(ValueError):
        table.get_many((data, offs))
    with pytest.raises(ValueError):
        table.lookup_many((data, offs))
    from lsmtrie import hashing

    with pytest.raises(ValueError):
        hashing.digest_many((data, offs))
    assert table.get(b"b") == b"2"


def test_offsets_wrong_length_or_shape(htable, table):
    data = np.frombuffer(b"abcdef", dtype=np.uint8).copy()
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        # 3 keys but 2 values
        with pytest.raises(ValueError):
            b.add_many((data, np.array([0, 2, 4, 6], dtype=np.int64)), [b"1", b"2"])
        # empty offsets array (needs n + 1 >= 1 entries)
        with pytest.raises((ValueError, TypeError)):
            b.add_many((data, np.array([], dtype=np.int64)), [])
        # 2-D offsets
        with pytest.raises((ValueError, TypeError)):
            b.add_many((data, np.array([[0, 2], [4, 6]], dtype=np.int64)), [b"1"])
        # data of another dtype
        with pytest.raises((ValueError, TypeError)):
            b.add_many((data.astype(np.int64), np.array([0, 2, 4, 6], dtype=np.int64)),
                       [b"1", b"2", b"3"])
        with pytest.raises(ValueError):
            b.add_many([b"a", b"b"], [b"1"])
        with pytest.raises(ValueError):
            b.add_many([b"a", b"b"], [b"1", b"2"], deleted=[True])
        assert b.items == 0


def test_int32_offsets_refused_or_converted(tmp_path, htable):
    data = np.frombuffer(b"abcdef", dtype=np.uint8).copy()
    path = str(tmp_path / "i32.htb")
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        try:
            n = b.add_many((data, np.array([0, 2, 4, 6], dtype=np.int32)), [b"1", b"2", b"3"])
        except (ValueError, TypeError):
            assert b.items == 0
            return
        assert n == 3
        b.finish(path)
    with htable.HTable(path) as t:
        assert dict(t.items()) == {b"ab": b"1", b"cd": b"2", b"ef": b"3"}


def test_mismatched_2d_arrays(htable):
    keys = np.zeros((3, 4), dtype=np.uint8)
    vals = np.zeros((2, 4), dtype=np.uint8)
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(ValueError):
            b.add_many(keys, vals)
        assert b.items == 0


# ---------------------------------------------------------------------------------------------
# size limits


def test_oversized_key(htable, lsm):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(lsm.ItemTooLargeError) as ei:
            b.add(b"k" * 65536, b"v")
        assert "65535" in str(ei.value)
        assert isinstance(ei.value, ValueError)
        with pytest.raises(lsm.ItemTooLargeError):
            b.delete(b"k" * 65536)
        with pytest.raises(lsm.ItemTooLargeError):
            b.add_many([b"ok", b"k" * 70000], [b"1", b"2"])
        assert b.items == 0 and b.data_bytes == 0
        assert b.add(b"k" * 65535, b"v")  # the limit itself is fine
        assert b.items == 1


def test_oversized_value(htable, lsm):
    limit = 16 * 1024 * 1024
    big = bytes(limit + 1)
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        with pytest.raises(lsm.ItemTooLargeError) as ei:
            b.add(b"k", big)
        msg = str(ei.value)
        assert str(limit) in msg or "16 MiB" in msg
        with pytest.raises(lsm.ItemTooLargeError):
            b.add_many([b"a", b"b"], [b"1", big])
        assert b.items == 0 and b.data_bytes == 0
        assert b.add(b"a", b"1") is True
        # a legal item that does not fit this small table is refused, not an error
        assert b.add(b"k", bytes(limit)) is False
        assert b.items == 1


def test_oversized_in_packed_and_2d_batches(htable, lsm):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        keys = np.zeros((2, 65536), dtype=np.uint8)
        with pytest.raises(lsm.ItemTooLargeError):
            b.add_many(keys, [b"1", b"2"])
        with pytest.raises(lsm.ItemTooLargeError):
            b.add_many(packed([b"x", b"y" * 65536]), [b"1", b"2"])
        assert b.items == 0


def test_lookup_of_oversized_key(table, lsm):
    # a key that can never be stored: either absent or a ValueError, never a crash
    try:
        assert table.get(b"x" * 70000) is None
    except ValueError:
        pass
    assert table.get(b"a") == b"1"


# ---------------------------------------------------------------------------------------------
# closed objects


def test_closed_table(tmp_path, htable, lsm):
    path = str(tmp_path / "c.htb")
    htable.build_htable(path, [b"a"], [b"1"], buckets=4, sync=False)
    t = htable.HTable(path)
    assert t.get(b"a") == b"1"
    t.close()
    t.close()  # idempotent
    calls = [lambda: t.get(b"a"), lambda: t.lookup(b"a"), lambda: t.get_many([b"a"]),
             lambda: t.lookup_many([b"a"]), lambda: list(t.items()), lambda: t.read_stats(),
             lambda: t.reset_stats()]
    for i, call in enumerate(calls):
        with pytest.raises(lsm.ClosedError):
            call()
    with htable.HTable(path) as t2:
        pass
    with pytest.raises(lsm.ClosedError):
        t2.get(b"a")


def test_closed_table_len_and_info(tmp_path, htable, lsm):
    """'any call after close raises ClosedError' includes len() and .info."""
    path = str(tmp_path / "c.htb")
    htable.build_htable(path, [b"a"], [b"1"], buckets=4, sync=False)
    t = htable.HTable(path)
    assert len(t) == 1 and t.info["items"] == 1
    t.close()
    with pytest.raises(lsm.ClosedError):
        len(t)
    with pytest.raises(lsm.ClosedError):
        t.info


def test_close_during_scan(tmp_path, htable, lsm):
    path = str(tmp_path / "s.htb")
    keys = [b"%05d" % i for i in range(3000)]
    htable.build_htable(path, keys, keys, buckets=64, sync=False)
    t = htable.HTable(path)
    it = t.items()
    first = next(it)
    assert first[0] in set(keys)
    t.close()
    try:
        rest = list(it)
    except lsm.ClosedError:
        pass
    else:  # a scan may finish from what it already fetched, but then it must be right
        assert len(rest) == 2999


def test_closed_builder(tmp_path, htable, lsm):
    b = htable.HTableBuilder(buckets=4, sync=False)
    b.add(b"a", b"1")
    b.close()
    b.close()
    for call in (lambda: b.add(b"k", b"v"), lambda: b.delete(b"k"),
                 lambda: b.add_many([b"k"], [b"v"]), lambda: b.finish(str(tmp_path / "x")),
                 lambda: b.items, lambda: b.data_bytes, lambda: b.capacity):
        with pytest.raises(lsm.ClosedError):
            call()
    assert not os.path.exists(tmp_path / "x")
    with htable.HTableBuilder(buckets=4, sync=False) as b2:
        b2.add(b"a", b"1")
    with pytest.raises(lsm.ClosedError):
        b2.add(b"b", b"2")


def test_finish_twice(tmp_path, htable, lsm):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        b.add(b"a", b"1")
        b.finish(str(tmp_path / "one"))
        with pytest.raises(lsm.Error):
            b.finish(str(tmp_path / "two"))
    assert not os.path.exists(tmp_path / "two")
    with htable.HTable(str(tmp_path / "one")) as t:
        assert t.get(b"a") == b"1"


# ---------------------------------------------------------------------------------------------
# files


def test_open_missing_file(tmp_path, htable, lsm):
    path = str(tmp_path / "missing.htb")
    with pytest.raises(lsm.StorageError) as ei:
        htable.HTable(path)
    assert isinstance(ei.value, OSError)
    assert ei.value.errno == errno.ENOENT
    assert "missing.htb" in str(ei.value)


def test_open_directory(tmp_path, htable, lsm):
    with pytest.raises(lsm.Error):
        htable.HTable(str(tmp_path))


def test_finish_into_missing_directory(tmp_path, htable, lsm):
    with htable.HTableBuilder(buckets=4, sync=False) as b:
        b.add(b"a", b"1")
        with pytest.raises(lsm.StorageError) as ei:
            b.finish(str(tmp_path / "nodir" / "t.htb"))
        assert ei.value.errno == errno.ENOENT


@pytest.mark.parametrize("content", [b"", b"x", b"hello world" * 10, bytes(4200),
                                     bytes(8192 + 104), os.urandom(20000)])
def test_garbage_files(tmp_path, htable, lsm, content):
    path = tmp_path / "garbage"
    path.write_bytes(content)
    with pytest.raises(lsm.CorruptionError):
        htable.HTable(str(path))


def test_non_table_file_with_magic_at_end(tmp_path, htable, lsm):
    path = tmp_path / "fake"
    path.write_bytes(bytes(8000) + b"LTRHTBL1" + bytes(96))
    with pytest.raises(lsm.CorruptionError):
        htable.HTable(str(path))


# ---------------------------------------------------------------------------------------------
# fault injection


def big_builder(htable, sync):
    b = htable.HTableBuilder(buckets=64, sync=sync)
    keys = [b"k%06d" % i for i in range(3000)]
    assert b.add_many(keys, [k * 3 for k in keys]) == 3000
    return b


def test_disk_full_during_finish(tmp_path, htable, lsm, clear_faults):
    path = str(tmp_path / "full.htb")
    clear_faults("write", 0, errno.ENOSPC)
    with big_builder(htable, sync=True) as b:
        with pytest.raises(lsm.DiskFullError) as ei:
            b.finish(path)
        assert ei.value.errno == errno.ENOSPC
    clear_faults("write", 0, 0)
    assert os.listdir(tmp_path) == []


def test_write_fault_sweep(tmp_path, htable, lsm, clear_faults):
    """Failing the n-th write, for every n: either a DiskFullError leaving nothing behind, or
    (once n is past the number of writes) a complete, valid table."""
    succeeded = 0
    for after in list(range(0, 12)) + [20, 50, 100, 1000, 100000]:
        d = tmp_path / f"a{after}"
        d.mkdir()
        path = str(d / "t.htb")
        clear_faults("write", after, errno.ENOSPC)
        try:
            with big_builder(htable, sync=False) as b:
                try:
                    b.finish(path)
                except lsm.DiskFullError:
                    assert os.listdir(d) == [], after
                    continue
        finally:
            clear_faults("write", 0, 0)
        succeeded += 1
        fl.check_layout(fl.parse_file(path))
        assert os.listdir(d) == ["t.htb"]
    assert succeeded >= 1  # a large enough `after` lets the write through


def test_other_write_errno_is_storage_error(tmp_path, htable, lsm, clear_faults):
    path = str(tmp_path / "eio.htb")
    clear_faults("write", 0, errno.EIO)
    with big_builder(htable, sync=False) as b:
        with pytest.raises(lsm.StorageError) as ei:
            b.finish(path)
        assert not isinstance(ei.value, lsm.DiskFullError)
        assert ei.value.errno == errno.EIO
    clear_faults("write", 0, 0)
    assert os.listdir(tmp_path) == []


def test_fsync_failure(tmp_path, htable, lsm, clear_faults):
    """htable.md: write <name>.tmp, fsync it, rename, fsync the directory. A failure of either
    fsync fails finish and leaves neither the table nor the temporary file; a third fsync does
    not exist, so failing it changes nothing."""
    for after in (0, 1, 2):
        d = tmp_path / f"f{after}"
        d.mkdir()
        path = str(d / "t.htb")
        clear_faults("fsync", after, errno.EIO)
        try:
            with big_builder(htable, sync=True) as b:
                if after < 2:
                    with pytest.raises(lsm.StorageError) as ei:
                        b.finish(path)
                    assert not isinstance(ei.value, lsm.DiskFullError)
                    assert ei.value.errno == errno.EIO
                    assert os.listdir(d) == [], after
                else:
                    b.finish(path)
                    assert os.listdir(d) == ["t.htb"]
        finally:
            clear_faults("fsync", 0, 0)


def test_fsync_enospc_is_disk_full(tmp_path, htable, lsm, clear_faults):
    path = str(tmp_path / "t.htb")
    clear_faults("fsync", 0, errno.ENOSPC)
    with big_builder(htable, sync=True) as b:
        with pytest.raises(lsm.DiskFullError):
            b.finish(path)
    clear_faults("fsync", 0, 0)
    assert os.listdir(tmp_path) == []


def test_sync_false_does_not_fsync(tmp_path, htable, clear_faults):
    path = str(tmp_path / "t.htb")
    clear_faults("fsync", 0, errno.EIO)
    with big_builder(htable, sync=False) as b:
        b.finish(path)  # no fsync requested, so the fault never fires
    clear_faults("fsync", 0, 0)
    assert os.path.exists(path)


def test_fault_cleared_builds_again(tmp_path, htable, clear_faults):
    clear_faults("write", 0, errno.ENOSPC)
    clear_faults("write", 0, 0)
    path = str(tmp_path / "ok.htb")
    with big_builder(htable, sync=True) as b:
        b.finish(path)
    fl.check_layout(fl.parse_file(path))
