# Sourced by scripts/demo and scripts/test: creates the virtual environment when it is missing
# (or pyproject.toml changed) and rebuilds the C core when native/ changed. Needs only python3
# (3.10+), gcc and pip; everything else comes from the package registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LSMTRIE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python

ensure_env() {
    if [ ! -x "$PY" ] || [ ! -f "$VENV/.deps" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.deps" ]; then
        echo "setting up $VENV (first run: about a minute)" >&2
        python3 -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip "setuptools>=77" wheel
        "$PY" -m pip install -q -e "$ROOT[test]" >"$VENV/build.log" 2>&1 ||
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
