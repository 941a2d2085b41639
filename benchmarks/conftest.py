"""Shared fixtures for the pytest-benchmark suites (run explicitly: ``pytest benchmarks``).

Every benchmark first checks its contender against torch (same objects, order, names),
then records memory and size in ``extra_info``, then times the contender; reference and
pyparams share a ``group`` so ``--benchmark-group-by=group`` puts them side by side.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pyparams.bench.contenders import CONTENDERS, check, torch_reference
from pyparams.bench.measure import measure_memory, synchronize
from pyparams.bench.zoo import ZooCache

__all__: list[str] = []  # fixtures and hooks only; nothing to import from here

RunContender = Callable[[Callable[..., object], str, nn.Module, str], None]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--zoo-preset", default="quick", choices=("quick", "default", "full"),
                     help="which zoo preset benchmarks/test_zoo.py runs (default: quick)")


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


def _run_contender(benchmark: Callable[..., object], name: str, module: nn.Module,
                   device: str) -> None:
    """Check ``name`` against torch, record memory in ``extra_info``, then time it."""
    contender = CONTENDERS[name]
    reference = torch_reference(module)
    if contender.library != "torch":
        check(contender, module, reference)
    run, _ = contender.bind(module, reference)
    try:
        run()
    except RecursionError:
        pytest.skip(f"{name} raises RecursionError on this model (torch's recursive walk)")
    memory = measure_memory(run, device)
    n = len(reference.expected(contender.kind))
    info = benchmark.extra_info  # type: ignore[attr-defined]
    info.update(contender=name, code=contender.code, device=device, items=n,
                param_tensors=len(reference.parameters),
                tracemalloc_peak=memory.tracemalloc_peak, rss_delta=memory.rss_delta,
                cuda_allocated_delta=memory.cuda_allocated_delta,
                cuda_peak_delta=memory.cuda_peak_delta)
    if contender.counterpart is not None:
        torch_run, _ = CONTENDERS[contender.counterpart].bind(module, reference)
        try:
            torch_peak: int | None = measure_memory(torch_run, device).tracemalloc_peak
        except RecursionError:  # torch cannot walk this deep
            torch_peak = None
        info.update(torch_tracemalloc_peak=torch_peak,
                    tracemalloc_ratio=memory.tracemalloc_peak / torch_peak if torch_peak else None)

    def timed() -> object:
        out = run()
        synchronize(device)
        return out

    benchmark(timed)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and reference.parameters:
        info["ns_per_param"] = stats.median * 1e9 / len(reference.parameters)
