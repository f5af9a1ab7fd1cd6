"""The deterministic workload of `lsmtrie report`: uniformly random keys of a fixed size with
values of a fixed size, generated chunk by chunk from seeded generators, so that every engine,
each in a process of its own, gets the same items in the same order without holding them all.

Chunk c's items depend on (seed, c) only. Keys are fresh random bytes; a chunk's values are a
window, at a random offset, of a 64 MiB pool of random bytes (random all the same, and at no
cost per chunk: generating fresh value bytes would add to every engine's load time).
"""

from __future__ import annotations

import numpy as np

CHUNK = 100_000          # items a chunk: one put_many, one WriteBatch
POOL_BYTES = 64 << 20

_pools: dict = {}


def _value_pool(seed: int) -> np.ndarray:
    if seed not in _pools:
        _pools.clear()
        rng = np.random.default_rng([seed, 2**31])
        _pools[seed] = np.frombuffer(rng.bytes(POOL_BYTES), np.uint8)
    return _pools[seed]


def chunk(seed: int, c: int, n: int, key_size: int, value_size: int):
    """Items [c*CHUNK, c*CHUNK + m) of an n-item workload: (keys uint8[m, key_size], values
    uint8[m, value_size]), both 2-D arrays (put_many takes them as they are)."""
    m = min(CHUNK, n - c * CHUNK)
    rng = np.random.default_rng([seed, c])
    keys = np.frombuffer(rng.bytes(m * key_size), np.uint8).reshape(m, key_size)
    total, pool = m * value_size, _value_pool(seed)
    if total > len(pool) // 2:  # large values: fresh bytes rather than most of the pool
        data = np.frombuffer(rng.bytes(total), np.uint8)
    else:
        at = int(rng.integers(0, len(pool) - total))
        data = pool[at: at + total]
    return keys, data.reshape(m, value_size)


def chunks(n: int, key_size: int, value_size: int, seed: int):
    """Every chunk of the workload, in order."""
    for c in range(chunk_count(n)):
        yield chunk(seed, c, n, key_size, value_size)


def chunk_count(n: int) -> int:
    return (n + CHUNK - 1) // CHUNK


def as_bytes(keys: np.ndarray, values: np.ndarray) -> tuple[list, list]:
    """A chunk as lists of bytes objects, for the peers' bindings (which take one item a call)."""
    kb, vb = keys.tobytes(), values.tobytes()
    ks, vs = keys.shape[1], values.shape[1]
    return ([kb[i * ks:(i + 1) * ks] for i in range(len(keys))],
            [vb[i * vs:(i + 1) * vs] for i in range(len(values))])


def present(n: int, key_size: int, value_size: int, seed: int, count: int):
    """count distinct items of the workload (keys and values, bytes), drawn from up to 20
    random chunks, in random order."""
    rng = np.random.default_rng([seed, 7])
    nchunks = chunk_count(n)
    picked = rng.choice(nchunks, size=min(nchunks, 20), replace=False)
    per = -(-count // len(picked))
    keys, values = [], []
    for c in picked:
        k, v = chunk(seed, int(c), n, key_size, value_size)
        for i in rng.choice(len(k), size=min(per, len(k)), replace=False):
            keys.append(k[i].tobytes())
            values.append(v[i].tobytes())
    order = rng.permutation(len(keys))[:count]
    return [keys[i] for i in order], [values[i] for i in order]


def absent(count: int, key_size: int, seed: int) -> list:
    """count keys no workload holds: random, and one byte longer than every key written."""
    rng = np.random.default_rng([seed, 99])
    data = rng.bytes(count * (key_size + 1))
    return [data[i * (key_size + 1):(i + 1) * (key_size + 1)] for i in range(count)]
