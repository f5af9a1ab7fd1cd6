"""Property tests: an HTable built from random operations behaves like a dict."""

import os
import random
import tempfile

import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import formatlib as fl

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

keys_st = st.one_of(st.binary(max_size=2), st.binary(max_size=40))
big_value = st.builds(lambda n, b: bytes([b]) * n, st.integers(4060, 6000), st.integers(0, 255))
value_st = st.one_of(st.none(), st.binary(max_size=120), big_value)
ops_st = st.lists(st.tuples(keys_st, value_st), max_size=120)
# high fills are where buckets overload and migrate; low fills exercise sparse tables
fill_st = st.one_of(st.floats(0.05, 1.0), st.floats(0.9, 1.0), st.just(1.0))


def build_and_check(ops, extra, extra_seed, buckets, fill, bits, seed, probes):
    from lsmtrie import htable

    rng = random.Random(extra_seed)
    ops = list(ops)
    # bulk random items (cheap to generate) so that small tables fill up and migrate
    for _ in range(extra):
        k = rng.randbytes(rng.randint(0, 24))
        v = None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 150))
        ops.insert(rng.randint(0, len(ops)), (k, v))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.htb")
        model = {}
        with htable.HTableBuilder(buckets=buckets, fill=fill, bloom_bits_per_key=bits,
                                  hash_seed=seed, sync=False) as b:
            for k, v in ops:
                ok = b.add(k, v) if v is not None else b.delete(k)
                if not ok:
                    break
                model[k] = v
            assert b.items == len(model)
            stats = b.finish(path)
        assert stats.items == len(model)
        assert stats.tombstones == sum(v is None for v in model.values())
        assert stats.max_chain <= 4
        event(f"records={'yes' if stats.records else 'no'}")
        event(f"overflow={'yes' if stats.overflow_items else 'no'}")
        event(f"chain>1={'yes' if stats.max_chain > 1 else 'no'}")
        event(f"full={'yes' if len(model) < len(ops) else 'no'}")

        absent = [k for k in probes if k not in model]
        absent += [b"\x00absent" + rng.randbytes(8) for _ in range(50)]
        with htable.HTable(path) as t:
            assert len(t) == len(model)
            for k, v in model.items():
                s, got = t.lookup(k)
                if v is None:
                    assert (s, got) == (htable.Lookup.DELETED, None), k
                else:
                    assert (s, got) == (htable.Lookup.FOUND, v), k
            for k in absent:
                assert t.lookup(k) == (htable.Lookup.ABSENT, None), k
            q = list(model) + absent
            rng.shuffle(q)
            assert t.get_many(q) == [model.get(k) for k in q]
            status, values = t.lookup_many(q)
            want = [0 if k not in model else (2 if model[k] is None else 1) for k in q]
            assert np.array_equal(status, np.array(want, dtype=np.int8))
            assert values == [model.get(k) for k in q]
            scanned = list(t.items())
            assert len(scanned) == len(model)
            assert dict(scanned) == model

        tab = fl.parse_file(path)
        fl.check_layout(tab, expected=model)
        for k in q[:200]:
            want = (fl.ABSENT, None) if k not in model else \
                ((fl.DELETED, None) if model[k] is None else (fl.FOUND, model[k]))
            assert tab.lookup(k) == want
        assert fl.reencode(tab) == tab.data
        return stats


@SETTINGS
@given(ops=ops_st, extra=st.integers(0, 3000), extra_seed=st.integers(0, 2**32 - 1),
       buckets=st.integers(1, 64), fill=fill_st,
       bits=st.sampled_from([1, 4, 10, 16, 64]), seed=st.integers(0, 2**32 - 1),
       probes=st.lists(keys_st, max_size=30))
# an item larger than a bucket whose home bucket is also a migration source
@example(ops=[(b"\x01", bytes(4077))], extra=1132, extra_seed=7, buckets=30, fill=1.0, bits=1,
         seed=10685, probes=[])
def test_htable_behaves_like_a_dict(ops, extra, extra_seed, buckets, fill, bits, seed, probes):
    build_and_check(ops, extra, extra_seed, buckets, fill, bits, seed, probes)


@SETTINGS
@given(ops=ops_st, extra=st.integers(0, 600), extra_seed=st.integers(0, 2**32 - 1),
       buckets=st.integers(1, 16), fill=fill_st, seed=st.integers(0, 2**32 - 1),
       probes=st.lists(keys_st, max_size=30))
def test_htable_without_filters_behaves_like_a_dict(ops, extra, extra_seed, buckets, fill, seed,
                                                    probes):
    build_and_check(ops, extra, extra_seed, buckets, fill, 0, seed, probes)


@settings(max_examples=25, deadline=None)
@given(extra_seed=st.integers(0, 2**32 - 1), buckets=st.integers(1, 64),
       fill=st.floats(0.9, 1.0), seed=st.integers(0, 2**32 - 1))
def test_full_tables_balance(extra_seed, buckets, fill, seed):
    """Tables filled to the budget with small items: every item readable, chains bounded."""
    stats = build_and_check([], 4000 + 60 * buckets, extra_seed, buckets, fill, 16, seed, [])
    assert stats.max_chain <= 4
