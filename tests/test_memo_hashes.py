"""torch's walks remove duplicates with Python sets, which hash what they are asked about:
`self not in memo` (then `memo.add(self)`) for each module named_modules enters, `v in memo`
(then `memo.add(v)`) for each member `_named_members` reads, with remove_duplicate=False
too. nn.Module keeps object's hash and torch.Tensor.__hash__ returns id(self), so those
sets find objects by identity; a class with a hash of its own (or `__eq__` alone, which
makes it unhashable) runs code there. pyparams runs it where torch runs it, as often, on
a set that answers as torch's does: on a first walk, a replay, and a replay that meets a
class changed since it was recorded, between two of its steps included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    every_call,
    lockstep_with_a_change,
    outcome,
    run_pyparams,
    torch_iterator,
)

# Every hash the classes below run, in order: torch's walk and pyparams' must leave the
# same log. (Not their `==`: a set compares the entries of one hash in the order its
# table holds them, which its resizes shuffle; pyparams compares them in the order they
# were added. What a lookup answers is the same wherever `==` answers alike each time.)
LOG: list[tuple[str, str]] = []
EQUALITIES: list[str] = []


def _label(obj: object) -> str:
    return getattr(obj, "label", type(obj).__name__)


class ConstantHashParameter(nn.Parameter):
    """Every instance hashes alike and equals every other: torch keeps the first."""

    def __hash__(self) -> int:
        LOG.append(("hash", _label(self)))
        return 7

    def __eq__(self, other: object) -> bool:
        EQUALITIES.append(_label(self))
        return True


class UnhashableParameter(nn.Parameter):
    """`__eq__` without `__hash__`: CPython sets `__hash__ = None` (torch raises TypeError)."""

    def __eq__(self, other: object) -> bool:
        return self is other


class RaisingHashParameter(nn.Parameter):
    def __hash__(self) -> int:
        raise ValueError(f"hash of {_label(self)} refused")


class LoggedHashParameter(nn.Parameter):
    """Hashes by identity, as torch's tensors do, and logs each call."""

    def __hash__(self) -> int:
        LOG.append(("hash", _label(self)))
        return id(self)


class SameShapeLinear(nn.Linear):
    """Equal to any SameShapeLinear of its shape: torch walks only the first of them."""

    def __hash__(self) -> int:
        LOG.append(("hash", _label(self)))
        return hash((self.in_features, self.out_features))

    def __eq__(self, other: object) -> bool:
        EQUALITIES.append(_label(self))
        return isinstance(other, SameShapeLinear) and other.weight.shape == self.weight.shape


class UnhashableLinear(nn.Linear):
    def __eq__(self, other: object) -> bool:
        return self is other


class RaisingHashLinear(nn.Linear):
    def __hash__(self) -> int:
        raise ValueError(f"hash of {_label(self)} refused")


class LoggedHashLinear(nn.Linear):
    def __hash__(self) -> int:
        LOG.append(("hash", _label(self)))
        return object.__hash__(self)


class LoggedHashSequential(nn.Sequential):
    def __hash__(self) -> int:
        LOG.append(("hash", _label(self)))
        return object.__hash__(self)


PARAMETER_CLASSES = (
    ConstantHashParameter,
    UnhashableParameter,
    RaisingHashParameter,
    LoggedHashParameter,
)
MODULE_CLASSES = (SameShapeLinear, UnhashableLinear, RaisingHashLinear, LoggedHashLinear)


def _parameter(cls: type[nn.Parameter], label: str, *shape: int) -> nn.Parameter:
    parameter = cls(torch.zeros(*shape))
    parameter.label = label
    return parameter


def hashed_tree(
    parameter_cls: type[nn.Parameter] = nn.Parameter, module_cls: type[nn.Linear] = nn.Linear
) -> nn.Sequential:
    """Siblings of one shape, a shared module, a tied parameter, a parameter kept as a
    buffer (a raw entry), and parameters and modules of the classes given in between."""
    root = nn.Sequential(
        module_cls(2, 2), nn.Linear(2, 2), module_cls(2, 2), nn.Sequential(module_cls(3, 2))
    )
    for index, module in enumerate([root, *root, root[3][0]]):
        object.__setattr__(module, "label", f"module{index}")
    root.add_module("again", root[0])  # a shared module: a duplicate
    root[1].weight = _parameter(parameter_cls, "weight1", 2, 2)
    root[1].bias = _parameter(parameter_cls, "bias1", 2)
    root[2].weight = _parameter(parameter_cls, "weight2", 2, 2)
    root[3][0].register_parameter("tied", root[1].weight)  # a tied parameter: a duplicate
    root[1]._buffers["kept"] = _parameter(parameter_cls, "kept", 1)
    root[3]._buffers["kept_again"] = root[1]._buffers["kept"]
    for module in {id(m): m for m in root._modules.values()}.values():
        for name, parameter in module._parameters.items():
            if parameter is not None and not hasattr(parameter, "label"):
                parameter.label = f"{module.label}.{name}"
    return root


def _outcome_and_log(thunk: Callable[[], Any]) -> tuple[tuple[str, Any], list]:
    LOG.clear()
    result = outcome(thunk)
    log = list(LOG)
    LOG.clear()
    return result, log


def assert_same_outcome(function: str, tree: nn.Module, kwargs: dict[str, Any]) -> None:
    expected, expected_log = _outcome_and_log(lambda: torch_iterator(function, tree, **kwargs))
    actual, actual_log = _outcome_and_log(lambda: run_pyparams(function, tree, **kwargs))
    context = f"pyparams.{function}(**{kwargs})"
    assert actual[0] == expected[0], f"{context}: {actual} against torch's {expected}"
    if expected[0] == "raise":
        assert (type(actual[1]), str(actual[1])) == (type(expected[1]), str(expected[1])), context
    else:
        assert len(actual[1]) == len(expected[1]), context
        for a, e in zip(actual[1], expected[1], strict=True):
            if isinstance(e, tuple):
                assert a[0] == e[0] and a[1] is e[1], context
            else:
                assert a is e, context
    assert actual_log == expected_log, f"{context}: the hashes run differ"


@pytest.fixture(params=[True, False], ids=["straight", "op-by-op"])
def straight_replays(request: pytest.FixtureRequest) -> Iterator[bool]:
    """An eager replay (parameter_list) checking its whole record at once, and one run op
    by op as a lazy walk's steps run it."""
    before = pyparams._C._straight_replays()
    pyparams._C._straight_replays(request.param)
    yield request.param
    pyparams._C._straight_replays(before)


CLASS_PAIRS = [(cls, nn.Linear) for cls in PARAMETER_CLASSES] + [
    (nn.Parameter, cls) for cls in MODULE_CLASSES
]


@pytest.mark.parametrize(
    ("parameter_cls", "module_cls"),
    CLASS_PAIRS,
    ids=[f"{p.__name__}-{m.__name__}" for p, m in CLASS_PAIRS],
)
def test_a_hash_of_its_own_runs_where_torchs_memo_runs_it(
    parameter_cls: type[nn.Parameter], module_cls: type[nn.Linear]
) -> None:
    tree = hashed_tree(parameter_cls, module_cls)
    for _ in range(3):  # a first walk, and those that would record and replay
        for function, kwargs in every_call():
            assert_same_outcome(function, tree, kwargs)


def _swap_class(obj: object, cls: type) -> Callable[[], None]:
    def change() -> None:
        obj.__class__ = cls

    return change


# What a replay may meet: a class changed since the walk was recorded, where the record
# yields a member, skips a duplicate member, enters a module or skips a shared one.
CHANGES: dict[str, Callable[[nn.Module], Callable[[], None]]] = {
    "yielded parameter": lambda tree: _swap_class(tree[2].weight, ConstantHashParameter),
    "tied parameter": lambda tree: _swap_class(tree[1].weight, ConstantHashParameter),
    "parameter unhashable": lambda tree: _swap_class(tree[1].bias, UnhashableParameter),
    "buffer kept twice": lambda tree: _swap_class(tree[1]._buffers["kept"], RaisingHashParameter),
    "entered module": lambda tree: _swap_class(tree[2], SameShapeLinear),
    "shared module": lambda tree: _swap_class(tree[0], SameShapeLinear),
    "root": lambda tree: _swap_class(tree, LoggedHashSequential),
}


def _warm(tree: nn.Module, function: str, kwargs: dict[str, Any]) -> bool:
    """Three walks: the last one replays wherever this process records the tree. False
    where it did not (the cache off, or a class left without a version tag by what ran
    before in the same process: seen once on CPython 3.13 under CI's test order)."""
    for _ in range(2):
        run_pyparams(function, tree, **kwargs)
    hits = pyparams.cache_info().hits
    run_pyparams(function, tree, **kwargs)
    return pyparams.cache_info().hits > hits


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_replay_meets_a_class_hashed_since(change: str, straight_replays: bool) -> None:
    for function, kwargs in every_call():
        tree = hashed_tree()
        replays = _warm(tree, function, kwargs)
        hits = pyparams.cache_info().hits
        CHANGES[change](tree)()
        assert_same_outcome(function, tree, kwargs)
        # (A root hashed by code of its own is walked live from its start.)
        if replays and change != "root":
            assert pyparams.cache_info().hits > hits, "the walk did not start as a replay"


def run_pyparams_lazily(function: str, tree: nn.Module, kwargs: dict[str, Any]) -> Iterator:
    return getattr(pyparams, function)(tree, **kwargs)


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_class_hashed_between_two_steps_of_a_replay(change: str) -> None:
    for function, kwargs in every_call():
        if function == "parameter_list":
            continue
        steps = len(list(torch_iterator(function, hashed_tree(), **kwargs)))
        for at in range(steps + 1):
            tree = hashed_tree()
            replays = _warm(tree, function, kwargs)
            LOG.clear()
            ours = iter(run_pyparams_lazily(function, tree, kwargs))
            theirs = iter(torch_iterator(function, tree, **kwargs))
            hits = pyparams.cache_info().hits
            lockstep_with_a_change(
                ours, theirs, at, CHANGES[change](tree), f"{change} {function}({kwargs})"
            )
            if replays:
                assert pyparams.cache_info().hits > hits, "the walk did not start as a replay"


def test_a_class_given_a_hash_after_the_record() -> None:
    """A class-level change (no instance changes class): the class's version tag."""

    class PlainParameter(nn.Parameter):
        pass

    class PlainLinear(nn.Linear):
        pass

    for function, kwargs in every_call():
        tree = hashed_tree(PlainParameter, PlainLinear)
        _warm(tree, function, kwargs)
        PlainParameter.__hash__ = ConstantHashParameter.__hash__
        PlainParameter.__eq__ = ConstantHashParameter.__eq__
        assert_same_outcome(function, tree, kwargs)
        PlainLinear.__hash__ = SameShapeLinear.__hash__
        PlainLinear.__eq__ = SameShapeLinear.__eq__
        assert_same_outcome(function, tree, kwargs)
        del PlainParameter.__hash__, PlainParameter.__eq__, PlainLinear.__hash__
        del PlainLinear.__eq__
        assert_same_outcome(function, tree, kwargs)


def test_tensor_hash_given_other_code() -> None:
    """torch.Tensor.__hash__ keeps its identity but not its code: every tensor hashes to
    7, and torch's memo compares them with `==`, whose result bool() refuses."""
    tree = hashed_tree()
    calls = [(f, kw) for f, kw in every_call() if f != "modules" and f != "named_modules"]
    for function, kwargs in calls:
        _warm(tree, function, kwargs)
    code = torch.Tensor.__hash__.__code__
    torch.Tensor.__hash__.__code__ = (lambda self: 7).__code__
    try:
        for function, kwargs in calls:
            assert_same_outcome(function, tree, kwargs)
    finally:
        torch.Tensor.__hash__.__code__ = code
    for function, kwargs in calls:
        assert_same_outcome(function, tree, kwargs)


def _mutating_hash(self: nn.Module) -> int:
    """Drops the next sibling and a parameter of the root's second child, then hashes."""
    root = self.root_ref
    if "2" in root._modules:
        del root._modules["2"]
    root[1]._parameters.pop("bias", None)
    LOG.append(("hash", _label(self)))
    return object.__hash__(self)


class MutatingHashLinear(nn.Linear):
    __hash__ = _mutating_hash


class MutatingHashParameter(nn.Parameter):
    def __hash__(self) -> int:
        holder = self.holder
        holder._parameters.pop("bias", None)  # the entry after this one in its dict
        holder._buffers["late"] = torch.zeros(1)
        LOG.append(("hash", _label(self)))
        return id(self)


def test_a_hash_that_changes_the_tree_it_is_walked_in() -> None:
    for function, kwargs in every_call():
        for replayed in (False, True):
            tree = hashed_tree()
            if replayed:
                _warm(tree, function, kwargs)
            tree[0].__class__ = MutatingHashLinear
            object.__setattr__(tree[0], "root_ref", tree)  # not a child: no cycle
            weight = tree[1].weight
            weight.__class__ = MutatingHashParameter
            weight.holder = tree[1]
            torch_tree = hashed_tree()  # the same tree and classes, walked by torch
            torch_tree[0].__class__ = MutatingHashLinear
            object.__setattr__(torch_tree[0], "root_ref", torch_tree)
            torch_tree[1].weight.__class__ = MutatingHashParameter
            torch_tree[1].weight.holder = torch_tree[1]
            expected, expected_log = _outcome_and_log(
                lambda tt=torch_tree, f=function, kw=kwargs: torch_iterator(f, tt, **kw)
            )
            actual, actual_log = _outcome_and_log(
                lambda t=tree, f=function, kw=kwargs: run_pyparams(f, t, **kw)
            )
            context = f"{function}({kwargs}) replayed={replayed}"
            assert actual[0] == expected[0], context
            if expected[0] == "raise":
                assert (type(actual[1]), str(actual[1])) == (
                    type(expected[1]),
                    str(expected[1]),
                ), context
            else:
                # Two trees: compare by label and name.
                def shape(items: list) -> list:
                    return [
                        (i[0], _label(i[1])) if isinstance(i, tuple) else _label(i) for i in items
                    ]

                assert shape(actual[1]) == shape(expected[1]), context
            assert actual_log == expected_log, context
