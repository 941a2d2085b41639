#!/usr/bin/env bash
# The CUDA checks of pyparams in one run, for a bare, offline machine with a GPU:
#   1. build the extension against that machine's torch, in a copy of the checkout;
#   2. the test suite (CUDA cases included) and the CUDA benchmarks as tests -> $OUT/tests.log;
#   3. the benchmark report on CUDA -> $OUT/report.md, results.csv, results.json, bench.log,
#      and the plots in $OUT/plots.tar;
#   4. the environment (GPU, Python, torch, commit) -> printed and $OUT/env.txt.
# Every stage prints its elapsed seconds; a failing stage does not stop the later ones, and
# the exit status says whether any failed. At most 7 files go to $OUT.
#
#   OUT=/tmp/gpu_out bash tools/gpu_check.sh       # the GPU machine (its $OUT is set)
#   OUT=/tmp/gpu_out PYTHON=.venv/bin/python BUDGET=3600 bash tools/gpu_check.sh  # here
#
# Environment: PYTHON (default python3: torch, pytest and the bench extras); BUDGET, seconds
# for the whole script (default 345: under 6 minutes), shared out as the stages go, the
# bench keeping BENCH_RESERVE (default 130) of it; BENCH_ARGS (default --repeat 3 --consumers
# off); BENCH_DEVICES (default cuda; cpu tries the stage on a machine without CUDA).
# It never builds into the checkout: the shared in-place build stays as it is.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
# Absolute, as given (a venv's python must stay a path into the venv): the stages run in a copy.
if [[ $PYTHON == */* ]]; then
  PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
else
  PYTHON=$(command -v "$PYTHON")
fi
OUT=${OUT:?set OUT to the folder the results go to}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
JOBS=$(nproc)
BUDGET=${BUDGET:-345}
BENCH_RESERVE=${BENCH_RESERVE:-130}
BENCHMARK_TEST_LIMIT=${BENCHMARK_TEST_LIMIT:-35}
# Three rounds: with the walk cache off (Python 3.12) the cold, warm and invalidated columns
# all time the live walk. The consumers section builds its models on CPU whatever --devices
# says: it would time the GPU machine's CPU, and does not fit the budget.
BENCH_ARGS=${BENCH_ARGS:---repeat 3 --consumers off}
BENCH_DEVICES=${BENCH_DEVICES:-cuda}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyparams-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILED=()
TIMES=()
START=$(date +%s)
STAGE_START=$START

left() { echo $(( BUDGET - ($(date +%s) - START) )); }  # seconds of the budget left

stage() {
  STAGE_START=$(date +%s)
  echo
  echo "=== $1 ($(( STAGE_START - START )) s in, $(left) s of the budget left)"
}

stage_done() {  # name, status
  local took=$(( $(date +%s) - STAGE_START ))
  echo "=== $1: $( (( $2 == 0 )) && echo ok || echo "FAILED (status $2)") in ${took} s"
  TIMES+=("$1: ${took} s (status $2)")
  (( $2 == 0 )) || FAILED+=("$1")
}

# ---------------------------------------------------------------- 1. build
stage build
# A copy without the build outputs (and no .git, .venv): the build there cannot touch the
# shared one, and nothing built for another torch or Python can be picked up.
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./build \
  --exclude='*.so' --exclude='*.o' --exclude=__pycache__ --exclude=./bench-results \
  --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.benchmarks -cf - . \
  | tar -C "$WORK" -xf -
cd "$WORK"
export PYTHONPATH=$WORK${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1  # the logs stream, and keep everything if a stage is killed
status=0
MAX_JOBS=${MAX_JOBS:-$JOBS} nice -n 10 "$PYTHON" setup.py --quiet build_ext --inplace \
  || status=$?
if (( status == 0 )); then
  "$PYTHON" -c "
import torch, pyparams
from pyparams import _C
print(f'pyparams {pyparams.__version__} from {pyparams.__file__}')
print(f'built against torch {_C.__torch_version__}, running torch {torch.__version__}')
print(f'walk cache enabled: {pyparams.cache_info().enabled}; CUDA: {torch.cuda.is_available()}')
" || status=$?
fi
stage_done build "$status"
if (( status != 0 )); then
  echo "gpu_check: the build failed; nothing else can run" >&2
  exit 1
fi

# ---------------------------------------------------------------- 2. tests
stage tests
TEST_LIMIT=${TEST_LIMIT:-$(( $(left) - BENCH_RESERVE - BENCHMARK_TEST_LIMIT ))}
(( TEST_LIMIT >= 60 )) || TEST_LIMIT=60
# Parallel and with timeouts where the plugins are installed (optional here).
has() { "$PYTHON" -c "import $1" 2>/dev/null; }
SESSION_TIMEOUT=0  # pytest-timeout 2.3+: ends a run cleanly, failures and summary printed
if has pytest_timeout && "$PYTHON" -c "import inspect, sys, pytest_timeout as t
sys.exit('session_timeout' not in inspect.getsource(t))" 2>/dev/null; then
  SESSION_TIMEOUT=1
fi
pytest_run() {  # seconds, xdist distribution mode, pytest arguments...
  local limit=$1 dist=$2
  shift 2
  local args=(-q -p no:cacheprovider -rfEs --durations=10 --maxfail=10)
  if has xdist; then args+=(-n "$(( JOBS / 2 > 1 ? JOBS / 2 : 1 ))" --dist "$dist"); fi
  if has pytest_timeout; then args+=(--timeout=120); fi
  # A test running when the session's time is up still finishes: a quarter kept for it.
  if (( SESSION_TIMEOUT )); then args+=(--session-timeout=$(( limit * 3 / 4 ))); fi
  # Small CPU ops in many workers: few threads each.
  OMP_NUM_THREADS=2 timeout "$limit" "$PYTHON" -m pytest "${args[@]}" "$@"
}
echo "tests: at most ${TEST_LIMIT} s, then the CUDA benchmarks at most ${BENCHMARK_TEST_LIMIT} s"
status=0
{
  echo "# tests/ (not tests/distributed: nccl needs 2 GPUs; not the soak)"
  # A file's tests on one worker: module fixtures (a whole `pyparams bench --quick`) run once.
  pytest_run "$TEST_LIMIT" loadfile tests --ignore=tests/distributed \
    --ignore=tests/reliability --ignore=tests/test_soak.py || status=$?
  echo
  echo "# benchmarks/ on CUDA, each benchmark run once as a test (checked against torch)"
  pytest_run "$BENCHMARK_TEST_LIMIT" load benchmarks -m needs_cuda --benchmark-disable \
    || { s=$?; (( s == 5 )) || status=$s; }  # 5: no test was selected
} > >(tee "$OUT/tests.log") 2>&1  # not a pipe: the braces set status in this shell
stage_done tests "$status"

# ---------------------------------------------------------------- 3. bench
stage bench
status=0
if [[ $BENCH_DEVICES == *cuda* ]] && ! "$PYTHON" -c "import sys, torch
sys.exit(not torch.cuda.is_available())"; then
  echo "CUDA is not available: the CUDA benchmark report is skipped" | tee "$OUT/bench.log"
else
  BENCH_LIMIT=${BENCH_LIMIT:-$(( $(left) - 10 ))}
  (( BENCH_LIMIT >= 60 )) || BENCH_LIMIT=60
  echo "bench: at most ${BENCH_LIMIT} s"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$BENCH_LIMIT" "$PYTHON" -m pyparams bench --devices $BENCH_DEVICES --no-progress \
    --out "$WORK/bench" $BENCH_ARGS > >(tee "$OUT/bench.log") 2>&1 || status=$?
  for name in report.md results.csv results.json; do
    if [[ -f "$WORK/bench/$name" ]]; then cp "$WORK/bench/$name" "$OUT/"; fi
  done
  # The rest (plots, the consumers' files) as one file: $OUT takes 8 files at most.
  if [[ -d "$WORK/bench" ]]; then
    (cd "$WORK/bench" && find . -type f ! -name report.md ! -name results.csv \
      ! -name results.json | sort | tar -cf "$OUT/plots.tar" -T -)
  fi
fi
stage_done bench "$status"

# ---------------------------------------------------------------- 4. environment
stage environment
{
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
  "$PYTHON" -c "
import platform, sys, torch
print('python', sys.version.split()[0], sys.executable)
cuda = torch.cuda.is_available()
print('torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn',
      torch.backends.cudnn.version() if cuda else None)
print('cuda devices:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print(platform.platform(), '|', platform.processor() or platform.machine())
" || true
  echo "cpus: $(nproc)"
  if git -C "$REPO" rev-parse HEAD >/dev/null 2>&1; then
    echo "commit: $(git -C "$REPO" rev-parse HEAD)"
    echo "uncommitted files: $(git -C "$REPO" status --porcelain | wc -l)"
  else
    echo "commit: unknown (no git checkout here)"
  fi
} > >(tee "$OUT/env.txt") 2>&1
stage_done environment 0

echo
echo "=== stage times"
printf '  %s\n' "${TIMES[@]}"
echo "  total: $(( $(date +%s) - START )) s of a ${BUDGET} s budget"
echo "  files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if (( ${#FAILED[@]} )); then
  echo "gpu_check: FAILED stages: ${FAILED[*]}"
  exit 1
fi
echo "gpu_check: every stage passed"
