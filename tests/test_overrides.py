"""Overrides on torch's dispatch chain are called where torch calls them.

torch's base methods dispatch through ``self``: ``parameters`` -> ``named_parameters`` ->
``_named_members`` -> ``named_modules`` (root) -> ``named_modules`` of every child;
``buffers`` alike; ``modules`` -> ``named_modules``. Each test compares pyparams with
torch's own methods on the same tree (objects by ``is``, order, names), and the calls the
overrides received (arguments, and the memo's contents) in the same order.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import types
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    FUNCTIONS,
    argument_combinations,
    assert_conforms,
    called,
    every_call,
    outcome,
    reference,
    run_pyparams,
)
from pyparams._torch_walks import TORCH_METHODS

CALLS: list[tuple[Any, ...]] = []


def _record(method: str, module: nn.Module, *args: Any, **kwargs: Any) -> None:
    """Log a call by the values its parameters received (passed or defaulted alike)."""

    def plain(value: Any) -> Any:
        if isinstance(value, set):  # the memo: which modules it holds right now
            return ("memo", frozenset(id(m) for m in value))
        if callable(value):
            return "<getter>"
        return value

    base = getattr(nn.Module, method, None)
    if base is not None:
        bound = inspect.signature(base).bind(module, *args, **kwargs)
        bound.apply_defaults()
        args, kwargs = (), dict(list(bound.arguments.items())[1:])
    CALLS.append(
        (
            method,
            id(module),
            tuple(plain(a) for a in args),
            tuple(sorted((k, plain(v)) for k, v in kwargs.items())),
        )
    )


def calls_of(thunk) -> tuple[Any, list[tuple[Any, ...]]]:
    """What ``thunk`` produced (or raised) and the override calls it made, in order."""
    CALLS.clear()
    result = outcome(thunk)
    return result, list(CALLS)


def _same(actual: Any, expected: Any) -> bool:
    # An override's items are handed on as they are (lists, 1-tuples...): the same
    # objects, or sequences of the same objects (equal names).
    if isinstance(expected, (list, tuple)) and not isinstance(expected, nn.Module):
        return (
            type(actual) is type(expected)
            and len(actual) == len(expected)
            and all(
                a == e if isinstance(e, (str, int)) else a is e
                for a, e in zip(actual, expected, strict=True)
            )
        )
    return actual is expected


def assert_same_calls(function: str, module: nn.Module, **kwargs: Any) -> None:
    expected, torch_calls = calls_of(lambda: reference(function, module, **kwargs))
    actual, pyparams_calls = calls_of(lambda: run_pyparams(function, module, **kwargs))
    context = f"pyparams.{function}(**{kwargs})"
    assert pyparams_calls == torch_calls, f"{context}: override calls differ"
    assert actual[0] == expected[0], f"{context}: {actual} vs {expected}"
    if expected[0] == "raise":
        assert type(actual[1]) is type(expected[1]), context
        assert str(actual[1]) == str(expected[1]), context
    else:
        assert len(actual[1]) == len(expected[1]), context
        assert all(_same(a, e) for a, e in zip(actual[1], expected[1], strict=True)), context


def assert_matches_torch(module: nn.Module) -> None:
    """Same items as torch for every call, and the overrides called alike."""
    for function, kwargs in every_call():
        assert_same_calls(function, module, **kwargs)


# ---------------------------------------------------------------------------------------
# Classes overriding one dispatch point each; every override records its call.
# ---------------------------------------------------------------------------------------


class Leaf(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.frozen = nn.Parameter(torch.ones(1), requires_grad=False)
        self.register_buffer("stat", torch.zeros(1))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Leaf()
        self.hidden = Leaf()
        self.proj = nn.Linear(2, 2)


class ParametersOverride(Block):
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        _record("parameters", self, recurse=recurse)
        return iter(reversed(list(super().parameters(recurse))))


class NamedParametersOverride(Block):
    def named_parameters(self, *args: Any, **kwargs: Any):
        _record("named_parameters", self, *args, **kwargs)
        for name, p in super().named_parameters(*args, **kwargs):
            if "hidden" not in name:
                yield name.replace("inner.", ""), p


class BuffersOverride(Block):
    def buffers(self, recurse: bool = True):
        _record("buffers", self, recurse=recurse)
        return [b for b in super().buffers(recurse)][:1]


class NamedBuffersOverride(Block):
    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        _record(
            "named_buffers", self, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )
        yield from (
            (f"renamed.{n}", b) for n, b in super().named_buffers(prefix, recurse, remove_duplicate)
        )


class ModulesOverride(Block):
    def modules(self, remove_duplicate: bool = True):
        _record("modules", self, remove_duplicate=remove_duplicate)
        yield from list(super().modules(remove_duplicate=remove_duplicate))[1:]


class NamedMembersOverride(Block):
    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        _record(
            "_named_members",
            self,
            get_members_fn,
            prefix=prefix,
            recurse=recurse,
            remove_duplicate=remove_duplicate,
        )
        for name, value in super()._named_members(
            get_members_fn, prefix, recurse, remove_duplicate
        ):
            yield name.upper(), value


class HidingModules(Block):
    """Hides its ``hidden`` child from every walk, as torch's dispatch makes it."""

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        _record("named_modules", self, memo, prefix, remove_duplicate)
        for name, module in super().named_modules(memo, prefix, remove_duplicate):
            if module is not self.hidden:
                yield name, module


class ExtraModules(Block):
    """Yields an outside module too (as a list, not tuples) and marks it in the memo."""

    outside = nn.Linear(1, 1)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        _record("named_modules", self, memo, prefix, remove_duplicate)
        items = [list(item) for item in super().named_modules(memo, prefix, remove_duplicate)]
        if memo is not None:
            memo.add(self.outside)
        return [*items, [prefix + ".outside", self.outside]]


OVERRIDES = (
    ParametersOverride,
    NamedParametersOverride,
    BuffersOverride,
    NamedBuffersOverride,
    ModulesOverride,
    NamedMembersOverride,
    HidingModules,
    ExtraModules,
)


def _nested(cls: type[nn.Module]) -> nn.Module:
    """``cls`` three levels down, next to a shared Linear and beside a second copy."""
    shared = nn.Linear(2, 2)
    target = cls()
    target.inner.shared = shared
    return nn.Sequential(
        nn.Sequential(shared, nn.Sequential(target, nn.ReLU())),
        cls(),
        ExtraModules.outside,
    )


@pytest.mark.parametrize("cls", OVERRIDES, ids=lambda c: c.__name__)
def test_override_at_the_root(cls: type[nn.Module]) -> None:
    assert_matches_torch(cls())


@pytest.mark.parametrize("cls", OVERRIDES, ids=lambda c: c.__name__)
def test_override_below_the_root(cls: type[nn.Module]) -> None:
    # Below the root torch calls only named_modules: the other overrides are not run.
    assert_matches_torch(_nested(cls))


def test_hidden_child_is_hidden_inside_a_sequential() -> None:
    hiding = HidingModules()
    model = nn.Sequential(nn.Linear(1, 1), hiding)
    names = [n for n, _ in pyparams.named_parameters(model)]
    assert names == [n for n, _ in model.named_parameters()]
    assert not any("hidden" in n for n in names)
    assert all(p is not hiding.hidden.weight for p in pyparams.parameters(model))


def test_override_sees_the_memo_torch_hands_it() -> None:
    # The memo holds what the walk entered before the override: the root, the shared
    # Linear (entered first), and not the override's own subtree.
    model = _nested(HidingModules)
    for remove_duplicate in (True, False):
        assert_same_calls("named_modules", model, remove_duplicate=remove_duplicate)
        assert_same_calls("parameters", model, remove_duplicate=remove_duplicate)


class OwnDefaults(Block):
    """Overrides whose defaults are not torch's: what a call leaves out, they fill in."""

    def __init__(self) -> None:
        super().__init__()
        self.again = self.inner  # shared: remove_duplicate shows

    def parameters(self, recurse=False):
        _record("parameters", self, recurse=recurse)
        return super().parameters(recurse)

    def buffers(self, recurse=False):
        _record("buffers", self, recurse=recurse)
        return super().buffers(recurse)

    def named_parameters(self, prefix="own", recurse=False, remove_duplicate=False):
        _record(
            "named_parameters",
            self,
            prefix=prefix,
            recurse=recurse,
            remove_duplicate=remove_duplicate,
        )
        return super().named_parameters(prefix, recurse, remove_duplicate)

    def named_buffers(self, prefix="own", recurse=False, remove_duplicate=False):
        _record(
            "named_buffers", self, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )
        return super().named_buffers(prefix, recurse, remove_duplicate)

    def modules(self, remove_duplicate=False):
        _record("modules", self, remove_duplicate=remove_duplicate)
        return super().modules(remove_duplicate)

    def named_modules(self, memo=None, prefix="own", remove_duplicate=False):
        _record("named_modules", self, memo, prefix, remove_duplicate)
        return super().named_modules(memo, prefix, remove_duplicate)


def _passed_or_not(function: str) -> list[dict[str, Any]]:
    """Every combination of arguments, each passed (as any of its values) or left out."""
    calls = {}
    for kwargs in argument_combinations(function):
        for size in range(len(kwargs) + 1):
            for names in itertools.combinations(kwargs, size):
                call = {name: kwargs[name] for name in names}
                calls[tuple(call.items())] = call
    return list(calls.values())


@pytest.mark.parametrize("path", ["native", "as torch.compile runs it"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_an_override_gets_the_arguments_passed_and_no_others(
    function: str, path: str, monkeypatch
) -> None:
    # `m.parameters()` leaves recurse to the override's default; `m.parameters(recurse=True)`
    # does not. pyparams.parameters(m) and pyparams.parameters(m, recurse=True) alike.
    if path != "native":
        monkeypatch.setattr(pyparams._api, "_is_compiling", lambda: True)
    module = OwnDefaults()
    for kwargs in _passed_or_not(function):
        assert_same_calls(function, module, **kwargs)
        assert_same_calls(function, module, **kwargs)  # again: a record may replay


class _Truthy:
    def __bool__(self) -> bool:
        return True


def test_an_override_gets_a_flag_that_is_no_bool_as_passed() -> None:
    # Such a flag makes the walk torch's (pyparams._torch_walks): still only what was passed.
    module = OwnDefaults()
    for function in ("parameters", "named_parameters", "named_modules", "parameter_list"):
        assert_same_calls(function, module, remove_duplicate=_Truthy())
        if function.startswith("named_"):
            assert_same_calls(function, module, remove_duplicate=_Truthy(), prefix="p")


def test_override_calling_super_does_not_recurse() -> None:
    model = NamedParametersOverride()
    assert [n for n, _ in pyparams.named_parameters(model)] == [
        n for n, _ in model.named_parameters()
    ]


def test_override_on_a_class_after_a_walk_is_seen() -> None:
    # The per-class answer is cached; the cache must follow the class's version.
    class Late(Block):
        pass

    model = nn.Sequential(Late())
    assert_conforms(model)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        yield prefix, self

    Late.named_modules = named_modules
    assert [n for n, _ in pyparams.named_modules(model)] == ["", "0"]  # its subtree is gone
    assert_conforms(model)
    del Late.named_modules
    assert_conforms(model)


def test_instance_attribute_overrides_the_method() -> None:
    # An instance attribute shadows the class's method in `self.named_modules(...)`.
    child = Block()

    def only_self(memo=None, prefix="", remove_duplicate=True):
        _record("named_modules", child, memo, prefix, remove_duplicate)
        yield prefix, child

    child.named_modules = only_self
    root = Block()
    root.named_parameters = types.MethodType(
        lambda self, prefix="", recurse=True, remove_duplicate=True: iter(
            [("only", self.proj.weight)]
        ),
        root,
    )
    model = nn.Sequential(child, nn.Linear(1, 1))
    assert_matches_torch(model)
    assert_matches_torch(root)


def test_custom_getattribute_is_asked_for_the_method() -> None:
    class Redirecting(Block):
        def __getattribute__(self, name: str) -> Any:
            if name == "named_modules":
                _record("getattribute", self)
                return super().__getattribute__("named_modules")
            return super().__getattribute__(name)

    model = nn.Sequential(Redirecting(), Redirecting())
    assert_matches_torch(model)


def test_a_lookup_of_the_method_that_raises_raises_as_torch() -> None:
    # torch's `module.named_modules(...)` on a child: the lookup's error is the walk's,
    # at the step that enters the child, whether the class or an instance raises it.
    class RaisingProperty(Block):
        @property
        def named_modules(self):
            _record("property", self)
            raise RuntimeError("named_modules is not available here")

    class RaisingLookup(Block):
        def __getattribute__(self, name: str) -> Any:
            if name == "named_modules":
                _record("getattribute", self)
                raise LookupError("named_modules looked up")
            return super().__getattribute__(name)

    for cls in (RaisingProperty, RaisingLookup):
        model = nn.Sequential(nn.Linear(1, 1), cls())
        for function, kwargs in every_call():
            assert_same_calls(function, model, **kwargs)
        assert "named_modules" in str(outcome(lambda m=model: run_pyparams("parameters", m))[1])


def test_replaced_base_method_is_called_as_torch_calls_it(monkeypatch) -> None:
    # Another library wrapping nn.Module.named_modules: torch calls the wrapper at every
    # level, so pyparams must too (the wrapper is no base implementation).
    original = nn.Module.named_modules

    def wrapper(self, memo=None, prefix="", remove_duplicate=True):
        _record("wrapper", self, memo, prefix, remove_duplicate)
        return original(self, memo, prefix, remove_duplicate)

    monkeypatch.setattr(nn.Module, "named_modules", wrapper)
    assert_matches_torch(_nested(Block))


def test_override_yielding_bad_items_raises_as_torch() -> None:
    class BadItems(Block):
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):
            yield prefix, self
            yield (prefix,)  # not a pair

    class OddNames(Block):
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):
            yield 7, self.inner  # a name torch then joins with `+`

    for cls in (BadItems, OddNames):
        for model in (cls(), nn.Sequential(cls())):
            for function, kwargs in every_call():
                assert_same_calls(function, model, **kwargs)


@pytest.mark.parametrize("method", list(TORCH_METHODS))
def test_the_mirrored_overrides_result_is_returned_as_is(method: str) -> None:
    # `m.X()` returns whatever the override returns (a list, None, a forgotten `return`):
    # pyparams.X(m) too. Only iterating it (list(), a filter) asks for its items.
    parameter = nn.Parameter(torch.ones(1))
    for returned in (None, [parameter], ("name", parameter), 7):
        model = type("Returns", (nn.Module,), {method: lambda self, *a, r=returned, **k: r})()
        for _ in range(3):  # a root's later walks may be recorded or replayed
            assert getattr(model, method)() is returned
            assert getattr(pyparams, method)(model) is returned
            if method == "parameters":
                assert _ended(partial(pyparams.parameter_list, model)) == _ended(
                    lambda m=model: list(m.parameters())
                )
                assert _ended(partial(pyparams.trainable_parameters, model)) == _ended(
                    lambda m=model: (p for p in m.parameters() if p.requires_grad)
                )


def _ended(call: Any) -> tuple[Any, ...]:
    """How a call ended: its items, or the exception's type and message."""
    kind, value = outcome(call)
    return (kind, value) if kind == "ok" else (kind, type(value), str(value))


def test_checkpoint_wrapper() -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    wrapped = checkpoint_wrapper(nn.Linear(1, 1))
    assert [n for n, _ in pyparams.named_parameters(wrapped)] == ["weight", "bias"]
    assert_conforms(wrapped)
    # Below the root torch does not call the wrapper's named_parameters: prefixed names.
    assert_conforms(nn.Sequential(checkpoint_wrapper(nn.Linear(1, 1)), nn.Linear(1, 1)))


def test_fsdp1_full_shard_on_cpu(gloo_group) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    try:
        wrapped = FullyShardedDataParallel(
            model, device_id=torch.device("cpu"), use_orig_params=True
        )
    except (RuntimeError, ValueError, AssertionError) as error:
        pytest.skip(f"FSDP1 does not run on CPU here: {error}")
    assert_conforms(wrapped)
    # Inside summon_full_params FSDP1's named_parameters override strips its prefix.
    with FullyShardedDataParallel.summon_full_params(wrapped):
        names = [n for n, _ in pyparams.named_parameters(wrapped)]
        assert names == [n for n, _ in wrapped.named_parameters()]
        assert names and not any("_fsdp_wrapped_module" in n for n in names)
        assert_conforms(wrapped)


# ---------------------------------------------------------------------------------------
# Generator protocol and argument errors
# ---------------------------------------------------------------------------------------


def test_close_ends_the_walk_and_drops_references() -> None:
    import gc
    import weakref

    model = Block()
    alive = weakref.ref(model)
    iterator = pyparams.named_parameters(model)
    next(iterator)
    del model
    gc.collect()
    assert alive() is not None  # the iterator holds the model, as torch's generator does
    iterator.close()
    gc.collect()
    assert alive() is None
    assert list(iterator) == []
    iterator.close()  # closing twice is fine, as for a generator


@pytest.mark.parametrize("function", ["parameters", "named_modules", "buffers"])
def test_send_and_throw_behave_like_torchs_generator(function: str) -> None:
    model = Block()

    def session(iterator) -> list[tuple[str, Any]]:
        log = []
        log.append(outcome(lambda: [iterator.send(1)]))  # not started: TypeError
        log.append(outcome(lambda: [iterator.send(None), iterator.send(5)]))
        log.append(outcome(lambda: iterator.throw(KeyError("boom"))))
        log.append(outcome(lambda: list(iterator)))  # closed by the throw
        return log

    expected = session(getattr(model, function)())
    actual = session(getattr(pyparams, function)(model))
    for (kind_a, value_a), (kind_e, value_e) in zip(actual, expected, strict=True):
        assert kind_a == kind_e
        if kind_e == "raise":
            assert type(value_a) is type(value_e) and str(value_a) == str(value_e)
        else:
            assert len(value_a) == len(value_e) and all(map(_same, value_a, value_e))


@pytest.mark.parametrize("function", ["parameters", "named_modules", "named_buffers"])
@pytest.mark.parametrize("ending", ["close", "throw"])
def test_a_walk_ended_before_its_first_step_is_no_longer_just_started(
    function: str, ending: str
) -> None:
    """A value sent to a generator closed or thrown into before its first step meets
    an exhausted generator (StopIteration), not the just-started one's TypeError."""
    model = Block()

    def session(iterator) -> list[tuple[str, Any]]:
        if ending == "close":
            iterator.close()
        else:
            with contextlib.suppress(KeyError):
                iterator.throw(KeyError("boom"))
        return [
            called(lambda: iterator.send("value")),
            called(lambda: iterator.send(None)),
        ]

    expected = session(getattr(model, function)())
    assert expected == [("stop", None), ("stop", None)]
    assert session(getattr(pyparams, function)(model)) == expected


def test_prefix_that_is_no_str_raises_at_the_call() -> None:
    # Deliberate: torch raises TypeError at the first next() (and not at all for a
    # tree with nothing to name); pyparams at the call, naming the argument.
    with pytest.raises(TypeError, match="prefix must be a str, got int"):
        pyparams.named_parameters(nn.Linear(1, 1), prefix=1)
    with pytest.raises(TypeError):
        next(nn.Linear(1, 1).named_parameters(prefix=1))
