"""Zoo x contender x device: every contender on every model of a preset.

``--zoo-preset`` (quick by default, then default or full) picks the models; architectures
over the 4 GiB memory cap are timed on ``meta``. Compare runs with pytest-benchmark:

    pytest benchmarks/test_zoo.py --benchmark-group-by=group --benchmark-json=zoo.json
    pytest benchmarks/test_zoo.py --benchmark-group-by=group --benchmark-compare
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyparams.bench.contenders import CONTENDERS
from pyparams.bench.zoo import ZOO, ZooCache

DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``zoo_model`` over the models of ``--zoo-preset``."""
    if "zoo_model" in metafunc.fixturenames:
        preset = metafunc.config.getoption("--zoo-preset")
        names = [name for name, entry in ZOO.items() if preset in entry.presets]
        metafunc.parametrize("zoo_model", names)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_zoo(
    benchmark: Callable[..., object],
    zoo_cache: ZooCache,
    run_contender: Callable[..., None],
    zoo_model: str,
    contender: str,
    device: str,
) -> None:
    built = zoo_cache.get(zoo_model, device)
    if built.device != device and device != "cpu":
        pytest.skip(f"{zoo_model} is over the memory cap: timed on meta in the cpu row")
    benchmark.group = f"{zoo_model}[{built.device}]"  # type: ignore[attr-defined]
    run_contender(benchmark, contender, built.module, built.device)
