"""``pyparams bench --distributed``: one real 2-rank launch, and the report's arithmetic."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch.distributed as dist

from pyparams.bench.distributed import MODES, WRAPPERS
from pyparams.bench.distributed_report import format_speedups, format_table, rows
from pyparams.bench.report_file import read_sections, write_section
from pyparams.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JOBS = ("wrap", "parameters", "named_parameters", "zero_grad", "clip_grad_norm_", "optimizer")


def _sample(rank: int, mode: str, samples: list[float], job: str = "parameters") -> dict:
    return {
        "rank": rank,
        "model": "m",
        "family": "depth",
        "wrapper": "fsdp",
        "job": job,
        "mode": mode,
        "loops": 1,
        "samples_ns": samples,
        "n_param_tensors": 3,
        "n_modules": 3,
    }


def test_rows_pair_rounds_per_rank() -> None:
    records = rows(
        [
            _sample(0, "torch", [10.0, 40.0, 90.0]),
            _sample(0, "patched", [1.0, 2.0, 3.0]),
            _sample(1, "torch", [8.0, 8.0, 8.0]),
            _sample(1, "patched", [4.0, 2.0, 1.0]),
        ]
    )
    by_rank = {r["rank"]: r for r in records}
    assert by_rank[0]["speedup"] == 20.0  # median of 10, 20, 30: ratios per round, not of medians
    assert by_rank[0]["torch_median_ns"] == 40.0 and by_rank[0]["patched_median_ns"] == 2.0
    assert by_rank[1]["speedup"] == 4.0
    table = format_table(records)
    assert "r0 x" in table and "r1 x" in table and "20.0x" in table
    assert "| m | fsdp | 3 | 20.0x / 4.00x |" in format_speedups(records)


def test_bench_distributed_bad_options_fail_before_launching() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["bench", "--distributed", "--models", "nope"]) == 2
        assert main(["bench", "--distributed", "--nproc", "0"]) == 2
    assert "unknown model 'nope'" in err.getvalue()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)
def test_bench_distributed_end_to_end(tmp_path: Path) -> None:
    write_section(tmp_path / "report.md", "zoo", "## Summary\nearlier sections\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(
            [
                "bench",
                "--distributed",
                "--models",
                "depth-10",
                "--repeat",
                "1",
                "--out",
                str(tmp_path),
                "--timeout",
                "150",
            ]
        )
    assert code == 0, out.getvalue()
    run = json.loads((tmp_path / "distributed.json").read_text())
    assert (run["world_size"], run["backend"]) == (2, "gloo")
    seen = {(s["rank"], s["wrapper"], s["job"], s["mode"]) for s in run["samples"]}
    assert seen == {(r, w, j, m) for r in (0, 1) for w in WRAPPERS for j in JOBS for m in MODES}
    assert all(len(s["samples_ns"]) == 1 and s["samples_ns"][0] > 0 for s in run["samples"])
    assert (tmp_path / "distributed.png").read_bytes().startswith(PNG_MAGIC)
    report = (tmp_path / "report.md").read_text()
    assert "earlier sections" in report and "## Distributed (torchrun)" in report
    assert list(read_sections(tmp_path / "report.md")) == ["zoo", "distributed"]
    assert "| depth-10 | fsdp | parameters |" in report
    assert "r1 patched" in out.getvalue()
