"""Walks README's set-up paths as a new user would, in fresh virtual environments.

    python3 .ci/readme_paths.py        (from the checkout, after `make test` built .venv)

1. The make path: `make bench BENCH_ARGS=--quick` (`make test` is .ci/run's own step).
2. Every README block marked `<!-- ci: NAME -->` runs in bash, line by line as written,
   in a fresh clone of this checkout (no .venv, no built extension, like a new user's).

The one deviation, to stay in CI's budget: the line `pip install --no-build-isolation .`
installs a wheel built once from .venv's compiled objects (same torch version) instead of
compiling the extension again; `make` compiles it from scratch in the same CI run. The
script fails if a marked block no longer holds that line, so README cannot drift from it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_LINE = re.compile(r"^pip install --no-build-isolation \.(?=\s|$)", re.MULTILINE)
BLOCK = re.compile(r"<!-- ci: ([\w-]+) -->\s*```(?:bash)?\n(.*?)```", re.DOTALL)


def step(title: str, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    print(f"readme-paths: {title}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True)
    print(f"readme-paths: {title}: ok in {time.perf_counter() - start:.0f} s", flush=True)


def fresh_env() -> dict[str, str]:
    """This environment without any virtual environment or import path of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    return env


def main() -> int:
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    if not blocks:
        sys.exit("readme-paths: README has no <!-- ci: NAME --> block")
    work = Path(tempfile.mkdtemp(prefix="pyparams-readme-"))
    step(
        "make bench --quick",
        ["make", "bench", f"BENCH_ARGS=--quick --no-progress --out {work / 'bench-make'}"],
        ROOT,
    )
    wheels = work / "wheels"
    step(
        "wheel from .venv's build",
        [
            str(ROOT / ".venv" / "bin" / "pip"),
            "wheel",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "-w",
            str(wheels),
            ".",
        ],
        ROOT,
    )
    (wheel,) = wheels.glob("pyparams-*.whl")
    for name, text in blocks:
        script, count = BUILD_LINE.subn(f"pip install {wheel}", text)
        if count != 1:
            sys.exit(
                f"readme-paths: block {name!r} should hold one line starting "
                f"'pip install --no-build-isolation .', found {count}"
            )
        clone = work / name
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        # -x echoes each command as it runs; -e stops at the first that fails.
        step(
            f"README block {name!r}", ["bash", "-exo", "pipefail", "-c", script], clone, fresh_env()
        )
        # Each clone holds a venv with torch (about 1.5 GB): CI's disk may be small.
        shutil.rmtree(clone)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
