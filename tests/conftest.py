"""Shared pytest setup: skip ``needs_cuda`` tests without CUDA, freeze the imported heap
(and, before each module, what earlier modules left) out of the collector's reach, and
shared fixtures.

The ``needs_cuda`` marker is registered in pyproject.toml.
"""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Iterator

import pytest
import torch

# CPython 3.13 and 3.14 give a class at most 1000 version tags (MAX_VERSIONS_PER_CLASS). Every
# write to an attribute of nn.Module (each pyparams.patch() and unpatch() is one) clears the tags of
# nn.Module and its subclasses, and each spends a new one when next looked up. The suite writes
# there hundreds of times; past the limit no module class has a tag and every walk is live. The
# modules that test recorded walks run first, while torch's classes still get tags, and so do the
# documentation's examples that count replays.
_RECORDED_WALK_MODULES = (
    "test_walk_cache.py",
    "test_cache_state.py",
    "test_safety.py",
    "test_deep_names.py",
    "_cache.py",
    "design.md",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if sys.version_info >= (3, 13):
        items.sort(key=lambda item: item.path.name not in _RECORDED_WALK_MODULES)  # stable
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the imports built (torch, transformers, the test modules) out of the cyclic
    collector's reach. The suite collects hundreds of times, some tests at threshold 1, to run
    finalizers inside walks; each collection then scans only what the tests made since, not
    the whole heap again."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def frozen_leftovers_of_earlier_modules() -> None:
    """Freeze, before each test module, what earlier modules left alive: mostly imports their
    tests made (transformers' model code, dynamo), 260,000 objects after the conformance suite
    alone. Without it every full collection scans them again: `refcounts()` collects twice a
    step, and the eager-replay reference-count test took 4 s instead of 0.1. What the module's
    own tests make is not frozen: garbage they leave is collected, finalizers run."""
    gc.collect()
    gc.freeze()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_group() -> Iterator[None]:
    """A single-process gloo process group (rank 0 of 1), destroyed afterwards."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    if dist.is_initialized():  # someone else's group: use it, leave it
        yield
        return
    try:
        dist.init_process_group(
            "gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}"
        )
    except Exception as error:  # noqa: BLE001 - no gloo, no loopback networking: skip
        pytest.skip(f"cannot initialize a single-process gloo group: {error!r}")
    try:
        yield
    finally:
        dist.destroy_process_group()
