"""hashing.md: the C MurmurHash3 and bit fields against mmh3 and an independent Python model."""

import random

import mmh3
import numpy as np
import pytest

import formatlib

SEEDS = [0, 1, 0xDEADBEEF, 2**32 - 1]
BUCKET_COUNTS = [1, 2, 16, 64, 1000, 8191, 65535]


def random_keys(seed, n=3000, maxlen=300):
    rng = random.Random(seed)
    keys = [b""] + [bytes([i]) for i in range(256)]
    keys += [rng.randbytes(rng.randint(0, maxlen)) for _ in range(n)]
    keys += [rng.randbytes(n_) for n_ in range(0, maxlen + 1)]  # every length 0..300
    return keys


@pytest.mark.parametrize("seed", SEEDS)
def test_native_murmur_matches_mmh3(seed):
    from lsmtrie import hashing

    for k in random_keys(seed):
        expected = mmh3.hash_bytes(k, seed)
        assert hashing.digest(k, seed) == expected, (k.hex(), seed)


def test_default_seed_is_zero():
    from lsmtrie import hashing

    assert hashing.digest(b"abc") == mmh3.hash_bytes(b"abc", 0)
    assert hashing.digest(b"abc", 1) != hashing.digest(b"abc", 0)


def test_digest_accepts_bytes_like():
    from lsmtrie import hashing

    k = b"hello world, bytes-like"
    expected = mmh3.hash_bytes(k, 9)
    for form in (k, bytearray(k), memoryview(k)):
        assert hashing.digest(form, 9) == expected
    # an unaligned view
    buf = b"x" + k
    assert hashing.digest(memoryview(buf)[1:], 9) == expected


@pytest.mark.parametrize("seed", [0, 0xDEADBEEF])
def test_batch_digest_equals_single(seed):
    from lsmtrie import hashing

    keys = random_keys(seed + 3, n=1500)
    out = hashing.digest_many(keys, seed)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8 and out.shape == (len(keys), 16)
    for i, k in enumerate(keys):
        assert out[i].tobytes() == mmh3.hash_bytes(k, seed)


def test_batch_digest_input_forms():
    from lsmtrie import hashing

    rng = np.random.default_rng(11)
    arr = rng.integers(0, 256, size=(300, 13), dtype=np.uint8)
    rows = [bytes(r) for r in arr]
    expected = np.stack([np.frombuffer(mmh3.hash_bytes(r, 5), dtype=np.uint8) for r in rows])
    assert np.array_equal(hashing.digest_many(arr, 5), expected)
    assert np.array_equal(hashing.digest_many(tuple(rows), 5), expected)
    data = arr.reshape(-1).copy()
    offs = np.arange(0, 13 * 301, 13, dtype=np.int64)
    assert np.array_equal(hashing.digest_many((data, offs), 5), expected)
    # variable lengths through offsets
    keys = [b"", b"a", b"bc", b"", b"defghijklmnopqrstuvwxyz" * 5]
    data = np.frombuffer(b"".join(keys), dtype=np.uint8)
    offs = np.cumsum([0] + [len(k) for k in keys]).astype(np.int64)
    got = hashing.digest_many((data, offs), 5)
    assert [g.tobytes() for g in got] == [mmh3.hash_bytes(k, 5) for k in keys]
    empty = hashing.digest_many([], 5)
    assert empty.shape == (0, 16)


def model_fields(key, seed, buckets):
    kh = formatlib.key_hash(key, seed, buckets)
    return dict(h1=kh.h1, h2=kh.h2, trie_path=kh.h1 >> 28, bucket=kh.home,
                rank=kh.rank(kh.home), bloom=kh.h2 & 0xFFFFFFFF)


@pytest.mark.parametrize("buckets", BUCKET_COUNTS)
def test_fields_native_and_model_agree(buckets):
    from lsmtrie import hashing

    for seed in (0, 0xDEADBEEF):
        for k in random_keys(buckets * 31 + seed, n=600, maxlen=64):
            want = model_fields(k, seed, buckets)
            nat = hashing.fields(k, seed, buckets)
            for name, v in want.items():
                assert getattr(nat, name) == v, (name, k.hex(), buckets)
            assert 0 <= nat.bucket < buckets


def test_fields_default_buckets_is_8191():
    from lsmtrie import hashing

    for k in random_keys(5, n=200, maxlen=20):
        assert hashing.fields(k).bucket == formatlib.key_hash(k, 0, 8191).home


def test_bucket_always_in_range_and_roughly_uniform():
    from lsmtrie import hashing

    keys = [i.to_bytes(4, "little") for i in range(32000)]
    for buckets in (1, 3, 16, 64):
        counts = [0] * buckets
        for k in keys:
            b = hashing.fields(k, 7, buckets).bucket
            assert 0 <= b < buckets
            counts[b] += 1
        mean = len(keys) / buckets
        assert min(counts) > 0.75 * mean and max(counts) < 1.25 * mean
    # the extreme bucket fields map to the first and last bucket
    assert formatlib.bucket_of(0, 65535) == 0
    assert formatlib.bucket_of(0x0FFFFFFF, 65535) == 65534


def test_bucket_uses_only_low_28_bits():
    # the formula, checked on what the core computes: bits above 27 never move the bucket
    from lsmtrie import hashing

    for k in random_keys(9, n=300, maxlen=30):
        f = hashing.fields(k, 0, 8191)
        assert f.bucket == ((f.h1 & 0x0FFFFFFF) * 8191) >> 28


def test_fields_do_not_overlap():
    """Bit allocation table: trie path h1[63:28], bucket h1[27:0], rank h2[63:32],
    bloom h2[31:0]; disjoint and together covering all 128 bits."""
    trie_mask = ((1 << 36) - 1) << 28
    bucket_mask = (1 << 28) - 1
    rank_mask = ((1 << 32) - 1) << 32
    bloom_mask = (1 << 32) - 1
    assert trie_mask & bucket_mask == 0 and rank_mask & bloom_mask == 0
    assert trie_mask | bucket_mask == (1 << 64) - 1
    assert rank_mask | bloom_mask == (1 << 64) - 1
    from lsmtrie import hashing

    for buckets in (16, 64, 8191):
        for k in random_keys(buckets, n=400, maxlen=40):
            for f in (hashing.fields(k, 3, buckets),):
                assert f.trie_path < (1 << 36)
                assert (f.trie_path << 28) == f.h1 & trie_mask
                assert f.bloom == f.h2 & bloom_mask
                # rank is h2's top 32 bits rotated left by bucket % 32
                r = f.bucket % 32
                unrot = ((f.rank >> r) | (f.rank << (32 - r))) & 0xFFFFFFFF if r else f.rank
                assert unrot == (f.h2 & rank_mask) >> 32
                assert f.rank < (1 << 32) and f.bloom < (1 << 32)


def test_rank_rotation_depends_on_bucket():
    h2 = 0x80000001_00000000
    assert formatlib.rank_in(h2, 0) == 0x80000001
    assert formatlib.rank_in(h2, 1) == 0x00000003
    assert formatlib.rank_in(h2, 32) == 0x80000001
    assert formatlib.rank_in(h2, 33) == 0x00000003
    assert formatlib.rank_in(h2, 31) == 0xC0000000


def test_trie_digits():
    from lsmtrie import hashing

    for seed in (0, 0xDEADBEEF):
        for k in random_keys(seed + 1, n=400, maxlen=50):
            d = mmh3.hash_bytes(k, seed)
            h1 = int.from_bytes(d[:8], "little")
            digits = []
            for depth in range(12):
                want = (h1 >> (61 - 3 * depth)) & 7
                assert hashing.trie_digit(d, depth) == want
                digits.append(want)
            # the 12 digits, top first, are exactly the 36-bit trie path
            path = 0
            for x in digits:
                path = (path << 3) | x
            assert path == h1 >> 28
            assert hashing.fields(k, seed).trie_path == path


def test_trie_digits_cover_all_values():
    from lsmtrie import hashing

    seen = [set() for _ in range(12)]
    for i in range(400):
        d = mmh3.hash_bytes(i.to_bytes(4, "little"), 0)
        for depth in range(12):
            seen[depth].add(hashing.trie_digit(d, depth))
    assert all(s == set(range(8)) for s in seen)


def test_bloom_probes_of_the_model_are_k_and_in_range():
    # (the core's probes are checked against these through the filters it writes: test_bloom.py)
    rng = random.Random(12)
    for _ in range(400):
        bloom = rng.getrandbits(32)
        k = rng.randint(1, 30)
        m = rng.choice([8, 16, 24, 64, 1000, 4096 * 8, rng.randint(1, 10**6) * 8])
        probes = formatlib.bloom_probes(bloom, k, m)
        assert len(probes) == k
        assert all(0 <= p < m for p in probes)


def test_bloom_probes_known_first_pair():
    # SplitMix64 first output for state 0 + golden gamma is the well-known 0xE220A8397B1DCDAF
    z = formatlib.bloom_probes(0, 2, 1 << 32)
    assert z == [0x7B1DCDAF, 0xE220A839]
    assert formatlib.bloom_probes(0, 1, 1 << 32) == [0x7B1DCDAF]


def test_bloom_probes_spread():
    # distinct seeds give well-spread probes: over many seeds every byte of a filter is hit
    hits = set()
    for s in range(300):
        for p in formatlib.bloom_probes(s, 11, 512):
            hits.add(p >> 3)
    assert hits == set(range(64))
