"""Shared fixtures for the pytest-benchmark suites (run explicitly: ``pytest benchmarks``).

Every benchmark runs the harness' own steps (``pyparams.bench.measure``): it checks its
contender against torch (same objects, order, names), records memory and size in
``extra_info``, then pytest-benchmark times it; reference and pyparams share a ``group``
so ``--benchmark-group-by=group`` puts them side by side.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pyparams.bench.contenders import CONTENDERS, torch_reference
from pyparams.bench.measure import check_and_bind, measure_memory, synchronize
from pyparams.bench.zoo import ZooCache

__all__: list[str] = []  # fixtures and hooks only; nothing to import from here

RunContender = Callable[[Callable[..., object], str, nn.Module, str], None]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--zoo-preset",
        default="quick",
        choices=("quick", "default", "full"),
        help="which zoo preset benchmarks/test_zoo.py runs (default: quick)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_cuda: the benchmark needs a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def zoo_cache() -> ZooCache:
    """Models built once per session and shared by every benchmark."""
    return ZooCache()


@pytest.fixture(scope="session")
def run_contender() -> RunContender:
    """The function that checks, measures and times one contender (see below)."""
    return _run_contender


def _run_contender(
    benchmark: Callable[..., object], name: str, module: nn.Module, device: str
) -> None:
    """The harness' check and memory steps for ``name`` (and its torch counterpart), then
    pytest-benchmark times it; what was measured goes to ``extra_info``."""
    contender = CONTENDERS[name]
    counterpart = contender.counterpart
    reference = torch_reference(module)
    chosen = [contender] + ([CONTENDERS[counterpart]] if counterpart else [])
    results, bound = check_and_bind(module, chosen, reference)
    result = results[name]
    if not result.ok:
        if result.error and result.error.startswith("RecursionError"):
            pytest.skip(f"{name} raises RecursionError on this model (torch's recursive walk)")
        pytest.fail(f"{name}: {result.error}")
    for ok in bound:
        results[ok].memory = measure_memory(bound[ok][0], device)
    memory = result.memory
    info = benchmark.extra_info  # type: ignore[attr-defined]
    info.update(
        contender=name,
        code=contender.code,
        device=device,
        items=result.items,
        param_tensors=len(reference.parameters),
        tracemalloc_peak=memory.tracemalloc_peak,
        rss_delta=memory.rss_delta,
        cuda_allocated_delta=memory.cuda_allocated_delta,
        cuda_peak_delta=memory.cuda_peak_delta,
    )
    if counterpart is not None:
        torch_memory = results[counterpart].memory  # None: torch cannot walk this deep
        torch_peak = torch_memory.tracemalloc_peak if torch_memory else None
        info.update(
            torch_tracemalloc_peak=torch_peak,
            tracemalloc_ratio=memory.tracemalloc_peak / torch_peak if torch_peak else None,
        )
    run, _ = bound[name]

    def timed() -> object:
        out = run()
        synchronize(device)
        return out

    benchmark(timed)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and reference.parameters:
        info["ns_per_param"] = stats.median * 1e9 / len(reference.parameters)
