"""Launching ``torchrun`` with a deadline and leaving no process behind.

torchrun starts each worker in its own session (``start_new_session=True``), so killing
the launcher's process group would miss them. :func:`launch` therefore polls the
launcher's process tree while it runs, remembers every process it has seen, and when
the launch ends (normally, by failure or by its timeout) sends ``SIGTERM`` to the
launcher (its agent then stops the workers), waits, and kills with ``SIGKILL`` whatever
it saw that is still running. A hung collective or a dead rank therefore ends as a
result with ``timed_out`` or a non-zero ``returncode``, never as a hung caller.

>>> cmd = torchrun_command(["-m", "pyparams.bench.distributed"], nproc=2)
>>> cmd[1:4], cmd[-2:]
(['-m', 'torch.distributed.run', '--standalone'], ['-m', 'pyparams.bench.distributed'])
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["LaunchResult", "launch", "repo_pythonpath", "torchrun_command"]

_POLL_S = 0.2
_TERM_GRACE_S = 5.0


@dataclass
class LaunchResult:
    """How a launch ended: exit status, whether it hit its timeout, its output."""

    returncode: int
    timed_out: bool
    seconds: float
    output: str  # stdout and stderr of the launcher and every rank, interleaved
    seen_pids: list[int] = field(default_factory=list)  # every process of the launch
    killed_after_exit: list[int] = field(default_factory=list)  # still alive at the end: killed

    def tail(self, chars: int = 6000) -> str:
        """The end of the output, for failure messages."""
        return self.output[-chars:]


def torchrun_command(target: Sequence[str], nproc: int = 2, extra: Sequence[str] = ()) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N ... <target>``.

    ``target`` is a script path and its arguments, or ``["-m", "module", ...]``.
    ``--max-restarts 0``: a failed rank fails the launch instead of restarting it.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        *extra,
        *target,
    ]


def _descendants(root: psutil.Process, seen: dict[int, psutil.Process]) -> None:
    try:
        for child in root.children(recursive=True):
            seen.setdefault(child.pid, child)
    except psutil.Error:  # the launcher is gone; what we saw before is kept
        pass


def _stop(procs: Sequence[psutil.Process]) -> list[int]:
    """SIGKILL every process of ``procs`` still running; their pids."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()  # psutil checks the pid still names the same process
                alive.append(proc.pid)
        except psutil.Error:
            continue
    psutil.wait_procs([p for p in procs if p.pid in alive], timeout=_TERM_GRACE_S)
    return alive


def _wait(
    proc: subprocess.Popen[bytes], start: float, timeout_s: float, seen: dict[int, psutil.Process]
) -> bool:
    """Wait for the launcher, recording its process tree; True if ``timeout_s`` ran out."""
    try:
        launcher: psutil.Process | None = psutil.Process(proc.pid)
    except psutil.Error:  # exited already
        launcher = None
    while proc.poll() is None:
        if launcher is not None:
            _descendants(launcher, seen)
        if time.perf_counter() - start > timeout_s:
            return True
        time.sleep(_POLL_S)
    return False


def _end_launcher(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (torchrun's agent then stops its workers), SIGKILL after a grace period."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=_TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch(
    command: Sequence[str],
    timeout_s: float,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> LaunchResult:
    """Run ``command`` (usually :func:`torchrun_command`) for at most ``timeout_s`` seconds.

    Output goes to a temporary file (no pipe can fill and block a rank). On timeout the
    launcher gets ``SIGTERM``, then ``SIGKILL`` after a grace period; in every case every
    process the launch started that is still alive at the end is killed and listed in
    ``killed_after_exit``.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    merged_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+b") as log:
        proc = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=merged_env,
            cwd=cwd,
            start_new_session=True,
        )
        seen: dict[int, psutil.Process] = {}
        timed_out = False
        try:
            timed_out = _wait(proc, start, timeout_s, seen)
        finally:  # also on Ctrl-C or a test runner's own timeout while waiting
            if proc.poll() is None:
                _end_launcher(proc)
            killed = _stop(list(seen.values()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in the launcher's group
        log.seek(0)
        output = log.read().decode(errors="replace")
    return LaunchResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        timed_out=timed_out,
        seconds=time.perf_counter() - start,
        output=output,
        seen_pids=sorted(seen),
        killed_after_exit=killed,
    )


def repo_pythonpath(*extra: Path) -> str:
    """``PYTHONPATH`` with ``extra`` first, then the current one (for workers)."""
    parts = [str(p) for p in extra]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)
