"""pyparams under a real ``torchrun``: DDP and FSDP2 (``fully_shard``), 2 ranks.

One launch of ``worker.py`` per backend does every comparison (see its docstring) and
writes one JSON file per rank; the tests below read them. ``gloo`` runs on CPU
everywhere; ``nccl`` needs two CUDA devices and is skipped otherwise. Two more launches
check that failures end: a rank raising inside a walk, and a launch past its timeout.
Every launch has a timeout and kills whatever it started (:mod:`pyparams.bench.torchrun`).
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist

from pyparams.bench import torchrun as torchrun_module
from pyparams.bench.torchrun import LaunchResult, launch, repo_pythonpath, torchrun_command

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NPROC = 2
LAUNCH_TIMEOUT_S = 150  # the conformance launch takes ~20 s on 2 shared cores
STAGES = (
    "before",
    "wrapped",
    "forward-1",
    "backward-1",
    "step-1",
    "forward-2",
    "backward-2",
    "step-2",
)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def run_torchrun(
    *args: str, timeout_s: float = LAUNCH_TIMEOUT_S, script: Path = HERE / "worker.py"
) -> LaunchResult:
    return launch(
        torchrun_command([str(script), *args], nproc=NPROC),
        timeout_s,
        env={"PYTHONPATH": repo_pythonpath(ROOT, ROOT / "tests")},
        cwd=ROOT,
    )


def assert_nothing_left(result: LaunchResult) -> None:
    alive = [
        pid
        for pid in result.seen_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert result.seen_pids, "the launch never started a worker"
    assert not alive, f"processes of the launch still running: {alive}"


def _backends() -> list[object]:
    two_gpus = torch.cuda.is_available() and torch.cuda.device_count() >= NPROC
    return [
        "gloo",
        pytest.param(
            "nccl",
            marks=[
                pytest.mark.needs_cuda,
                pytest.mark.skipif(not two_gpus, reason=f"nccl needs {NPROC} CUDA devices"),
            ],
        ),
    ]


@pytest.fixture(scope="module", params=_backends())
def launched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LaunchResult, list[dict]]:
    """One conformance launch on the backend, and what each rank wrote (even if it failed)."""
    out = tmp_path_factory.mktemp(f"dist-{request.param}")
    result = run_torchrun("--backend", request.param, "--out", str(out))
    return result, [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]


@pytest.fixture
def ranks(launched: tuple[LaunchResult, list[dict]]) -> list[dict]:
    """Every rank's results; fails if a rank wrote none."""
    result, data = launched
    assert [d["rank"] for d in data] == list(range(NPROC)), result.tail()
    return data


def test_launch_succeeded_and_left_nothing(launched: tuple[LaunchResult, list[dict]]) -> None:
    result, _ = launched
    assert_nothing_left(result)
    assert not result.timed_out, f"launch timed out after {result.seconds:.0f} s\n{result.tail()}"
    assert result.returncode == 0, f"launch failed ({result.returncode})\n{result.tail()}"


SCENARIOS = ("ddp", "fsdp-reshard", "fsdp-keep", "fsdp-frozen", "fsdp-tied")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_walks_match_torch_at_every_stage(ranks: list[dict], scenario: str) -> None:
    for rank in ranks:
        checks = [c for c in rank["checks"] if c["scenario"] == scenario]
        assert [s for s in STAGES if any(c["stage"] == s for c in checks)] == list(STAGES)
        failures = [f"{c['stage']} {c['target']}:\n{c['error']}" for c in checks if not c["ok"]]
        assert not failures, f"rank {rank['rank']}: " + "\n".join(failures)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.startswith("fsdp")])
def test_fsdp_walks_saw_dtensors_and_unsharded_parameters(ranks: list[dict], scenario: str) -> None:
    """The comparisons ran on sharded DTensor parameters, and with reshard off on the
    plain unsharded parameters FSDP2 swaps in for forward."""
    for rank in ranks:
        stage = {c["stage"]: c for c in rank["checks"] if c["scenario"] == scenario}
        assert stage["before"]["n_dtensor_params"] == 0
        assert stage["wrapped"]["n_dtensor_params"] == stage["wrapped"]["n_params"] > 0
        assert stage["step-2"]["n_dtensor_params"] == stage["step-2"]["n_params"]
        if scenario in ("fsdp-keep", "fsdp-tied"):  # reshard_after_forward=False
            assert stage["forward-1"]["n_dtensor_params"] == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_training_patched_is_bit_identical(ranks: list[dict], scenario: str) -> None:
    for rank in ranks:
        runs = [t for t in rank["training"] if t["scenario"] == scenario]
        assert len(runs) == 1, f"rank {rank['rank']} has no training result (launch crashed?)"
        [run] = runs
        assert run["ok"], f"rank {rank['rank']}: {run['error']}"
        # pyparams.patched() on and off; training moved every trainable tensor.
        assert run["n_moved"] == run["n_trainable"] > 0, run


def test_a_rank_raising_inside_a_walk_fails_the_launch(tmp_path: Path) -> None:
    result = run_torchrun(
        "--mode", "fail", "--fail-rank", "1", "--out", str(tmp_path), timeout_s=90
    )
    assert_nothing_left(result)
    assert not result.timed_out, f"the launch hung until its timeout\n{result.tail()}"
    assert result.returncode != 0, result.tail()
    assert "rank 1: walk exploded on purpose" in result.output, result.tail()


def test_a_launch_past_its_timeout_is_killed() -> None:
    result = run_torchrun(timeout_s=12, script=HERE / "sleeper.py")  # ranks start in < 12 s
    assert result.timed_out
    assert result.returncode != 0
    assert len(result.seen_pids) == NPROC, result.seen_pids
    assert_nothing_left(result)


def test_a_launch_interrupted_while_waiting_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in the caller while it waits (Ctrl-C, a test runner's timeout) still
    ends the launcher and every rank."""
    seen: dict[int, psutil.Process] = {}
    polls_with_ranks: list[int] = []
    record = torchrun_module._descendants

    def interrupt_once_ranks_run(root: psutil.Process, into: dict[int, psutil.Process]) -> None:
        record(root, into)
        seen.update(into)
        if len(into) >= NPROC:
            polls_with_ranks.append(1)
        if len(polls_with_ranks) > 10:  # the ranks have been running for ~2 s
            raise KeyboardInterrupt

    monkeypatch.setattr(torchrun_module, "_descendants", interrupt_once_ranks_run)
    with pytest.raises(KeyboardInterrupt):
        run_torchrun(timeout_s=60, script=HERE / "sleeper.py")
    alive = [p.pid for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert len(seen) == NPROC and not alive, (sorted(seen), alive)
