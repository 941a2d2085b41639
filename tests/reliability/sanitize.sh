#!/usr/bin/env bash
# Builds pyparams with -fsanitize=address,undefined in a temporary copy of the
# source tree and runs the whole test suite, then smoke.py, under it.
#
#   tests/reliability/sanitize.sh [pytest args...]   (default: the whole suite, tests/)
#
# Environment:
#   PYTHON                 interpreter with torch, pytest, hypothesis (default: python3)
#   PYPARAMS_SANITIZE_DIR  where to build (default: a new mktemp -d; kept for inspection)
#   PYTEST_JOBS            pytest-xdist workers (default 0: one process); each worker
#                          inherits the preloaded runtimes and writes its own reports
#
# The ASan and UBSan runtimes are preloaded (python itself is not instrumented),
# PYTHONMALLOC=malloc routes every Python object through malloc so that ASan sees
# a use-after-free of a PyObject, and detect_leaks=0: CPython and torch leave
# memory allocated at exit by design, which LeakSanitizer would report as leaks
# (leaks are checked by valgrind.sh and test_soak.py instead). Every report is
# written under $DIR/reports; the script fails if there is any, or if a test fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
CXX=${CXX:-c++}
DIR=${PYPARAMS_SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/pyparams-sanitize.XXXXXX")}

echo "sanitize: copying $ROOT to $DIR"
mkdir -p "$DIR"
# Sources only: the tests run on $PYTHON's own environment, so the virtual environments
# (.venv-3.12 with its CUDA torch is 5 GB) stay behind.
tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude='*.so' --exclude='__pycache__' \
    --exclude='.hypothesis' --exclude=./.venv --exclude='./.venv-*' --exclude=./venv \
    -cf - . | tar -C "$DIR" -xf -

echo "sanitize: building with PYPARAMS_SANITIZE=1"
start=$(date +%s)
(cd "$DIR" && PYPARAMS_SANITIZE=1 "$PYTHON" setup.py build_ext --inplace >"$DIR/build.log" 2>&1) \
    || { tail -n 40 "$DIR/build.log"; exit 1; }
echo "sanitize: built in $(( $(date +%s) - start ))s"

REPORTS="$DIR/reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
export LD_PRELOAD="$("$CXX" -print-file-name=libasan.so):$("$CXX" -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$REPORTS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan"
export PYTHONMALLOC=malloc
export PYTHONPATH="$DIR"

# Make sure the sanitized build is the one imported.
(cd "$DIR" && "$PYTHON" -c "import pyparams._C as c, sys; f = c.__file__; \
    sys.exit(0 if f.startswith('$DIR') and 'libasan' in open('/proc/self/maps').read() else f'not sanitized: {f}')")

start=$(date +%s)
status=0
workers=()
[[ ${PYTEST_JOBS:-0} == 0 ]] || workers=(-n "$PYTEST_JOBS")
(cd "$DIR" && "$PYTHON" -m pytest -q -p no:cacheprovider "${workers[@]}" "${@:-tests}") || status=$?
(cd "$DIR" && "$PYTHON" tests/reliability/smoke.py) || status=$?
echo "sanitize: tests ran in $(( $(date +%s) - start ))s (pytest/smoke status $status)"

reports=$( (grep -lE "ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer" \
    "$REPORTS"/* 2>/dev/null || true) | wc -l)
echo "sanitize: $reports sanitizer report(s) in $REPORTS"
if [ "$reports" -ne 0 ]; then
    for report in "$REPORTS"/*; do
        echo "---- $report"
        head -n 30 "$report"
    done
    exit 1
fi
exit "$status"
