# Sourced by scripts/demo and scripts/test: creates the virtual environment when it is missing
# (or pyproject.toml changed) and rebuilds the C core when native/ changed. Needs only python3
# (3.10+), gcc and pip; everything else comes from the package registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LSMTRIE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python

# plyvel ships manylinux wheels; where pip finds none (another platform or Python) it builds
# from source against LevelDB's headers, which Debian has in libleveldb-dev. Installed only then,
# and only when apt-get can run (as root, or through sudo without a password).
leveldb_headers() {
    [ -e /usr/include/leveldb/db.h ] && return 1  # present: the failure was something else
    command -v apt-get >/dev/null || return 1
    local sudo=""
    [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || return 1
    echo "installing libleveldb-dev (plyvel is built from source here)" >&2
    $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q libleveldb-dev >/dev/null
}

# The tests of serve, routing and the Dask build run real memcached servers and nutcracker
# (twemproxy) and use libmemcached's tools; Debian packages them. Installed when a command is missing, and only
# when apt-get can run (as root, or through sudo without a password); otherwise those tests fail
# and say what is missing. Run by scripts/test (the demo needs none of them).
server_test_tools() {
    local missing=()
    command -v memcached >/dev/null || missing+=(memcached)
    command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || missing+=(nutcracker)
    for tool in memccp memccat memcslap memcaslap; do
        command -v $tool >/dev/null || { missing+=(libmemcached-tools); break; }
    done
    [ ${#missing[@]} = 0 ] && return 0
    command -v apt-get >/dev/null || return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || return 0
    echo "installing ${missing[*]} (for the tests of serve, routing and the Dask build)" >&2
    { $sudo apt-get update -q && $sudo apt-get install -y -q "${missing[@]}"; } >/dev/null ||
        echo "could not install ${missing[*]}: the tests of serve and routing will fail" >&2
}

ensure_env() {
    # (again when pyproject.toml or this script changed what is installed)
    if [ ! -x "$PY" ] || [ ! -f "$VENV/.deps" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.deps" ] ||
       [ "$ROOT/scripts/_env.sh" -nt "$VENV/.deps" ]; then
        echo "setting up $VENV (first run: about a minute)" >&2
        python3 -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip "setuptools>=77" wheel
        # report: the peers and plotting of `lsmtrie report`, whose tests run the whole path;
        # scale: dask.distributed, which tests/test_dask_build.py runs examples/dask_build.py on
        "$PY" -m pip install -q -e "$ROOT[test,report,scale]" >"$VENV/build.log" 2>&1 ||
            { leveldb_headers && "$PY" -m pip install -q -e "$ROOT[test,report,scale]" >"$VENV/build.log" 2>&1; } ||
            { cat "$VENV/build.log" >&2; exit 1; }
        touch "$VENV/.deps" "$VENV/.built"
    fi
    if [ -n "$(find "$ROOT/native" "$ROOT/setup.py" -newer "$VENV/.built" -print -quit)" ]; then
        echo "rebuilding the C core" >&2
        "$PY" -m pip install -q --no-build-isolation --no-deps -e "$ROOT" >"$VENV/build.log" 2>&1 ||
            { cat "$VENV/build.log" >&2; exit 1; }
        touch "$VENV/.built"
    fi
}
