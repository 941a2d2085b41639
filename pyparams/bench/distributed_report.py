"""The distributed section of the report: per-rank table, JSON, CSV, plot, ``report.md``.

Rank 0 of :mod:`pyparams.bench.distributed` calls :func:`write_outputs` with every rank's
samples. Medians and speedups are computed as in the rest of the report: the median per
call, and the median of per-round ratios torch/patched (:mod:`pyparams.bench.stats`).
The section is also the ``distributed`` section of ``report.md`` in the same folder
(:mod:`pyparams.bench.report_file`), so running the distributed bench after
``pyparams bench --out DIR`` completes that report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pyparams.bench.formatting import format_bytes, format_ns, format_ratio, render_table
from pyparams.bench.outputs import write_csv, write_json
from pyparams.bench.report_file import write_section
from pyparams.bench.stats import paired_ratios, summarize

__all__ = [
    "OUTPUT_FILES",
    "DistributedRun",
    "format_speedups",
    "format_table",
    "rows",
    "write_outputs",
]

OUTPUT_FILES: tuple[str, ...] = (
    "distributed.json",
    "distributed.csv",
    "distributed.png",
    "distributed.md",
)


@dataclass
class DistributedRun:
    """A whole distributed run: where, how, and every rank's samples (as dicts)."""

    machine: dict[str, object]
    backend: str
    world_size: int
    command: str
    models: list[str]
    wrappers: list[str]
    rounds: int
    samples: list[dict[str, object]]
    wall_seconds: float


def rows(samples: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """One record per rank, model, wrapper and job: both medians and the speedup."""
    keyed: dict[tuple[object, ...], dict[str, dict[str, object]]] = {}
    for s in samples:
        key = (s["model"], s["wrapper"], s["job"], s["rank"])
        keyed.setdefault(key, {})[str(s["mode"])] = s
    out = []
    for (model, wrapper, job, rank), modes in keyed.items():
        base, native = modes.get("torch"), modes.get("patched")
        if base is None or native is None:
            continue
        t, p = list(base["samples_ns"]), list(native["samples_ns"])  # type: ignore[call-overload]
        out.append(
            {
                "model": model,
                "wrapper": wrapper,
                "job": job,
                "rank": rank,
                "n_param_tensors": base["n_param_tensors"],
                "n_modules": base["n_modules"],
                "rounds": min(len(t), len(p)),
                "loops_torch": base["loops"],
                "loops_patched": native["loops"],
                "torch_median_ns": summarize(t).median,
                "patched_median_ns": summarize(p).median,
                "torch_spread": summarize(t).rel_spread,
                "patched_spread": summarize(p).rel_spread,
                "speedup": summarize(paired_ratios(t[: len(p)], p[: len(t)])).median,
            }
        )
    return out


def format_table(records: Sequence[dict[str, object]], markdown: bool = False) -> str:
    """Model, wrapper, job, then torch / pyparams medians and the speedup for each rank."""
    ranks = sorted({int(r["rank"]) for r in records})  # type: ignore[call-overload]
    header = ["model", "wrapper", "job", "#params"]
    for rank in ranks:
        header += [f"r{rank} torch", f"r{rank} patched", f"r{rank} x"]
    grouped: dict[tuple[object, ...], dict[int, dict[str, object]]] = {}
    for r in records:
        grouped.setdefault((r["model"], r["wrapper"], r["job"]), {})[int(r["rank"])] = r  # type: ignore[call-overload]
    table = []
    for (model, wrapper, job), by_rank in grouped.items():
        first = next(iter(by_rank.values()))
        line = [str(model), str(wrapper), str(job), str(first["n_param_tensors"])]
        for rank in ranks:
            r = by_rank.get(rank)
            line += (
                ["-", "-", "-"]
                if r is None
                else [
                    format_ns(float(r["torch_median_ns"])),  # type: ignore[arg-type]
                    format_ns(float(r["patched_median_ns"])),  # type: ignore[arg-type]
                    format_ratio(float(r["speedup"])),
                ]
            )  # type: ignore[arg-type]
        table.append(line)
    return render_table(header, table, markdown=markdown, left=3)


def format_speedups(records: Sequence[dict[str, object]]) -> str:
    """Markdown, one row per model and wrapper: each job's speedup on every rank
    (``r0 / r1 / ...``), the at-a-glance view of :func:`format_table`."""
    jobs = list(dict.fromkeys(str(r["job"]) for r in records))
    ranks = sorted({int(r["rank"]) for r in records})  # type: ignore[call-overload]
    grouped: dict[tuple[object, object], dict[tuple[str, int], float]] = {}
    sizes: dict[tuple[object, object], object] = {}
    for r in records:
        key = (r["model"], r["wrapper"])
        grouped.setdefault(key, {})[(str(r["job"]), int(r["rank"]))] = float(r["speedup"])  # type: ignore[call-overload, arg-type]
        sizes[key] = r["n_param_tensors"]
    table = []
    for (model, wrapper), values in grouped.items():
        cells = [
            " / ".join(
                format_ratio(values[(job, rank)]) if (job, rank) in values else "-"
                for rank in ranks
            )
            if any((job, r) in values for r in ranks)
            else "-"
            for job in jobs
        ]
        table.append([str(model), str(wrapper), str(sizes[(model, wrapper)]), *cells])
    return render_table(["model", "wrapper", "#params", *jobs], table, markdown=True)


def _plot(records: Sequence[dict[str, object]], path: Path) -> None:
    """Horizontal bars: speedup of each job on each model and wrapper, one bar per rank."""
    from pyparams.bench import plots  # selects the Agg backend

    keys = list(dict.fromkeys((r["model"], r["wrapper"], r["job"]) for r in records))
    ranks = sorted({int(r["rank"]) for r in records})  # type: ignore[call-overload]
    fig = plots.Figure(figsize=(11, 1.5 + 0.22 * max(len(keys), 1) * max(len(ranks), 1) / 2))
    ax = fig.add_subplot()
    height = 0.8 / max(len(ranks), 1)
    for index, rank in enumerate(ranks):
        by_key = {
            (r["model"], r["wrapper"], r["job"]): float(r["speedup"])  # type: ignore[arg-type]
            for r in records
            if r["rank"] == rank
        }
        ys = [row + index * height for row, key in enumerate(keys) if key in by_key]
        ax.barh(
            ys, [by_key[key] for key in keys if key in by_key], height=height, label=f"rank {rank}"
        )
    ax.set_yticks([row + 0.4 - height / 2 for row in range(len(keys))])
    ax.set_yticklabels([f"{m} [{w}] {j}" for m, w, j in keys], fontsize="small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup torch / pyparams, median of interleaved rounds (log)")
    ax.set_title("pyparams under torchrun: walks and their consumers, per rank")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def section(run: DistributedRun, records: Sequence[dict[str, object]]) -> str:
    """The markdown section: how it ran, the per-rank table and the plot."""
    m = run.machine
    memory = m.get("memory_bytes")
    return "\n".join(
        [
            "## Distributed (torchrun)",
            "",
            f"Command: `{run.command}`  ",
            (
                f"{run.world_size} ranks, backend `{run.backend}`; machine: {m.get('platform')}, "
                f"{m.get('cpu_count')} CPUs, "
                f"{format_bytes(float(memory)) if isinstance(memory, (int, float)) else '-'} RAM, "
                f"CUDA device: {m.get('cuda_device')}; torch {m.get('torch')}; "
                f"{m.get('timestamp')}; wall time {run.wall_seconds:.0f} s"
            ),
            "",
            (
                "Per rank: median time per call with torch's walks (`torch`) and with pyparams' "
                "patched in (`patched`: `pyparams.patched()`), and the median of per-round ratios "
                "(`x`). `wrap` is `fully_shard` per block and at the root (`fsdp`) or "
                "`DistributedDataParallel` (`ddp`) on a freshly built model; `zero_grad` starts "
                "with every gradient present; `train_step` is forward, backward, "
                "`clip_grad_norm_`, `AdamW.step` and `zero_grad`."
            ),
            "",
            format_table(records, markdown=True),
            "",
            "Speedups at a glance (rank 0 / rank 1 / ...):",
            "",
            format_speedups(records),
            "",
            "![distributed](distributed.png)",
            "",
        ]
    )


def write_outputs(run: DistributedRun, out: Path) -> list[Path]:
    """Write the distributed files into ``out`` and its section of report.md."""
    out.mkdir(parents=True, exist_ok=True)
    records = rows(run.samples)
    write_json(out / "distributed.json", {**asdict(run), "summary": records})
    write_csv(out / "distributed.csv", records)
    _plot(records, out / "distributed.png")
    text = section(run, records)
    (out / "distributed.md").write_text(text)
    write_section(out / "report.md", "distributed", text)
    return [out / name for name in OUTPUT_FILES]
