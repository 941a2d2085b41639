"""The harness' statistics and measuring machinery, on synthetic data and toy modules."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pyparams
from pyparams.bench import measure, states, stats, sweep, targets
from pyparams.bench.contenders import (
    CONTENDERS,
    Contender,
    ContenderMismatch,
    Reference,
    check,
    resolve_contenders,
    torch_reference,
)
from pyparams.bench.measure import (
    CaseResult,
    ContenderResult,
    Settings,
    measure_case,
    measure_memory,
)
from pyparams.bench.report import rows
from pyparams.bench.runner import BenchOptions
from pyparams.bench.states import AFTER, STATES, column_key
from pyparams.bench.zoo import BuiltModel, ZooEntry, build_chain, measure_structure

samples = st.lists(
    st.floats(min_value=1e-3, max_value=1e9, allow_nan=False), min_size=1, max_size=60
)


@given(samples)
@settings(max_examples=200, deadline=None)
def test_summary_agrees_with_numpy(values: list[float]) -> None:
    summary = stats.summarize(values)
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    assert summary.median == pytest.approx(med, rel=1e-9)
    assert summary.q1 == pytest.approx(q1, rel=1e-9)
    assert summary.q3 == pytest.approx(q3, rel=1e-9)
    assert summary.iqr == pytest.approx(q3 - q1, rel=1e-9, abs=1e-9)
    assert summary.minimum <= summary.q1 <= summary.median <= summary.q3 <= summary.maximum
    assert summary.n == len(values)


def test_summary_of_known_values() -> None:
    summary = stats.summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (summary.median, summary.q1, summary.q3) == (3.0, 2.0, 4.0)
    assert summary.rel_spread == pytest.approx(2.0 / 3.0)
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert stats.summarize([7.0]).iqr == 0.0


def test_empty_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        stats.summarize([])


def test_paired_ratios_are_per_round() -> None:
    assert stats.paired_ratios([10.0, 30.0, 8.0], [2.0, 3.0, 4.0]) == [5.0, 10.0, 2.0]
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-positive"):
        stats.paired_ratios([1.0], [0.0])


def test_paired_ratio_survives_drift() -> None:
    """A machine slowing 10x across rounds leaves the per-round ratio intact."""
    drift = [1.0, 2.0, 5.0, 10.0, 10.0]
    slow = [3000.0 * d for d in drift]
    fast = [100.0 * d for d in drift]
    assert stats.median(stats.paired_ratios(slow, fast)) == pytest.approx(30.0)


def test_linear_fit_recovers_a_line() -> None:
    fit = stats.linear_fit([1, 2, 3, 4], [7, 9, 11, 13])
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(5.0)
    assert fit.r2 == pytest.approx(1.0)
    assert stats.cost_per_module([100, 200, 400], [1100.0, 2100.0, 4100.0]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="distinct"):
        stats.linear_fit([2, 2], [1, 3])


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_loglog_fit_recovers_exponent(exponent: float) -> None:
    xs = [10, 30, 100, 300, 1000]
    fit = stats.loglog_fit(xs, [3.0 * x**exponent for x in xs])
    assert fit.exponent == pytest.approx(exponent)
    assert fit.prefactor == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)


def test_loglog_fit_of_noisy_data_has_r2_below_one() -> None:
    xs = [10, 100, 1000, 10000]
    fit = stats.loglog_fit(xs, [x * f for x, f in zip(xs, [1.0, 1.5, 0.7, 1.2], strict=True)])
    assert 0.9 < fit.exponent < 1.1
    assert fit.r2 < 1.0
    with pytest.raises(ValueError, match="positive"):
        stats.loglog_fit([1, 2], [0.0, 1.0])


# ----------------------------------------------------------------- contenders, check


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    model[0].bias.requires_grad_(False)
    return model


def _contender(name: str, kind: str, produce_fn) -> Contender:  # type: ignore[no-untyped-def]
    def bind(module: nn.Module, ref: Reference):  # type: ignore[no-untyped-def]
        return (lambda: list(produce_fn(module))), (lambda: produce_fn(module))

    return Contender(name, "test", "test", kind, True, None, bind)


def test_every_registered_contender_matches_torch() -> None:
    model = _model()
    reference = torch_reference(model)
    assert reference.recursion_limit is None
    for contender in CONTENDERS.values():
        n = check(contender, model, reference)
        assert n == len(reference.expected(contender.kind))
    assert len(reference.trainable) == len(reference.parameters) - 1


@pytest.mark.parametrize(
    ("kind", "produce", "message"),
    [
        ("parameters", lambda m: list(m.parameters())[::-1], "not the object"),
        (
            "parameters",
            lambda m: [nn.Parameter(p.detach().clone()) for p in m.parameters()],
            "not the object",
        ),
        ("parameters", lambda m: list(m.parameters())[:-1], "yielded 3 items"),
        ("named", lambda m: [(n.upper(), p) for n, p in m.named_parameters()], "'0.WEIGHT'"),
        ("trainable", lambda m: list(m.parameters()), "yielded 4 items"),
    ],
    ids=["reversed", "copies", "missing", "names", "unfiltered"],
)
def test_check_rejects_wrong_output(kind: str, produce, message: str) -> None:  # type: ignore[no-untyped-def]
    model = _model()
    with pytest.raises(ContenderMismatch, match=message):
        check(_contender("wrong", kind, produce), model, torch_reference(model))


def test_reference_for_a_chain_deeper_than_torch_recursion() -> None:
    chain = build_chain(1500)
    with pytest.raises(RecursionError):
        list(chain.parameters())
    reference = torch_reference(chain, depth_hint=1500)
    assert reference.recursion_limit is not None
    assert len(reference.parameters) == 1500
    assert reference.named[-1][0] == ".".join(["inner"] * 1499 + ["weight"])


def test_resolve_contenders_adds_the_baseline_and_names_unknown() -> None:
    assert [c.name for c in resolve_contenders(["floor"])] == ["torch.list", "floor"]
    with pytest.raises(KeyError, match="'nope'"):
        resolve_contenders(["floor", "nope"])


# ------------------------------------------------------------------------ measuring


def _built(module: nn.Module) -> BuiltModel:
    entry = ZooEntry("toy", "arch", "toy model", build=lambda: module)
    return BuiltModel(entry, module, "cpu", "cpu", measure_structure(module), 0.0)


def test_measure_case_interleaves_and_keeps_raw_samples() -> None:
    model = _model()
    calls: list[str] = []

    def recording(name: str) -> Contender:
        def bind(module: nn.Module, ref: Reference):  # type: ignore[no-untyped-def]
            def run() -> list[nn.Parameter]:
                calls.append(name)
                return list(module.parameters())

            return run, lambda: list(module.parameters())

        return Contender(name, "test", "test", "parameters", False, None, bind)

    settings_ = Settings(
        repeat=4,
        min_repeat=4,
        warmup=0,
        min_sample_s=0.0,
        max_case_s=60.0,
        ttf_repeat=3,
        max_loops=1,
    )
    result = measure_case(_built(model), [recording("A"), recording("B")], settings_, memory=False)
    # first run and calibration, then 4 interleaved rounds: A B, B A, A B, B A
    assert calls[-8:] == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert result.rounds == 4
    for name in ("A", "B"):
        assert len(result.contenders[name].samples_ns) == 4
        assert len(result.contenders[name].ttf_samples_ns) == 3
        assert all(s > 0 for s in result.contenders[name].samples_ns)
    assert result.n_param_tensors == 4
    assert result.speedup("A", over="B") is not None


def test_wrong_contender_is_never_timed() -> None:
    model = _model()
    wrong = _contender("wrong", "parameters", lambda m: list(m.parameters())[::-1])
    result = measure_case(
        _built(model),
        [CONTENDERS["torch.list"], wrong],
        Settings(repeat=3, min_repeat=3, min_sample_s=0.0001),
        memory=False,
    )
    assert not result.contenders["wrong"].ok
    assert result.contenders["wrong"].error.startswith("WRONG OUTPUT")
    assert result.contenders["wrong"].samples_ns == []
    assert result.contenders["torch.list"].ok
    assert len(result.contenders["torch.list"].samples_ns) == 3


def test_torch_recursion_error_is_recorded_on_deep_chains() -> None:
    chain = build_chain(1200)
    result = measure_case(
        _built(chain),
        [CONTENDERS["torch.list"], CONTENDERS["floor"]],
        Settings(repeat=3, min_repeat=3, min_sample_s=0.0001),
        memory=False,
    )
    assert result.contenders["torch.list"].error.startswith("RecursionError")
    assert result.contenders["floor"].ok
    assert result.reference_recursion_limit is not None
    assert result.speedup("floor") is None


def test_time_budget_caps_rounds_at_min_repeat() -> None:
    model = _model()
    result = measure_case(
        _built(model),
        [CONTENDERS["torch.list"]],
        Settings(repeat=50, min_repeat=3, min_sample_s=0.001, max_case_s=1e-6),
        memory=False,
    )
    assert result.rounds == 3
    assert len(result.contenders["torch.list"].samples_ns) == 3


def test_tracemalloc_peak_sees_a_transient_allocation() -> None:
    size = 4 * 1024 * 1024
    use = measure_memory(lambda: len(bytearray(size)), "cpu")
    assert size <= use.tracemalloc_peak < 2 * size
    assert use.cuda_allocated_delta is None


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_memory_deltas_see_a_tensor() -> None:
    size = 1024 * 1024
    use = measure_memory(lambda: torch.empty(size, dtype=torch.uint8, device="cuda"), "cuda")
    assert use.cuda_allocated_delta is not None and use.cuda_allocated_delta >= size
    assert use.cuda_peak_delta is not None and use.cuda_peak_delta >= size


def test_structure_counts_shared_parameters_once() -> None:
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, shared, nn.Linear(2, 3, bias=False))
    structure = measure_structure(model)
    assert structure.n_param_tensors == len(list(model.parameters())) == 3
    assert structure.n_modules == len(list(model.modules())) == 3
    assert structure.n_params == sum(p.numel() for p in model.parameters())
    assert math.isclose(structure.storage_bytes, 4 * structure.n_params)


# ------------------------------------------------------------------ walk-cache states

# The cache's counters and sizes: nothing to count where it is off (PYPARAMS_CACHE=0, or
# CPython 3.13.0 and after 3.14, where every walk is live).
needs_cache = pytest.mark.skipif(
    not pyparams.cache_info().enabled, reason="the walk cache is off: every walk is live"
)

_STATE_SETTINGS = Settings(
    repeat=3,
    min_repeat=3,
    warmup=0,
    min_sample_s=1.0,
    max_case_s=60.0,
    ttf_repeat=2,
    max_loops=4,  # 4 calls a sample, 3 samples
    sweep_bytes=1 << 20,
)


def _state_case(
    which: tuple[str, ...], model: nn.Module | None = None, floor: bool = False
) -> CaseResult:
    contenders = [CONTENDERS["torch.list"], CONTENDERS["pyparams.list"]]
    return measure_case(
        _built(model or _model()),
        [*contenders, CONTENDERS["floor"]] if floor else contenders,
        dataclasses.replace(_STATE_SETTINGS, states=which),
        memory=False,
    )


def test_the_floor_is_timed_hot_and_after_the_sweep_as_torch_is() -> None:
    result = _state_case(("warm", AFTER), floor=True)
    assert [k for k in result.contenders if k.startswith("floor")] == ["floor", "floor@after"]
    after = result.contenders["floor@after"]
    assert (after.state, after.ok, after.loops, after.cache_counts) == (AFTER, True, 1, None)
    assert len(after.samples_ns) == 3


def test_every_state_is_a_column_of_the_same_rounds() -> None:
    result = _state_case(STATES)
    assert list(result.contenders) == [
        "torch.list",
        "torch.list@after",
        "pyparams.list@cold",
        "pyparams.list",
        "pyparams.list@invalidated",
        "pyparams.list@after",
    ]
    assert result.contenders["torch.list"].state is None
    assert result.contenders["torch.list"].cache_counts is None
    assert result.contenders["torch.list@after"].state == AFTER
    assert result.contenders["torch.list@after"].cache_counts is None
    for state in STATES:
        column = result.contenders[column_key("pyparams.list", state)]
        calls = 1 if state == AFTER else 4  # after other work: one call a sample
        assert (column.state, column.ok, column.loops) == (state, True, calls)
        assert len(column.samples_ns) == 3
        assert len(column.ttf_samples_ns) == (0 if state == AFTER else 2)
        assert result.speedup(column.name) is not None
    assert [(r["contender"], r["state"]) for r in rows([result])] == [
        ("torch.list", ""),
        ("torch.list", "after"),
        ("pyparams.list", "cold"),
        ("pyparams.list", "warm"),
        ("pyparams.list", "invalidated"),
        ("pyparams.list", "after"),
    ]


class _CountingSweep:
    """Stands in for the sweep: counts its calls and takes ``seconds`` each."""

    def __init__(self, seconds: float) -> None:
        self.calls, self.seconds = 0, seconds

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)


def test_after_sweeps_before_every_timed_call_of_torch_and_pyparams(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counting = _CountingSweep(0.02)
    monkeypatch.setattr(measure, "sweeper", lambda size: counting)
    result = _state_case((AFTER,))
    # per column: 3 rounds + the calibration's single sample, one call each
    assert counting.calls == 2 * (3 + 1)
    pairs = [r for r in rows([result]) if r["state"] == AFTER]
    assert [r["contender"] for r in pairs] == ["torch.list", "pyparams.list"]
    for name in ("torch.list@after", "pyparams.list@after"):
        samples = result.contenders[name].samples_ns
        assert len(samples) == 3
        assert max(samples) < 0.02e9  # the 20 ms sweep is never inside a timed call
    ratio = result.speedup("pyparams.list@after", "torch.list@after")
    assert pairs[1]["speedup_vs_list"] == ratio  # over torch after the same sweep


@needs_cache
def test_after_replays_a_warm_record_on_every_timed_call() -> None:
    grown = _state_case((AFTER,)).contenders["pyparams.list@after"].cache_counts
    assert grown is not None
    assert (grown["hits"], grown["misses"], grown["invalidations"]) == (3, 0, 0)


def test_sweep_is_sized_from_the_largest_data_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for index, (kind, size) in enumerate(
        [("Data", "48K"), ("Instruction", "64M"), ("Unified", "2048K"), ("Unified", "30M")]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "type").write_text(kind + "\n")
        (folder / "size").write_text(size + "\n")
    found = sweep.plan(sysfs=str(tmp_path))
    assert (found.llc_bytes, found.bytes, found.capped) == (30 << 20, 60 << 20, False)
    assert found.source.endswith("index3/size")
    (tmp_path / "index3" / "size").write_text("4096M\n")
    assert sweep.plan(sysfs=str(tmp_path)).bytes == sweep.MAX_BYTES  # capped
    assert sweep.plan(sysfs=str(tmp_path / "none")).llc_bytes == sweep.FALLBACK_LLC_BYTES
    assert sweep.plan(1 << 20).bytes == 1 << 20
    # The quick preset's cap: a first look stays minutes long on a machine with a huge cache.
    quick = BenchOptions(preset="quick").settings().sweep_plan()
    assert quick.bytes <= 128 << 20
    small = sweep.plan(sysfs=str(tmp_path), max_bytes=8 << 20)
    assert (small.bytes, small.capped, small.cap) == (8 << 20, True, 8 << 20)
    assert "capped at 8.0 MiB" in small.describe()


def test_a_sweep_writes_every_word_on_one_thread() -> None:
    run = sweep.sweeper(4096)
    assert run.buffer.numel() * run.buffer.element_size() == 4096
    before = run.buffer.clone()
    threads = torch.get_num_threads()
    run()
    assert bool(((run.buffer - before) == 1).all())
    assert torch.get_num_threads() == threads  # one thread for the sweep, then as it was


@needs_cache
def test_cold_clears_the_cache_before_every_timed_call() -> None:
    grown = _state_case(("cold",)).contenders["pyparams.list@cold"].cache_counts
    assert grown is not None
    assert (grown["misses"], grown["hits"]) == (12, 0)  # 3 samples x 4 calls, each a miss


@needs_cache
def test_warm_replays_on_every_timed_call() -> None:
    grown = _state_case(("warm",)).contenders["pyparams.list"].cache_counts
    assert grown is not None
    assert (grown["hits"], grown["misses"], grown["invalidations"]) == (12, 0, 0)


@needs_cache
def test_invalidated_changes_every_module_before_every_timed_call() -> None:
    model = _model()
    grown = _state_case(("invalidated",)).contenders["pyparams.list@invalidated"].cache_counts
    assert grown is not None and grown["misses"] == 0
    # each timed replay met changed modules: went on live, or re-checked every module
    assert grown["invalidations"] == 12 or grown["revalidations"] == 12 * len(list(model.modules()))


def test_invalidate_writes_every_module_and_keeps_its_value() -> None:
    writes: list[tuple[int, bool]] = []

    class Spy(nn.Module):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "training":
                writes.append((id(self), bool(value)))
            super().__setattr__(name, value)

    model = Spy()
    model.child = Spy()
    model.child.grandchild = Spy()
    model.child.train(False)
    writes.clear()
    states.invalidate(list(model.modules()))
    assert sorted({w[0] for w in writes}) == sorted(id(m) for m in model.modules())
    assert len(writes) == 2 * 3  # a different value, then the original back
    assert [m.training for m in model.modules()] == [True, False, False]


@needs_cache
def test_case_reports_the_cache_size_and_leaves_it_empty() -> None:
    model = _model()  # alive: its records would outlive the case unless cleared
    result = _state_case(STATES, model)
    assert result.cache_bytes is not None and result.cache_bytes > 0
    assert result.cache_records is not None and result.cache_records > 0
    assert pyparams.cache_info().records == 0  # the next case starts cold
    bare = measure_case(_built(_model()), [CONTENDERS["torch.list"]], _STATE_SETTINGS, memory=False)
    assert (bare.cache_bytes, bare.cache_records) == (None, None)  # nothing walked natively


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown state 'lukewarm'"):
        _state_case(("lukewarm",))


# ---------------------------------------------------------------------------- targets


def _case_with(model: str, family: str, medians: dict[str, float]) -> CaseResult:
    """A case whose contenders took ``medians`` ns in each of three rounds."""
    contenders = {
        name: ContenderResult(name, ok=True, samples_ns=[ns] * 3) for name, ns in medians.items()
    }
    return CaseResult(
        model, family, None, "", "cpu", "cpu", "", 10, 10, 10, 40, 10, 0.0, None, 3, contenders
    )


def test_targets_compare_each_state_with_torch_in_the_same_state() -> None:
    times = {
        "torch.list": 1000.0,
        "pyparams.list": 10.0,  # 100x hot
        "torch.list@after": 3000.0,
        "pyparams.list@after": 200.0,
        "floor@after": 50.0,
    }  # 15x after
    cases = [
        _case_with("gpt2", "arch", times),
        _case_with("bert", "arch", {**times, "pyparams.list@after": 100.0}),
    ]  # 30x
    found = {(t["target"], t["contender"]): t for t in targets.measure(cases)}
    hot = found["real architectures >= 50x (warm)", "pyparams.list"]
    after = found["real architectures >= 25x (after other work)", "pyparams.list"]
    assert (hot["measured"], hot["met"]) == (100.0, True)
    assert (after["measured"], after["met"]) == (15.0, False)  # the worst case, over torch@after
    assert after["cases"] == ["gpt2[cpu]", "bert[cpu]"]
    assert not any(t["target"].startswith("300-deep") for t in found.values())  # not run
    # Where the worst case's time goes: what the goal allows, what it took, the floor's share.
    assert (after["worst_case"], after["ns"], after["torch_ns"], after["floor_ns"]) == (
        "gpt2[cpu]",
        200.0,
        3000.0,
        50.0,
    )
    detail = "gpt2[cpu]: the goal allows 120 ns (torch 3 us / 25); it took 200 ns, of which "
    detail += "50 ns (25%) is the floor"
    text = targets.format_targets(list(found.values()))
    assert (
        "target MISSED real architectures >= 25x (after other work): pyparams.list worst 15.0x"
        f" ({detail})" in text
    )
    assert "target met    real architectures >= 50x (warm): pyparams.list worst 100.0x\n" in text
    markdown = targets.format_targets(list(found.values()), markdown=True)
    assert f"- real architectures >= 25x (after other work), `pyparams.list`: {detail}" in markdown
    assert markdown.count("\n- ") == 1  # the met target has no line
