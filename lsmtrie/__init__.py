"""lsmtrie: LSM-trie (Wu, Xu, Shao, Jiang, USENIX ATC 2015) as a Python package with a C core.

`lsmtrie.open(path)` opens a store; `lsmtrie.htable` and `lsmtrie.hashing` expose the HTables
(immutable 4 KB-bucket hash tables) and the key hashing the store is built from;
`lsmtrie.Route` the shard routing of a twemproxy pool (lsmtrie.route).
"""

from . import _binding
from .errors import (
    ClosedError,
    CorruptionError,
    DiskFullError,
    Error,
    InvalidArgumentError,
    ItemTooLargeError,
    LockError,
    ReadOnlyError,
    StorageError,
    VersionError,
)
from .htable import BuildStats, HTable, HTableBuilder, Lookup, TableOptions, build_htable
from .store import Store, WriteBatch, open  # noqa: A001 - lsmtrie.open is the API
from .bulk import load
from .export import dump
from .route import Route
from .serve import Server, memcached_item, memcached_split

__version__ = "0.1.0"

_core_version = _binding.ffi.string(_binding.lib.ltr_version()).decode()
if _core_version != __version__:
    raise ImportError(f"lsmtrie {__version__} found a C core of version {_core_version}; rebuild it")

BUCKET_SIZE = _binding.lib.LTR_BUCKET_SIZE
BUCKET_PAYLOAD = _binding.lib.LTR_BUCKET_PAYLOAD
MAX_KEY_BYTES = _binding.lib.LTR_MAX_KEY
MAX_VALUE_BYTES = _binding.lib.LTR_MAX_VALUE

__all__ = [
    "BUCKET_SIZE", "BUCKET_PAYLOAD", "MAX_KEY_BYTES", "MAX_VALUE_BYTES",
    "open", "Store", "WriteBatch", "load", "dump", "Route", "Server", "memcached_item",
    "memcached_split",
    "BuildStats", "HTable", "HTableBuilder", "Lookup", "TableOptions", "build_htable",
    "ClosedError", "CorruptionError", "DiskFullError", "Error", "InvalidArgumentError",
    "ItemTooLargeError", "LockError", "ReadOnlyError", "StorageError", "VersionError",
]
