"""Threads: eight readers iterate one model while another thread mutates it.

The walk holds the GIL, so a mutation can only land between two steps of an
iteration; what must hold is that no interleaving crashes, and that each
iteration is either exact (no mutation overlapped it: it equals torch's answer
for that version of the model), or raises ``RuntimeError`` (a dict it was
walking changed size), or yields only objects that were in the model under
names that existed, without duplicates.

A second test runs the readers in lockstep with torch's generators (a lock
makes each reader's pair of steps atomic with respect to the mutator), so every
single step is compared with torch under thread interleaving.

``PYPARAMS_THREADS_SECONDS`` sets how long each test runs (default 1.5).
"""

from __future__ import annotations

import collections
import os
import random
import sys
import threading
import time

import pytest
import torch
from torch import nn

import pyparams
from common_utils import reference, same_item, same_items, step, torch_iterator

SECONDS = float(os.environ.get("PYPARAMS_THREADS_SECONDS", "1.5"))
READERS = 8
# What the readers call; the lockstep test steps the lazy ones.
FUNCTIONS = ("named_modules", "named_parameters", "named_trainable_parameters", "parameter_list")
LAZY = FUNCTIONS[:3]


def build_model() -> nn.Module:
    shared = nn.Linear(2, 2)
    blocks = [nn.Sequential(nn.Linear(2, 2), shared, nn.BatchNorm1d(2)) for _ in range(6)]
    return nn.Sequential(*blocks, nn.ModuleDict({"head": nn.Linear(2, 2), "tied": shared}))


class Mutator:
    """Mutates the model at random; keeps every object it ever used alive (stable ids)."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.random = random.Random(seed)
        self.version = 0  # odd while a mutation is in progress
        self.snapshots: dict[int, dict[str, list]] = {}
        self.kept: list[object] = []
        self.kept_ids: set[int] = set()
        self.counts: collections.Counter[str] = collections.Counter()
        self.modules = list(model.modules())
        self.snapshot(0)

    def keep(self, obj: object) -> None:
        self.kept.append(obj)
        self.kept_ids.add(id(obj))

    def snapshot(self, version: int) -> None:
        """torch's answers for the model as it is now, stored under `version`."""
        self.snapshots[version] = {name: reference(name, self.model) for name in FUNCTIONS}
        for items in self.snapshots[version].values():
            for item in items:
                self.keep(item[1] if isinstance(item, tuple) else item)

    def mutate_once(self) -> None:
        self.version += 1
        module = self.random.choice(self.modules)
        what = self.random.randrange(6)
        if what == 0:
            p = nn.Parameter(torch.zeros(1))
            self.keep(p)
            module._parameters[f"extra{self.random.randrange(3)}"] = p
        elif what == 1:
            if module._parameters:
                module._parameters.pop(self.random.choice(list(module._parameters)))
        elif what == 2:
            params = [p for p in module._parameters.values() if p is not None]
            if params:
                p = self.random.choice(params)
                p.requires_grad_(not p.requires_grad)
        elif what == 3:
            child = nn.Linear(2, 2)
            for obj in (child, *child.parameters()):
                self.keep(obj)  # before it is reachable: a reader may see it at once
            self.modules.append(child)
            module._modules[f"new{self.random.randrange(3)}"] = child
        elif what == 4:
            if module._modules:
                module._modules.pop(self.random.choice(list(module._modules)))
        else:
            if module._modules:  # replace in place: no size change
                key = self.random.choice(list(module._modules))
                module._modules[key] = self.random.choice([*self.modules, None])
        self.counts[f"mutation:{what}"] += 1
        self.counts["mutations"] += 1
        self.snapshot(self.version + 1)
        self.version += 1


def run_readers(reader, mutate, stop: threading.Event, failures: list[str]) -> None:
    """Run READERS threads of `reader(index)` while `mutate()` runs for SECONDS; then stop them."""
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and not failures:
        mutate()
        time.sleep(0.0005)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_readers_and_a_mutator(fast_switching):
    mutator = Mutator(build_model(), seed=1234)
    stop = threading.Event()
    failures: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    counts_lock = threading.Lock()

    def reader(index: int) -> None:
        rng = random.Random(index)
        local: collections.Counter[str] = collections.Counter()
        try:
            while not stop.is_set():
                name = rng.choice(FUNCTIONS)
                before = mutator.version
                try:
                    items = []
                    for item in getattr(pyparams, name)(mutator.model):
                        items.append(item)
                        if rng.random() < 0.05:
                            time.sleep(0)  # hand the GIL over mid-iteration
                except RuntimeError as error:
                    assert "changed" in str(error), error
                    local["runtime_error"] += 1
                    continue
                after = mutator.version
                local["iterations"] += 1
                if before == after and before % 2 == 0:
                    expected = mutator.snapshots[before][name]
                    assert same_items(items, expected), f"{name} differs from version {before}"
                    local["exact"] += 1
                    continue
                # A mutation overlapped: only real objects, no duplicates.
                local["overlapped"] += 1
                objects = [i[1] if isinstance(i, tuple) else i for i in items]
                assert len({id(o) for o in objects}) == len(objects), "duplicate yielded"
                assert all(
                    isinstance(o, (nn.Parameter, nn.Module)) and id(o) in mutator.kept_ids
                    for o in objects
                )
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(f"reader {index}: {error!r}")
        finally:
            with counts_lock:
                counts.update(local)

    run_readers(reader, mutator.mutate_once, stop, failures)
    assert counts["iterations"] > 0 and counts["exact"] > 0
    print(f"\nthreads: {dict(counts)} mutations={mutator.counts['mutations']}")


def test_readers_in_lockstep_with_torch(fast_switching):
    """Each reader steps pyparams and torch together; the mutator mutates between steps."""
    mutator = Mutator(build_model(), seed=99)
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    steps = collections.Counter()

    def reader(index: int) -> None:
        rng = random.Random(1000 + index)
        try:
            while not stop.is_set():
                name = rng.choice(LAZY)
                with lock:
                    ours = getattr(pyparams, name)(mutator.model)
                    theirs = torch_iterator(name, mutator.model)
                while True:
                    with lock:
                        a, b = step(ours), step(theirs)
                        steps["steps"] += 1
                    assert a[0] == b[0], (a, b)
                    if a[0] == "item":
                        assert same_item(a[1], b[1]), (a, b)
                        continue
                    if a[0] == "raise":
                        assert type(a[1]) is type(b[1]), (a, b)
                        with lock:
                            steps["same_exception"] += 1
                    break
                with lock:
                    steps["iterations"] += 1
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(f"reader {index}: {error!r}")

    def mutate_between_steps() -> None:
        with lock:
            mutator.mutate_once()

    run_readers(reader, mutate_between_steps, stop, failures)
    assert steps["iterations"] > 0
    print(f"\nlockstep threads: {dict(steps)} mutations={mutator.counts['mutations']}")
