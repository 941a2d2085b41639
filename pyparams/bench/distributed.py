"""The distributed benchmark: what every rank measures under ``torchrun`` (DDP and FSDP2).

Run on every rank, e.g. on one machine with two CPU ranks::

    torchrun --standalone --nproc-per-node 2 -m pyparams.bench.distributed --out bench-results

(``pyparams bench --distributed`` launches exactly that, with a timeout). Per model of
:data:`MODELS` and per wrapper (``fully_shard`` per block and at the root, or DDP), each
rank times each job in two modes, torch's walks and pyparams' patched in
(``pyparams.patched()``), interleaved (A B, B A, ...) with the GC paused
(:mod:`pyparams.bench.timing`):

- ``wrap``: ``fully_shard`` / ``DistributedDataParallel`` on a freshly built model;
- ``parameters`` / ``named_parameters``: a full walk of the wrapped model;
- ``zero_grad``: ``Module.zero_grad()`` with every trainable gradient present;
- ``clip_grad_norm_``: over the wrapped model's parameters (a collective under FSDP2);
- ``optimizer``: constructing ``AdamW`` over the parameters;
- ``train_step``: forward, backward, clip, step, zero_grad (models with a ``forward``).

Jobs with collectives run the same number of calls on every rank (the loop counts are
agreed with an all-reduce), so no rank waits on another's extra call. Rank 0 gathers
every rank's samples and writes ``distributed.json``/``.csv``/``.png``/``.md`` and a
section of ``report.md`` (:mod:`pyparams.bench.distributed_report`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

import pyparams
from pyparams.bench.gc_pause import gc_paused
from pyparams.bench.measure import Settings, synchronize
from pyparams.bench.timing import Column, calibrate, interleaved
from pyparams.bench.zoo import ZooEntry, get_entry, measure_structure

__all__ = ["MODELS", "WRAPPERS", "Sample", "exit_without_finalizing", "main", "measure_model"]

# The zoo's synthetic families at small sizes, and one transformers architecture.
MODELS: tuple[str, ...] = ("depth-100", "width-1000", "experts-8", "frozen-50", "gpt2-xl-tiny")
WRAPPERS: tuple[str, ...] = ("fsdp", "ddp")
MODES: tuple[str, ...] = ("torch", "patched")
SETTINGS = Settings(repeat=11, min_repeat=5, warmup=1, min_sample_s=0.002)
SLOW_ROUNDS = 5  # rounds for the jobs that rebuild a model or train a step
_SHARDED_BY_BLOCK = ("arch", "frozen", "experts", "moe")  # their first ModuleList: blocks


@dataclass
class Sample:
    """One rank's timings of one job in one mode (torch or patched), on one wrapped model."""

    rank: int
    model: str
    family: str
    wrapper: str
    job: str
    mode: str
    loops: int
    samples_ns: list[float] = field(default_factory=list)  # per call, one per round
    n_param_tensors: int = 0
    n_modules: int = 0


def _blocks(model: nn.Module, family: str) -> list[nn.Module]:
    """What ``fully_shard`` wraps before the root: a transformer's layers, the MoE layers."""
    if family not in _SHARDED_BY_BLOCK:
        return []  # chains and sibling lists: one group at the root
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            return list(module)
    return []


def wrap(
    model: nn.Module, wrapper: str, family: str, mesh: object, device: torch.device
) -> nn.Module:
    """``fully_shard`` per block then at the root, or DDP."""
    if wrapper == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model, family):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _mode_context(mode: str) -> contextlib.AbstractContextManager[object]:
    """Where the torch code of a job runs: as is, or with pyparams' walks patched in."""
    return pyparams.patched() if mode == "patched" else contextlib.nullcontext()


def _agreed(value: int) -> int:
    """The largest ``value`` over the ranks (every rank then runs the same loop count)."""
    tensor = torch.tensor(
        [value], dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu"
    )
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _timed_rounds(
    fn: Callable[[], object],
    setup: Callable[[], None] | None,
    rounds: int,
    device: torch.device,
    calibrate_loops: bool,
) -> dict[str, tuple[int, list[float]]]:
    """Interleaved samples of ``fn`` in each mode.

    With ``setup`` (run untimed before every call) or without ``calibrate_loops``, a sample
    is one call; otherwise a loop whose count is calibrated per mode and agreed by the ranks.
    """
    sync = functools.partial(synchronize, str(device))
    fixed = None if calibrate_loops and setup is None else 1
    columns = [
        Column(
            mode,
            fn,
            before_call=setup,
            calls_per_sample=fixed,
            context=functools.partial(_mode_context, mode),
        )
        for mode in MODES
    ]
    loops = {}
    for column in columns:
        n, _ = calibrate(
            column,
            warmup=SETTINGS.warmup,
            min_sample_s=SETTINGS.min_sample_s,
            max_loops=SETTINGS.max_loops,
            sync=sync,
        )
        loops[column.name] = _agreed(n)
    samples = interleaved(columns, loops, rounds, sync)
    return {mode: (loops[mode], samples[mode]) for mode in MODES}


def _lm_batch(model: nn.Module, device: torch.device) -> dict[str, torch.Tensor] | None:
    """Token ids for a transformers language model; ``None`` for modules without forward."""
    config = getattr(getattr(model, "module", model), "config", None)  # DDP: the inner model
    if config is None or not hasattr(config, "vocab_size"):
        return None
    generator = torch.Generator().manual_seed(dist.get_rank())
    ids = torch.randint(0, config.vocab_size, (2, 32), generator=generator)
    return {"input_ids": ids.to(device)}


def measure_model(
    entry: ZooEntry, wrapper: str, device: torch.device, mesh: object, rounds: int = SETTINGS.repeat
) -> list[Sample]:
    """Every job of the module docstring for one model and wrapper, on this rank."""
    rank = dist.get_rank()

    def build() -> nn.Module:
        with gc_paused(), torch.device(device):
            return entry.build()

    results: dict[str, dict[str, tuple[int, list[float]]]] = {}
    fresh: list[nn.Module] = []

    def new_model() -> None:  # untimed setup of the wrap job
        fresh[:] = [build()]

    results["wrap"] = _timed_rounds(
        lambda: wrap(fresh[0], wrapper, entry.family, mesh, device),
        new_model,
        min(rounds, SLOW_ROUNDS),
        device,
        calibrate_loops=False,
    )
    fresh.clear()
    model = wrap(build(), wrapper, entry.family, mesh, device)
    structure = measure_structure(model)
    results["parameters"] = _timed_rounds(
        lambda: list(model.parameters()), None, rounds, device, calibrate_loops=True
    )
    results["named_parameters"] = _timed_rounds(
        lambda: list(model.named_parameters()), None, rounds, device, calibrate_loops=True
    )
    trainable = [p for p in nn.Module.parameters(model) if p.requires_grad]
    grads = [torch.ones_like(p) for p in trainable]

    def give_grads() -> None:
        for param, grad in zip(trainable, grads, strict=True):
            param.grad = grad

    results["zero_grad"] = _timed_rounds(
        lambda: model.zero_grad(), give_grads, rounds, device, calibrate_loops=False
    )
    give_grads()
    results["clip_grad_norm_"] = _timed_rounds(
        lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0),
        None,
        rounds,
        device,
        calibrate_loops=True,
    )
    results["optimizer"] = _timed_rounds(
        lambda: torch.optim.AdamW(model.parameters(), lr=1e-3),
        None,
        rounds,
        device,
        calibrate_loops=True,
    )
    batch = _lm_batch(model, device)
    if batch is not None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> None:
            loss = model(**batch).logits.float().pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            model.zero_grad()

        step()  # optimizer state allocated outside the timed rounds
        results["train_step"] = _timed_rounds(
            step, None, min(rounds, SLOW_ROUNDS), device, calibrate_loops=False
        )
    return [
        Sample(
            rank=rank,
            model=entry.name,
            family=entry.family,
            wrapper=wrapper,
            job=job,
            mode=mode,
            loops=loops,
            samples_ns=samples,
            n_param_tensors=structure.n_param_tensors,
            n_modules=structure.n_modules,
        )
        for job, by_mode in results.items()
        for mode, (loops, samples) in by_mode.items()
    ]


@contextlib.contextmanager
def process_group(backend: str, timeout_s: float) -> Iterator[torch.device]:
    """The process group of this rank and its device; destroyed on the way out."""
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pyparams.bench.distributed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated zoo models (default: %(default)s)",
    )
    parser.add_argument("--wrappers", default=",".join(WRAPPERS), help="fsdp, ddp")
    parser.add_argument(
        "--backend",
        choices=("gloo", "nccl"),
        default="nccl" if torch.cuda.is_available() else "gloo",
    )
    parser.add_argument("--repeat", type=int, default=SETTINGS.repeat, help="rounds per job")
    parser.add_argument("--command", default="", help="the command line, for the report")
    parser.add_argument(
        "--collective-timeout-s",
        type=float,
        default=120.0,
        help="a lost peer fails a collective after this long",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure on this rank; rank 0 gathers every rank's samples and writes the report."""
    args = _parse(argv)
    entries = [get_entry(name) for name in args.models.split(",") if name]
    wrappers = [w for w in args.wrappers.split(",") if w]
    for name in wrappers:
        if name not in WRAPPERS:
            raise SystemExit(f"unknown wrapper {name!r}; choose from: {', '.join(WRAPPERS)}")
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, got {args.repeat}")
    start = time.perf_counter()
    with process_group(args.backend, args.collective_timeout_s) as device:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        samples: list[Sample] = []
        for entry in entries:
            for wrapper in wrappers:
                samples += measure_model(entry, wrapper, device, mesh, args.repeat)
        synchronize(str(device))
        gathered: list[list[Sample]] | None = (
            [[] for _ in range(dist.get_world_size())] if dist.get_rank() == 0 else None
        )
        dist.gather_object(samples, gathered, dst=0)
        if gathered is not None:
            from pyparams.bench.distributed_report import DistributedRun, write_outputs
            from pyparams.bench.runner import machine_info

            run = DistributedRun(
                machine=machine_info(),
                backend=args.backend,
                world_size=dist.get_world_size(),
                command=args.command or "torchrun ... -m pyparams.bench.distributed",
                models=[e.name for e in entries],
                wrappers=wrappers,
                rounds=args.repeat,
                samples=[asdict(s) for rank in gathered for s in rank],
                wall_seconds=time.perf_counter() - start,
            )
            paths = write_outputs(run, args.out)
            print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
        dist.barrier()
    return 0


def exit_without_finalizing(code: int) -> NoReturn:
    """End a rank's process once its work is done, without the interpreter's finalization.

    ``destroy_process_group()`` does not stop a group's threads while anything still holds
    the group, and torch's own caches do (DTensor's planners and mesh topologies hold their
    ``DeviceMesh``; ``torch.distributed.nn``'s functions bind ``group.WORLD`` as a default).
    A gloo thread that drops a finished collective's tensors after finalization began needs
    the GIL, cannot have it, and the rank aborts ("terminate called without an active
    exception"), now and then, on a loaded machine. Every file is written and closed by now.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_finalizing(main())
