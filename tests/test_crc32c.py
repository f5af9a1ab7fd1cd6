"""CRC32C (Castagnoli): C core vs known vectors and the pure-Python reference in formatlib."""

import random

import pytest

import formatlib

# RFC 3720 (iSCSI) appendix B.4 vectors plus the classic check value.
VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"a", 0xC1D04330),
]


@pytest.mark.parametrize("data,expected", VECTORS)
def test_pure_python_vectors(data, expected):
    assert formatlib.crc32c_py(data) == expected


@pytest.mark.parametrize("data,expected", VECTORS)
def test_native_vectors(data, expected):
    from lsmtrie.hashing import crc32c

    assert crc32c(data) == expected


def test_lengths_0_to_100_match_reference():
    from lsmtrie.hashing import crc32c

    rng = random.Random(1)
    for n in range(0, 101):
        for _ in range(3):
            data = rng.randbytes(n)
            assert crc32c(data) == formatlib.crc32c_py(data), n


def test_unaligned_buffers():
    from lsmtrie.hashing import crc32c

    rng = random.Random(2)
    base = bytearray(rng.randbytes(600))
    for off in range(0, 16):
        for n in (0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 255, 511):
            view = memoryview(base)[off:off + n]
            expected = formatlib.crc32c_py(bytes(view))
            assert crc32c(view) == expected, (off, n)
            assert crc32c(bytes(view)) == expected


def test_incremental():
    from lsmtrie.hashing import crc32c

    rng = random.Random(3)
    for _ in range(200):
        a = rng.randbytes(rng.randint(0, 300))
        b = rng.randbytes(rng.randint(0, 300))
        assert crc32c(b, crc32c(a)) == crc32c(a + b)
        assert formatlib.crc32c_py(b, formatlib.crc32c_py(a)) == formatlib.crc32c_py(a + b)
        assert crc32c(b, crc32c(a)) == formatlib.crc32c_py(a + b)


def test_large_buffer_and_bucket_sized():
    from lsmtrie.hashing import crc32c

    rng = random.Random(4)
    for n in (4092, 4096, 4100, 70000):
        data = rng.randbytes(n)
        assert crc32c(data) == formatlib.crc32c_py(data)


def test_detects_single_bit_flips():
    from lsmtrie.hashing import crc32c

    data = bytearray(random.Random(5).randbytes(200))
    c0 = crc32c(bytes(data))
    for i in range(0, 200 * 8, 37):
        data[i // 8] ^= 1 << (i % 8)
        assert crc32c(bytes(data)) != c0
        data[i // 8] ^= 1 << (i % 8)
    assert crc32c(bytes(data)) == c0


def test_formatlib_uses_a_correct_checksum():
    # formatlib.crc32c may delegate to the C core: it must agree with the reference.
    rng = random.Random(6)
    for n in (0, 1, 5, 4092, 5000):
        d = rng.randbytes(n)
        assert formatlib.crc32c(d) == formatlib.crc32c_py(d)
