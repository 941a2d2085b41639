"""The consumers section of a run's outputs: its table, consumers.csv/.json, consumers.png
and the ``consumers`` section of report.md (see :mod:`pyparams.bench.consumers`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pyparams.bench.consumers import STEP, ConsumerRow
from pyparams.bench.extras import available
from pyparams.bench.formatting import format_ns, format_ratio, render_table
from pyparams.bench.outputs import write_csv, write_json
from pyparams.bench.report_file import write_section
from pyparams.bench.targets import WALK_SHARE_GOAL

__all__ = [
    "OUTPUT_FILES",
    "consumers_markdown",
    "consumers_plot",
    "format_consumers",
    "to_records",
    "write_consumer_outputs",
]

# What write_consumer_outputs writes (the plot with matplotlib), besides report.md.
OUTPUT_FILES: tuple[str, ...] = ("consumers.json", "consumers.csv", "consumers.png")
_HEADER = (
    "model",
    "consumer",
    "torch",
    "patched",
    "native",
    "x patched",
    "x native",
    "walk torch",
    "walk patched",
    "saved",
    "target",
    f"walk patched <= {100 * WALK_SHARE_GOAL:.0f}%",
    "torch in step",
    "x patched in step",
    "x native in step",
)


def _walk(row: ConsumerRow, mode: str) -> str:
    """The walk alone in ``mode``: its median and its share of the consumer's median."""
    value = row.walk_share.get(mode)
    if value is None:
        return "-"
    return f"{format_ns(row.medians_ns[f'walk:{mode}'])} ({100 * value:.0f}%)"


def _walk_share_verdict(row: ConsumerRow) -> str:
    """Whether the patched walk's share of the patched consumer meets WALK_SHARE_GOAL."""
    share = row.walk_share.get("patched")
    if share is None:
        return "-"  # the consumer makes no call to the walking methods
    return "met" if share <= WALK_SHARE_GOAL else "missed"


def _cells(row: ConsumerRow) -> list[str]:
    if row.error:
        return [row.model, row.consumer, f"not timed: {row.error}"] + [""] * (len(_HEADER) - 3)
    torch_ns = row.medians_ns.get("torch")
    best = min(row.medians_ns.get(m, float("inf")) for m in ("patched", "native"))
    gain = torch_ns - best if torch_ns else 0.0
    sign = "-" if gain < 0 else ""
    saved = f"{sign}{format_ns(abs(gain))} ({100 * gain / torch_ns:.0f}%)" if torch_ns else "-"
    target = (
        "-"
        if row.target is None
        else f">= {row.target:g}x {'met' if (row.best or 0) >= row.target else 'missed'}"
    )
    return [
        row.model,
        row.consumer,
        format_ns(torch_ns),
        format_ns(row.medians_ns.get("patched")),
        format_ns(row.medians_ns.get("native")),
        format_ratio(row.speedups.get("patched")),
        format_ratio(row.speedups.get("native")),
        _walk(row, "torch"),
        _walk(row, "patched"),
        saved,
        target,
        _walk_share_verdict(row),
        format_ns(row.medians_ns.get(f"torch@{STEP}")),
        format_ratio(row.speedups.get(f"patched@{STEP}")),
        format_ratio(row.speedups.get(f"native@{STEP}")),
    ]


def format_consumers(rows: Sequence[ConsumerRow], markdown: bool = False) -> str:
    """One row per (model, consumer): medians, speedups, the walk alone (torch's and
    patched, each with its share of that mode's total), the saving, the target, and the
    same consumer inside a step loop (torch's median, the speedups)."""
    return render_table(_HEADER, [_cells(row) for row in rows], markdown=markdown)


def to_records(rows: Sequence[ConsumerRow]) -> list[dict[str, object]]:
    """Flat records, the CSV's rows."""
    return [
        {
            "model": r.model,
            "consumer": r.consumer,
            "error": r.error,
            **{f"{k}_ns": v for k, v in r.medians_ns.items()},
            **{f"x_{k}": v for k, v in r.speedups.items()},
            **{f"walk_share_{k}": v for k, v in r.walk_share.items()},
            "walk_calls": r.walk_calls,
            "target": r.target,
        }
        for r in rows
    ]


def consumers_markdown(rows: Sequence[ConsumerRow]) -> str:
    """The ``## Consumers`` section of report.md."""
    return (
        "\n".join(
            [
                "## Consumers",
                "",
                "Callers of nn.Module's walking methods, run as torch ships them (`torch`), with "
                "`pyparams.patch()` on (`patched`) and through pyparams' own consumer where one "
                "exists (`native`: `pyparams.zero_grad`). Each mode's result is checked against "
                "torch's (read after the call, untimed) before it is timed; every call is timed "
                "on its own, its set-up untimed; medians of interleaved rounds, speedups are "
                "medians of per-round ratios. `walk torch` / `walk patched`: the walk alone, "
                "the very calls to the walking methods one run of the consumer made (recorded "
                "with torch's methods, each replayed as `list()`, for the items the consumer "
                "took), timed with torch's methods and patched in the same rounds, with its "
                "share of that mode's total; the rest of the total is spent outside the walk. "
                f"`walk patched <= {100 * WALK_SHARE_GOAL:.0f}%`: whether that share, patched, "
                "is within the goal (`-`: the consumer makes no call to the walking methods). "
                "pyparams' walks are timed warm (walk-cache replays). `in step`: the consumers a "
                "training loop calls every step, timed again right after an untimed forward, "
                "backward and optimizer step in the same mode (rounds of their own).",
                "",
                format_consumers(rows, markdown=True),
                "",
                "![consumers](consumers.png)" if available("matplotlib") else "",
            ]
        )
        + "\n"
    )


def consumers_plot(rows: Sequence[ConsumerRow], path: Path) -> None:
    """Speedup over torch per consumer, one panel per model: patched and native bars,
    called back to back and inside a step loop."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in rows))
    fig = Figure(figsize=(11, 3.4 * max(1, len(models))))
    bars = (
        ("patched", "tab:orange", None),
        ("native", "tab:green", None),
        (f"patched@{STEP}", "tab:orange", "//"),
        (f"native@{STEP}", "tab:green", "//"),
    )
    width = 0.8 / len(bars)
    for index, model in enumerate(models):
        ax = fig.add_subplot(len(models), 1, index + 1)
        mine = [r for r in rows if r.model == model and not r.error]
        xs = range(len(mine))
        for offset, (key, color, hatch) in enumerate(bars):
            heights = [r.speedups.get(key, 0.0) for r in mine]
            ax.bar(
                [x - 0.4 + (offset + 0.5) * width for x in xs],
                heights,
                width=width,
                color=color,
                hatch=hatch,
                edgecolor="black" if hatch else None,
                label=key.replace(f"@{STEP}", " in step"),
            )
        for x, row in zip(xs, mine, strict=True):
            if row.target is not None:
                ax.plot([x - 0.4, x + 0.4], [row.target] * 2, color="tab:red", linewidth=1)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xticks(list(xs), [r.consumer for r in mine], rotation=20, fontsize="small")
        ax.set_ylabel("speedup over torch (x)")
        ax.set_title(f"{model} (red: target; hatched: inside a step loop)", fontsize="medium")
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_consumer_outputs(rows: Sequence[ConsumerRow], out: Path) -> list[Path]:
    """Write the consumer files into ``out`` and the consumers section of its report.md
    (replacing an older one); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    records = to_records(rows)
    written = [out / name for name in OUTPUT_FILES[:2]]
    write_json(written[0], [dataclasses.asdict(row) for row in rows])  # rows, reloadable
    write_csv(written[1], records)
    if available("matplotlib"):
        consumers_plot(rows, out / OUTPUT_FILES[2])
        written.append(out / OUTPUT_FILES[2])
    write_section(out / "report.md", "consumers", consumers_markdown(rows))
    written.append(out / "report.md")
    return written
