# The two entry points of README.md: `make demo` and `make test`. Each creates the virtual
# environment when it is missing and rebuilds the C core when its sources change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NATIVE := $(wildcard native/src/*.c native/src/*.h native/include/*.h) native/build_ffi.py setup.py

.PHONY: demo test bench clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77" wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.built: $(VENV)/.deps $(NATIVE)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

demo: $(VENV)/.built
	$(PY) -m lsmtrie demo

test: $(VENV)/.built
	$(PY) -m pytest -q tests

bench: $(VENV)/.built
	$(PY) bench/htable.py

clean:
	rm -rf build *.egg-info lsmtrie/_native*.so lsmtrie/_native.c lsmtrie/_native.o
