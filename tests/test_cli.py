"""``pyparams bench`` / ``pyparams claims`` end to end: table, files, JSON, bad options."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import pyparams
from common_utils import needs_transformers, subprocess_env
from pyparams.bench.contenders import CONTENDERS
from pyparams.bench.report import OUTPUT_FILES
from pyparams.bench.states import AFTER, STATES, TORCH_STATES, column_key, split
from pyparams.bench.zoo import ZOO, preset_entries
from pyparams.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """One ``pyparams bench --quick`` run shared by the tests below."""
    out = tmp_path_factory.mktemp("bench-quick")
    # A small sweep: these tests check the pipeline, not what the sweep evicts.
    code, stdout, _ = run_cli(
        "bench",
        "--quick",
        "--devices",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--sweep-mib",
        "4",
    )
    return code, stdout, out


@pytest.fixture(scope="module")
def quick_json(quick_run: tuple[int, str, Path]) -> dict:  # type: ignore[type-arg]
    return json.loads((quick_run[2] / "results.json").read_text())


@needs_transformers  # the quick preset runs GPT-2
def test_quick_run_prints_the_table(quick_run: tuple[int, str, Path]) -> None:
    code, stdout, _ = quick_run
    assert code == 0
    header = stdout.splitlines()[0].split()
    for column in (
        "model",
        "device",
        "#params",
        "#modules",
        "contender",
        "state",
        "median",
        "spread",
        "ns/param",
        "tracemalloc",
    ):
        assert column in header
    for state in STATES:
        assert re.search(rf" pyparams\.list +{state} ", stdout), state
    for entry in preset_entries("quick"):
        assert f"\n{entry.name} " in stdout
    for name in CONTENDERS:
        assert f" {name} " in stdout
    summary = stdout[stdout.index("\nmodel ", 10) :].splitlines()
    assert summary[1].split()[4:6] == ["torch.list", "pyparams.list"]
    assert "x list cold  x list warm  x list after  x list invalidated" in summary[1]
    assert "x parameters  x parameters after" in summary[1]
    assert [row.split()[0] for row in summary[3 : 3 + len(preset_entries("quick"))]] == [
        entry.name for entry in preset_entries("quick")
    ]
    assert "fit depth [cpu]:" in stdout
    assert "(after other work): pyparams.list worst" in stdout
    assert "Claim 1:" in stdout and "Claim 4:" in stdout


def test_quick_run_writes_every_file(quick_run: tuple[int, str, Path]) -> None:
    _, _, out = quick_run
    for name in OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    for name in ("speedup.png", "scaling.png", "memory.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    for name in ("speedup.png", "scaling.png", "memory.png"):
        assert f"]({name})" in report
    assert "## Claims" in report and "| model | device |" in report
    assert "x list after" in report and "after other work" in report
    assert ("walk cache was off" in report) is not pyparams.cache_info().enabled
    assert pyparams.cache_info().off_reason in report


@needs_transformers  # the quick preset runs GPT-2
def test_json_has_machine_and_every_raw_sample(quick_json: dict) -> None:  # type: ignore[type-arg]
    machine = quick_json["machine"]
    for key in ("platform", "cpu_count", "python", "torch", "cuda_device", "pyparams"):
        assert key in machine
    assert machine["pyparams_cache_enabled"] is pyparams.cache_info().enabled
    assert machine["pyparams_cache_off_reason"] == pyparams.cache_info().off_reason
    assert [c["model"] for c in quick_json["cases"]] == [e.name for e in preset_entries("quick")]
    for case in quick_json["cases"]:
        assert {split(key)[0] for key in case["contenders"]} == set(CONTENDERS)
        for name in (n for n, c in CONTENDERS.items() if c.library == "pyparams"):
            for state in STATES:  # every pyparams contender in every state
                assert case["contenders"][column_key(name, state)]["state"] == state
        for name in (
            n for n, c in CONTENDERS.items() if c.library == "torch" and case["contenders"][n]["ok"]
        ):
            for state in TORCH_STATES:  # torch after the same sweep
                assert case["contenders"][column_key(name, state)]["state"] == state
        cached = pyparams.cache_info().enabled  # off: every walk live, nothing recorded
        assert (case["cache_bytes"] > 0, case["cache_records"] > 0) == (cached, cached)
        assert case["n_param_tensors"] > 0 and case["n_modules"] > 0
        for name, result in case["contenders"].items():
            if result["ok"]:
                assert len(result["samples_ns"]) == case["rounds"] >= 5, (case["model"], name)
                assert all(s > 0 for s in result["samples_ns"])
                ttf = 0 if result["state"] == AFTER else quick_json["settings"]["ttf_repeat"]
                assert len(result["ttf_samples_ns"]) == ttf
                if result["state"] == AFTER:  # the same walk as its hot or warm column
                    assert result["memory"] is None
                else:
                    assert result["memory"]["tracemalloc_peak"] >= 0
            else:  # only torch may fail, and only by recursion on deep chains
                assert name.startswith("torch."), (case["model"], name, result["error"])
                assert result["error"].startswith("RecursionError")
                assert case["n_modules"] >= 1000
    assert quick_json["after_other_work"]["bytes"] == 4 << 20
    assert quick_json["settings"]["sweep_bytes"] == 4 << 20
    assert len(quick_json["claims"]) == 4
    assert {f["family"] for f in quick_json["fits"]} == {"depth", "width", "experts"}


def test_csv_has_one_row_per_case_and_contender(
    quick_run: tuple[int, str, Path], quick_json: dict
) -> None:  # type: ignore[type-arg]
    with (quick_run[2] / "results.csv").open() as handle:
        records = list(csv.DictReader(handle))
    # pyparams: one column per state; torch and the floor: the hot loop and each torch state.
    columns = sum(
        len(STATES) if c.library == "pyparams" else 1 + len(TORCH_STATES)
        for c in CONTENDERS.values()
    )
    failed_torch = sum(
        not result["ok"] for case in quick_json["cases"] for result in case["contenders"].values()
    )  # no state columns
    assert len(records) == len(quick_json["cases"]) * columns - failed_torch * len(TORCH_STATES)
    assert {r["contender"] for r in records} == set(CONTENDERS)
    baseline = [r for r in records if r["contender"] == "torch.list" and r["ok"] == "True"]
    assert baseline and all(float(r["speedup_vs_list"]) == 1.0 for r in baseline)


@needs_transformers
def test_tiny_zoo_with_chosen_contenders(tmp_path: Path) -> None:
    code, stdout, _ = run_cli(
        "bench",
        "--models",
        "gpt2-tiny,depth-30",
        "--devices",
        "cpu",
        "--contenders",
        "pyparams.parameters",
        "--repeat",
        "3",
        "--sweep-mib",
        "4",
        "--no-claims",
        "--no-progress",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert [c["model"] for c in data["cases"]] == ["gpt2-tiny", "depth-30"]
    for case in data["cases"]:
        assert set(case["contenders"]) == {
            "torch.list",
            "torch.list@after",
            "pyparams.parameters@cold",
            "pyparams.parameters",
            "pyparams.parameters@invalidated",
            "pyparams.parameters@after",
        }
        assert all(len(r["samples_ns"]) == 3 for r in case["contenders"].values())
    assert data["claims"] == []
    assert "gpt2-tiny" in stdout and "Claim" not in stdout


def test_list_prints_zoo_and_contenders() -> None:
    code, stdout, _ = run_cli("bench", "--list")
    assert code == 0
    for name in (*ZOO, *CONTENDERS):
        assert f"  {name} " in stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--models", "gpt2,not-a-model"], "unknown model 'not-a-model'"),
        (["--devices", "tpu"], "unknown device 'tpu'"),
        (["--contenders", "pyparams.nope"], "unknown contender 'pyparams.nope'"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--distributed", "--repeat", "0"], "--repeat must be at least 1"),
        (["--sweep-mib", "0"], "--sweep-mib must be at least 1"),
        (["--sweep-mib", str(1 << 40)], "is more than half of this machine's"),
        (["--quick", "--full"], "not allowed with argument"),
        (["--repeat", "many"], "invalid int value"),
        (["--consumer-models", "depth-10"], "unknown consumer model 'depth-10'"),
        (["--consumers", "only", "--consumer-models", "moe-0x4"], "unknown consumer model"),
        (["--models", ","], "--models names nothing"),
        (["--quick", "--devices", ""], "--devices names nothing"),
        (["--contenders", ","], "--contenders names nothing"),
        (["--consumers", "only", "--consumer-models", ","], "--consumer-models names nothing"),
        (["--memory-cap-gb", "inf"], "--memory-cap-gb must be a finite number above 0, got inf"),
        (["--memory-cap-gb", "nan"], "--memory-cap-gb must be a finite number above 0, got nan"),
        (["--memory-cap-gb", "0"], "--memory-cap-gb must be a finite number above 0, got 0"),
        (["--distributed", "--timeout", "nan"], "--timeout must be a finite number above 0"),
        (["--distributed", "--nproc", "0"], "--nproc must be at least 1, got 0"),
    ],
)
def test_bad_options_are_rejected(argv: list[str], needle: str, tmp_path: Path) -> None:
    code, _, stderr = run_cli("bench", *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert needle in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--quick", "--models", "depth-10"],
        ["bench", "--consumers", "only"],
        ["bench", "--distributed"],
        ["claims", "--model", "depth-10"],
    ],
)
def test_an_out_that_cannot_be_written_is_refused_before_the_run(
    argv: list[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, stdout, stderr = run_cli(*argv, "--out", str(blocker / "out"))
    assert code == 2
    assert f"cannot write the results to --out {blocker / 'out'}: Not a directory" in stderr
    assert "Traceback" not in stderr and stdout == ""  # nothing was measured or printed


def test_cuda_is_rejected_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, stderr = run_cli("bench", "--devices", "cuda")
    assert code != 0 and "CUDA is not available" in stderr


@needs_transformers
def test_claims_command(tmp_path: Path) -> None:
    code, stdout, _ = run_cli(
        "claims", "--model", "gpt2-tiny", "--devices", "cpu", "--out", str(tmp_path)
    )
    assert code == 0
    verdicts = json.loads((tmp_path / "claims.json").read_text())
    assert [v["number"] for v in verdicts] == [1, 2, 3, 4]
    for v in verdicts:
        assert f"Verdict: {v['verdict']}" in stdout
    code, _, stderr = run_cli("claims", "--model", "nope")
    assert code != 0 and "unknown model 'nope'" in stderr


def _pyparams(*argv: str, cwd: Path, block: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``pyparams argv`` in a child Python that imports this pyparams; ``block``ed modules
    look uninstalled (``sys.modules[name] = None``: import fails, ``find_spec`` says absent).

    The child runs in ``cwd``, not the checkout: ``-m`` puts the working directory first on
    sys.path, and a checkout's pyparams/ would hide a non-editable install.
    """
    code = (
        f"import sys\nfor name in {list(block)!r}:\n    sys.modules[name] = None\n"
        f"from pyparams.cli import main\nraise SystemExit(main({list(argv)!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    proc.stderr = without_gil_warning(proc.stderr)
    return proc


# On a free-threaded CPython, importing pyparams._C enables the GIL and CPython warns once
# (see test_free_threading.py); the CLI's own lines are what these tests compare.
GIL_WARNING = (
    "RuntimeWarning: The global interpreter lock (GIL) has been enabled to load "
    "module 'pyparams._C'"
)


def without_gil_warning(stderr: str) -> str:
    """``stderr`` without CPython's one-line warning that pyparams._C enabled the GIL."""
    return "".join(line for line in stderr.splitlines(keepends=True) if GIL_WARNING not in line)


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyparams", "bench", "--list"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "torch.list" in proc.stdout
    proc = _pyparams("bench", "--models", "zzz", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'zzz'" in proc.stderr


BENCH_EXTRA = ("transformers", "matplotlib", "tqdm", "psutil")


def test_bench_without_the_extra_runs_the_rest_and_says_so(tmp_path: Path) -> None:
    """After a plain ``pip install .``: synthetic models run, one line names the extra."""
    out = tmp_path / "out"
    proc = _pyparams(
        "bench",
        "--models",
        "depth-10,gpt2",
        "--devices",
        "cpu",
        "--repeat",
        "3",
        "--no-claims",
        "--sweep-mib",
        "4",
        "--out",
        str(out),
        cwd=tmp_path,
        block=BENCH_EXTRA,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "pyparams bench: transformers, matplotlib, tqdm not installed: skipping gpt2; no plots; "
        'no progress bar (pip install "pyparams[bench]")'
    ]
    assert "\ndepth-10 " in proc.stdout and "\ngpt2 " not in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.csv", "results.json"]
    assert all(
        c["contenders"]["torch.list"]["memory"]["rss_delta"] is not None  # from /proc
        for c in json.loads((out / "results.json").read_text())["cases"]
    )


def test_bench_of_models_that_all_need_the_extra_is_refused(tmp_path: Path) -> None:
    proc = _pyparams(
        "bench", "--models", "gpt2", "--out", str(tmp_path / "out"), cwd=tmp_path, block=BENCH_EXTRA
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "pyparams bench: error: every model asked for needs "
        "transformers, which is not installed: "
        'pip install "pyparams[bench]"'
    )
    assert not (tmp_path / "out").exists()


def test_claims_without_transformers_run_on_a_synthetic_model(tmp_path: Path) -> None:
    proc = _pyparams("claims", "--devices", "cpu", cwd=tmp_path, block=BENCH_EXTRA)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "pyparams claims: transformers not installed: no huge-model evidence "
        '(pip install "pyparams[bench]")'
    ]
    assert "experts-32 [cpu]" in proc.stdout and "Claim 4:" in proc.stdout
    proc = _pyparams("claims", "--model", "gpt2", cwd=tmp_path, block=BENCH_EXTRA)
    assert proc.returncode == 2 and 'pip install "pyparams[bench]"' in proc.stderr
