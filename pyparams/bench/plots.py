"""The three PNG plots of a run, drawn with matplotlib's Agg backend (no display needed).

- ``speedup.png``: speedup over ``list(m.parameters())`` per model, one bar per contender
  and state (``@after``: after other work, over torch after the same sweep);
- ``scaling.png``: median time against depth / width / experts (log-log, one line per
  contender, its fitted exponent in the legend; pyparams lines are warm walks, plus
  ``list(pyparams.parameters(m))`` cold) and against the frozen fraction (the
  ``requires_grad`` contenders only);
- ``memory.png``: tracemalloc peak of one run per model and contender.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from pyparams.bench.contenders import BASELINE
from pyparams.bench.measure import CaseResult
from pyparams.bench.runner import Fit
from pyparams.bench.states import AFTER, DEFAULT_STATE, column_key, split, torch_column

__all__ = ["memory_plot", "scaling_plot", "select_cases", "speedup_plot"]

_BAR_CONTENDERS = (
    column_key("pyparams.list", "cold"),
    "pyparams.list",
    column_key("pyparams.list", AFTER),
    column_key("pyparams.list", "invalidated"),
    "pyparams.parameters",
    column_key("pyparams.parameters", AFTER),
    "pyparams.parameter_list",
    column_key("pyparams.parameter_list", AFTER),
    "pyparams.named",
    "pyparams.trainable",
    "floor",
)  # plain pyparams names: warm walks
# Scaling lines beyond the hot and warm ones: a cold walk, for its cost per module, and
# torch's and pyparams' list after other work.
_SCALING_STATES = (
    column_key("pyparams.list", "cold"),
    column_key("pyparams.list", AFTER),
    column_key("torch.list", AFTER),
)
_MEMORY_CONTENDERS = (
    "torch.parameters",
    "torch.list",
    "pyparams.parameters",
    "pyparams.parameter_list",
    "floor",
)
_FOCUS_CONTENDERS = (
    "torch.list",
    "torch.trainable",
    "pyparams.trainable",
    "pyparams.trainable_list",
    "floor",
)
_COLORS = {
    "parameters": "tab:blue",
    "list": "tab:orange",
    "parameter_list": "tab:green",
    "trainable": "tab:red",
    "trainable_list": "tab:purple",
    "named": "tab:brown",
    "floor": "tab:gray",
}  # one colour per job; torch dashed, pyparams solid


def _style(name: str) -> dict[str, object]:
    """Torch dashed, pyparams solid (cold dash-dotted), the floor dotted; one colour per job."""
    base, state = split(name)
    job = base.split(".")[-1]
    line = (
        "--"
        if name.startswith("torch")
        else ":"
        if name == "floor"
        else "-"
        if state == DEFAULT_STATE
        else "-."
    )
    # after other work: the same line, paler
    alpha = 0.55 if state == AFTER else 1.0
    return {"linestyle": line, "color": _COLORS.get(job, "black"), "alpha": alpha}


def select_cases(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """Architectures, plus the largest member of each scaling family where torch still ran."""
    chosen = [c for c in cases if c.family == "arch"]
    for family in ("depth", "width", "experts", "frozen", "moe"):
        members = [c for c in cases if c.family == family and c.median_ns(BASELINE) is not None]
        if members:
            chosen.append(max(members, key=lambda c: (c.size or 0, c.n_modules)))
    return chosen


def _label(case: CaseResult) -> str:
    return f"{case.model} [{case.device}]"


def _empty(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()


def _grouped_bars(
    fig: Figure, cases: Sequence[CaseResult], names: Sequence[str], value: str, xlabel: str
) -> None:
    ax = fig.add_subplot()
    height = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        ys, xs = [], []
        for row, case in enumerate(cases):
            if value == "speedup":
                x = case.speedup(name, torch_column(BASELINE, split(name)[1]))
            else:
                result = case.contenders.get(name)
                x = result.memory.tracemalloc_peak if result and result.memory else None
            if x is not None and x > 0:
                ys.append(row + index * height)
                xs.append(x)
        # tab20: a colour each for up to 20 bars (tab10 repeats from the eleventh)
        ax.barh(ys, xs, height=height, label=name, color=matplotlib.colormaps["tab20"](index))
    ax.set_yticks([row + 0.4 - height / 2 for row in range(len(cases))])
    ax.set_yticklabels([_label(c) for c in cases])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _bars_figure(n_cases: int, n_bars: int) -> Figure:
    """A figure tall enough for `n_cases` groups of `n_bars` horizontal bars."""
    return Figure(figsize=(12, 1.0 + 0.45 * max(n_cases, 2) * max(n_bars, 1) / 3))


def speedup_plot(cases: Sequence[CaseResult], path: Path) -> None:
    """Bars per model: median per-round speedup over ``list(m.parameters())``."""
    chosen = select_cases(cases)
    names = [n for n in _BAR_CONTENDERS if any(n in c.contenders for c in chosen)]
    fig = _bars_figure(len(chosen), len(names))
    if not chosen or not names:
        _empty(fig, "no case with both the baseline and a pyparams contender")
    else:
        _grouped_bars(fig, chosen, names, "speedup", "speedup over list(m.parameters()) (log)")
        ax = fig.axes[0]
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(
            "pyparams (warm, or @state) vs list(model.parameters()) in the same "
            "state, median of interleaved rounds"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def memory_plot(cases: Sequence[CaseResult], path: Path) -> None:
    """Bars per model: tracemalloc peak of one full run of each contender."""
    chosen = select_cases(cases) or list(cases)
    names = [n for n in _MEMORY_CONTENDERS if any(n in c.contenders for c in chosen)]
    fig = _bars_figure(len(chosen), len(names))
    if not chosen or not names:
        _empty(fig, "no memory measurements in this run")
    else:
        _grouped_bars(fig, chosen, names, "memory", "tracemalloc peak of one run, bytes (log)")
        fig.axes[0].set_title("transient Python + PyMem memory of a full walk")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def scaling_plot(cases: Sequence[CaseResult], fits: Sequence[Fit], path: Path) -> None:
    """Median time against family size: log-log for depth/width/experts, log-y for frozen."""
    families = [
        f for f in ("depth", "width", "experts", "frozen") if any(c.family == f for c in cases)
    ]
    fig = Figure(figsize=(14, 11 if len(families) > 2 else 5.5))
    if not families:
        _empty(fig, "no scaling family in this run")
        fig.savefig(path, dpi=110)
        return
    rows = 2 if len(families) > 2 else 1
    cols = 2 if len(families) > 1 else 1
    xlabels = {
        "depth": "nested modules (depth)",
        "width": "sibling Linear modules",
        "experts": "unfused experts per layer (8 layers)",
        "frozen": "% of parameters frozen",
    }
    for index, family in enumerate(families):
        ax = fig.add_subplot(rows, cols, index + 1)
        devices = sorted({c.device for c in cases if c.family == family})
        for device in devices:
            members = sorted(
                (c for c in cases if c.family == family and c.device == device),
                key=lambda c: c.size or 0,
            )
            present = [
                n
                for n in dict.fromkeys(n for c in members for n in c.contenders)
                if split(n)[1] in (None, DEFAULT_STATE) or n in _SCALING_STATES
            ]
            for name in (
                present if family != "frozen" else [n for n in _FOCUS_CONTENDERS if n in present]
            ):
                pts = [(c.size, c.median_ns(name)) for c in members]
                pts = [(x, y) for x, y in pts if x is not None and y is not None]
                if not pts:
                    continue
                fit = next(
                    (
                        f
                        for f in fits
                        if (f.family, f.device, f.contender) == (family, device, name)
                    ),
                    None,
                )
                label = name if len(devices) == 1 else f"{name} [{device}]"
                if fit is not None and fit.exponent is not None:
                    label += f" (slope {fit.exponent:.2f})"
                ax.plot(
                    [x for x, _ in pts],
                    [y / 1e3 for _, y in pts],
                    marker="o",
                    markersize=3,
                    label=label,
                    **_style(name),
                )
        if family != "frozen":
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabels[family])
        ax.set_ylabel("median time per call (us)")
        ax.set_title(
            f"{family} (dashed: torch, solid: pyparams warm, dash-dot: cold, "
            "dotted: floor; pale: after other work)",
            fontsize="medium",
        )
        ax.grid(which="both", alpha=0.3)
        ax.legend(loc="best", fontsize="x-small", ncol=2 if family != "frozen" else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
