"""Turning a :class:`~pyparams.bench.runner.RunResult` into a table, files and plots.

``write_outputs`` writes ``results.json`` (machine, versions, options and every raw
sample), ``results.csv`` (one row per case, contender and walk-cache state), ``speedup.png``,
``scaling.png``, ``memory.png`` (matplotlib, Agg backend) and ``report.md`` embedding them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from pyparams.bench.claims import Verdict, format_verdicts
from pyparams.bench.contenders import BASELINE, CONTENDERS
from pyparams.bench.extras import available
from pyparams.bench.measure import CaseResult
from pyparams.bench.runner import RunResult
from pyparams.bench.states import COUNTERS, split, variant
from pyparams.bench.stats import summarize

__all__ = [
    "OUTPUT_FILES",
    "format_bytes",
    "format_fits",
    "format_ns",
    "format_summary",
    "format_table",
    "rows",
    "targets",
    "to_json",
    "write_outputs",
]

OUTPUT_FILES: tuple[str, ...] = (
    "results.json", "results.csv", "speedup.png", "scaling.png", "memory.png", "report.md",
)
_COLUMNS: tuple[str, ...] = (
    "model", "device", "#params", "#modules", "contender", "state", "median", "spread",
    "ns/param", "x list", "x torch", "1st item", "tracemalloc",
)


def format_ns(ns: float | None) -> str:
    """``1234.0`` -> ``'1.23 us'``; ``None`` -> ``'-'``."""
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def format_bytes(n: float | None) -> str:
    """``2048`` -> ``'2.0 KiB'``; ``None`` -> ``'-'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def rows(cases: Sequence[CaseResult]) -> list[dict[str, object]]:
    """One flat record per case, contender and walk-cache state (the CSV rows, the table's
    source); ``state`` is empty for torch and the floor, which have none."""
    out: list[dict[str, object]] = []
    for case in cases:
        for name, result in case.contenders.items():
            summary = summarize(result.samples_ns) if result.ok and result.samples_ns else None
            ttf = summarize(result.ttf_samples_ns).median if result.ttf_samples_ns else None
            base = split(name)[0]
            counterpart = CONTENDERS[base].counterpart if base in CONTENDERS else None
            memory = result.memory
            grown = result.cache_counts or {}
            out.append({
                "model": case.model, "family": case.family, "size": case.size,
                "device": case.device, "requested_device": case.requested_device,
                "n_param_tensors": case.n_param_tensors, "n_params": case.n_params,
                "n_modules": case.n_modules, "contender": base, "state": result.state or "",
                "ok": result.ok,
                "error": result.error or "", "rounds": len(result.samples_ns),
                "loops": result.loops,
                "median_ns": summary.median if summary else None,
                "q1_ns": summary.q1 if summary else None,
                "q3_ns": summary.q3 if summary else None,
                "rel_spread": summary.rel_spread if summary else None,
                "ns_per_param": (summary.median / case.n_param_tensors
                                 if summary and case.n_param_tensors else None),
                "speedup_vs_list": case.speedup(name, BASELINE),
                "speedup_vs_torch": case.speedup(name, counterpart) if counterpart else None,
                "ttf_median_ns": ttf,
                "tracemalloc_peak": memory.tracemalloc_peak if memory else None,
                "rss_delta": memory.rss_delta if memory else None,
                "cuda_allocated_delta": memory.cuda_allocated_delta if memory else None,
                "cuda_peak_delta": memory.cuda_peak_delta if memory else None,
                **{f"cache_{counter}": grown.get(counter) for counter in COUNTERS},
                "cache_bytes": case.cache_bytes,
            })
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
        str(row["contender"]), str(row["state"]) or "-", median,
        "-" if spread is None else f"{100 * spread:.1f}%",
        "-" if per_param is None else f"{per_param:.1f}",
        _ratio(num("speedup_vs_list")), _ratio(num("speedup_vs_torch")),
        format_ns(num("ttf_median_ns")), format_bytes(num("tracemalloc_peak")),
    ]


def format_table(cases: Sequence[CaseResult], markdown: bool = False) -> str:
    """The results table: one row per contender, the model columns on each case's first row.

    ``state`` is the walk-cache state of a pyparams row (cold, warm, invalidated);
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
    for row in rows(cases):
        key = (row["model"], row["device"])
        if key != previous and previous is not None:
            separators.append(len(table))
        table.append(_cells(row, key != previous))
        previous = key
    if markdown:
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join(cells) + " |" for cells in table]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(_COLUMNS)]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 6 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    lines = [line(_COLUMNS), rule]
    for index, cells in enumerate(table):
        if index in separators:
            lines.append("")
        lines.append(line(cells))
    if any(r["requested_device"] != r["device"] for r in rows(cases)):
        lines.append("* over the memory cap: structure timed on meta")
    return "\n".join(lines)


_SUMMARY: tuple[tuple[str, str], ...] = (
    ("x list cold", variant("pyparams.list", "cold")), ("x list warm", "pyparams.list"),
    ("x list invalidated", variant("pyparams.list", "invalidated")),
    ("x parameters", "pyparams.parameters"), ("x parameter_list", "pyparams.parameter_list"),
    ("x named", "pyparams.named"), ("x trainable", "pyparams.trainable"),
)


def format_summary(cases: Sequence[CaseResult], markdown: bool = False) -> str:
    """One row per model and device, at a glance.

    ``torch.list`` and (warm) ``pyparams.list`` medians; ``list(pyparams.parameters(m))``'s
    median per-round speedup over ``list(m.parameters())`` in each walk-cache state; each
    other pyparams contender's, warm, over the torch contender doing the same job; the
    floor's speedup over ``list(m.parameters())`` and ``warm/floor``, how many times the
    floor's time a warm lazy walk takes; the cache's bytes after warm walks; the
    tracemalloc peaks of torch's and (warm) pyparams' lazy iteration.
    """
    header = ["model", "device", "#params", "#modules", "torch.list", "pyparams.list",
              *(label for label, _ in _SUMMARY), "floor x", "warm/floor", "cache",
              "peak torch", "peak pyparams"]
    table = []
    for case in cases:
        def med(name: str, case: CaseResult = case) -> str:
            result = case.contenders.get(name)
            if result is None:
                return "-"
            return format_ns(case.median_ns(name)) if result.ok else \
                (result.error or "failed").split(":")[0]

        def peak(name: str, case: CaseResult = case) -> str:
            result = case.contenders.get(name)
            return format_bytes(result.memory.tracemalloc_peak
                                if result and result.memory else None)

        speedups = []
        for _, name in _SUMMARY:
            counterpart = CONTENDERS[split(name)[0]].counterpart
            speedups.append(_ratio(case.speedup(name, counterpart) if counterpart else None))
        device = case.device + ("*" if case.requested_device != case.device else "")
        table.append([case.model, device, str(case.n_param_tensors), str(case.n_modules),
                      med("torch.list"), med("pyparams.list"), *speedups,
                      _ratio(case.speedup("floor")),
                      _ratio(case.speedup("floor", over="pyparams.parameters")),
                      format_bytes(case.cache_bytes), peak("torch.parameters"),
                      peak("pyparams.parameters")])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table])
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in [header, ["-" * w for w in widths], *table]]
    return "\n".join(lines)


def _find(cases: Sequence[CaseResult], model: str) -> list[CaseResult]:
    return [c for c in cases if c.model == model]


def targets(cases: Sequence[CaseResult]) -> list[dict[str, object]]:
    """The performance targets, measured in this run (never asserted).

    Each row: target, cases used, contender, worst measured value, goal, whether it was met.
    Only targets whose cases ran appear. Speedups are of warm walks (the cache replays
    an unchanged model), over ``list(m.parameters())``.
    """
    out: list[dict[str, object]] = []

    def add(label: str, chosen: Sequence[CaseResult], contender: str, goal: float) -> None:
        values = [c.speedup(contender) for c in chosen]
        measured = [v for v in values if v is not None]
        if measured:
            worst = min(measured)
            out.append({"target": label, "cases": [f"{c.model}[{c.device}]" for c in chosen],
                        "contender": contender, "measured": worst, "goal": goal,
                        "met": worst >= goal, "kind": "speedup vs list(m.parameters())"})

    archs = [c for c in cases if c.family == "arch"]
    for contender in ("pyparams.list", "pyparams.parameter_list"):
        add("real architectures >= 50x (warm)", archs, contender, 50.0)
        add("300-deep chain >= 300x (warm)", _find(cases, "depth-300"), contender, 300.0)
        widths = [c for c in cases if c.family == "width" and (c.size or 0) >= 20000]
        add("20,000 siblings >= 20x (warm)", widths, contender, 20.0)
        moe = _find(cases, "moe-32x64") or [c for c in cases if c.family == "experts"
                                             and (c.size or 0) >= 64]
        add("unfused MoE >= 20x (warm)", moe, contender, 20.0)
    add("named walks, real architectures >= 20x (warm)", archs, "pyparams.named", 20.0)
    ratios = []
    for case in cases:
        torch_gen, native = case.contenders.get("torch.parameters"), case.contenders.get(
            "pyparams.parameters")
        if torch_gen and native and torch_gen.memory and native.memory and \
                torch_gen.memory.tracemalloc_peak > 0:
            ratios.append(native.memory.tracemalloc_peak / torch_gen.memory.tracemalloc_peak)
    if ratios:
        worst = max(ratios)
        out.append({"target": "lazy iteration tracemalloc peak <= 1/4 of torch's generator",
                    "cases": [f"{len(ratios)} cases"], "contender": "pyparams.parameters",
                    "measured": worst, "goal": 0.25, "met": worst <= 0.25,
                    "kind": "peak ratio pyparams/torch (worst case)"})
    return out


def to_json(run: RunResult) -> dict[str, object]:
    """Everything in the run, raw samples included, as JSON-ready data."""
    return {
        "machine": run.machine,
        "options": run.options,
        "settings": run.settings,
        "wall_seconds": run.wall_seconds,
        "cases": [dataclasses.asdict(case) for case in run.cases],
        "summary": rows(run.cases),
        "fits": [dataclasses.asdict(fit) for fit in run.fits],
        "targets": targets(run.cases),
        "claims": [dataclasses.asdict(v) for v in run.claims if isinstance(v, Verdict)],
    }


def _write_csv(path: Path, records: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["model"])
        writer.writeheader()
        writer.writerows(records)


def format_fits(run: RunResult, contenders: Sequence[str] = (
        "torch.list", "pyparams.list", variant("pyparams.list", "cold"))) -> str:
    """One line per scaling family and device: exponent and cost per module per contender."""
    lines = []
    keys = list(dict.fromkeys((f.family, f.device) for f in run.fits))
    for family, device in keys:
        parts = []
        for fit in run.fits:
            if (fit.family, fit.device) == (family, device) and fit.contender in contenders \
                    and fit.exponent is not None and fit.ns_per_module is not None:
                parts.append(f"{fit.contender} slope {fit.exponent:.2f}, "
                             f"{format_ns(fit.ns_per_module)}/module")
        if parts:
            lines.append(f"fit {family} [{device}]: " + "; ".join(parts))
    return "\n".join(lines)


def _fits_markdown(run: RunResult) -> str:
    lines = ["| family | device | contender | points | log-log exponent | R^2 | ns per module |",
             "|---|---|---|---|---|---|---|"]
    for fit in run.fits:
        if fit.exponent is None:
            continue
        lines.append(f"| {fit.family} | {fit.device} | {fit.contender} | {len(fit.sizes)} | "
                     f"{fit.exponent:.2f} | {fit.r2:.3f} | {fit.ns_per_module:.1f} |")
    return "\n".join(lines)


def _targets_markdown(run: RunResult) -> str:
    lines = ["| target | contender | measured (worst case) | goal | met |", "|---|---|---|---|---|"]
    for t in targets(run.cases):
        measured, goal = float(t["measured"]), float(t["goal"])  # type: ignore[arg-type]
        fmt = "{:.2f}" if goal < 1 else "{:.1f}x"
        lines.append(f"| {t['target']} ({', '.join(t['cases'])}) | {t['contender']} | "  # type: ignore[arg-type]
                     f"{fmt.format(measured)} | {fmt.format(goal)} | "
                     f"{'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines)


def _report_markdown(run: RunResult, plots: Sequence[str]) -> str:
    m = run.machine
    parts = [
        "# pyparams benchmark report",
        "",
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
        "Each pyparams contender is timed in three walk-cache states, each its own column in "
        "the same rounds: cold (`pyparams.cache_clear()` before every timed call), warm (the "
        "default: untimed walks before each sample, then replays of the unchanged model) and "
        "invalidated (before every timed call, untimed walks, then every module's `__dict__` "
        "written, as `model.train()` does); the set-up is never timed. Torch and the floor "
        "have no state."
        + ("" if m.get("pyparams_cache_enabled", True) else
           " **The walk cache was off in this run** (PYPARAMS_CACHE=0, or CPython 3.13.0 "
           "or 3.14 and later, where it is off): every walk was live, so the three states time "
           "the same walk."),
        "",
        "## Summary",
        "",
        "Speedups are over the torch contender doing the same job (`x list <state>`: "
        "`list(pyparams.parameters(m))` over `list(m.parameters())`), median of per-round "
        "ratios, warm unless a state is named; `floor x` is draining an already built list, "
        "over `list(m.parameters())`; `warm/floor`: a warm lazy walk's time over the floor's; "
        "`cache`: the cache's bytes after warm walks. "
        "`*`: over the memory cap, structure timed on meta.",
        "",
        format_summary(run.cases, markdown=True),
        "",
        "## Every contender",
        "",
        format_table(run.cases, markdown=True),
        "",
        "## Targets (measured, not asserted)",
        "",
        _targets_markdown(run),
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
        parts += ["", "## Claims about `parameters()`, tested", "", "```",
                  format_verdicts(verdicts), "```"]
    return "\n".join(parts) + "\n"


def write_outputs(run: RunResult, out: Path) -> list[Path]:
    """Write every output file into ``out`` (created if needed); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(to_json(run), indent=1, default=str))
    _write_csv(out / "results.csv", rows(run.cases))
    drawn: list[str] = []
    if available("matplotlib"):  # the plots need the bench extra; extras_note said so
        from pyparams.bench import plots

        plots.speedup_plot(run.cases, out / "speedup.png")
        plots.scaling_plot(run.cases, run.fits, out / "scaling.png")
        plots.memory_plot(run.cases, out / "memory.png")
        drawn = ["speedup.png", "scaling.png", "memory.png"]
    (out / "report.md").write_text(_report_markdown(run, drawn))
    return [out / name for name in OUTPUT_FILES if not name.endswith(".png") or name in drawn]
