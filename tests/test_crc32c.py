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


# ---- each implementation by name (native/src/crc32c.c), not only the one ltr_crc32c picks: the
# table fallback runs only where the CPU lacks SSE4.2, so it is checked here directly ----

IMPLS = {"soft": 0, "hw": 1}


def _using(impl: int, data: bytes, crc: int = 0) -> int:
    from lsmtrie import _binding as b

    out = b.ffi.new("uint32_t *")
    assert b.lib.ltr_crc32c_using(impl, crc, b.ffi.from_buffer(data), len(data), out) == 0
    return out[0]


def _available(name: str) -> bool:
    from lsmtrie import _binding as b

    return bool(b.lib.ltr_crc32c_impls() >> IMPLS[name] & 1)


def test_the_table_implementation_is_always_there_and_unknown_ones_are_refused():
    from lsmtrie import _binding as b

    out = b.ffi.new("uint32_t *")
    assert _available("soft")
    assert b.lib.ltr_crc32c_using(2, 0, b"x", 1, out) == -1
    assert b.lib.ltr_crc32c_using(-1, 0, b"x", 1, out) == -1


# Lengths at the edges of each implementation's blocks: 8-byte words, the three streams' rounds
# of 1008 bytes, and a bucket's 4092.
EDGE_LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 127, 1007, 1008, 1009, 2016, 3023, 3024, 3025, 4092,
                4096, 5096, 12300]


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_each_implementation_matches_the_reference_at_block_edges(name):
    if not _available(name):
        pytest.skip(f"this CPU cannot run the {name} implementation")
    rng = random.Random(7)
    base = rng.randbytes(12300 + 64)
    for n in EDGE_LENGTHS:
        for off in (0, 1, 5, 13, 32):
            data = base[off:off + n]
            crc = rng.getrandbits(32)
            assert _using(IMPLS[name], data, crc) == formatlib.crc32c_py(data, crc), (n, off)


def test_the_implementations_agree_on_random_inputs():
    if not _available("hw"):
        pytest.skip("this CPU has no SSE4.2: only the table implementation runs")
    rng = random.Random(8)
    base = rng.randbytes(40000)
    for _ in range(3000):
        n = rng.choice([rng.randrange(0, 200), rng.randrange(0, 40000 - 64), 4092])
        off = rng.randrange(0, 64)
        data = base[off:off + n]
        crc = rng.getrandbits(32)
        assert _using(IMPLS["hw"], data, crc) == _using(IMPLS["soft"], data, crc), (n, off)


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_each_implementation_sees_a_flipped_bit_anywhere_in_a_bucket(name):
    # A CRC detects every single-bit error; a 4092-byte bucket crosses every part of both
    # implementations (the streams of a round, the words after it, the last bytes).
    if not _available(name):
        pytest.skip(f"this CPU cannot run the {name} implementation")
    data = bytearray(random.Random(9).randbytes(4092))
    c0 = _using(IMPLS[name], bytes(data))
    for bit in range(0, 4092 * 8, 61):
        data[bit // 8] ^= 1 << (bit % 8)
        assert _using(IMPLS[name], bytes(data)) != c0, bit
        data[bit // 8] ^= 1 << (bit % 8)
