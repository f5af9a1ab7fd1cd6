"""cffi builder of lsmtrie's C core, in out-of-line API mode.

The cdef is the region between the cdef markers of each public header (the store, bulk
loading, shard routing, the HTable component, and the hooks of tests and benchmarks), read
verbatim, so the headers are the single description of the C API. The core is compiled with
-fvisibility=hidden: only what those regions declare is exported from the library.
"""

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
HEADERS = [HERE / "include" / name for name in ("lsmtrie.h", "lsmtrie_load.h", "lsmtrie_route.h",
                                                "lsmtrie_htable.h", "lsmtrie_serve.h",
                                                "lsmtrie_testing.h")]
SOURCES = sorted((HERE / "src").glob("*.c"))


def _cdef_region(header: pathlib.Path) -> str:
    text = header.read_text()
    start = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    return text[start : text.index("/* cdef-end */")]


def _cdef() -> str:
    return "\n".join(_cdef_region(h) for h in HEADERS)


# LSMTRIE_SANITIZE=1 builds the core with AddressSanitizer and UBSan, for running the test
# suite under them (LD_PRELOAD the ASan runtime; see docs/development.md).
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"] if os.environ.get("LSMTRIE_SANITIZE") else []
# LSMTRIE_FRAME_POINTERS=1 keeps frame pointers, so that `perf record -g` shows inclusive costs
# of the C functions (docs/development.md "Profiling").
FRAMES = ["-fno-omit-frame-pointer"] if os.environ.get("LSMTRIE_FRAME_POINTERS") else []

ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "lsmtrie._native",
    '#include "lsmtrie_testing.h"\n#include "lsmtrie_load.h"\n#include "lsmtrie_route.h"\n'
    '#include "lsmtrie_serve.h"',
    sources=[str(p.relative_to(HERE.parent)) for p in SOURCES],
    include_dirs=[str(HERE / "include"), str(HERE / "src")],
    extra_compile_args=["-O3", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter", *SANITIZE, *FRAMES],
    extra_link_args=SANITIZE,
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
