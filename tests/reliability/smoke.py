"""Exercises every public pyparams API once, on the odd cases too; used by the
valgrind and sanitizer runs (``tests/reliability/valgrind.sh``, ``sanitize.sh``).

Exits 0 when every check agrees with torch; any mismatch raises. Small on
purpose: under valgrind each line costs ~50x.
"""

from __future__ import annotations

import collections
import gc
import sys

import torch
from torch import nn
from torch.nn.utils import parametrize

import pyparams


def same(ours, theirs) -> None:
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for a, b in zip(ours, theirs):
        if isinstance(a, tuple):
            assert a[0] == b[0] and a[1] is b[1], (a, b)
        else:
            assert a is b, (a, b)


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
    for recurse in (True, False):
        for dup in (True, False):
            same(pyparams.named_parameters(model, prefix="m", recurse=recurse, remove_duplicate=dup),
                 nn.Module.named_parameters(model, prefix="m", recurse=recurse, remove_duplicate=dup))
            same(pyparams.parameters(model, recurse=recurse, remove_duplicate=dup),
                 (p for _, p in nn.Module.named_parameters(model, recurse=recurse, remove_duplicate=dup)))
            same(pyparams.trainable_parameters(model, recurse=recurse, remove_duplicate=dup),
                 (p for _, p in nn.Module.named_parameters(model, recurse=recurse, remove_duplicate=dup)
                  if p.requires_grad))
            same(pyparams.named_trainable_parameters(model, recurse=recurse, remove_duplicate=dup),
                 ((n, p) for n, p in nn.Module.named_parameters(model, recurse=recurse, remove_duplicate=dup)
                  if p.requires_grad))
            same(pyparams.parameter_list(model, recurse=recurse, remove_duplicate=dup),
                 (p for _, p in nn.Module.named_parameters(model, recurse=recurse, remove_duplicate=dup)))
            same(pyparams.parameter_list(model, trainable=True, recurse=recurse, remove_duplicate=dup),
                 (p for _, p in nn.Module.named_parameters(model, recurse=recurse, remove_duplicate=dup)
                  if p.requires_grad))
            same(pyparams.buffers(model, recurse=recurse, remove_duplicate=dup),
                 (b for _, b in nn.Module.named_buffers(model, recurse=recurse, remove_duplicate=dup)))
            same(pyparams.named_buffers(model, prefix="b", recurse=recurse, remove_duplicate=dup),
                 nn.Module.named_buffers(model, prefix="b", recurse=recurse, remove_duplicate=dup))
        same(pyparams.modules(model, remove_duplicate=dup),
             (m for _, m in nn.Module.named_modules(model, remove_duplicate=dup)))
        same(pyparams.named_modules(model, prefix="x", remove_duplicate=dup),
             nn.Module.named_modules(model, prefix="x", remove_duplicate=dup))


def expect(error: type[BaseException], thunk) -> None:
    try:
        thunk()
    except error:
        return
    raise AssertionError(f"expected {error.__name__}")


def hostile() -> None:
    # A dict that changes size mid-walk, a cycle, bad input, deletion under a live iterator.
    model = build()
    it = pyparams.named_parameters(model)
    next(it)
    model._parameters["late"] = nn.Parameter(torch.ones(1))
    expect(RuntimeError, lambda: list(it))

    loop = nn.Sequential(nn.Linear(1, 1))
    loop[0].add_module("back", loop)
    expect(RuntimeError, lambda: pyparams.parameter_list(loop, remove_duplicate=False))
    same(pyparams.modules(loop), nn.Module.modules(loop))
    loop[0]._modules.clear()

    for bad in (None, 3, torch.ones(1)):
        expect(TypeError, lambda: pyparams.parameter_list(bad))
        expect(TypeError, lambda: next(pyparams.named_parameters(bad)))
    expect(TypeError, lambda: pyparams.named_parameters(nn.Linear(1, 1), prefix=3))

    class NoInit(nn.Module):
        def __init__(self):
            pass

    expect(AttributeError, lambda: pyparams.parameter_list(NoInit()))

    model = build()
    expected = list(model.parameters())
    it = pyparams.parameters(model)
    first = next(it)
    del model
    gc.collect()
    rest = list(it)
    same([first, *rest], expected)

    odd = nn.Linear(2, 2)
    odd.__dict__["_parameters"] = collections.OrderedDict(odd._parameters)
    same(pyparams.named_parameters(odd), nn.Module.named_parameters(odd))

    scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    same(pyparams.named_parameters(scripted), scripted.named_parameters())
    same(pyparams.named_buffers(scripted), scripted.named_buffers())

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


def main() -> int:
    for _ in range(2):
        check_all(build())
        hostile()
    deep()
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
