"""The consumers benchmark section runs end to end on tiny models: every consumer's modes
agree with torch (checked before timing), the table and the report section are written,
and the patch is off again afterwards. Timings are never asserted."""

from __future__ import annotations

import time

import pytest

import pyparams
from pyparams.bench import consumers
from pyparams.bench.consumer_report import format_consumers, write_consumer_outputs
from pyparams.bench.report_file import read_sections


@pytest.fixture(scope="module")
def rows() -> list[consumers.ConsumerRow]:
    pytest.importorskip("transformers")
    return consumers.run_consumers(models=["moe-2x4", "gpt2-tiny"], rounds=1)


def test_every_consumer_is_checked_and_timed_on_every_model(rows) -> None:
    assert not pyparams.is_patched()
    assert [(r.model, r.consumer) for r in rows] == [
        (model, name) for model in ("moe-2x4", "gpt2-tiny") for name in consumers.CONSUMERS
    ]
    assert [r for r in rows if r.error] == []
    for row in rows:
        assert set(row.medians_ns) >= {"torch", "patched"}
        assert ("native" in row.medians_ns) == (
            consumers.CONSUMERS[row.consumer].native is not None
        )
        assert all(value > 0 for value in row.speedups.values())


def test_the_walk_alone_is_the_calls_each_consumer_makes(rows) -> None:
    walks = {(r.model, r.consumer): r.walk_calls for r in rows}
    for model_name in ("moe-2x4", "gpt2-tiny"):
        model = consumers.build_consumer_model(model_name)
        leaves = [m for m in model.module.modules() if not m._modules]
        assert walks[model_name, "zero_grad"] == 1  # self.parameters()
        assert walks[model_name, "requires_grad_"] == 2  # (False) then (True)
        assert walks[model_name, "num_parameters"] == 2  # named_modules, named_parameters
        assert walks[model_name, "zero3_fetch"] == len(leaves)
        assert walks[model_name, "state_dict"] == walks[model_name, "train"] == 0
    for row in rows:
        timed_walk = {"walk:torch", "walk:patched"} <= set(row.medians_ns)
        assert timed_walk == (row.walk_calls > 0) == bool(row.walk_share)
    assert walks["moe-2x4", "zero3_blocks"] == 2  # its two MoE layers


def test_a_mode_that_differs_from_torch_is_never_timed(monkeypatch) -> None:
    model = consumers.build_consumer_model("moe-2x4")
    wrong = consumers.Consumer(
        "wrong",
        "patched yields one parameter fewer",
        lambda m: list(m.module.parameters())[: None if not pyparams.is_patched() else -1],
        check=lambda items: [id(p) for p in items],
    )
    row = consumers.measure_consumer(wrong, model, rounds=1)
    assert row.error == "patched differ from torch"
    assert row.medians_ns == {}


def test_outputs_and_report_section(rows, tmp_path) -> None:
    report = tmp_path / "report.md"
    write_consumer_outputs(rows[:1], tmp_path)  # a stale section, replaced below
    written = write_consumer_outputs(rows, tmp_path)
    assert {p.name for p in written} >= {"consumers.csv", "consumers.json", "report.md"}
    text = report.read_text()
    assert text.count("## Consumers") == 1
    assert "| moe-2x4 | zero_grad |" in text and "| gpt2-tiny | train |" in text
    assert list(read_sections(report)) == ["consumers"]
    table = format_consumers(rows)
    assert table.splitlines()[0].split()[:3] == ["model", "consumer", "torch"]
    assert "walk torch" in table and "walk patched" in table
    assert "x patched in step" in table


def test_in_step_consumers_are_timed_after_an_untimed_training_step(monkeypatch) -> None:
    steps = []
    real_step = consumers._training_step

    def slow_step(model) -> None:  # type: ignore[no-untyped-def]
        steps.append(pyparams.is_patched())
        real_step(model)
        time.sleep(0.02)

    monkeypatch.setattr(consumers, "_training_step", slow_step)
    model = consumers.build_consumer_model("moe-2x4")
    row = consumers.measure_consumer(consumers.CONSUMERS["zero_grad"], model, rounds=2)
    in_step = {k for k in row.medians_ns if k.endswith("@step")}
    assert in_step == {"torch@step", "patched@step", "native@step"}
    assert set(row.speedups) == {"patched", "native", "patched@step", "native@step"}
    # a step before every timed call (per mode, two rounds), in the mode's own patch state
    assert len(steps) == 3 * 2 and steps.count(True) == 2
    assert all(row.medians_ns[k] < 0.02e9 for k in in_step)  # the step is never timed
    assert "@step" not in "".join(
        consumers.measure_consumer(consumers.CONSUMERS["train"], model, rounds=1).medians_ns
    )


def test_the_walk_share_goal_is_judged_on_the_patched_share() -> None:
    def row(walk_torch_ns: float | None, walk_patched_ns: float | None) -> consumers.ConsumerRow:
        medians = {"torch": 1000.0, "patched": 100.0}
        share = {}
        if walk_torch_ns is not None and walk_patched_ns is not None:
            medians |= {"walk:torch": walk_torch_ns, "walk:patched": walk_patched_ns}
            share = {"torch": walk_torch_ns / 1000.0, "patched": walk_patched_ns / 100.0}
        return consumers.ConsumerRow("m", "c", "d", medians_ns=medians, walk_share=share)

    def verdict(r: consumers.ConsumerRow) -> str:
        header, _, cells = format_consumers([r], markdown=True).splitlines()
        names = [c.strip() for c in header.strip("|").split("|")]
        return cells.strip("|").split("|")[names.index("walk patched <= 10%")].strip()

    # only the patched walk's share is judged: torch's (90%, 1%) is not
    assert verdict(row(900.0, 10.0)) == "met"  # exactly 10%
    assert verdict(row(10.0, 11.0)) == "missed"
    assert verdict(row(None, None)) == "-"  # no call to the walking methods
