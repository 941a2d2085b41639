"""The consumer benchmark's walk alone: recording the walks a consumer makes with torch's
methods, and replaying exactly those calls (checked by recording the replay itself)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyparams
from pyparams import _patch
from pyparams.bench.consumer_walks import WalkCall, record_walks, replay_walks


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    model.tied = model[0]  # a module reached twice: dedup matters
    return model


def _summary(calls: list[WalkCall]) -> list[tuple]:
    return [(id(c.module), c.method, c.args, c.kwargs, c.taken, c.finished) for c in calls]


def test_records_the_consumers_calls_not_torchs_recursion() -> None:
    model = _model()
    n_params = len(list(model.parameters()))
    calls = record_walks(lambda: (model.zero_grad(), next(model.named_buffers(prefix="m"))))
    assert _summary(calls) == [
        (id(model), "parameters", (), {}, n_params, True),  # zero_grad's loop, to its end
        (id(model), "named_buffers", (), {"prefix": "m"}, 1, False),  # one item taken
    ]


def test_each_call_on_each_module_in_order() -> None:
    model = _model()
    leaves = [m for m in model.modules() if not m._modules]
    calls = record_walks(lambda: [list(m.named_parameters(recurse=True)) for m in leaves])
    assert [c.module for c in calls] == leaves
    assert [c.taken for c in calls] == [len(list(m.parameters())) for m in leaves]


def test_a_memo_is_recorded_as_it_was_at_the_call() -> None:
    model = _model()
    memo = {model[0]}
    calls = record_walks(lambda: list(model.named_modules(memo)))
    assert len(memo) == len(list(model.modules()))  # torch filled the caller's set
    assert calls[0].args == ({model[0]},) and calls[0].args[0] is not memo


@pytest.mark.parametrize("patch", [False, True], ids=["torch", "patched"])
def test_a_replay_makes_the_recorded_calls_again(patch: bool) -> None:
    model = _model()

    def consumer() -> None:
        model.requires_grad_(False)
        list(model.named_modules({model[1]}, prefix="{x}"))  # a memo and a brace in a name
        next(model.buffers())
        for leaf in (model[0], model[1][0]):
            list(leaf.named_parameters(recurse=True))
        torch.optim.SGD(model.parameters(), lr=0.1)

    calls = record_walks(consumer)
    assert len(calls) == 6
    replay = replay_walks(calls)
    if patch:
        with pyparams.patched():
            replay()
            replay()  # a memo is fresh each time: the second replay walks it again
    replayed = record_walks(replay)
    assert _summary(replayed) == _summary(calls)


def test_refuses_while_patched_and_restores_torchs_methods() -> None:
    with pyparams.patched(), pytest.raises(RuntimeError, match="unpatch first"):
        record_walks(lambda: None)
    with pytest.raises(ZeroDivisionError):
        record_walks(lambda: 1 / 0)
    assert all(nn.Module.__dict__[name] is _patch._TORCH[name] for name in _patch.NAMES)
    pyparams.patch()  # would refuse a method that is not torch's own
    pyparams.unpatch()
