#!/usr/bin/env bash
# The differential suites under another CPython (default 3.12: the walk cache's dict-watcher
# path, which CI's Python 3.11 never compiles; 3.13 likewise; 3.10 the ma_version_tag path
# over 3.10's own dicts), in .venv-<version>, through
# README's `make test PYTHON=... VENV=...`. A machine without that interpreter says so and
# passes; `bash tools/build_cpython.sh 3.13` builds one. Where the machine has none with the
# walk cache on (3.14 anywhere, or only pyenv's 3.13.0), the suites run in a Debian sid root with
# Debian's python3.X (tools/debian_root.sh: made when missing, about a minute); where the mirror
# cannot serve one, 3.13.0 runs them with the cache off, and a missing 3.14 is skipped, saying so.
#
#   bash .ci/other_python.sh [VERSION] [--sanitize] [--discard]
#
# --sanitize then runs the walk-cache and soundness suites again under ASan + UBSan
# (`make sanitize`, in the same venv and root): the dict watcher's path under the sanitizers.
#
# torch has no CPU wheel for these Pythons here: pip takes the CUDA build, about 5.5 GB in
# the venv. pip's cache stays off (it would hold another 3-4 GB of wheels); --discard (CI's
# choice) removes the venv once its suites pass, so the next Python starts with that room;
# a disk with less than MIN_FREE_GIB free (default 10) says so and skips: these machines'
# disks have been seen from 80 GB free down to a few hundred MB.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
shift || true
discard=
sanitize=
for flag in "$@"; do
  case $flag in
    --discard) discard=1 ;;
    --sanitize) sanitize=1 ;;
    *) echo "usage: bash $0 [VERSION] [--sanitize] [--discard]" >&2; exit 2 ;;
  esac
done
min_free_gib=${MIN_FREE_GIB:-10}
export PIP_NO_CACHE_DIR=1

# The one tools/build_cpython.sh built, python3.X on PATH, or pyenv's (whose shim refuses an
# unselected version). With "--cached", only one whose walk cache can be on: not 3.13.0.
find_python() {
  local root candidate wrong
  wrong="'%d.%d' % sys.version_info[:2] != '$version'"
  [ "${1:-}" = --cached ] && wrong="$wrong or sys.version_info[:3] == (3, 13, 0)"
  root=$(pyenv root 2>/dev/null || true)
  for candidate in "/opt/pyparams-python/$version/bin/python$version" "python$version" \
    "$root"/versions/"$version".*/bin/"python$version"; do
    if "$candidate" -c "import sys; sys.exit($wrong)" >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# Debian's python3.X in a sid root (tools/debian_root.sh), when it can be had and entered.
# sid ships 3.13 and later only: an older one is not worth a root's minute.
debian_python() {
  local root
  [ "${version#3.}" -ge 13 ] || return 1
  root=$(bash tools/debian_root.sh "$version") || return 1
  bash tools/debian_root.sh "$version" "$root" -- true || return 1
  echo "$root"
}

# Runs the command given in the Debian root when one stands in for a missing interpreter.
in_root=()
if python=$(find_python --cached); then
  echo "other-python: $("$python" --version) at $python"
elif root=$(debian_python); then
  python=python$version
  in_root=(bash tools/debian_root.sh "$version" "$root" --)
  echo "other-python: Debian's python$version in $root"
elif python=$(find_python); then
  echo "other-python: $("$python" --version) at $python (the walk cache is off there)"
else
  echo "other-python: no CPython $version on this machine, nor from Debian's archive: skipped"
  exit 0
fi
venv=".venv-$version"
free_gib=$(($(df --output=avail -k . | tail -n 1) / 1024 / 1024))
if [ ! -d "$venv" ] && [ "$free_gib" -lt "$min_free_gib" ]; then
  echo "other-python: $free_gib GiB free on this disk, $venv needs about $min_free_gib: skipped"
  exit 0
fi
suites="tests/test_walk_cache.py tests/test_conformance.py tests/test_safety.py \
  tests/test_fuzz_state_machine.py tests/test_odd_modules.py tests/test_threads.py \
  tests/test_huge_trees.py tests/test_hostile.py tests/test_fuzz_hostile.py \
  tests/test_cache_state.py tests/test_deep_names.py tests/test_delegated_iterators.py \
  tests/test_memo_hashes.py"
start=$SECONDS
"${in_root[@]}" make test PYTHON="$python" VENV="$venv" PYTEST_ARGS="$suites"
echo "other-python: CPython $version suites passed in $((SECONDS - start)) s"
if [ -n "$sanitize" ]; then
  start=$SECONDS
  "${in_root[@]}" make sanitize PYTHON="$python" VENV="$venv" PYTEST_ARGS="tests/test_walk_cache.py \
    tests/test_safety.py tests/test_hostile.py tests/test_cache_state.py tests/test_threads.py"
  echo "other-python: CPython $version suites under ASan + UBSan passed in $((SECONDS - start)) s"
fi
if [ -n "$discard" ]; then
  rm -rf "$venv"
  echo "other-python: $venv removed"
fi
