"""The first suite: torch's reference and pyparams, side by side, on four shapes.

- a GPT-2-XL-shaped model (48 blocks, width 64);
- a chain of 300 nested modules;
- 20,000 sibling ``Linear`` modules;
- an unfused mixture of experts, 32 layers x 64 experts.

The targets these shapes are held to are :data:`pyparams.bench.targets.TARGETS` (hot
loops here; ``pyparams bench`` also times them after other work); they are measured by
the report, never asserted here.

    pytest benchmarks/test_parameters.py --benchmark-group-by=group
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyparams.bench.zoo import ZooCache

DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))

MODELS = ("gpt2-xl-tiny", "depth-300", "width-20000", "moe-32x64")
CONTENDERS = (
    "torch.list",
    "torch.parameters",
    "pyparams.parameters",
    "pyparams.list",
    "pyparams.parameter_list",
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("model", MODELS)
def test_parameters(
    benchmark: Callable[..., object],
    zoo_cache: ZooCache,
    run_contender: Callable[..., None],
    model: str,
    contender: str,
    device: str,
) -> None:
    built = zoo_cache.get(model, device)
    benchmark.group = f"{model}[{built.device}]"  # type: ignore[attr-defined]
    run_contender(benchmark, contender, built.module, built.device)
