"""The consumers section of a run's outputs: consumers.csv/.json, consumers.png and a
``## Consumers`` section in report.md (see :mod:`pyparams.bench.consumers`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from pyparams.bench.consumers import ConsumerRow, format_consumers, to_records
from pyparams.bench.extras import available

__all__ = ["consumers_markdown", "consumers_plot", "write_consumer_outputs"]

_SECTION = "## Consumers"


def consumers_markdown(rows: Sequence[ConsumerRow]) -> str:
    return (
        "\n".join(
            [
                _SECTION,
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
                "pyparams' walks are timed warm (walk-cache replays).",
                "",
                format_consumers(rows, markdown=True),
                "",
                "![consumers](consumers.png)" if available("matplotlib") else "",
            ]
        )
        + "\n"
    )


def consumers_plot(rows: Sequence[ConsumerRow], path: Path) -> None:
    """Speedup over torch per consumer, one panel per model, patched and native bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in rows))
    fig = Figure(figsize=(10, 3.2 * max(1, len(models))))
    for index, model in enumerate(models):
        ax = fig.add_subplot(len(models), 1, index + 1)
        mine = [r for r in rows if r.model == model and not r.error]
        xs = range(len(mine))
        for offset, mode, color in ((-0.2, "patched", "tab:orange"), (0.2, "native", "tab:green")):
            heights = [r.speedups.get(mode, 0.0) for r in mine]
            ax.bar([x + offset for x in xs], heights, width=0.4, color=color, label=mode)
        for x, row in zip(xs, mine, strict=True):
            if row.target is not None:
                ax.plot([x - 0.4, x + 0.4], [row.target] * 2, color="tab:red", linewidth=1)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xticks(list(xs), [r.consumer for r in mine], rotation=20, fontsize="small")
        ax.set_ylabel("speedup over torch (x)")
        ax.set_title(f"{model} (red: target)", fontsize="medium")
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_consumer_outputs(rows: Sequence[ConsumerRow], out: Path) -> list[Path]:
    """Write the consumer files into ``out`` and put the section into its report.md
    (replacing an older one); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    records = to_records(rows)
    written = [out / "consumers.json", out / "consumers.csv"]
    written[0].write_text(json.dumps(records, indent=1, default=str))
    keys = list(dict.fromkeys(k for record in records for k in record))
    with written[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)
    if available("matplotlib"):
        consumers_plot(rows, out / "consumers.png")
        written.append(out / "consumers.png")
    report = out / "report.md"
    text = report.read_text() if report.exists() else "# pyparams benchmark report\n"
    if _SECTION in text:  # an older section is replaced, the sections after it kept
        start = text.index(_SECTION)
        end = text.find("\n## ", start + len(_SECTION))
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    report.write_text(text.rstrip() + "\n\n" + consumers_markdown(rows))
    written.append(report)
    return written
