"""``make results``: regenerate everything under ``benchmarks/results/`` and its manifest.

One command runs, in order, the zoo with the claims and the consumers
(``pyparams bench --consumers on``) and the distributed section (``pyparams bench
--distributed``), all into one folder, then writes ``manifest.json``: the commit, the date,
the command, the machine, Python, torch, and every file written (size and SHA-256). Files
the previous manifest listed are removed first, so nothing stays that this run did not
write; the README's and docs' tables are then regenerated from these files with
``python -m pyparams.bench.tables --write``.

    python -m pyparams.bench.results --out benchmarks/results            # make results
    python -m pyparams.bench.results --out /tmp/results --quick          # the pipeline, fast
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pyparams.bench import claims, consumer_report, distributed_report, report

__all__ = ["MANIFEST", "PRODUCED", "main", "manifest"]

MANIFEST = "manifest.json"
# Every file the command writes (the plots only with matplotlib installed).
PRODUCED: tuple[str, ...] = (
    *report.OUTPUT_FILES,
    *claims.OUTPUT_FILES,
    *consumer_report.OUTPUT_FILES,
    *distributed_report.OUTPUT_FILES,
    MANIFEST,
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source() -> dict[str, object]:
    """The commit a run measures, and whether the tree differed from it: taken before the
    run writes anything (its own output, tracked files, would count as a change)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "tree_modified": None if status is None else bool(status),
    }


def manifest(
    out: Path, command: str, steps: Sequence[Sequence[str]], measured: dict[str, object]
) -> dict[str, object]:
    """Where the files in ``out`` came from (``measured``: :func:`source` at the start),
    and each file with its size and hash."""
    from pyparams.bench.runner import machine_info

    machine = machine_info()
    return {
        **measured,
        "date": machine.pop("timestamp"),
        "command": command,
        "steps": [" ".join(step) for step in steps],
        "machine": {
            key: machine[key]
            for key in ("platform", "processor", "cpu_count", "memory_bytes", "cuda_device")
        },
        "sweep": _recorded_sweep(out),
        "python": machine["python"],
        "torch": machine["torch"],
        "transformers": machine["transformers"],
        "pyparams": machine["pyparams"],
        "files": [
            {"path": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(out.iterdir())
            if path.is_file() and path.name != MANIFEST
        ],
    }


def _recorded_sweep(out: Path) -> object:
    """The after state's sweep as the zoo run recorded it (``None`` without a zoo run)."""
    zoo = out / "results.json"
    return json.loads(zoo.read_text()).get("after_other_work") if zoo.exists() else None


def _remove_previous(out: Path) -> None:
    """Remove what the previous manifest listed: a file this run does not write again
    (a plot without matplotlib, say) must not stay behind looking current."""
    listed = out / MANIFEST
    if not listed.exists():
        return
    for entry in json.loads(listed.read_text()).get("files", []):
        (out / Path(entry["path"]).name).unlink(missing_ok=True)
    listed.unlink()


def _steps(out: Path, quick: bool) -> list[list[str]]:
    """The ``pyparams`` command lines the run is made of."""
    zoo = ["bench", "--consumers", "on", "--no-progress", "--out", str(out)]
    distributed = ["bench", "--distributed", "--out", str(out)]
    if quick:  # the pipeline on a small zoo, for checking it, never for committing
        zoo += ["--quick", "--consumer-models", "moe-2x4", "gpt2-tiny", "--sweep-mib", "16"]
        distributed += ["--models", "depth-10", "--repeat", "1"]
    return [zoo, distributed]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every step into ``--out``, then write the manifest; the first failing step stops
    the run (its exit status is returned, no manifest is written)."""
    from pyparams.cli import main as pyparams

    parser = argparse.ArgumentParser(
        prog="python -m pyparams.bench.results", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small zoo and one distributed model: checks the pipeline",
    )
    args = parser.parse_args(argv)
    command = " ".join(["python -m pyparams.bench.results", *(argv or sys.argv[1:])])
    measured = source()
    args.out.mkdir(parents=True, exist_ok=True)
    _remove_previous(args.out)
    steps = _steps(args.out, args.quick)
    for step in steps:
        print(f"pyparams {' '.join(step)}", file=sys.stderr, flush=True)
        status = pyparams(step)
        if status != 0:
            return status
    (args.out / MANIFEST).write_text(
        json.dumps(
            manifest(args.out, command, [["pyparams", *s] for s in steps], measured), indent=1
        )
        + "\n"
    )
    print(f"wrote {MANIFEST} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
