"""The shape of the C core: what the library exports, and that its files' calls form a tree.

docs/development.md "Where things are" maps each native/src file to what it may call; these
tests hold the code to that map, so a call that closes a circle (or one the map does not name)
fails here rather than in a reviewer's reading.
"""

import collections
import pathlib
import re
import shutil
import os
import subprocess
import sys
import textwrap

import lsmtrie._native

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "native" / "src"
HEADERS = sorted((ROOT / "native" / "include").glob("*.h"))
DEFINITION = re.compile(r"^(?!static)[A-Za-z_][\w \*]*?\b(\w+)\(([^;{]*?)\)\s*\{", re.M | re.S)


def _code(path: pathlib.Path) -> str:
    return re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)


def call_graph() -> dict[str, set[str]]:
    """Which files each file calls (by the external functions each defines), error.c aside."""
    owner = {}
    for f in sorted(SRC.glob("*.c")):
        for m in DEFINITION.finditer(_code(f)):
            owner.setdefault(m.group(1), f.stem)
    calls = collections.defaultdict(set)
    for f in sorted(SRC.glob("*.c")):
        called = set(re.findall(r"\b(\w+)\s*\(", _code(f)))
        calls[f.stem] = {owner[n] for n in called if n in owner and owner[n] != f.stem} - {"error"}
    return dict(calls)


def documented_map() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "development.md").read_text()
    section = text[text.index("## Where things are") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(\w+)\.c` \| [^|]* \|([^|]*)\|$", section, re.M)
    return {name: {c.strip() for c in callees.split(",") if c.strip()} for name, callees in rows}


def test_the_library_exports_exactly_the_api():
    nm = shutil.which("nm")
    assert nm, "nm (binutils) is needed to read the library's exports"
    out = subprocess.run([nm, "-D", "--defined-only", lsmtrie._native.__file__],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    declared = set()
    for h in HEADERS:
        text = h.read_text()
        region = text[text.index("/* cdef-begin */") : text.index("/* cdef-end */")]
        declared |= set(re.findall(r"\b(ltr_\w+)\s*\(", re.sub(r"/\*.*?\*/", "", region, flags=re.S)))
    assert exported - {"PyInit__native"} == declared


def test_the_calls_between_files_form_no_circle():
    graph = call_graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", "a circle of calls: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_store_files_call_only_those_listed_before_them_in_store_int_h():
    text = (SRC / "store_int.h").read_text()
    listing = text[: text.index("Lock order")]
    order = []
    for names in re.findall(r"^ \*   ((?:\w+\.c(?:, )?)+)", listing, re.M):
        order.append([n[:-2] for n in names.split(", ")])
    rank = {name: i for i, group in enumerate(order) for name in group}
    assert len(rank) >= 15, "the listing of the store's files in store_int.h was not found"
    store_files = {f.stem for f in SRC.glob("*.c")} & set(rank)
    graph = call_graph()
    for f in sorted(store_files):
        for callee in graph[f] & store_files:
            assert rank[callee] < rank[f], f"{f}.c calls {callee}.c, listed after it in store_int.h"
    unlisted = {f.stem for f in SRC.glob("*.c") if f.stem.startswith("store_")} - set(rank)
    assert not unlisted, f"store files missing from store_int.h's listing: {sorted(unlisted)}"


def test_the_development_map_names_every_file_and_exactly_its_calls():
    documented = documented_map()
    graph = call_graph()
    assert set(documented) == {f.stem for f in SRC.glob("*.c")}
    wrong = {f: (sorted(graph[f]), sorted(documented[f])) for f in graph if graph[f] != documented[f]}
    assert not wrong, f"calls (in the code, in docs/development.md) that differ: {wrong}"


def test_the_package_imports_and_opens_a_store_without_the_test_and_bench_packages(tmp_path):
    """pyproject.toml's runtime dependencies are what the package needs: with the packages of
    the test and bench extras made unimportable, `import lsmtrie` works and a store opens,
    takes writes and reads them back."""
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        HIDDEN = {{"pybloomfilter", "mmh3", "pytest", "hypothesis", "plyvel", "rocksdict",
                   "matplotlib", "pymemcache", "yaml"}}
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ImportError("hidden: " + name)
        for name in list(sys.modules):
            if name.split(".")[0] in HIDDEN:
                del sys.modules[name]
        sys.meta_path.insert(0, Hide())
        import lsmtrie, lsmtrie.cli, lsmtrie.demo, lsmtrie.hashing, lsmtrie.htable, lsmtrie.route
        assert lsmtrie.Route("fnv1a_64", "ketama", 3).shard_of([b"a"]).tolist() == [0]
        with lsmtrie.open({str(tmp_path / "db")!r}) as db:
            db.put_many([b"a", b"b"], [b"1", b"2"])
            assert db.get(b"b") == b"2"
        assert not any(m.split(".")[0] in HIDDEN for m in sys.modules)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
