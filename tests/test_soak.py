"""Soak: many iterations of every kind, with memory and reference counts flat.

Each iteration is one full use of the API (lazy, eager list, named, trainable,
buffers, modules, or an iterator abandoned halfway), cycled in that order. After
a warm-up, tracemalloc (which sees pyparams' native allocations: they go through
``PyMem_Raw*``) and RSS are taken before and after, and the reference count of
every parameter, buffer, module and member dict must be exactly what it was.

The quick profile (CI) runs 100,000 iterations; ``PYPARAMS_SOAK=1`` runs 1,000,000.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
import tracemalloc

import psutil
import torch
from torch import nn

import pyparams
from common_utils import refcounts

# ASan keeps freed memory in quarantine: RSS is not meaningful under it.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")
ITERATIONS = 1_000_000 if os.environ.get("PYPARAMS_SOAK") == "1" else 100_000


def build_model() -> nn.Module:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(
        shared,
        nn.BatchNorm1d(4),
        nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4, bias=False)),
        nn.ParameterList([nn.Parameter(torch.zeros(1)), shared.weight]),
        nn.ModuleDict({"head": nn.Linear(4, 2), "none": None}),
    )
    model[2][0].weight.requires_grad_(False)
    return model


def abandon_halfway(model: nn.Module) -> None:
    iterator = pyparams.named_parameters(model, remove_duplicate=False)
    next(iterator)
    next(iterator)
    next(iterator)


def exhaust(iterator) -> None:
    for _ in iterator:
        pass


USES = (
    ("lazy", lambda m: exhaust(pyparams.parameters(m))),
    ("list", lambda m: pyparams.parameter_list(m)),
    ("named", lambda m: exhaust(pyparams.named_parameters(m, prefix="model"))),
    ("trainable", lambda m: exhaust(pyparams.named_trainable_parameters(m))),
    (
        "trainable_list",
        lambda m: pyparams.parameter_list(m, trainable=True, remove_duplicate=False),
    ),
    ("buffers", lambda m: exhaust(pyparams.named_buffers(m))),
    ("modules", lambda m: exhaust(pyparams.named_modules(m, remove_duplicate=False))),
    ("abandoned", abandon_halfway),
)


def watched_objects(model: nn.Module) -> list[object]:
    objects: list[object] = []
    for module in model.modules():
        objects += [module, module.__dict__, module._parameters, module._buffers, module._modules]
        objects += [v for v in module._parameters.values() if v is not None]
        objects += [v for v in module._buffers.values() if v is not None]
        objects += list(module._parameters) + list(module._modules)  # the keys (names)
    # CPython's static strings ("0", "1", ...: refcount ~10**9) are shared with the
    # whole process, whose other threads move their counts: not ours to watch.
    return [o for o in objects if sys.getrefcount(o) < 10**8]


# A key is a str the rest of the process may share ("weight" is interned): earlier
# tests' compiled frames and caches let go of theirs at their own time (after the
# dynamo tests, "weight" lost 74 during a soak). A leak in one of the eight uses
# would move a count by ITERATIONS / 20 = 5,000 or more (the interrupted soak runs
# one use that often): keys get a fifth of that as slack, everything else none.
KEY_SLACK = ITERATIONS // 100  # 1,000 (quick profile)


def changed_counts(objects: list[object], before: list[int], after: list[int]) -> list[tuple]:
    return [
        (type(o).__name__, repr(o)[:40], then, now)
        for o, then, now in zip(objects, before, after, strict=True)
        if then != now and not (type(o) is str and abs(now - then) < KEY_SLACK)
    ]


def test_soak_memory_and_refcounts_stay_flat():
    model = build_model()
    uses = itertools.cycle(USES)
    for _ in range(2000):  # warm-up: caches, interned names, allocator pools
        next(uses)[1](model)
    objects = watched_objects(model)
    counts_before = refcounts(objects)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    try:
        traced_before, _ = tracemalloc.get_traced_memory()
        start = time.perf_counter()
        for _ in range(ITERATIONS):
            next(uses)[1](model)
        elapsed = time.perf_counter() - start
        gc.collect()
        traced_after, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_after = process.memory_info().rss
    counts_after = refcounts(objects)

    changed = changed_counts(objects, counts_before, counts_after)
    assert not changed, changed
    # Flat: nothing is retained per iteration (a leak of one 8-byte pointer per
    # iteration would show as 800 KB at the quick profile, 8 MB at the long one).
    assert traced_after - traced_before < 16 * 1024, traced_after - traced_before
    assert traced_peak - traced_before < 256 * 1024, traced_peak - traced_before
    if not SANITIZED:
        assert rss_after - rss_before < 8 * 2**20, rss_after - rss_before
    print(
        f"\nsoak: {ITERATIONS} iterations in {elapsed:.1f}s; tracemalloc "
        f"{traced_before} -> {traced_after} B (peak +{traced_peak - traced_before} B); "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
        f"{len(objects)} refcounts unchanged"
    )


def test_soak_under_mutation_raises_and_does_not_leak():
    """Iterators interrupted by a size change (RuntimeError) release everything too."""
    model = build_model()
    extra = nn.Parameter(torch.ones(1))
    objects = [*watched_objects(model), extra]

    def interrupted() -> None:
        iterator = pyparams.named_parameters(model)
        next(iterator)
        model[0]._parameters["extra"] = extra
        try:
            next(iterator)
            raise AssertionError("a size change was not noticed")
        except RuntimeError:
            pass
        finally:
            del model[0]._parameters["extra"]

    for _ in range(500):
        interrupted()
    before = refcounts(objects)
    tracemalloc.start()
    try:
        traced_before, _ = tracemalloc.get_traced_memory()
        for _ in range(ITERATIONS // 20):
            interrupted()
        gc.collect()
        traced_after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    changed = changed_counts(objects, before, refcounts(objects))
    assert not changed, changed
    assert traced_after - traced_before < 16 * 1024, traced_after - traced_before
