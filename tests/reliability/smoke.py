"""Exercises every public pyparams API once, on the odd cases too; used by the
valgrind and sanitizer runs (``tests/reliability/valgrind.sh``, ``sanitize.sh``).

Exits 0 when every check agrees with torch; any mismatch raises. Small on
purpose: under valgrind each line costs ~50x.
"""

from __future__ import annotations

import collections
import gc
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import pyparams

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the shared reference
from common_utils import assert_conforms, assert_same_items, reference, run_pyparams


class Scale(nn.Module):
    def forward(self, x):
        return x * 1


def build() -> nn.Module:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(
        shared,
        nn.BatchNorm1d(3),
        nn.Sequential(shared, nn.Linear(3, 3, bias=False)),
        nn.ModuleDict({"head": nn.Linear(3, 2), "none": None}),
        nn.ParameterList([nn.Parameter(torch.ones(1)), shared.weight]),
        nn.ParameterDict({"a": nn.Parameter(torch.zeros(2))}),
        nn.LazyLinear(2),
    )
    model[2][1].weight.requires_grad_(False)
    model._parameters["raw"] = nn.Parameter(torch.ones(2))
    model._parameters["missing"] = None
    parametrize.register_parametrization(model[3]["head"], "weight", Scale())
    return model


def check_all(model: nn.Module) -> None:
    assert_conforms(model)  # every function and argument against torch's own methods


def hostile() -> None:
    # A dict that changes size mid-walk, a cycle, bad input, deletion under a live iterator.
    model = build()
    it = pyparams.named_parameters(model)
    next(it)
    model._parameters["late"] = nn.Parameter(torch.ones(1))
    with pytest.raises(RuntimeError):
        list(it)

    loop = nn.Sequential(nn.Linear(1, 1))
    loop[0].add_module("back", loop)
    with pytest.raises(RuntimeError):
        pyparams.parameter_list(loop, remove_duplicate=False)
    assert_same_items(run_pyparams("modules", loop), reference("modules", loop))
    loop[0]._modules.clear()

    for bad in (None, 3, torch.ones(1)):
        with pytest.raises(TypeError):
            pyparams.parameter_list(bad)
        with pytest.raises(TypeError):
            next(pyparams.named_parameters(bad))
    with pytest.raises(TypeError):
        pyparams.named_parameters(nn.Linear(1, 1), prefix=3)

    class NoInit(nn.Module):
        def __init__(self):
            pass

    with pytest.raises(AttributeError):
        pyparams.parameter_list(NoInit())

    model = build()
    expected = reference("parameters", model)
    it = pyparams.parameters(model)
    first = next(it)
    del model
    gc.collect()
    rest = list(it)
    assert_same_items([first, *rest], expected)

    odd = nn.Linear(2, 2)
    odd.__dict__["_parameters"] = collections.OrderedDict(odd._parameters)
    assert_same_items(run_pyparams("named_parameters", odd), reference("named_parameters", odd))

    scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    for function in ("named_parameters", "named_buffers"):
        assert_same_items(run_pyparams(function, scripted), reference(function, scripted))

    # Abandoned halfway, collected by the cycle GC while holding the model.
    model = build()
    it = pyparams.named_modules(model)
    next(it)
    model.cycle = nn.Module()
    model.cycle.it = it  # the iterator reachable from the model it walks
    del model, it
    gc.collect()


def deep() -> None:
    root = node = nn.Module()
    for _ in range(3000):
        child = nn.Module()
        node._modules["c"] = child
        node = child
    node._parameters["w"] = nn.Parameter(torch.ones(1))
    assert len(pyparams.parameter_list(root)) == 1
    assert sum(1 for _ in pyparams.named_modules(root)) == 3001


def warm_hostile() -> None:
    # The same, on replays of the walk cache: changes met mid-replay, the model dropped.
    model = build()
    for _ in range(3):
        pyparams.parameter_list(model)
        list(pyparams.named_parameters(model))
    it = pyparams.named_parameters(model)
    next(it)
    model._parameters["late"] = nn.Parameter(torch.ones(1))
    with pytest.raises(RuntimeError):
        list(it)
    del model._parameters["late"]
    it = pyparams.parameters(model)
    next(it)
    del model
    gc.collect()
    assert len(list(it)) > 0


def main() -> int:
    for _ in range(2):
        check_all(build())
        hostile()
        warm_hostile()
    deep()
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
