"""pyparams.zero_grad and the patched Module.zero_grad against torch's Module.zero_grad:
grads, in-place identity, detach/requires_grad handling, the replica warning, tensor
subclasses and torch-function modes (the same Python-level calls, in the same order)."""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import pyparams
from common_utils import cpu_and_cuda, run_python
from pyparams import _patch

TORCH_ZERO_GRAD = _patch._TORCH["zero_grad"]


def _torch_way(module: nn.Module, set_to_none: bool = True) -> None:
    TORCH_ZERO_GRAD(module, set_to_none)


def _pyparams_way(module: nn.Module, set_to_none: bool = True) -> None:
    pyparams.zero_grad(module, set_to_none)


def _patched_way(module: nn.Module, set_to_none: bool = True) -> None:
    with pyparams.patched():
        module.zero_grad(set_to_none)


WAYS = {"pyparams.zero_grad": _pyparams_way, "patched Module.zero_grad": _patched_way}


def _model_with_grads(create_graph: bool = False, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model.frozen = nn.Linear(2, 2).requires_grad_(False)  # no grad: skipped
    model.extra = nn.Parameter(torch.ones(2))  # never used: grad stays None
    model.to(device)  # the same values on every device (drawn on the CPU generator)
    loss = model(torch.randn(5, 3).to(device)).pow(2).sum()
    loss.backward(create_graph=create_graph)
    return model


def _grads(model: nn.Module) -> list[object]:
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("set_to_none", [True, False, 0, 1])
@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_same_grads_as_torch(way: str, set_to_none, create_graph: bool, device: str) -> None:
    expected_model = _model_with_grads(create_graph, device)
    actual_model = _model_with_grads(create_graph, device)  # seeded: the same values
    before = _grads(actual_model)
    expected_before = _grads(expected_model)
    _torch_way(expected_model, set_to_none)
    WAYS[way](actual_model, set_to_none)
    for got, want, old, want_old in zip(
        _grads(actual_model), _grads(expected_model), before, expected_before, strict=True
    ):
        assert (got is None) == (want is None)
        if want is None:
            continue
        assert (got is old) == (want is want_old)  # zeroed in place, the same object
        assert torch.equal(got, want)
        assert got.requires_grad == want.requires_grad
        assert (got.grad_fn is None) == (want.grad_fn is None)


@pytest.mark.parametrize("way", list(WAYS))
def test_replica_warning_is_torchs_and_points_at_the_caller(way: str) -> None:
    expected_model, actual_model = _model_with_grads(), _model_with_grads()
    expected_model._is_replica = True
    actual_model._is_replica = True
    with warnings.catch_warnings(record=True) as expected:
        warnings.simplefilter("always")
        expected_model.zero_grad()
    with warnings.catch_warnings(record=True) as actual:
        warnings.simplefilter("always")
        WAYS[way](actual_model)
    assert [str(w.message) for w in actual] == [str(w.message) for w in expected]
    assert [w.category for w in actual] == [w.category for w in expected] == [UserWarning]
    if way == "patched Module.zero_grad":  # stacklevel=2: the line that called zero_grad
        assert actual[0].filename == expected[0].filename == __file__
    assert _grads(actual_model) == _grads(expected_model)  # the loop still runs


def test_non_leaf_parameter_entries_warn_like_torch() -> None:
    """A non-leaf tensor in _parameters (a replica's case): p.grad warns in torch's loop."""

    def build() -> nn.Module:
        module = nn.Linear(2, 2)
        module._parameters["weight"] = module.weight * 2  # non-leaf, grad never populated
        return module

    with warnings.catch_warnings(record=True) as expected:
        warnings.simplefilter("always")
        _torch_way(build())
    for way in WAYS.values():
        with warnings.catch_warnings(record=True) as actual:
            warnings.simplefilter("always")
            way(build())
        assert [str(w.message) for w in actual] == [str(w.message) for w in expected]
        assert len(expected) == 1


class _Logged(nn.Parameter):
    """A Parameter subclass whose every tensor call is logged through __torch_function__."""

    log: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.log.append(getattr(func, "__name__", repr(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


class _LogMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.log.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def _subclass_model(create_graph: bool) -> nn.Module:
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    module.weight = _Logged(module.weight.detach().clone())
    module(torch.randn(4, 3)).sum().backward(create_graph=create_graph)
    return module


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("create_graph", [False, True])
def test_tensor_subclasses_see_the_same_calls(
    way: str, set_to_none: bool, create_graph: bool
) -> None:
    expected_model, actual_model = _subclass_model(create_graph), _subclass_model(create_graph)
    _Logged.log = []
    _torch_way(expected_model, set_to_none)
    expected = _Logged.log
    _Logged.log = []
    WAYS[way](actual_model, set_to_none)
    assert _Logged.log == expected and expected  # the subclass saw the same calls
    assert [g is None for g in _grads(actual_model)] == [g is None for g in _grads(expected_model)]


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("set_to_none", [True, False])
def test_torch_function_modes_see_the_same_calls(way: str, set_to_none: bool) -> None:
    expected_model, actual_model = _model_with_grads(), _model_with_grads()
    with _LogMode() as expected:
        _torch_way(expected_model, set_to_none)
    with _LogMode() as actual:
        WAYS[way](actual_model, set_to_none)
    assert actual.log == expected.log and expected.log


class _SomeParameters(nn.Module):
    """Overrides parameters(): torch's zero_grad only resets what it yields."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def parameters(self, recurse=True):
        return iter([self.a.weight])


class _OwnZeroGrad(nn.Linear):
    calls: ClassVar[list[bool]] = []

    def zero_grad(self, set_to_none=True):
        type(self).calls.append(set_to_none)


@pytest.mark.parametrize("way", list(WAYS))
def test_overrides_are_honoured(way: str) -> None:
    expected_model, actual_model = _SomeParameters(), _SomeParameters()
    for model in (expected_model, actual_model):
        for p in nn.Module.parameters(model):
            p.grad = torch.ones_like(p)
    _torch_way(expected_model)
    WAYS[way](actual_model)
    expected = [p.grad is None for p in nn.Module.parameters(expected_model)]
    assert [p.grad is None for p in nn.Module.parameters(actual_model)] == expected
    assert expected == [True, False, False, False]

    _OwnZeroGrad.calls = []
    WAYS[way](_OwnZeroGrad(2, 2), False)
    assert _OwnZeroGrad.calls == [False]


class _NoArgument(nn.Linear):
    def zero_grad(self):
        for p in self.parameters():
            p.grad = None


class _KeywordOnly(nn.Linear):
    def zero_grad(self, *, set_to_none=True):
        super().zero_grad(set_to_none=set_to_none)


class _KeepsByDefault(nn.Linear):
    def zero_grad(self, set_to_none=False):
        super().zero_grad(set_to_none)


class _Partial(nn.Linear):
    zero_grad = functools.partialmethod(nn.Module.zero_grad, set_to_none=False)


class _Disabled(nn.Linear):
    zero_grad = None


class _Returns(nn.Linear):
    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none)
        return self  # for chaining: torch's call returns it


def _forwarding() -> nn.Module:
    """An instance whose zero_grad is another module's (torch's own method, bound elsewhere)."""
    outer = nn.Linear(2, 2)
    outer.other = nn.Linear(2, 2)
    outer.zero_grad = outer.other.zero_grad
    return outer


OVERRIDDEN = {
    "no argument": lambda: _NoArgument(2, 2),
    "keyword-only": lambda: _KeywordOnly(2, 2),
    "own default": lambda: _KeepsByDefault(2, 2),
    "partialmethod": lambda: _Partial(2, 2),
    "None": lambda: _Disabled(2, 2),
    "returns a value": lambda: _Returns(2, 2),
    "bound to another module": _forwarding,
}


def _after_zero_grad(make, call) -> tuple:
    """What each grad is after ``call(model)`` (None, zeros, ones), what it returned or raised."""
    model = make()
    for p in nn.Module.parameters(model):
        p.grad = torch.ones_like(p)
    try:
        returned = call(model)
        returned = "the module" if returned is model else returned
        raised = None
    except Exception as error:  # noqa: BLE001 - the exception is what is compared
        returned, raised = None, (type(error), str(error))
    grads = [None if p.grad is None else p.grad.sum().item() for p in nn.Module.parameters(model)]
    return grads, returned, raised


@pytest.mark.parametrize("kwargs", [{}, {"set_to_none": True}, {"set_to_none": False}])
@pytest.mark.parametrize("case", list(OVERRIDDEN))
def test_an_override_is_called_as_module_zero_grad_calls_it(case: str, kwargs: dict) -> None:
    # With set_to_none only if it was passed, by keyword: an override may have no such
    # argument, a default of its own, or take it by keyword only.
    make = OVERRIDDEN[case]
    expected = _after_zero_grad(make, lambda m: m.zero_grad(**kwargs))
    assert _after_zero_grad(make, lambda m: pyparams.zero_grad(m, **kwargs)) == expected


@pytest.mark.parametrize(
    "bad", [None, 3, torch.zeros(2), nn.Linear, torch.optim.SGD([torch.zeros(1)], lr=0.1)]
)
def test_bad_input_raises_a_clear_error(bad) -> None:
    # Checked before any zero_grad is looked up: an optimizer's own is not called.
    with pytest.raises(TypeError, match=f"expected a torch.nn.Module, got {type(bad).__name__}"):
        pyparams.zero_grad(bad)


def test_native_loop_accepts_any_iterable_and_validates_items() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    pyparams._C.zero_grad((p for p in [a, b]), set_to_none=True)
    assert a.grad is None and b.grad is None
    with pytest.raises(AttributeError):
        pyparams._C.zero_grad([a, object()], set_to_none=True)
    with pytest.raises(TypeError):
        pyparams._C.zero_grad(5, set_to_none=True)


def test_a_finalizer_of_a_released_grad_that_calls_zero_grad_again() -> None:
    # The grad is let go of with its slot already empty: the finalizer (run inside the
    # outer reset) finds no grad on that parameter. Letting go first and emptying the slot
    # after, the inner reset released the same grad twice (a LibTorch assertion aborted).
    # In a child, since the failure is an abort.
    code = (
        "import weakref, torch, pyparams\n"
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1))\n"
        "for p in model.parameters():\n"
        "    p.grad = torch.ones_like(p)\n"
        "seen = []\n"
        "grad = model[0].weight.grad\n"
        "weakref.finalize(grad, lambda: (seen.append(model[0].weight.grad),\n"
        "                                pyparams.zero_grad(model)))\n"
        "del grad\n"
        "pyparams.zero_grad(model)\n"
        "print(seen, [p.grad for p in model.parameters()], flush=True)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0] == "[None] [None, None, None, None]"
