"""Consumers of the walk, torch vs ``pyparams.patch()`` vs pyparams' native consumer.

One group per consumer and model (``--benchmark-group-by=group``): ``torch`` runs the
consumer as torch ships it, ``patched`` the same code with the patch on, ``native``
pyparams' own consumer where there is one (``pyparams.zero_grad``). Every mode's result is
checked against torch's before it is timed (the harness' ``_check``). Targets are in
``pyparams.bench.targets.CONSUMER_TARGETS``; they are measured, never asserted.

    pytest benchmarks/test_consumers.py --benchmark-group-by=group
    PYPARAMS_CONSUMER_MODELS="moe-2x4 gpt2-tiny" pytest benchmarks/test_consumers.py  # quick
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

import pyparams
from pyparams.bench.consumers import (
    CONSUMER_MODELS,
    CONSUMERS,
    Model,
    _check,
    _modes,
    build_consumer_model,
)
from pyparams.bench.targets import CONSUMER_TARGETS
from pyparams.bench.zoo import ZooCache

_MODELS: dict[str, Model] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "consumer_model" in metafunc.fixturenames:
        chosen = os.environ.get("PYPARAMS_CONSUMER_MODELS", "")
        names = chosen.replace(",", " ").split() or list(CONSUMER_MODELS)
        metafunc.parametrize("consumer_model", names)


@pytest.fixture
def built(consumer_model: str, zoo_cache: ZooCache) -> Model:
    if consumer_model not in _MODELS:
        _MODELS[consumer_model] = build_consumer_model(consumer_model, zoo_cache)
    return _MODELS[consumer_model]


@pytest.fixture
def patch_state() -> Iterator[Callable[[bool], None]]:
    def set_state(on: bool) -> None:
        (pyparams.patch if on else pyparams.unpatch)()

    yield set_state
    pyparams.unpatch()


@pytest.mark.parametrize("mode", ["torch", "patched", "native"])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_consumer(
    benchmark: Callable[..., object],
    built: Model,
    patch_state: Callable[[bool], None],
    consumer: str,
    mode: str,
) -> None:
    chosen = CONSUMERS[consumer]
    modes = _modes(chosen)
    if mode not in modes:
        pytest.skip(f"{consumer} has no native pyparams consumer")
    error = _check(chosen, built)
    if error:
        pytest.fail(f"{consumer} on {built.name}: {error}")
    run, patch = modes[mode]
    benchmark.group = f"{consumer}[{built.name}]"  # type: ignore[attr-defined]
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        consumer=consumer, mode=mode, model=built.name, target=CONSUMER_TARGETS.get(consumer)
    )
    patch_state(patch)
    benchmark.pedantic(  # type: ignore[attr-defined]
        lambda: run(built),
        setup=lambda: chosen.setup(built),
        rounds=7 if consumer == "train_step" else 25,
        warmup_rounds=1,
    )
