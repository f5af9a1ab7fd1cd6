"""The store against a dict, driven by a hypothesis state machine: puts, deletes, put_many,
write batches (committed and aborted), reads, flushes and reopens, on stores with tiny tables so
that data goes through every level, the last one included, within a few dozen steps. Each open
draws its value-log threshold (min_blob_size: the default, 0, 32 or 100), so values move between
value logs and tables across reopens."""

import random
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, note, settings, target
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import lsmtrie

POOL = [b"k%d" % i for i in range(40)] + [b"", b"\x00", b"\xff" * 20]
keys = st.one_of(st.sampled_from(POOL), st.binary(max_size=12))
small_values = st.binary(max_size=120)
big_values = st.tuples(st.integers(0, 255), st.integers(4000, 9000)).map(lambda t: bytes([t[0]]) * t[1])
values = st.one_of(small_values, small_values, small_values, big_values)


class Aborted(Exception):
    pass


class StoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lsmtrie-model-")
        self.path = self.dir + "/db"
        self.db = None
        self.model = {}
        self.deepest = -1

    @initialize(
        table_buckets=st.integers(4, 16),
        node_tables=st.integers(2, 4),
        levels=st.integers(2, 3),
        memtable_bytes=st.integers(400, 4000),
        sync=st.booleans(),
        max_open_files=st.sampled_from([None, 2, 5]),  # small: tables closed and reopened
        min_blob_size=st.sampled_from([None, 0, 32, 100]),
    )
    def open_store(self, table_buckets, node_tables, levels, memtable_bytes, sync, max_open_files,
                   min_blob_size):
        cap = int(0.95 * table_buckets * 4080)
        self.opts = dict(table_buckets=table_buckets, node_tables=node_tables, levels=levels,
                         memtable_bytes=min(memtable_bytes, cap), hash_seed=12345)
        self.max_open_files = max_open_files
        note(f"options {self.opts} sync={sync} max_open_files={max_open_files} "
             f"min_blob_size={min_blob_size}")
        self.db = lsmtrie.open(self.path, sync=sync, max_open_files=max_open_files,
                               min_blob_size=min_blob_size, **self.opts)

    def teardown(self):
        if self.deepest >= 0 and currently_in_test_context():
            target(float(self.deepest) / (self.nlevels - 1), label="deepest level reached")
        try:
            if self.db is not None:
                self.db.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- writes ----

    @rule(k=keys, v=values)
    def put(self, k, v):
        self.db.put(k, v)
        self.model[k] = v

    @rule(k=keys, v=small_values)
    def setitem(self, k, v):
        self.db[k] = v
        self.model[k] = v

    @rule(k=keys)
    def delete(self, k):
        self.db.delete(k)
        self.model.pop(k, None)

    @rule(k=st.sampled_from(POOL))
    def delitem(self, k):
        del self.db[k]
        self.model.pop(k, None)

    @rule(pairs=st.lists(st.tuples(keys, small_values), max_size=30))
    def put_many(self, pairs):
        self.db.put_many([k for k, _ in pairs], [v for _, v in pairs])
        for k, v in pairs:
            self.model[k] = v

    @rule(n=st.integers(50, 400), seed=st.integers(0, 10**6), overlap=st.booleans())
    def bulk_put(self, n, seed, overlap):
        """Volume: pushes data through flushes and compactions down to the last level."""
        rng = random.Random(seed)
        ks = [(rng.choice(POOL) if overlap and rng.random() < 0.2 else b"bulk-%d-%d" % (seed, i))
              for i in range(n)]
        vs = [rng.randbytes(rng.randint(0, 40)) for _ in range(n)]
        self.db.put_many(ks, vs)
        for k, v in zip(ks, vs):
            self.model[k] = v

    @rule(seed=st.integers(0, 10**6), frac=st.floats(0.1, 1.0))
    def delete_some(self, seed, frac):
        rng = random.Random(seed)
        live = sorted(self.model)
        for k in rng.sample(live, int(len(live) * frac) // 4):
            self.db.delete(k)
            del self.model[k]

    @rule(ops=st.lists(st.tuples(keys, st.one_of(st.none(), small_values)), max_size=15),
          commit=st.booleans())
    def write_batch(self, ops, commit):
        try:
            with self.db.write_batch() as b:
                for k, v in ops:
                    if v is None:
                        b.delete(k)
                    else:
                        b.put(k, v)
                if not commit:
                    raise Aborted
        except Aborted:
            return
        for k, v in ops:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    # ---- reads ----

    @rule(k=keys)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k)
        assert (k in self.db) == (k in self.model)
        if k in self.model:
            assert self.db[k] == self.model[k]
        else:
            with pytest.raises(KeyError):
                self.db[k]

    @rule(ks=st.lists(keys, max_size=20))
    def get_many(self, ks):
        ks = ks + list(self.model)[:30]
        assert self.db.get_many(ks) == [self.model.get(k) for k in ks]

    # ---- maintenance ----

    @rule()
    def flush(self):
        self.db.flush()
        st_ = self.db.stats()
        assert st_["memtable_items"] == 0

    @rule(with_options=st.booleans(), min_blob_size=st.sampled_from([None, 0, 32, 100]))
    def reopen(self, with_options, min_blob_size):
        self.db.close()
        self.db = lsmtrie.open(self.path, max_open_files=self.max_open_files,
                               min_blob_size=min_blob_size, **(self.opts if with_options else {}))
        assert {k: self.db.options[k] for k in self.opts} == self.opts

    @precondition(lambda self: self.db is not None)
    @invariant()
    def matches_model(self):
        got = list(self.db.items())
        assert len(got) == len(set(k for k, _ in got)), "items() returned a key twice"
        got = dict(got)
        if got != self.model:
            missing = [k for k in self.model if k not in got][:3]
            extra = [k for k in got if k not in self.model][:3]
            wrong = [k for k in self.model if k in got and got[k] != self.model[k]][:3]
            raise AssertionError(f"items() differs: missing {missing}, extra {extra}, wrong {wrong}")
        st_ = self.db.stats()
        levels = [i for i, n in enumerate(st_["items_per_level"]) if n]
        if levels and levels[-1] > self.deepest:
            self.deepest = levels[-1]
        self.nlevels = len(st_["items_per_level"])


StoreModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
test_store_model = StoreModel.TestCase


def test_model_geometry_reaches_the_last_level(tmp_path):
    """The state machine's geometry really reaches the last level with a few bulk_put steps
    (the largest tables, node_tables and levels it draws), and reads stay right there."""
    model = {}
    with lsmtrie.open(str(tmp_path / "db"), table_buckets=16, node_tables=4, levels=3,
                      memtable_bytes=4000) as db:
        rng = random.Random(3)
        for step in range(20):
            ks = [b"bulk-%d-%d" % (step, i) for i in range(400)]
            vs = [rng.randbytes(rng.randint(0, 40)) for _ in ks]
            db.put_many(ks, vs)
            model.update(zip(ks, vs))
        db.flush()
        st_ = db.stats()
        assert st_["items_per_level"][2] > 0 and st_["tables_per_level"][2] > 0
        assert dict(db.items()) == model
        sample = random.Random(4).sample(sorted(model), 500)
        assert db.get_many(sample) == [model[k] for k in sample]
