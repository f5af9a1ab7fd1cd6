"""Per-bucket Bloom filters: false-positive rate, no false negatives, independent oracle."""

import math

import numpy as np
import pybloomfilter
import pytest

import formatlib as fl

N_PRESENT = 50_000
N_ABSENT = 400_000
KEY_WIDTH = 16


def key_array(prefix, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(n, KEY_WIDTH), dtype=np.uint8)
    a[:, 0] = ord(prefix)  # present keys start with 'P', absent ones with 'A': never equal
    a[:, 1:5] = np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 4)  # distinct rows
    return a


def homes(keys, seed, buckets):
    from lsmtrie import hashing

    d = hashing.digest_many(keys, seed)
    h1 = d[:, :8].copy().view(np.uint64).reshape(-1)
    return (((h1 & np.uint64(0x0FFFFFFF)) * np.uint64(buckets)) >> np.uint64(28)).astype(np.int64)


def expected_fp(present_homes, absent_homes, buckets, bits, k):
    """Expected false positives and their standard deviation for these exact bucket loads."""
    n_b = np.bincount(present_homes, minlength=buckets).astype(np.float64)
    q_b = np.bincount(absent_homes, minlength=buckets).astype(np.float64)
    m_b = 8 * np.ceil(n_b * bits / 8)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_b = np.where(m_b > 0, (1 - np.power(1 - 1 / np.maximum(m_b, 1), k * n_b)) ** k, 0.0)
    mean = float((q_b * p_b).sum())
    sd = math.sqrt(float((q_b * p_b * (1 - p_b)).sum()))
    return mean, sd


@pytest.fixture(scope="module")
def big_table(tmp_path_factory):
    from lsmtrie import htable

    path = str(tmp_path_factory.mktemp("bloom") / "b.htb")
    keys = key_array("P", N_PRESENT, 1)
    vals = np.repeat(np.arange(N_PRESENT, dtype=np.uint64)[:, None], 1, axis=1).view(np.uint8)
    st = htable.build_htable(path, keys, vals, buckets=400, hash_seed=0xB10F,
                             bloom_bits_per_key=16, sync=False)
    assert st.items == N_PRESENT
    return path, keys, vals


@pytest.fixture(scope="module")
def absent_keys():
    return key_array("A", N_ABSENT, 2)


def test_false_positive_rate_16_bits(big_table, absent_keys):
    from lsmtrie import htable

    path, keys, vals = big_table
    with htable.HTable(path) as t:
        k = t.info["bloom_probes"]
        assert t.get_many(absent_keys) == [None] * N_ABSENT
        rs = t.read_stats()
    fp = rs["filter_false_positives"]
    assert rs["filter_negatives"] + fp == N_ABSENT
    rate = fp / N_ABSENT
    mean, sd = expected_fp(homes(keys, 0xB10F, 400), homes(absent_keys, 0xB10F, 400), 400, 16, k)
    # textbook rate at 16 bits/key with the optimal k is 0.046%; allow 5 sigma of noise
    assert mean / N_ABSENT < 0.0006
    assert mean - 5 * sd <= fp <= mean + 5 * sd, (fp, mean, sd)
    assert rate < 0.00075


def test_filter_matches_python_model_exactly(big_table, absent_keys):
    from lsmtrie import htable

    path, keys, vals = big_table
    t_ = fl.parse_file(path, buckets=False)
    sample = [bytes(r) for r in absent_keys[:20000]]
    model = sum(t_.filter_maybe(k) for k in sample)
    with htable.HTable(path) as t:
        t.get_many(sample)
        assert t.read_stats()["filter_false_positives"] == model
    # present keys always pass their home filter in the model too
    for r in keys[::10]:
        assert t_.filter_maybe(bytes(r))


def test_no_false_negatives(big_table):
    from lsmtrie import htable

    path, keys, vals = big_table
    for load_filters in (True, False):
        with htable.HTable(path, load_filters=load_filters) as t:
            status, values = t.lookup_many(keys)
            assert (status == 1).all()
            assert values == [bytes(v) for v in vals]
            rs = t.read_stats()
            assert rs["filter_negatives"] == 0 and rs["found"] == N_PRESENT


def test_against_pybloomfilter_oracle(big_table, absent_keys):
    """An independent Bloom filter of the same size per key: no false negatives, and our
    per-bucket filters are about as good as its configured rate."""
    from lsmtrie import htable

    path, keys, vals = big_table
    with htable.HTable(path) as t:
        k = t.info["bloom_probes"]
        t.get_many(absent_keys)
        ours = t.read_stats()["filter_false_positives"] / N_ABSENT
    configured = (1 - math.exp(-k / 16)) ** k  # rate of 16 bits/key with our k
    bf = pybloomfilter.BloomFilter(N_PRESENT, configured)
    assert 15.5 <= bf.num_bits / N_PRESENT <= 16.5  # equivalent bits per key
    present = [bytes(r) for r in keys]
    for key in present:
        bf.add(key)
    assert all(key in bf for key in present)  # the oracle has no false negatives
    theirs = sum(1 for r in absent_keys if bytes(r) in bf) / N_ABSENT
    assert theirs < 3 * configured  # the oracle is sane
    assert configured / 3 < ours < 1.6 * configured
    assert ours < 2 * theirs + 0.0001


@pytest.mark.parametrize("bits", [2, 4, 8, 10])
def test_rate_follows_bits_per_key(tmp_path, htable, bits):
    keys = key_array("P", 8000, 10 + bits)
    absent = key_array("A", 60000, 20 + bits)
    path = str(tmp_path / "r.htb")
    htable.build_htable(path, keys, keys, buckets=128, bloom_bits_per_key=bits, hash_seed=bits,
                        sync=False)
    with htable.HTable(path) as t:
        k = t.info["bloom_probes"]
        assert 1 <= k <= 30
        assert t.get_many(absent) == [None] * len(absent)
        fp = t.read_stats()["filter_false_positives"]
    mean, sd = expected_fp(homes(keys, bits, 128), homes(absent, bits, 128), 128, bits, k)
    assert mean - 5 * sd - 2 <= fp <= mean + 5 * sd + 2, (bits, k, fp, mean, sd)
    # more bits, fewer false positives: the probe count is a sensible choice for the bits
    best_k = max(1, round(bits * math.log(2)))
    best = (1 - math.exp(-best_k / bits)) ** best_k
    assert fp / len(absent) < 1.5 * best + 5 * sd / len(absent)


def test_bits_per_key_zero_disables_filters(tmp_path, htable):
    keys = key_array("P", 3000, 30)
    absent = key_array("A", 5000, 31)
    path = str(tmp_path / "z.htb")
    htable.build_htable(path, keys, keys, buckets=32, bloom_bits_per_key=0, sync=False)
    t_ = fl.parse_file(path)
    assert t_.footer.bloom_bits_per_key == 0 and t_.footer.bloom_probes == 0
    assert t_.filter_bytes == b"" and set(t_.filter_offsets) == {0}
    with htable.HTable(path) as t:
        assert t.info["filter_bytes"] == 0
        assert t.get_many(keys) == [bytes(r) for r in keys]
        t.reset_stats()
        assert t.get_many(absent) == [None] * len(absent)
        rs = t.read_stats()
        assert rs["filter_negatives"] == 0
        assert rs["bucket_reads"] >= len(absent)


def test_empty_bucket_filter_answers_absent(tmp_path, htable):
    # one item in 64 buckets: 63 empty buckets with 0-byte filters answer without a read
    path = str(tmp_path / "one.htb")
    htable.build_htable(path, [b"only"], [b"v"], buckets=64, sync=False)
    home = fl.key_hash(b"only", 0, 64).home
    absent = [b"a%d" % i for i in range(3000)]
    others = [k for k in absent if fl.key_hash(k, 0, 64).home != home]
    with htable.HTable(path) as t:
        assert t.get_many(others) == [None] * len(others)
        rs = t.read_stats()
        assert rs["bucket_reads"] == 0 and rs["filter_negatives"] == len(others)
