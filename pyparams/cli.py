"""The ``pyparams`` command line: ``pyparams bench`` and ``pyparams claims``.

``python -m pyparams ...`` and the ``pyparams`` console script share :func:`main`.

    pyparams bench                 # default zoo on every device present
    pyparams bench --quick         # a small zoo, fewer rounds (about a minute on 2 cores)
    pyparams bench --models gpt2,depth --devices cpu --out /tmp/bench
    pyparams bench --list          # the zoo and the contenders
    pyparams bench --distributed   # DDP and FSDP2 under torchrun, 2 ranks, per-rank table
    pyparams claims                # test four popular claims about parameters()
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _names(values: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def _bad_argument(args: argparse.Namespace) -> str | None:
    """What is wrong with an argument argparse lets through, that no run can use."""
    for dest in ("models", "devices", "contenders", "consumer_models"):
        values = getattr(args, dest, None)
        if values is not None and not _names(values):
            flag = "--" + dest.replace("_", "-")
            return f"{flag} names nothing; give names separated by spaces or commas"
    for dest in ("memory_cap_gb", "timeout"):
        value = getattr(args, dest, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + dest.replace("_", "-")
            return f"{flag} must be a finite number above 0, got {value:g}"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the ``bench`` and ``claims`` subcommands."""
    parser = argparse.ArgumentParser(prog="pyparams", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{bench,claims}")

    bench = sub.add_parser("bench", help="benchmark pyparams against torch on the model zoo")
    preset = bench.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="a small zoo and fewer rounds (a few minutes on 2 cores)",
    )
    preset.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="every model and size, more rounds",
    )
    bench.set_defaults(preset="default")
    bench.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="zoo models or families (arch, depth, width, experts, frozen); "
        "comma or space separated",
    )
    bench.add_argument(
        "--devices",
        nargs="+",
        metavar="DEV",
        help="cpu, cuda, meta (default: cpu, and cuda when available)",
    )
    bench.add_argument(
        "--contenders",
        nargs="+",
        metavar="NAME",
        help="contenders to run (torch.list, the baseline, is always added)",
    )
    bench.add_argument("--repeat", type=int, metavar="N", help="interleaved rounds per case")
    bench.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="where to write results.json/.csv, the plots and report.md (default: bench-results)",
    )
    bench.add_argument(
        "--sweep-mib",
        type=int,
        metavar="MIB",
        help="size of the sweep before each call of the after-other-work "
        "state (default: twice the last-level cache, from sysfs)",
    )
    bench.add_argument(
        "--memory-cap-gb",
        type=float,
        default=4.0,
        metavar="GB",
        help="architectures whose fp32 weights exceed this run on meta (default 4)",
    )
    bench.add_argument(
        "--no-claims",
        dest="claims",
        action="store_false",
        help="skip the claims section of the report",
    )
    bench.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    bench.add_argument(
        "--consumers",
        choices=("auto", "on", "off", "only"),
        default="auto",
        help="the consumers section: zero_grad, requires_grad_, optimizers, "
        "the ZeRO-3 fetch, functional_call, a training step..., torch "
        "vs pyparams.patch() (auto: on for the default and full zoo, "
        "off with --quick or --models; only: that section alone)",
    )
    bench.add_argument(
        "--consumer-models",
        nargs="+",
        metavar="NAME",
        help="models of the consumers section: moe-LAYERSxEXPERTS (routed) or a zoo "
        "architecture (default: moe-32x64 gpt2)",
    )
    bench.add_argument("--list", action="store_true", help="print the zoo and the contenders")
    bench.add_argument(
        "--distributed",
        action="store_true",
        help="time walks and their consumers under DDP and FSDP2 in a "
        "torchrun launch (see --nproc); writes distributed.* and a "
        "section of report.md to --out",
    )
    bench.add_argument(
        "--nproc",
        type=int,
        default=2,
        metavar="N",
        help="ranks of the --distributed launch (default 2)",
    )
    bench.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="the --distributed launch is killed after S seconds (default 900)",
    )

    claims = sub.add_parser("claims", help="test four popular claims about parameters()")
    claims.add_argument(
        "--model", help="zoo model to test on (default gpt2; without transformers, a synthetic one)"
    )
    claims.add_argument(
        "--devices",
        nargs="+",
        metavar="DEV",
        help="cpu and/or cuda (default: cpu, and cuda when available)",
    )
    claims.add_argument(
        "--out", type=Path, metavar="DIR", help="also write claims.json and claims.md here"
    )
    return parser


def _print_list() -> None:
    from pyparams.bench.contenders import CONTENDERS
    from pyparams.bench.zoo import ZOO

    print("Models (name, family, presets, description):")
    width = max(len(name) for name in ZOO)
    for entry in ZOO.values():
        presets = ",".join(p for p in ("quick", "default", "full") if p in entry.presets) or "-"
        print(f"  {entry.name:<{width}}  {entry.family:<8} {presets:<20} {entry.description}")
    print("\nContenders (name, what runs):")
    width = max(len(name) for name in CONTENDERS)
    for contender in CONTENDERS.values():
        print(f"  {contender.name:<{width}}  {contender.code}")


def _error(command: str, message: str) -> int:
    print(f"pyparams {command}: error: {message}", file=sys.stderr)
    return 2


def _unwritable(out: Path) -> str | None:
    """Why the results cannot be written to ``out`` (made here when missing), or ``None``:
    asked before a run, so that a bad ``--out`` costs seconds, not the run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        return f"cannot write the results to --out {out}: {exc.strerror or exc}"
    return None


def _consumer_models(values: Sequence[str] | None) -> list[str]:
    """The consumers section's models (``--consumer-models``, default the section's own);
    ``ValueError`` naming one it cannot build."""
    from pyparams.bench.consumers import CONSUMER_MODELS, check_consumer_model

    models = _names(values) or list(CONSUMER_MODELS)
    for name in models:
        check_consumer_model(name)
    return models


def _bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyparams.bench.extras import INSTALL_HINT, total_memory_bytes
    from pyparams.bench.report import (
        format_fits,
        format_summary,
        format_table,
        format_targets,
        write_outputs,
    )
    from pyparams.bench.runner import BenchOptions, extras_note, run_bench, runnable

    if args.list:
        _print_list()
        return 0
    if reason := _bad_argument(args):
        return _error("bench", reason)
    if args.repeat is not None and args.repeat < 1:
        return _error("bench", f"--repeat must be at least 1, got {args.repeat}")
    if args.sweep_mib is not None and args.sweep_mib < 1:
        return _error("bench", f"--sweep-mib must be at least 1, got {args.sweep_mib}")
    memory = total_memory_bytes() if args.sweep_mib is not None else None
    if memory and args.sweep_mib << 20 > memory // 2:
        return _error(
            "bench",
            f"--sweep-mib {args.sweep_mib} is more than half of this machine's "
            f"{memory >> 20} MiB of memory",
        )
    if args.distributed:
        return _bench_distributed(args, argv)
    if args.consumers == "only":
        return _bench_consumers(args)
    options = BenchOptions(
        preset=args.preset,
        models=_names(args.models),
        devices=_names(args.devices),
        contenders=_names(args.contenders),
        repeat=args.repeat,
        memory_cap_bytes=int(args.memory_cap_gb * 2**30),
        claims=args.claims,
        progress=args.progress,
        command=" ".join(["pyparams", *argv]),
        sweep_bytes=None if args.sweep_mib is None else args.sweep_mib << 20,
    )
    try:  # validate everything before building a single model
        options.entries()
        options.device_list()
        options.contender_list()
        _consumer_models(args.consumer_models)
    except (KeyError, ValueError) as exc:
        return _error("bench", exc.args[0] if exc.args else str(exc))
    if not runnable(options.entries()):
        needs = sorted({n for e in options.entries() for n in e.needs})
        return _error(
            "bench",
            f"every model asked for needs {', '.join(needs)}, which is not "
            f"installed: {INSTALL_HINT}",
        )
    if reason := _unwritable(args.out):
        return _error("bench", reason)
    note = extras_note(options)
    if note:
        print(f"pyparams bench: {note}", file=sys.stderr)
    run = run_bench(options)
    print(format_table(run.cases))
    print()
    print(format_summary(run.cases))
    print()
    fits = format_fits(run)
    if fits:
        print(fits)
    targets = format_targets(run.cases)
    if targets:
        print(targets)
    if run.claims:
        from pyparams.bench.claims import format_verdicts

        print()
        print(format_verdicts(run.claims))  # type: ignore[arg-type]
    paths = write_outputs(run, args.out)
    # auto: with the default or full zoo, not with --quick or a --models choice.
    auto = args.consumers == "auto" and args.preset != "quick" and not args.models
    if args.consumers == "on" or auto:
        print()
        _bench_consumers(args)
    print(f"\nwrote {', '.join(p.name for p in paths)} to {args.out} ({run.wall_seconds:.0f} s)")
    return 0


def _bench_consumers(args: argparse.Namespace) -> int:
    """The consumers section: print its table, write its files and report.md section."""
    from pyparams.bench.consumer_report import format_consumers, write_consumer_outputs
    from pyparams.bench.consumers import run_consumers
    from pyparams.bench.extras import missing
    from pyparams.bench.zoo import get_entry

    try:
        models = _consumer_models(args.consumer_models)
    except ValueError as exc:
        return _error("bench", str(exc))
    if reason := _unwritable(args.out):
        return _error("bench", reason)
    # Models that need a missing extra were named once already (the bench's hint line);
    # the routed MoE (moe-LxE) is the consumers' own model, built without any extra.
    models = [m for m in models if m.startswith("moe-") or not missing(get_entry(m).needs)]
    rounds = args.repeat or (5 if args.preset == "quick" else 11)
    progress = (
        (lambda text: print(f"  consumers: {text}", file=sys.stderr)) if args.progress else None
    )
    rows = run_consumers(models=models, rounds=rounds, progress=progress)
    print(format_consumers(rows))
    paths = write_consumer_outputs(rows, args.out)
    print(f"\nwrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


def _bench_distributed(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyparams.bench.distributed_report import format_table, rows
    from pyparams.bench.torchrun import launch, torchrun_command
    from pyparams.bench.zoo import get_entry

    if args.nproc < 1:
        return _error("bench", f"--nproc must be at least 1, got {args.nproc}")
    try:  # each rank would fail alike, later and louder
        for name in _names(args.models) or []:
            get_entry(name)
    except KeyError as exc:
        return _error("bench", exc.args[0])
    if reason := _unwritable(args.out):
        return _error("bench", reason)
    target = [
        "-m",
        "pyparams.bench.distributed",
        "--out",
        str(args.out),
        "--command",
        " ".join(["pyparams", *argv]),
    ]
    if args.models:
        target += ["--models", ",".join(_names(args.models) or [])]
    if args.repeat is not None:
        target += ["--repeat", str(args.repeat)]
    result = launch(torchrun_command(target, nproc=args.nproc), args.timeout)
    if result.timed_out or result.returncode != 0:
        print(result.tail(), file=sys.stderr)
        why = (
            f"timed out after {args.timeout:g} s"
            if result.timed_out
            else f"failed with exit status {result.returncode}"
        )
        return _error("bench", f"the torchrun launch {why} (its output is above)")
    import json

    run = json.loads((args.out / "distributed.json").read_text())
    print(format_table(rows(run["samples"])))
    print(
        f"\nwrote distributed.json, .csv, .png, .md and a section of report.md to "
        f"{args.out} ({result.seconds:.0f} s)"
    )
    return 0


def _claims(args: argparse.Namespace) -> int:
    import torch

    from pyparams.bench.claims import (
        SYNTHETIC_MODEL,
        default_models,
        format_verdicts,
        run_claims,
        write_claims,
    )
    from pyparams.bench.extras import missing, missing_line
    from pyparams.bench.zoo import ZOO

    if reason := _bad_argument(args):
        return _error("claims", reason)
    devices = _names(args.devices) or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    model, huge_model = default_models()
    if args.model is not None:
        model = args.model
    if model not in ZOO:
        return _error("claims", f"unknown model {model!r}; choose from: {', '.join(ZOO)}")
    absent = missing(ZOO[model].needs)
    if absent:
        return _error(
            "claims",
            missing_line(
                absent, f"cannot build {model!r} (--model {SYNTHETIC_MODEL} needs nothing more)"
            ),
        )
    if huge_model is None:
        print(
            f"pyparams claims: {missing_line(['transformers'], 'no huge-model evidence')}",
            file=sys.stderr,
        )
    for device in devices:
        if device not in ("cpu", "cuda"):
            return _error("claims", f"unknown device {device!r}; claims run on cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            return _error("claims", "device 'cuda' was asked for but CUDA is not available here")
    if args.out is not None and (reason := _unwritable(args.out)):
        return _error("claims", reason)
    start = time.perf_counter()
    try:
        verdicts = run_claims(model=model, huge_model=huge_model, devices=devices)
    except ValueError as exc:
        return _error("claims", str(exc))
    print(format_verdicts(verdicts))
    if args.out is not None:
        write_claims(verdicts, args.out)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad options)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors by exiting
        return int(exc.code or 0)
    if args.command == "bench":
        return _bench(args, argv)
    if args.command == "claims":
        return _claims(args)
    parser.print_help(sys.stderr)
    return 2
