#!/usr/bin/env bash
# The differential suites under another CPython (default 3.12: the walk cache's dict-watcher
# path, which CI's Python 3.11 never compiles; 3.13 likewise), in .venv-<version>, through
# README's `make test PYTHON=... VENV=...`. A machine without that interpreter says so and
# passes; `bash tools/build_cpython.sh 3.13` builds one.
#
#   bash .ci/other_python.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}

# The one tools/build_cpython.sh built (a later 3.13 than pyenv's 3.13.0, where the walk
# cache is off), python3.X on PATH, or pyenv's (whose shim refuses an unselected version).
find_python() {
  local root candidate
  root=$(pyenv root 2>/dev/null || true)
  for candidate in "/opt/pyparams-python/$version/bin/python$version" "python$version" \
    "$root"/versions/"$version".*/bin/"python$version"; do
    if "$candidate" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$version')" \
      >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! python=$(find_python); then
  echo "other-python: no CPython $version on this machine: skipped"
  exit 0
fi
echo "other-python: $("$python" --version) at $python"
suites="tests/test_walk_cache.py tests/test_conformance.py tests/test_safety.py \
  tests/test_fuzz_state_machine.py tests/test_odd_modules.py tests/test_threads.py \
  tests/test_huge_trees.py tests/test_hostile.py tests/test_fuzz_hostile.py"
start=$SECONDS
make test PYTHON="$python" VENV=".venv-$version" PYTEST_ARGS="$suites"
echo "other-python: CPython $version suites passed in $((SECONDS - start)) s"
