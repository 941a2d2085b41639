"""Results with provenance, tables that cannot drift.

The README's and docs' result tables are generated from ``benchmarks/results/``
(:mod:`pyparams.bench.tables`): the committed ones must be what the committed results give,
and every file there must be one that ``make results`` (:mod:`pyparams.bench.results`)
writes, listed with its hash in the manifest. The rest runs the generator on results of a
tiny run in a temporary folder, and shows that a number edited by hand is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyparams.bench import results as results_command
from pyparams.bench import tables
from pyparams.bench.claims import Verdict
from pyparams.bench.consumer_report import write_consumer_outputs
from pyparams.bench.consumers import run_consumers
from pyparams.bench.outputs import write_json
from pyparams.bench.report import write_outputs
from pyparams.bench.runner import BenchOptions, run_bench

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------ what is committed


def test_committed_tables_match_the_committed_results() -> None:
    documents = tables.documents(ROOT)
    marked = [p for p in documents if tables.MARKER.search(p.read_text())]
    if not marked:
        return  # no generated table in README.md or docs/: nothing can drift
    if not (COMMITTED / results_command.MANIFEST).exists():
        pytest.skip(
            "benchmarks/results/ predates `make results`: run it, then "
            "`python -m pyparams.bench.tables --write`"
        )
    assert tables.check(marked, tables.Results(COMMITTED)) == []


def test_nothing_in_results_that_no_command_writes() -> None:
    present = {p.name for p in COMMITTED.iterdir()} if COMMITTED.exists() else set()
    assert present <= set(results_command.PRODUCED), present - set(results_command.PRODUCED)
    manifest = COMMITTED / results_command.MANIFEST
    if manifest.exists():  # every file is the one the manifest's run wrote
        listed = json.loads(manifest.read_text())["files"]
        assert {entry["path"] for entry in listed} == present - {results_command.MANIFEST}
        for entry in listed:
            assert results_command._sha256(COMMITTED / entry["path"]) == entry["sha256"]


# -------------------------------------------------------- the generator, on a tiny run


_VERDICT = Verdict(
    1,
    "parameters() yields only tensors with requires_grad=True",
    "FALSE",
    "frozen tensors too",
    ["evidence line"],
)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files ``make results`` writes, from a tiny run (the distributed samples made up:
    launching ranks is tests/distributed' job)."""
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("results")
    run = run_bench(
        BenchOptions(
            preset="quick",
            models=["gpt2-tiny", "depth-30"],
            devices=["cpu"],
            repeat=1,
            claims=False,
            progress=False,
            sweep_bytes=1 << 20,
        )
    )
    run.claims = [_VERDICT]
    write_outputs(run, out)
    write_consumer_outputs(
        run_consumers(models=["moe-2x4"], consumers=["zero_grad"], rounds=1), out
    )
    samples = [
        {
            "rank": rank,
            "model": "depth-10",
            "family": "depth",
            "wrapper": "ddp",
            "job": "parameters",
            "mode": mode,
            "loops": 1,
            "samples_ns": [ns],
            "n_param_tensors": 10,
            "n_modules": 10,
        }
        for rank in (0, 1)
        for mode, ns in (("torch", 40.0), ("patched", 2.0))
    ]
    write_json(out / "distributed.json", {"samples": samples})
    return out


def _document(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    path.write_text(
        "# title\n\n"
        + "".join(
            f"text before {name}\n\n<!-- pyparams-table: {name} -->\n| stale |\n"
            f"<!-- /pyparams-table -->\n\ntext after {name}\n\n"
            for name in names
        )
    )
    return path


def test_write_fills_every_table_and_check_then_passes(tiny_results: Path, tmp_path: Path) -> None:
    readme = _document(tmp_path, list(tables.TABLES))
    (tmp_path / "docs").mkdir()
    plain = tmp_path / "docs" / "plain.md"
    plain.write_text("# no tables here\n")
    results = tables.Results(tiny_results)
    paths = tables.documents(tmp_path)
    assert paths == [readme, plain]
    assert len(tables.check(paths, results)) == len(tables.TABLES)  # every one stale
    assert tables.write(paths, results) == [readme]
    assert tables.check(paths, results) == []
    text = readme.read_text()
    assert "| stale |" not in text and plain.read_text() == "# no tables here\n"
    for name in tables.TABLES:  # the prose around each table is kept
        assert f"text before {name}\n\n<!-- pyparams-table: {name} -->\n" in text
        assert f"<!-- /pyparams-table -->\n\ntext after {name}" in text
    assert "| gpt2-tiny | cpu |" in text  # zoo
    assert "real architectures (gpt2-tiny)" in text  # headline
    assert "claim: parameters() yields only tensors" in text
    assert "(after other work)" in text  # targets
    assert "| moe-2x4 | zero_grad |" in text  # consumers
    assert "| depth-10 | ddp | 10 | 20.0x / 20.0x |" in text  # distributed


def test_a_number_edited_by_hand_is_caught(tiny_results: Path, tmp_path: Path) -> None:
    readme = _document(tmp_path, ["zoo", "distributed"])
    results = tables.Results(tiny_results)
    tables.write([readme], results)
    assert tables.main(["--check", "--results", str(tiny_results), "--root", str(tmp_path)]) == 0
    readme.write_text(readme.read_text().replace("20.0x / 20.0x", "21.0x / 20.0x"))
    assert tables.check([readme], results) == [f"{readme}: table distributed"]
    assert tables.main(["--check", "--results", str(tiny_results), "--root", str(tmp_path)]) == 1
    assert tables.main(["--write", "--results", str(tiny_results), "--root", str(tmp_path)]) == 0
    assert tables.check([readme], results) == []


def test_an_unknown_table_or_missing_results_are_named(tmp_path: Path) -> None:
    readme = _document(tmp_path, ["nope"])
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        tables.check([readme], tables.Results(tmp_path))
    _document(tmp_path, ["zoo"])
    with pytest.raises(FileNotFoundError, match="run `make results` first"):
        tables.check([readme], tables.Results(tmp_path / "empty"))


# -------------------------------------------------------------------------- manifest


def test_manifest_lists_every_file_with_its_hash(tiny_results: Path) -> None:
    measured = results_command.source()
    data = results_command.manifest(tiny_results, "make results", [["pyparams", "bench"]], measured)
    for key in ("commit", "tree_modified", "date", "command", "machine", "python", "torch"):
        assert key in data
    assert "sweep" in data
    names = [entry["path"] for entry in data["files"]]
    assert names == sorted(p.name for p in tiny_results.iterdir())
    assert set(names) <= set(results_command.PRODUCED)
    first = data["files"][0]
    assert first["sha256"] == results_command._sha256(tiny_results / first["path"])


def test_the_tree_state_is_taken_before_the_run_writes_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run rewrites tracked files (benchmarks/results/): a status taken after it would
    # always say "modified". The state recorded is the one the run started from.
    calls: list[str] = []
    monkeypatch.setattr(results_command, "source", lambda: calls.append("source") or {})
    monkeypatch.setattr(results_command, "_steps", lambda out, quick: [["step"]])
    monkeypatch.setattr(results_command, "manifest", lambda *a: calls.append("manifest") or {})
    import pyparams.cli

    monkeypatch.setattr(pyparams.cli, "main", lambda step: calls.append("run") or 0)
    assert results_command.main(["--out", str(tmp_path)]) == 0
    assert calls == ["source", "run", "manifest"]


def test_a_new_run_removes_what_the_previous_manifest_listed(tmp_path: Path) -> None:
    (tmp_path / "old.png").write_text("from an earlier run")
    (tmp_path / "mine.txt").write_text("not the command's")
    (tmp_path / results_command.MANIFEST).write_text(json.dumps({"files": [{"path": "old.png"}]}))
    results_command._remove_previous(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
