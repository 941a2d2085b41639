"""Turning a :class:`~pyparams.bench.runner.RunResult` into tables, files and plots.

``write_outputs`` writes ``results.json`` (machine, versions, options, the after state's
sweep and every raw sample), ``results.csv`` (one row per case, contender and state),
``speedup.png``, ``scaling.png``, ``memory.png`` (matplotlib, Agg backend), ``claims.json``
and ``claims.md`` when the claims ran, and the zoo's section of ``report.md``
(:mod:`pyparams.bench.report_file`) embedding them. The goals come from
:mod:`pyparams.bench.targets`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pyparams.bench import targets as targets_table
from pyparams.bench.claims import Verdict, format_verdicts, write_claims
from pyparams.bench.contenders import BASELINE, CONTENDERS
from pyparams.bench.extras import available
from pyparams.bench.formatting import format_bytes, format_ns, format_ratio, render_table
from pyparams.bench.measure import CaseResult
from pyparams.bench.outputs import write_csv, write_json
from pyparams.bench.report_file import write_section
from pyparams.bench.runner import RunResult
from pyparams.bench.states import AFTER, COUNTERS, column_key, split, torch_column
from pyparams.bench.stats import summarize
from pyparams.bench.sweep import SweepPlan

__all__ = [
    "OUTPUT_FILES",
    "format_fits",
    "format_summary",
    "format_table",
    "rows",
    "to_json",
    "write_outputs",
]

OUTPUT_FILES: tuple[str, ...] = (
    "results.json",
    "results.csv",
    "speedup.png",
    "scaling.png",
    "memory.png",
    "report.md",
)
_COLUMNS: tuple[str, ...] = (
    "model",
    "device",
    "#params",
    "#modules",
    "contender",
    "state",
    "median",
    "spread",
    "ns/param",
    "x list",
    "x torch",
    "1st item",
    "tracemalloc",
)


def rows(cases: Sequence[CaseResult]) -> list[dict[str, object]]:
    """One flat record per case, contender and state (the CSV rows, the table's source);
    ``state`` is empty for torch's hot loop and the floor. Speedups of an ``after`` column
    are over torch's ``after`` column."""
    out: list[dict[str, object]] = []
    for case in cases:
        for name, result in case.contenders.items():
            summary = summarize(result.samples_ns) if result.ok and result.samples_ns else None
            ttf = summarize(result.ttf_samples_ns).median if result.ttf_samples_ns else None
            base = split(name)[0]
            counterpart = CONTENDERS[base].counterpart if base in CONTENDERS else None
            memory = result.memory
            grown = result.cache_counts or {}
            out.append(
                {
                    "model": case.model,
                    "family": case.family,
                    "size": case.size,
                    "device": case.device,
                    "requested_device": case.requested_device,
                    "n_param_tensors": case.n_param_tensors,
                    "n_params": case.n_params,
                    "n_modules": case.n_modules,
                    "contender": base,
                    "state": result.state or "",
                    "ok": result.ok,
                    "error": result.error or "",
                    "rounds": len(result.samples_ns),
                    "loops": result.loops,
                    "median_ns": summary.median if summary else None,
                    "q1_ns": summary.q1 if summary else None,
                    "q3_ns": summary.q3 if summary else None,
                    "rel_spread": summary.rel_spread if summary else None,
                    "ns_per_param": (
                        summary.median / case.n_param_tensors
                        if summary and case.n_param_tensors
                        else None
                    ),
                    "speedup_vs_list": case.speedup(name, torch_column(BASELINE, result.state)),
                    "speedup_vs_torch": (
                        case.speedup(name, torch_column(counterpart, result.state))
                        if counterpart
                        else None
                    ),
                    "ttf_median_ns": ttf,
                    "tracemalloc_peak": memory.tracemalloc_peak if memory else None,
                    "rss_delta": memory.rss_delta if memory else None,
                    "cuda_allocated_delta": memory.cuda_allocated_delta if memory else None,
                    "cuda_peak_delta": memory.cuda_peak_delta if memory else None,
                    **{f"cache_{counter}": grown.get(counter) for counter in COUNTERS},
                    "cache_bytes": case.cache_bytes,
                }
            )
    return out


def _cells(row: dict[str, object], first: bool) -> list[str]:
    def num(key: str) -> float | None:
        value = row[key]
        return float(value) if isinstance(value, (int, float)) else None

    device = str(row["device"])
    if row["requested_device"] != row["device"]:
        device += "*"
    error = str(row["error"])
    median = format_ns(num("median_ns")) if row["ok"] else error.split(":")[0]
    spread = num("rel_spread")
    per_param = num("ns_per_param")
    head = [str(row["model"]), device, str(row["n_param_tensors"]), str(row["n_modules"])]
    return (head if first else ["", "", "", ""]) + [
        str(row["contender"]),
        str(row["state"]) or "-",
        median,
        "-" if spread is None else f"{100 * spread:.1f}%",
        "-" if per_param is None else f"{per_param:.1f}",
        format_ratio(num("speedup_vs_list")),
        format_ratio(num("speedup_vs_torch")),
        format_ns(num("ttf_median_ns")),
        format_bytes(num("tracemalloc_peak")),
    ]


def format_table(cases: Sequence[CaseResult], markdown: bool = False) -> str:
    """The results table: one row per contender, the model columns on each case's first row.

    ``state`` is the state of a row (pyparams: cold, warm, invalidated, after; torch:
    after, or none for its hot loop); ``x list`` and ``x torch`` of an ``after`` row are
    over torch after the same sweep;
    ``median`` is per call; ``spread`` the interquartile range over the median;
    ``ns/param`` the median over the number of parameter tensors in the model; ``x list``
    the median per-round speedup over ``list(m.parameters())``; ``x torch`` the same over
    the torch contender doing the same job; ``1st item`` the median time to the first
    item; ``tracemalloc`` the peak of one full run.
    A ``*`` after the device marks an architecture moved to ``meta`` by the memory cap.
    """
    table: list[list[str]] = []
    separators: list[int] = []
    previous = None
    records = rows(cases)
    for row in records:
        key = (row["model"], row["device"])
        if key != previous and previous is not None:
            separators.append(len(table))
        table.append(_cells(row, key != previous))
        previous = key
    text = render_table(_COLUMNS, table, markdown=markdown, left=6, breaks=separators)
    if not markdown and any(r["requested_device"] != r["device"] for r in records):
        text += "\n* over the memory cap: structure timed on meta"
    return text


_SUMMARY: tuple[tuple[str, str], ...] = (
    ("x list cold", column_key("pyparams.list", "cold")),
    ("x list warm", "pyparams.list"),
    ("x list after", column_key("pyparams.list", AFTER)),
    ("x list invalidated", column_key("pyparams.list", "invalidated")),
    ("x parameters", "pyparams.parameters"),
    ("x parameters after", column_key("pyparams.parameters", AFTER)),
    ("x parameter_list", "pyparams.parameter_list"),
    ("x parameter_list after", column_key("pyparams.parameter_list", AFTER)),
    ("x named", "pyparams.named"),
    ("x named after", column_key("pyparams.named", AFTER)),
    ("x trainable", "pyparams.trainable"),
    ("x trainable after", column_key("pyparams.trainable", AFTER)),
)
_MEDIANS: tuple[tuple[str, str], ...] = (
    ("torch.list", "torch.list"),
    ("pyparams.list", "pyparams.list"),
    ("torch.list after", column_key("torch.list", AFTER)),
    ("pyparams.list after", column_key("pyparams.list", AFTER)),
)


def _summary_row(case: CaseResult) -> list[str]:
    def med(name: str) -> str:
        result = case.contenders.get(name)
        if result is None:
            return "-"
        return (
            format_ns(case.median_ns(name))
            if result.ok
            else (result.error or "failed").split(":")[0]
        )

    def peak(name: str) -> str:
        result = case.contenders.get(name)
        return format_bytes(result.memory.tracemalloc_peak if result and result.memory else None)

    speedups = []
    for _, name in _SUMMARY:
        base, state = split(name)
        counterpart = CONTENDERS[base].counterpart
        speedups.append(
            format_ratio(
                case.speedup(name, torch_column(counterpart, state)) if counterpart else None
            )
        )
    device = case.device + ("*" if case.requested_device != case.device else "")
    return [
        case.model,
        device,
        str(case.n_param_tensors),
        str(case.n_modules),
        *(med(name) for _, name in _MEDIANS),
        *speedups,
        format_ratio(case.speedup("floor")),
        format_ratio(case.speedup("floor", over="pyparams.parameters")),
        format_bytes(case.cache_bytes),
        peak("torch.parameters"),
        peak("pyparams.parameters"),
    ]


def format_summary(cases: Sequence[CaseResult], markdown: bool = False) -> str:
    """One row per model and device, at a glance.

    ``torch.list`` and (warm) ``pyparams.list`` medians, hot and after other work;
    ``list(pyparams.parameters(m))``'s median per-round speedup over ``list(m.parameters())``
    in each state (``after``: over torch after the same sweep); each other pyparams
    contender's, warm and after other work, over the torch contender doing the same job;
    the floor's speedup over ``list(m.parameters())`` and ``warm/floor``, how many times the
    floor's time a warm lazy walk takes; the cache's bytes after warm walks; the
    tracemalloc peaks of torch's and (warm) pyparams' lazy iteration.
    """
    header = [
        "model",
        "device",
        "#params",
        "#modules",
        *(label for label, _ in _MEDIANS),
        *(label for label, _ in _SUMMARY),
        "floor x",
        "warm/floor",
        "cache",
        "peak torch",
        "peak pyparams",
    ]
    return render_table(header, [_summary_row(case) for case in cases], markdown=markdown)


def format_targets(cases: Sequence[CaseResult], markdown: bool = False) -> str:
    """The targets of :mod:`pyparams.bench.targets`, measured in ``cases``."""
    return targets_table.format_targets(targets_table.measure(cases), markdown=markdown)


def to_json(run: RunResult) -> dict[str, object]:
    """Everything in the run, raw samples included, as JSON-ready data."""
    return {
        "machine": run.machine,
        "options": run.options,
        "settings": run.settings,
        "after_other_work": run.sweep,
        "wall_seconds": run.wall_seconds,
        "cases": [dataclasses.asdict(case) for case in run.cases],
        "summary": rows(run.cases),
        "fits": [dataclasses.asdict(fit) for fit in run.fits],
        "targets": targets_table.measure(run.cases),
        "claims": [dataclasses.asdict(v) for v in run.claims if isinstance(v, Verdict)],
    }


def format_fits(
    run: RunResult,
    contenders: Sequence[str] = (
        "torch.list",
        "pyparams.list",
        column_key("pyparams.list", "cold"),
    ),
) -> str:
    """One line per scaling family and device: exponent and cost per module per contender."""
    lines = []
    keys = list(dict.fromkeys((f.family, f.device) for f in run.fits))
    for family, device in keys:
        parts = []
        for fit in run.fits:
            if (
                (fit.family, fit.device) == (family, device)
                and fit.contender in contenders
                and fit.exponent is not None
                and fit.ns_per_module is not None
            ):
                parts.append(
                    f"{fit.contender} slope {fit.exponent:.2f}, "
                    f"{format_ns(fit.ns_per_module)}/module"
                )
        if parts:
            lines.append(f"fit {family} [{device}]: " + "; ".join(parts))
    return "\n".join(lines)


def _fits_markdown(run: RunResult) -> str:
    table = [
        [
            fit.family,
            fit.device,
            fit.contender,
            str(len(fit.sizes)),
            f"{fit.exponent:.2f}",
            f"{fit.r2:.3f}",
            f"{fit.ns_per_module:.1f}",
        ]
        for fit in run.fits
        if fit.exponent is not None
    ]
    return render_table(
        ["family", "device", "contender", "points", "log-log exponent", "R^2", "ns per module"],
        table,
        markdown=True,
    )


def _sweep_line(sweep: dict[str, object]) -> str:
    if not sweep:
        return ""
    return (
        "After other work: before each timed call of an `@after` column, untimed, every word "
        f"of a buffer is written on one thread ({SweepPlan(**sweep).describe()}), "  # type: ignore[arg-type]
        "as a training step's forward, backward and optimizer step do between two walks; "
        "torch's `@after` columns get the same sweep, and `@after` ratios are over them. One "
        "call per sample."
    )


def _report_markdown(run: RunResult, plots: Sequence[str]) -> str:
    m = run.machine
    parts = [
        f"Command: `{run.options.get('command', 'pyparams bench')}`  ",
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, "
        f"{format_bytes(float(m['memory_bytes'] or 0))} RAM; CUDA device: {m['cuda_device']}  ",  # type: ignore[arg-type]
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"pyparams {m['pyparams']}; {m['timestamp']}; wall time {run.wall_seconds:.0f} s",
        "",
        "Every figure below was measured in this run. Each contender's output is checked "
        "against torch's (same objects, order and names) before it is timed; samples are "
        "interleaved (A B C, C B A, ...) with the GC paused; medians are quoted, spread is "
        "IQR/median, speedups are medians of per-round ratios.",
        "",
        "Each pyparams contender is timed in four states, each its own column in the same "
        "rounds: cold (`pyparams.cache_clear()` before every timed call), warm (the "
        "default: untimed walks before each sample, then replays of the unchanged model), "
        "invalidated (before every timed call, untimed walks, then every module's `__dict__` "
        "written, as `model.train()` does) and after other work (`@after`: warm, then the "
        "caches swept before every timed call); the set-up is never timed. Torch's "
        "contenders and the floor are timed hot and after the same sweep."
        + (
            ""
            if m.get("pyparams_cache_enabled", True)
            else " **The walk cache was off in this run** ("
            + (m.get("pyparams_cache_off_reason") or "PYPARAMS_CACHE=0, or a CPython without it")
            + "): every walk was live, so the states time the same walk."
        ),
        "",
        _sweep_line(run.sweep),
        "",
        "## Summary",
        "",
        "Speedups are over the torch contender doing the same job (`x list <state>`: "
        "`list(pyparams.parameters(m))` over `list(m.parameters())`), median of per-round "
        "ratios, warm unless a state is named; `after` ratios are over torch after the same "
        "sweep; `floor x` is draining an already built list, over `list(m.parameters())`; "
        "`warm/floor`: a warm lazy walk's time over the floor's; `cache`: the cache's bytes "
        "after warm walks. `*`: over the memory cap, structure timed on meta.",
        "",
        format_summary(run.cases, markdown=True),
        "",
        "## Every contender",
        "",
        format_table(run.cases, markdown=True),
        "",
        "## Targets (measured, not asserted)",
        "",
        format_targets(run.cases, markdown=True),
        "",
        "## Plots",
        "",
        *[f"![{name}]({name})\n" for name in plots],
        "## Scaling fits",
        "",
        "Exponent: slope of log(time) against log(size); ns per module: least-squares slope "
        "of time against module count.",
        "",
        _fits_markdown(run),
    ]
    verdicts = [v for v in run.claims if isinstance(v, Verdict)]
    if verdicts:
        parts += [
            "",
            "## Claims about `parameters()`, tested",
            "",
            "```",
            format_verdicts(verdicts),
            "```",
        ]
    return "\n".join(parts) + "\n"


def write_outputs(run: RunResult, out: Path) -> list[Path]:
    """Write every output file into ``out`` (created if needed); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", to_json(run))
    write_csv(out / "results.csv", rows(run.cases))
    drawn: list[str] = []
    if available("matplotlib"):  # the plots need the bench extra; extras_note said so
        from pyparams.bench import plots

        plots.speedup_plot(run.cases, out / "speedup.png")
        plots.scaling_plot(run.cases, run.fits, out / "scaling.png")
        plots.memory_plot(run.cases, out / "memory.png")
        drawn = ["speedup.png", "scaling.png", "memory.png"]
    write_section(out / "report.md", "zoo", _report_markdown(run, drawn))
    written = [out / name for name in OUTPUT_FILES if not name.endswith(".png") or name in drawn]
    verdicts = [v for v in run.claims if isinstance(v, Verdict)]
    return written + (write_claims(verdicts, out) if verdicts else [])
