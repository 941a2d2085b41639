#!/usr/bin/env bash
# Runs tests/reliability/smoke.py (every API, the odd cases) under valgrind
# memcheck and fails on any invalid read/write, use of uninitialised memory or
# definite leak whose stack passes through the pyparams extension.
#
#   tests/reliability/valgrind.sh
#
# Environment:
#   PYTHON           interpreter with torch (default: python3); pyparams must be
#                    importable (built in place: PYTHONPATH is set to the repo root)
#   VALGRIND_LOG     where the full log goes (default: a mktemp file, kept)
#
# PYTHONMALLOC=malloc makes every Python allocation visible to memcheck (no
# obmalloc arenas, whose reads look uninitialised). CPython and torch keep
# memory for the life of the process and have their own benign reports; only
# the records that name pyparams' extension (_C.cpython-*.so, pyparams::) count.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
LOG=${VALGRIND_LOG:-$(mktemp "${TMPDIR:-/tmp}/pyparams-valgrind.XXXXXX.log")}

start=$(date +%s)
status=0
PYTHONMALLOC=malloc PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --num-callers=50 --error-limit=no \
    --log-file="$LOG" "$PYTHON" "$ROOT/tests/reliability/smoke.py" || status=$?
echo "valgrind: smoke.py exited $status after $(( $(date +%s) - start ))s; log: $LOG"

"$PYTHON" - "$LOG" <<'PY'
import re
import sys

log = open(sys.argv[1], errors="replace").read().splitlines()
records, current = [], []
for line in log:
    body = re.sub(r"^==\d+== ?", "", line)
    if not body.strip():
        if current:
            records.append(current)
        current = []
    else:
        current.append(body)
if current:
    records.append(current)

kinds = re.compile(r"Invalid (read|write|free)|uninitialised|Mismatched free|"
                   r"definitely lost|Source and destination overlap|invalid file descriptor")
ours = re.compile(r"pyparams|_C\.cpython")
all_errors = [r for r in records if kinds.search(r[0])]
attributed = [r for r in all_errors if any(ours.search(line) for line in r)]
summary = [line for record in records for line in record if line.startswith("ERROR SUMMARY")]
print(f"valgrind: {len(all_errors)} error record(s) in total, "
      f"{len(attributed)} attributed to pyparams")
for line in summary:
    print("valgrind (whole process, CPython, torch and the loader included):", line)
for record in attributed:
    print("\n".join(record[:40]))
    print("----")
sys.exit(1 if attributed else 0)
PY
echo "valgrind: smoke.py status $status"
exit "$status"
