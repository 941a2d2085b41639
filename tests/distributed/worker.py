"""What each rank runs under ``torchrun`` for tests/distributed/test_distributed.py.

``--mode conform`` (the default): for every scenario of :mod:`nets` (DDP; FSDP2 with
``reshard_after_forward`` on and off, with a frozen part, with tied weights) compare every
pyparams function with torch's own iterator (objects, order, names, every argument
combination) before wrapping, after wrapping, after each forward, backward and optimizer
step; then build, wrap and train a few steps twice, with ``pyparams.patched()`` off
and on, and compare the local parameters bit for bit. A failed comparison is recorded,
never raised, so every rank still reaches every collective. Each rank writes
``rank<N>.json`` to ``--out``.

``--mode fail``: rank ``--fail-rank`` raises inside a pyparams walk while the other ranks
wait in a collective; the launch must end with a failure, not hang.
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import json
import os
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from nets import SCENARIOS, build, wrap  # next to this script
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

import pyparams
from common_utils import assert_conforms  # the launch puts tests/ on PYTHONPATH
from pyparams.bench.distributed import exit_without_finalizing

M = nn.Module
TRAIN_STEPS = 3
TRAINED = ("ddp", "fsdp-reshard", "fsdp-keep", "fsdp-frozen", "fsdp-tied")


def batch(step: int, device: torch.device) -> torch.Tensor:
    """Different data on every rank (data parallel), the same on every run."""
    generator = torch.Generator().manual_seed(1000 * dist.get_rank() + step)
    return torch.randint(0, 16, (4, 6), generator=generator).to(device)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, the tensor itself otherwise."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def check(records: list[dict], scenario: str, stage: str, targets: dict[str, nn.Module]) -> None:
    """Record whether pyparams equals torch on each target; never raises."""
    for name, module in targets.items():
        params = list(M.parameters(module))
        record = {
            "scenario": scenario,
            "stage": stage,
            "target": name,
            "ok": True,
            "error": "",
            "n_params": len(params),
            "n_dtensor_params": sum(isinstance(p, DTensor) for p in params),
        }
        try:
            assert_conforms(module, context=f"rank {dist.get_rank()} {scenario} {stage} {name}")
        except Exception:  # noqa: BLE001 - any failure is recorded, reported by the test
            record["ok"] = False
            record["error"] = traceback.format_exc(limit=2)[-4000:]
        records.append(record)


def conform(scenario: str, device: torch.device, mesh: object, records: list[dict]) -> None:
    """Compare pyparams with torch at every stage of wrapping and training."""
    model = build(scenario, device)
    check(records, scenario, "before", {"model": model})
    wrapped = wrap(scenario, model, mesh, device)
    targets = {"wrapped": wrapped}
    if wrapped is not model:  # DDP: the wrapper and the module inside it
        targets["inner"] = model
    check(records, scenario, "wrapped", targets)
    optimizer = torch.optim.AdamW(list(M.parameters(wrapped)), lr=1e-2)
    for step in (1, 2):
        out = wrapped(batch(step, device))
        check(records, scenario, f"forward-{step}", targets)
        out.float().pow(2).mean().backward()
        check(records, scenario, f"backward-{step}", targets)
        optimizer.step()
        optimizer.zero_grad()
        check(records, scenario, f"step-{step}", targets)


def train(
    scenario: str, device: torch.device, mesh: object, patched: bool
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Build, wrap and train a few steps with torch's own code, inside ``pyparams.patched()``
    or not: the walks of DDP / ``fully_shard``, the optimizer, ``clip_grad_norm_`` and
    ``zero_grad`` are then pyparams' or torch's. Returns names, start and end (local)."""
    with pyparams.patched() if patched else contextlib.nullcontext():
        assert pyparams.is_patched() is patched
        model = wrap(scenario, build(scenario, device, seed=1), mesh, device)
        start = [local(p).detach().clone() for p in model.parameters()]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in range(TRAIN_STEPS):
            loss = model(batch(step, device)).float().pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            model.zero_grad()
        names = [name for name, _ in model.named_parameters()]
        return names, start, [local(p).detach().clone() for p in model.parameters()]


def compare_training(scenario: str, device: torch.device, mesh: object) -> dict:
    """Train unpatched, then patched; the parameters must be bit-identical."""
    names, start, expected = train(scenario, device, mesh, patched=False)
    names_p, _, actual = train(scenario, device, mesh, patched=True)
    differing = [
        n
        for n, a, e in zip(names, actual, expected, strict=False)  # lengths: below
        if a.dtype != e.dtype or a.shape != e.shape or not torch.equal(a, e)
    ]
    errors = []
    if names_p != names or len(actual) != len(expected):
        errors.append(f"names differ: torch {names}, pyparams {names_p}")
    if differing:
        errors.append(f"not bit-identical: {differing}")
    moved = [n for n, s, e in zip(names, start, expected, strict=True) if not torch.equal(s, e)]
    return {
        "scenario": scenario,
        "ok": not errors,
        "error": "; ".join(errors),
        "n_tensors": len(names),
        "n_moved": len(moved),
        "n_trainable": sum(p.requires_grad for p in build(scenario, device).parameters()),
    }


class Exploding(collections.abc.Mapping):
    """A ``_parameters`` mapping whose ``items()`` raises: a walk that fails on one rank."""

    def __getitem__(self, key: str) -> object:
        raise KeyError(key)

    def __iter__(self) -> collections.abc.Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def items(self) -> collections.abc.ItemsView:
        raise RuntimeError(f"rank {dist.get_rank()}: walk exploded on purpose")


def fail(device: torch.device, mesh: object, fail_rank: int) -> None:
    """Rank ``fail_rank`` raises inside a walk; the others block in a collective."""
    model = wrap("fsdp-reshard", build("fsdp-reshard", device), mesh, device)
    if dist.get_rank() == fail_rank:
        bomb = nn.Module()
        bomb._parameters = Exploding()  # type: ignore[assignment]
        model.blocks[0].add_module("bomb", bomb)
        with pyparams.patched():  # the walk of a consumer: clip_grad_norm_'s parameters()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    dist.all_reduce(torch.ones(1, device=device))
    dist.barrier()


def write(path: Path, result: dict) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    path.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
    path.with_suffix(".tmp").replace(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--mode", default="conform", choices=("conform", "fail"))
    parser.add_argument("--fail-rank", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    # A lost peer surfaces as an error within a minute, not gloo's default half hour.
    dist.init_process_group(args.backend, timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    try:
        if args.mode == "fail":
            fail(device, mesh, args.fail_rank)
            return
        result = {
            "rank": rank,
            "world_size": dist.get_world_size(),
            "backend": args.backend,
            "torch": torch.__version__,
            "checks": [],
            "training": [],
        }
        for scenario in SCENARIOS:
            conform(scenario, device, mesh, result["checks"])
        write(args.out / f"rank{rank}.json", result)  # kept if training crashes the launch
        for scenario in TRAINED:
            result["training"].append(compare_training(scenario, device, mesh))
        write(args.out / f"rank{rank}.json", result)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_without_finalizing(0)  # see its docstring: a gloo thread may outlive finalization
