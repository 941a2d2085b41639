# Set-up and checks. `make bench` and `make test` each do all the set-up on a
# fresh machine (Python 3.11, pip, g++): a virtual environment in .venv, torch,
# the test/bench dependencies, and pyparams built against that torch.
#
#   make bench                 the benchmark report on the default model zoo
#   make results               benchmarks/results/ regenerated with its manifest, then
#                              README's and docs' result tables rewritten from it
#   make test                  the test suite (PYTEST_JOBS workers, PYTEST_ARGS)
#   make sanitize | valgrind | soak   the reliability checks (see docs/reliability.md;
#                              sanitize takes PYTEST_ARGS too)
#   make lint                  ruff and clang-format, at pinned versions
#
# TORCH_SPEC picks the torch to build against; the default is the CPU build
# this project is pinned to. For a CUDA machine, e.g.: make test TORCH_SPEC=torch==2.13.0
# with pip configured for your CUDA wheel index. VERBOSE=1 shows every compiler
# command line (default: one progress line per compiled file).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BENCH_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` and `make sanitize`: one per core, at most 4 (each
# imports torch and transformers). PYTEST_JOBS=0 runs the suite in one process.
PYTEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); if [ $$n -gt 4 ]; then n=4; fi; \
	if [ $$n -lt 2 ]; then n=0; fi; echo $$n)

PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.pyparams-venv
DEPS_STAMP := $(VENV)/.pyparams-deps
BUILD_STAMP := $(VENV)/.pyparams-built
SOURCES := $(sort $(wildcard csrc/*/*.cpp csrc/*/*.h)) setup.py

LINT_STAMP := $(VENV)/.pyparams-lint
CSRC := $(sort $(wildcard csrc/*/*.cpp csrc/*/*.h))

.PHONY: all install bench results test sanitize valgrind soak lint clean

all: install

# torch (TORCH_SPEC, no build requirement: see build_backend.py) and pyproject.toml's
# [build-system] requires: a build without isolation uses what is installed.
$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	requires=$$($(PY) tools/pyproject_list.py build-system.requires) && \
		$(PY) -m pip install --quiet "$(TORCH_SPEC)" $$requires
	touch $@

# The extension, compiled in place (pyparams/_C*.so) against the torch in $(VENV);
# its objects stay in build/, so a change recompiles only the files it touches.
# $(VENV)/bin leads PATH so that torch finds the ninja pip installed there (without
# one on PATH it falls back to compiling one file at a time).
# The stamp lives in the venv: another Python (PYTHON=python3.12 VENV=.venv-3.12)
# builds its own extension beside this one.
$(BUILD_STAMP): $(VENV_STAMP) $(SOURCES)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) setup.py --quiet build_ext --inplace
	touch $@

# pyparams, editable, with the dependencies pyproject.toml lists for tests and
# benchmarks, and the `pyparams` console script. Its build finds the extension
# above up to date and does not compile it again.
# A free-threaded Python (3.13t) lacks wheels for some of them (transformers needs
# pyyaml, tokenizers and safetensors, which have no cp313t wheels): there each one is
# installed on its own from wheels only (no source builds), a missing one is named,
# and the tests that need it skip.
$(DEPS_STAMP): pyproject.toml | $(BUILD_STAMP)
	if $(PY) -c "import sys, sysconfig; sys.exit(not sysconfig.get_config_var('Py_GIL_DISABLED'))"; then \
		$(PY) -m pip install --quiet --no-build-isolation -e . && \
		test_requires=$$($(PY) tools/pyproject_list.py project.optional-dependencies.test) && \
		for req in $$test_requires; do \
			$(PY) -m pip install --quiet --only-binary=:all: "$$req" >/dev/null 2>&1 \
			|| echo "make: $$req cannot be installed on this free-threaded Python; the tests that need it skip"; \
		done; \
	else \
		$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"; \
	fi
	touch $@

install: $(BUILD_STAMP) $(DEPS_STAMP)

bench: install
	$(VENV)/bin/pyparams bench $(BENCH_ARGS)

# Every file under benchmarks/results/ (zoo, claims, consumers, distributed) and
# manifest.json (commit, date, command, machine, versions, each file's hash); then the
# tables between <!-- pyparams-table: NAME --> markers in README.md and docs/*.md.
results: install
	$(PY) -m pyparams.bench.results --out benchmarks/results
	$(PY) -m pyparams.bench.tables --write

test: install
	$(VENV)/bin/pytest -q -n $(PYTEST_JOBS) $(PYTEST_ARGS)

# PYTEST_ARGS picks the tests (default: the whole suite).
sanitize: install
	PYTHON=$(abspath $(PY)) PYTEST_JOBS=$(PYTEST_JOBS) bash tests/reliability/sanitize.sh $(PYTEST_ARGS)

valgrind: install
	PYTHON=$(abspath $(PY)) bash tests/reliability/valgrind.sh

soak: install
	PYPARAMS_SOAK=1 $(VENV)/bin/pytest -q tests/test_soak.py

# The linters only, at the versions pinned in pyproject.toml's `lint` extra.
$(LINT_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	lint_requires=$$($(PY) tools/pyproject_list.py project.optional-dependencies.lint) && \
		$(PY) -m pip install --quiet $$lint_requires
	touch $@

# ruff (rules and layout in pyproject.toml) and clang-format (.clang-format) on csrc/.
lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CSRC)

clean:
	rm -rf build $(VENV) pyparams/_C*.so *.egg-info
