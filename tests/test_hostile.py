"""Hostile walks: user code that runs in the middle of a walk does what it does under torch.

Each scenario builds its tree from one factory and is run twice: with torch's methods
(the reference), and with pyparams' functions or with torch's methods under
``pyparams.patched()``. Every step is compared: items (by where they sit in the tree),
names and their types, exceptions and their messages. The walk under test is live,
recording or replaying (``walks``: 0, 1 or 2 walks of the root before it). Scenarios that
may crash run in a child Python, so that a segfault fails one test, not the run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import random
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import pyparams
from common_utils import (
    LAZY_FUNCTIONS,
    OVERRIDABLE_METHODS,
    REPO,
    every_call,
    outcome,
    refcounts,
    reference,
    same_items,
    seeded_tree,
    small_tied_model,
    step,
    subprocess_env,
    torch_iterator,
    walk_in_mode,
)

TESTS = Path(__file__).resolve().parent
MODES = ("pyparams", "patched")
# (mode, walks before the one under test: it is then live, recording, or replaying)
VARIANTS = [(mode, walks) for mode in MODES for walks in (0, 1, 2)]
NAMED = tuple(f for f in LAZY_FUNCTIONS if f.startswith("named_"))
FUNCTIONS_ALL = (*LAZY_FUNCTIONS, "parameter_list")
MEMBER_FUNCTIONS = tuple(f for f in LAZY_FUNCTIONS if "modules" not in f)
_JUNK: list[object] = []  # allocations that reuse the memory a freed object leaves


def _p() -> nn.Parameter:
    return nn.Parameter(torch.ones(1))


def _runtime(text: str) -> str:
    """A str built at run time: the dict it is put in is its only holder."""
    return "".join(text)


def _context(mode: str) -> contextlib.AbstractContextManager:
    return pyparams.patched() if mode == "patched" else contextlib.nullcontext()


def _warm(mode: str, function: str, module: object, walks: int, **kwargs: Any) -> None:
    pyparams.cache_clear()
    for _ in range(walks):  # a walk that raises warms nothing, as it would in real use
        outcome(lambda: walk_in_mode(mode, function, module, **kwargs))


def _walks(
    mode: str, walks: int, functions: Iterable[str], factory: Callable[[], object], **kwargs: Any
) -> list:
    """Each function's walk of a fresh ``factory()`` tree, after ``walks`` warm walks."""
    logs = []
    for function in functions:
        root = factory()
        labels = _labels(root)
        _warm(mode, function, root, walks, **kwargs)
        logs.append(_log(lambda: walk_in_mode(mode, function, root, **kwargs), labels))  # noqa: B023
    return logs


def _labels(root: object) -> dict[int, str]:
    """Where each module, parameter and buffer sits, by id (holding none of them)."""
    labels: dict[int, str] = {}
    stack = [("", root)]
    while stack:
        name, module = stack.pop()
        if id(module) in labels:
            continue
        labels[id(module)] = f"module:{name}"
        for attribute in ("_parameters", "_buffers"):
            for key, value in getattr(module, attribute, {}).items():
                labels.setdefault(id(value), f"{attribute}:{name}.{key}")
        children = getattr(module, "_modules", {})
        stack.extend((f"{name}.{k}", c) for k, c in reversed(children.items()) if c is not None)
    return labels


def _value(item: object) -> object:
    return item[1] if isinstance(item, tuple) else item


def _label(labels: dict[int, str], item: object) -> object:
    if isinstance(item, tuple) and len(item) == 2:  # a name: its value and its type
        return (item[0], type(item[0]).__name__, _label(labels, item[1]))
    return labels.get(id(item), f"new {type(item).__name__}")


def _entry(labels: dict[int, str], kind: str, value: object) -> object:
    if kind == "item":
        return _label(labels, value)
    if kind == "raise":
        return ("raise", type(value).__name__, str(value))
    return ("stop",)


def _log(walk: Any, labels: dict[int, str]) -> list[object]:
    """Every step of ``walk`` (an iterable, or a thunk that makes one) as comparable values."""
    try:
        iterator = iter(walk() if callable(walk) else walk)
    except Exception as error:  # noqa: BLE001 - the exception is what is compared
        return [_entry(labels, "raise", error)]
    log: list[object] = []
    while True:
        kind, value = step(iterator)
        log.append(_entry(labels, kind, value))
        if kind != "item":
            return log


def _difference(expected: object, got: object) -> str:
    """Where two logs first differ, and how."""
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        for index, (e, g) in enumerate(zip(expected, got, strict=False)):
            if e != g:
                return f"[{index}]{_difference(e, g)}"
        if len(expected) != len(got):
            return f": torch's has {len(expected)} entries, this {len(got)}: {got!r}"
    return f": torch {expected!r}, got {got!r}"


def _run(scenario: Callable[..., object], mode: str, walks: int, *args: Any) -> object:
    with _context(mode):
        return scenario(mode, walks, *args)


def _compare(scenario: Callable[..., object], mode: str, walks: int, *args: Any) -> None:
    expected = _run(scenario, "torch", 0, *args)
    got = _run(scenario, mode, walks, *args)
    assert got == expected, f"{mode}, {walks} walks before{_difference(expected, got)}"


def child_pairs(scenario: str, *args: Any) -> dict[str, list]:
    """In a child: [torch's log, the log under test] for every variant of ``scenario``."""
    run = functools.partial(_run, globals()[scenario])
    expected = run("torch", 0, *args)
    return {
        f"{mode} walks={walks}": [expected, run(mode, walks, *args)] for mode, walks in VARIANTS
    }


def _in_child(function: str, *args: Any, **env: str) -> Any:
    """``function(*args)`` of this file, run in a child Python: its JSON result."""
    # What the imports built is frozen out of the collector's reach: the scenarios' own
    # collections (hundreds, some at threshold 1) then scan only what they made.
    code = (
        "import gc, json, sys, test_hostile\n"
        "gc.collect(); gc.freeze()\n"
        f"print(json.dumps(test_hostile.{function}(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=subprocess_env((REPO, TESTS), **env),
    )
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def _assert_pairs(results: dict[str, list]) -> None:
    wrong = {k: v for k, v in results.items() if v[0] != v[1]}
    lines = [f"{k}{_difference(*v)}" for k, v in list(wrong.items())[:4]]
    assert not wrong, "\n".join([*lines, f"({len(wrong)} of {len(results)} variants differ)"])


class _Finalizer:
    """Garbage in a reference cycle: its ``action`` runs when the collector frees it. Without
    the cycle (``cyclic=False``), when its last holder lets it go."""

    def __init__(self, action: Callable[[], object], cyclic: bool = True) -> None:
        self.action, self.cycle = action, self if cyclic else None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.action()


def _hidden(self, memo=None, prefix="", remove_duplicate=True):
    return iter(())


@functools.cache
def _hiding(cls: type) -> type:
    """A subclass of ``cls`` whose named_modules hides it and everything below it."""
    return type(f"Hiding{cls.__name__}", (cls,), {"named_modules": _hidden})


# ------------------------------------------ 1. a replay goes live after a key was freed


def _freed_key(mode: str, walks: int, function: str) -> list:
    logs = []
    for depth in (0, 1):  # the root's key of a, or a's key of b
        root, a, b, c = nn.Module(), nn.Module(), nn.Module(), nn.Module()
        b.w1, b.w2, c.w = _p(), _p(), _p()
        for module, name in ((b, "u1"), (b, "u2"), (c, "u")):
            module.register_buffer(name, torch.ones(1))
        b._modules["c"] = c
        a._modules[_runtime("b")] = b  # keys only the dicts hold
        root._modules[_runtime("child_a")] = a
        labels, in_b = _labels(root), {id(v) for v in (b, b.w1, b.u1)}
        _warm(mode, function, root, walks)
        walk, log = iter(walk_in_mode(mode, function, root)), []
        while True:  # up to the first item of b
            kind, item = step(walk)
            log.append(_entry(labels, kind, item))
            if kind != "item" or id(_value(item)) in in_b:
                break
        del item
        (root if depth == 0 else a)._modules.clear()  # frees the key
        if "modules" in function:
            b._modules["c"] = nn.Module()  # a replay goes live on its next read
        elif "buffers" in function:
            b._buffers["u2"] = torch.ones(1)
        else:
            b._parameters["w2"] = _p()
        _JUNK.append([_runtime(f"x{i}") for i in range(1000)])
        logs.append(log + _log(walk, labels))
    return logs


@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
def test_a_replay_going_live_after_an_ancestors_key_was_freed(function: str) -> None:
    """torch's frames hold the keys of their path; a replay going live after the dict that
    held one was cleared must not name what follows with a freed key (it segfaulted)."""
    _assert_pairs(_in_child("child_pairs", "_freed_key", function))


# ---------------------------- 2. a colliding key's __eq__ runs while a name is looked up


class _Collider:
    """An instance __dict__ key with the hash of ``name``: a lookup of that name compares
    with it, which runs its ``action`` (once)."""

    def __init__(self, name: str) -> None:
        self.name, self.action = name, None

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        action, self.action = self.action, None
        if action is not None:
            action()
        return False


# Non-str keys between the collider and the names, a new count in every dict: CPython 3.12+
# specializes torch's loads (`module._parameters`, `self._modules`) to LOAD_ATTR_WITH_HINT,
# which reads the entry at the index it met last and compares key pointers (no hash, no
# __eq__). Each dict here keeps its names where no earlier dict did: torch's load misses the
# hint and does the lookup that runs __eq__, as it does on 3.11.
_PADDING = itertools.count()


def _collider(mode: str, walks: int, name: str) -> list:
    logs = []
    # The collider put in after the warm walks (a replay meets a written __dict__ and
    # re-reads it), or before them (a walk that records must refuse a __dict__ whose
    # lookups run code: torch's run it on every walk, a replay would skip them).
    for inserted in ("after_warm", "before_warm"):
        logs += _collider_walks(mode, walks, name, inserted)
    return logs


def _collider_walks(mode: str, walks: int, name: str, inserted: str) -> list:
    logs = []
    actions = ["replace_dict", "grow_tree"]
    if name in OVERRIDABLE_METHODS:
        # (Not for the member names: CPython 3.12.1's loads of `self._modules` in torch's
        # named_modules leave that error pending and raise SystemError at the next call.)
        actions.append("raise")
    for where in ("root", "child"):
        for action in actions:
            for function in LAZY_FUNCTIONS:
                root = nn.Module()
                root.r = _p()
                root.c1 = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
                root.c2 = nn.Linear(1, 1)
                labels = _labels(root)
                module = root if where == "root" else root.c1

                def act(module=module, root=root, action=action) -> None:
                    if action == "replace_dict":  # drops the dict being read
                        kept = {k: v for k, v in vars(module).items() if type(k) is str}
                        object.__setattr__(module, "__dict__", kept)
                        _JUNK.append([{"x": i} for i in range(64)])
                    elif action == "grow_tree":
                        root._modules["c2"].register_parameter("late", _p())
                        root._modules["c1"]._modules["1"] = None
                    else:  # the lookup raises: no check may swallow it
                        raise LookupError(f"the collider of {name!r} compared")

                if inserted == "after_warm":
                    _warm(mode, function, root, walks)
                mapping = vars(module)
                entries = list(mapping.items())
                mapping.clear()
                collider = _Collider(name)
                mapping[collider] = None  # first on the name's probe sequence
                mapping.update(dict.fromkeys(range(-1, -2 - next(_PADDING), -1)))
                mapping.update(entries)
                if inserted == "before_warm":
                    _warm(mode, function, root, walks)
                collider.action = act
                del mapping, entries, collider
                logs.append(_log(lambda: walk_in_mode(mode, function, root), labels))  # noqa: B023
    return logs


@pytest.mark.parametrize("name", [*OVERRIDABLE_METHODS, "_parameters", "_buffers", "_modules"])
def test_a_colliding_key_that_runs_code_during_a_name_lookup(name: str) -> None:
    """CPython's getattr holds the instance __dict__ across its lookup; a colliding key's
    __eq__ may drop that dict, change the tree or raise: no crash, and what torch yields."""
    _assert_pairs(_in_child("child_pairs", "_collider", name))


# ------------------------- 3 and 12. an override set between the call and the first next()


def _override(method: str, sentinel: nn.Module) -> Callable[..., Iterable]:
    """An override of ``method`` that yields ``sentinel`` (or its weight)."""
    item = sentinel if "modules" in method else sentinel.weight
    items = [item] if method in ("parameters", "buffers", "modules") else [("x", item)]
    return lambda *args, **kwargs: iter(items)


def _override_before_first_next(mode: str, walks: int, method: str) -> list:
    logs = []
    for function in LAZY_FUNCTIONS:
        root, sentinel = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), nn.Linear(1, 1)
        labels = _labels(root) | {k: f"sentinel {v}" for k, v in _labels(sentinel).items()}
        _warm(mode, function, root, walks)
        walk = walk_in_mode(mode, function, root)
        setattr(root, method, _override(method, sentinel))
        logs.append(_log(walk, labels))
        logs += [_log(walk_in_mode(mode, function, root), labels) for _ in range(3)]
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("method", OVERRIDABLE_METHODS)
def test_an_override_set_before_the_first_next_is_called_where_torch_calls_it(
    method: str, mode: str, walks: int
) -> None:
    """torch looks `module.parameters` up at the call, the rest of the chain at the first
    next(); no later walk may remember the root as having no override."""
    _compare(_override_before_first_next, mode, walks, method)


def _zero(mode: str, root: nn.Module, params: list, set_to_none: object) -> list:
    """Grads on all but the last parameter, then zero_grad: the grads it leaves."""
    for p in params[:-1]:
        p.grad = torch.ones_like(p)
    if mode == "pyparams":
        pyparams.zero_grad(root, set_to_none)
    else:
        root.zero_grad(set_to_none)
    return [None if p.grad is None else p.grad.tolist() for p in params]


def _zero_grad_after_override(mode: str, walks: int) -> list:
    root = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    params = list(nn.Module.parameters(root))
    for _ in range(walks):
        _zero(mode, root, params, True)
        list(walk_in_mode(mode, "parameters", root))
    walk = walk_in_mode(mode, "parameters", root)
    root.parameters = lambda *args, **kwargs: iter(())
    list(walk)
    return [_zero(mode, root, params, flag) for flag in (True, False, True)]


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
def test_zero_grad_after_an_override_set_mid_walk_clears_nothing(mode: str, walks: int) -> None:
    """zero_grad walks `self.parameters()`: an override that yields nothing clears nothing,
    even set while a warm walk was open."""
    _compare(_zero_grad_after_override, mode, walks)


class _Collecting(dict):
    """A ``_modules`` whose items() (which torch's walk and pyparams' call) runs the collector."""

    def items(self):
        gc.collect()
        return super().items()


def _swapped_while_recording(mode: str, function: str, target: int, at: int) -> list:
    root = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1)))
    root.append(nn.Linear(1, 1))
    if at < 0:
        root[1][1]._modules = _Collecting()  # collects while the walk is inside root[1]
    labels, swapped = _labels(root), root[target]
    swap = functools.partial(setattr, swapped, "__class__", _hiding(type(swapped)))
    with _context(mode):
        _warm(mode, function, root, 1)  # the walk below records
        walk, kept = iter(walk_in_mode(mode, function, root)), []
        if at < 0:
            _Finalizer(swap)  # run by _Collecting.items(), in the walk
        threshold = gc.get_threshold()
        try:
            while not kept or kept[-1][0] == "item":
                if len(kept) == at:  # collected at the next allocations
                    _Finalizer(swap)
                    gc.set_threshold(1)
                kept.append(step(walk))
        finally:
            gc.set_threshold(*threshold)
        gc.collect()
        got = [_log(walk_in_mode(mode, function, root), labels) for _ in range(3)]
    return [[_log(torch_iterator(function, root), labels)] * 3, got]


def child_swapped_while_recording() -> dict[str, list]:
    return {
        f"{function} {mode} root[{target}] at={at}": _swapped_while_recording(
            mode, function, target, at
        )
        for function in LAZY_FUNCTIONS
        for mode in MODES
        for target in (1, 2)
        for at in range(-1, 8)
    }


def test_a_finalizer_that_adds_an_override_while_a_walk_records() -> None:
    """A collection during the recording walk gives a module a named_modules override:
    no later walk may replay that module as having none."""
    _assert_pairs(_in_child("child_swapped_while_recording"))


# ------------------------------------------ 4. a module left behind is not kept alive


def _left_behind(mode: str, walks: int, function: str, remove_duplicate: bool) -> list:
    root = nn.Module()
    for name in ("c0", "c1", "c2"):
        root.add_module(name, nn.BatchNorm1d(1))
    root.c0.add_module("g", nn.Linear(1, 1))
    labels = _labels(root)
    c1 = {id(x) for x in (root.c1, *root.c1._parameters.values(), *root.c1._buffers.values())}
    gone = [weakref.ref(root.c0), weakref.ref(root.c0.g)]
    log, alive = [], None
    _warm(mode, function, root, walks, remove_duplicate=remove_duplicate)
    for item in walk_in_mode(mode, function, root, remove_duplicate=remove_duplicate):
        log.append(_label(labels, item))
        if alive is None and id(_value(item)) in c1:  # c0 is behind the walk
            root._modules["c0"] = None
            del item
            gc.collect()
            alive = [ref() is not None for ref in gone]
    return [log, alive]


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("remove_duplicate", [False, True])
@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
def test_a_module_the_walk_left_is_alive_exactly_when_under_torch(
    function: str, remove_duplicate: bool, mode: str, walks: int
) -> None:
    """torch's generators hold their path (and, deduplicating, the memo) only: a replay
    must not keep every module it entered alive."""
    _compare(_left_behind, mode, walks, function, remove_duplicate)


def _sibling_after_a_freed_subtree(
    mode: str, walks: int, function: str, remove_duplicate: bool, cut_in: str
) -> list:
    root, x, c = nn.Module(), nn.BatchNorm1d(1), nn.BatchNorm1d(1)
    root._modules["x"] = x
    x._modules["c"] = c
    root._modules["d"] = nn.BatchNorm1d(1)
    labels = _labels(root)
    dropped: list[str] = []

    def replace_d(by: str) -> None:
        dropped.append(by)
        root._modules["d"] = nn.BatchNorm1d(1)  # same size: no RuntimeError, a new sibling

    vars(x)["_on_drop"] = _Finalizer(lambda: replace_d("x"), cyclic=False)
    vars(c)["_on_drop"] = _Finalizer(lambda: replace_d("x.c"), cyclic=False)
    cut = {
        id(v) for m in (root.x if cut_in == "x" else c,) for v in (m, *m.parameters(), *m.buffers())
    }
    del x, c
    _warm(mode, function, root, walks, remove_duplicate=remove_duplicate)
    log: list[object] = []
    for item in walk_in_mode(mode, function, root, remove_duplicate=remove_duplicate):
        log.append(_label(labels, item))
        if id(_value(item)) in cut:
            cut.clear()
            root._modules["x"] = None  # only the walk holds x's subtree now
        del item
        log.append(list(dropped))
    return log


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("cut_in", ["x", "x.c"])
@pytest.mark.parametrize("remove_duplicate", [False, True])
@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
def test_a_subtree_only_the_walk_holds_is_freed_after_its_next_sibling_is_read(
    function: str, remove_duplicate: bool, cut_in: str, mode: str, walks: int
) -> None:
    """torch's named_modules rebinds its loop variable only once the next entry is read, so
    a left subtree's finalizers run after its next sibling was read: a sibling they
    replace is walked as it was. Then `_named_members` lets the module whose members it
    read go, after named_modules produced the next one."""
    _compare(_sibling_after_a_freed_subtree, mode, walks, function, remove_duplicate, cut_in)


def _raise_lookup_error() -> None:
    raise LookupError("a key colliding with 'named_modules' was compared")


def _key_on_a_shared_module(mode: str, walks: int, function: str) -> list:
    root, shared = nn.Module(), nn.BatchNorm1d(1)
    root.add_module("a", nn.Sequential(shared))
    root.add_module("b", nn.BatchNorm1d(1))
    root.add_module("c", shared)  # the duplicate: torch still calls its named_modules
    labels = _labels(root)
    in_b = {id(v) for v in (root.b, *root.b._parameters.values(), *root.b._buffers.values())}
    _warm(mode, function, root, walks)
    log, planted = [], False
    walk = iter(walk_in_mode(mode, function, root))
    while True:
        kind, value = step(walk)
        log.append(_entry(labels, kind, value))
        if kind != "item":
            return log
        if id(_value(value)) in in_b and not planted:
            # Past the first occurrence, before the duplicate: a replay that rules out an
            # override there without running code must not swallow the comparison's error.
            collider = _Collider("named_modules")
            collider.action = _raise_lookup_error
            vars(shared)[collider] = None
            planted = True


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
def test_a_lookup_that_raises_on_a_duplicate_raises_as_under_torch(
    function: str, mode: str, walks: int
) -> None:
    _compare(_key_on_a_shared_module, mode, walks, function)


# ------------------------------------------------ 5. requires_grad runs user code


class _RequiresGradMode(TorchFunctionMode):
    """Counts reads of requires_grad; answers them the other way round if ``flip``."""

    def __init__(self, flip: bool) -> None:
        super().__init__()
        self.flip, self.reads = flip, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if getattr(func, "__self__", None) is torch.Tensor.requires_grad:  # its getter
            self.reads += 1
            return (not result) if self.flip else result
        return result


def _trainable_under_mode(mode: str, walks: int, flip: bool) -> list:
    logs = []
    for function in ("trainable_parameters", "named_trainable_parameters", "parameter_list"):
        kwargs = {"trainable": True} if function == "parameter_list" else {}
        root = small_tied_model()
        labels = _labels(root)
        _warm(mode, function, root, walks, **kwargs)
        with _RequiresGradMode(flip) as reads:
            logs.append(_log(lambda: walk_in_mode(mode, function, root, **kwargs), labels))  # noqa: B023
        logs.append(reads.reads)
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("flip", [False, True])
def test_requires_grad_is_read_through_an_active_torch_function_mode(
    flip: bool, mode: str, walks: int
) -> None:
    """`p.requires_grad` goes through an active TorchFunctionMode: the filter must see what
    the mode answers, read as many times as torch reads it."""
    _compare(_trainable_under_mode, mode, walks, flip)


class _MutatingParameter(nn.Parameter):
    """A parameter whose requires_grad, once given an ``action``, runs it (once)."""

    @property
    def requires_grad(self) -> bool:
        action = self.__dict__.pop("action", None)
        if action is not None:
            action()
        return True


REQUIRES_GRAD_ACTIONS: dict[str, Callable[[nn.Module], object]] = {
    "pop_later_parameter": lambda r: r.a._parameters.pop("after"),
    "none_later_parameter": lambda r: r.a._parameters.__setitem__("after", None),
    "pop_later_module": lambda r: r._modules.pop("b"),
    "none_later_module": lambda r: r._modules.__setitem__("b", None),
    "new_later_module": lambda r: r._modules.__setitem__("b", nn.Linear(1, 1)),
}


def _mutating_requires_grad(mode: str, walks: int, action: str) -> list:
    logs = []
    for function in ("trainable_parameters", "named_trainable_parameters"):
        root = nn.Module()
        root.a, root.b, root.c = nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)
        mutating = _MutatingParameter(torch.ones(1))
        root.a._parameters[_runtime("mutating")] = mutating
        root.a.register_parameter("after", _p())
        labels = _labels(root)
        _warm(mode, function, root, walks)
        mutating.action = functools.partial(REQUIRES_GRAD_ACTIONS[action], root)
        logs.append(_log(walk_in_mode(mode, function, root), labels))
    return logs


@pytest.mark.parametrize("action", REQUIRES_GRAD_ACTIONS)
def test_a_requires_grad_property_that_changes_the_tree(action: str) -> None:
    """The filter's read of requires_grad runs user code that edits the tree ahead of the
    walk: the walk then goes on (or raises) as torch's."""
    _assert_pairs(_in_child("child_pairs", "_mutating_requires_grad", action))


# -------------------------------------------------- 6. str subclasses in names


class _Tagged(str):
    """A str whose sums stay tagged: torch builds names with ``+``."""

    def __add__(self, other: str) -> _Tagged:
        return _Tagged(str.__add__(self, other))

    def __radd__(self, other: str) -> _Tagged:
        return _Tagged(str.__add__(other, self))


PREFIXES = {"plain": "x", "tagged": _Tagged("x"), "tagged_empty": _Tagged("")}


def _tagged_tree(tagged: str | None) -> nn.Module:
    root = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    if tagged is not None:  # tagged keys, put straight into the dict
        mapping = getattr(
            {"_modules": root, "_parameters": root[0], "_buffers": root[1]}[tagged], tagged
        )
        entries = list(mapping.items())
        mapping.clear()
        mapping.update((_Tagged(k), v) for k, v in entries)
    return root


def _tagged_names(mode: str, walks: int, prefix: str, tagged: str | None) -> list:
    return _walks(
        mode, walks, NAMED, functools.partial(_tagged_tree, tagged), prefix=PREFIXES[prefix]
    )


@pytest.mark.parametrize(("mode", "walks"), [*VARIANTS, ("pyparams", 3)])
@pytest.mark.parametrize("tagged", [None, "_parameters", "_buffers", "_modules"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_str_subclass_prefixes_and_keys_give_torchs_names_and_types(
    prefix: str, tagged: str | None, mode: str, walks: int
) -> None:
    """torch builds names with `+`, so a str subclass's __add__/__radd__ decide each name's
    value and type: the same names, of the same types."""
    _compare(_tagged_names, mode, walks, prefix, tagged)


_TRACE: list[tuple[str, ...]] = []  # what the keys' `+` and the requires_grad reads did


class _Traced(str):
    """A key whose `+` is user code that leaves a trace."""

    def __add__(self, other: str) -> _Traced:
        _TRACE.append(("add", str(self), str(other)))
        return _Traced(str.__add__(self, other))

    def __radd__(self, other: str) -> _Traced:
        _TRACE.append(("radd", str(other), str(self)))
        return _Traced(str.__add__(other, self))


class _Joinable:
    """A key that is no str, yet joins: `prefix + key` falls to its __radd__."""

    def __radd__(self, other: str) -> str:
        _TRACE.append(("joinable", str(other)))
        return str(other) + "joined"

    def __str__(self) -> str:
        return "joinable"


class _Refusing(str):
    """A key whose `+` raises: the walk raises it where torch does."""

    def __radd__(self, other: str) -> str:
        _TRACE.append(("refuse", str(other)))
        raise ValueError(f"no name for {str(self)!r}")


class _Mutating(str):
    """A key whose first `+` changes the tree (``action``), then joins as str does."""

    action: Callable[[], object] | None = None

    def __radd__(self, other: str) -> str:
        _TRACE.append(("mutate", str(other)))
        action, _Mutating.action = _Mutating.action, None
        if action is not None:
            action()
        return str.__add__(other, str(self))


class _TracedReads(TorchFunctionMode):
    """Puts each read of requires_grad in the trace, between the keys' `+`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__self__", None) is torch.Tensor.requires_grad:
            _TRACE.append(("requires_grad",))
        return func(*args, **(kwargs or {}))


def _keyed_tree(case: str) -> nn.Module:
    """A tree with one key that is no exact str, where ``case`` says; ``...:deep``: under
    a chain whose names pass the length past which a named walk's frames keep keys only."""
    root = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    root.add_module("c", nn.Sequential(nn.Linear(1, 1)))
    kind, where, *deep = case.split(":")
    key = {
        "traced": _Traced("k"),
        "joinable": _Joinable(),
        "int": 7,
        "refusing": _Refusing("k"),
        "mutating_children": _Mutating("k"),
        "mutating_members": _Mutating("k"),
    }[kind]
    # A `+` that changes a dict torch's generators are iterating: the root's children, or
    # the first Linear's parameters.
    _Mutating.action = {
        "mutating_children": lambda: root._modules.pop("after"),
        "mutating_members": lambda: root[0]._parameters.__setitem__("late", _p()),
    }.get(kind)
    if where == "module":  # a child under it, with a grandchild
        root._modules[key] = nn.Sequential(nn.Linear(1, 1))
    elif where == "duplicate":  # a module already walked: torch still builds its name
        root._modules[key] = root[0]
    elif where == "deep_module":  # under a plain key, below a plain one
        root.c._modules[key] = nn.Linear(1, 1)
    else:
        {"parameter": root[0]._parameters, "buffer": root[1]._buffers}[where][key] = (
            _p() if where == "parameter" else torch.ones(1)
        )
    root.add_module("after", nn.Linear(1, 1))
    if deep and where == "module":  # a child whose name alone passes that length
        root._modules[key]._modules["k" * 210] = nn.Linear(1, 1)
    for _ in range(12 if deep else 0):  # names of 12 x 25 characters
        outer = nn.Module()
        outer.add_module("a_module_of_a_deep_model", root)
        outer.add_module("side", nn.Linear(1, 1))
        root = outer
    return root


KEY_CASES = [
    *(
        f"{kind}:{where}"
        for kind in (
            "traced",
            "joinable",
            "int",
            "refusing",
            "mutating_children",
            "mutating_members",
        )
        for where in ("module", "duplicate", "deep_module", "parameter", "buffer")
    ),
    *(
        f"{kind}:{where}:deep"
        for kind in ("traced", "joinable", "refusing", "mutating_children")
        for where in ("module", "deep_module", "parameter")
    ),
]


def _keyed_names(mode: str, walks: int, case: str) -> list:
    logs = []
    for function in FUNCTIONS_ALL:
        root = _keyed_tree(case)
        labels = _labels(root)
        action, _Mutating.action = _Mutating.action, None  # not for the warm walks
        _warm(mode, function, root, walks)
        _TRACE.clear()
        _Mutating.action = action
        with _TracedReads():
            logs.append(_log(lambda: walk_in_mode(mode, function, root), labels))  # noqa: B023
        logs.append(list(_TRACE))
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("case", KEY_CASES)
def test_keys_that_are_no_exact_str_join_where_torch_joins(
    case: str, mode: str, walks: int
) -> None:
    """torch builds every name with `+`, in unnamed walks too and for a duplicate module
    before skipping it: a key's own `+` runs as often and in the same order (between the
    requires_grad reads), a non-str key joins through its __radd__ or raises torch's
    TypeError, and one whose `+` raises stops the walk there."""
    _compare(_keyed_names, mode, walks, case)


# ---------------------------------------------- 7. a child that is not a Module


class _Duck:
    """Not a Module, but torch walks it: through its named_modules, and its dicts."""

    def __init__(self, inner: nn.Module) -> None:
        self.inner, self.calls = inner, []
        self._parameters = {"duck_w": _p()}
        self._buffers = {"duck_b": torch.ones(1)}

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        self.calls.append((type(memo).__name__, len(memo or ()), prefix, remove_duplicate))
        yield prefix, self
        yield from self.inner.named_modules(memo, prefix + ".inner", remove_duplicate)


class _Mute:
    """Not a Module, and no named_modules: torch raises AttributeError at it."""


def _duck_child(mode: str, walks: int, duck: bool, remove_duplicate: bool) -> list:
    logs = []
    for function in LAZY_FUNCTIONS:
        root = nn.Module()
        root.a = nn.Linear(1, 1)
        child = _Duck(root.a) if duck else _Mute()  # the duck's inner module is root.a
        root._modules["child"] = child
        root.b = nn.Linear(1, 1)
        labels = _labels(root)
        _warm(mode, function, root, walks, remove_duplicate=remove_duplicate)
        if duck:
            child.calls.clear()
        walk = functools.partial(
            walk_in_mode, mode, function, root, remove_duplicate=remove_duplicate
        )
        logs.append(_log(walk, labels))
        logs.append(getattr(child, "calls", None))
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("remove_duplicate", [True, False])
@pytest.mark.parametrize("duck", [True, False], ids=["duck", "mute"])
def test_a_child_that_is_not_a_module(
    duck: bool, remove_duplicate: bool, mode: str, walks: int
) -> None:
    """torch calls any child's named_modules (with its memo): a duck-typed child is walked
    through it, one without it raises torch's AttributeError."""
    _compare(_duck_child, mode, walks, duck, remove_duplicate)


# ------------------------------------ 8. get_members_fn called with a keyword argument


class _KeywordMembers(nn.Sequential):
    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        def members(module: nn.Module) -> list:
            return list(get_members_fn(module=module))

        return nn.Module._named_members(self, members, prefix, recurse, remove_duplicate)


def _keyword_members(mode: str, walks: int) -> list:
    return _walks(
        mode, walks, MEMBER_FUNCTIONS, lambda: _KeywordMembers(nn.Linear(1, 1), nn.BatchNorm1d(1))
    )


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
def test_get_members_fn_takes_module_by_keyword(mode: str, walks: int) -> None:
    """torch's get_members_fn is `lambda module: ...`: an override may call it by keyword."""
    _compare(_keyword_members, mode, walks)


# ------------------------------------------- StopIteration raised by user code


class _Stopping:
    """While armed, the user code below raises StopIteration (a stray next() of its own)."""

    armed = False

    @staticmethod
    def check() -> None:
        if _Stopping.armed:
            raise StopIteration("from user code")


class _StoppingKey(str):
    def __add__(self, other: str) -> str:
        _Stopping.check()
        return str(self) + other

    def __radd__(self, other: str) -> str:
        _Stopping.check()
        return other + str(self)


class _StoppingChild(nn.Sequential):
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        _Stopping.check()
        return super().named_modules(memo, prefix, remove_duplicate)


class _StoppingParameter(nn.Parameter):
    @property
    def requires_grad(self) -> bool:  # type: ignore[override]
        _Stopping.check()
        return True


def _stopping_tree(where: str) -> nn.Module:
    root = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.Linear(1, 1)), nn.Linear(1, 1))
    if where == "a module's key":
        root[1]._modules[_StoppingKey("k")] = nn.Linear(1, 1)
    elif where == "a parameter's key":
        root[1][0]._parameters[_StoppingKey("k")] = _p()
    elif where == "a child's named_modules":
        root[1].__class__ = _StoppingChild
    elif where == "a requires_grad property":
        root[1][0].bias = _StoppingParameter(torch.ones(1))
    return root


def _stopped(mode: str, walks: int, where: str) -> list:
    logs = []
    for function in FUNCTIONS_ALL:
        if where == "the prefix" and function not in NAMED:
            continue
        kwargs = {"prefix": _StoppingKey("p")} if where == "the prefix" else {}
        root = _stopping_tree(where)
        labels = _labels(root)
        _warm(mode, function, root, walks, **kwargs)
        _Stopping.armed = True
        log = []
        try:
            iterator = iter(walk_in_mode(mode, function, root, **kwargs))
            while (entry := step(iterator))[0] == "item":
                log.append(_label(labels, entry[1]))
        except Exception as error:  # noqa: BLE001 - the exception is what is compared
            entry = ("raise", error)
        finally:
            _Stopping.armed = False
        if entry[0] == "raise":
            error = entry[1]
            entry = ("raise", type(error).__name__, str(error), repr(error.__cause__))
        logs.append([function, *log, entry])
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize(
    "where",
    [
        "a module's key",
        "a parameter's key",
        "a child's named_modules",
        "a requires_grad property",
        "the prefix",
    ],
)
def test_stop_iteration_from_user_code_is_a_runtime_error(
    where: str, mode: str, walks: int
) -> None:
    """PEP 479: torch's generators turn it into RuntimeError, caused by it; a native walk
    that let it through would end early, and a consumer would get part of the model."""
    _compare(_stopped, mode, walks, where)


# ------------------------------------------------------------- 9. throw()


THROWS: dict[str, tuple] = {
    "StopIteration": (StopIteration,),
    "ValueError": (ValueError,),
    "ValueError_with_traceback": (ValueError, None, None),
    "GeneratorExit": (GeneratorExit,),
    # Invalid calls: refused before anything is raised into the generator's frame (a
    # GeneratorExit closes the generator a `yield from` waits on first).
    "not_an_exception": (1,),
    "instance_with_a_value": (ValueError("x"), "v"),
    "no_traceback": (ValueError, None, 5),
    "GeneratorExit_no_traceback": (GeneratorExit, None, 5),
    "GeneratorExit_instance_with_a_value": (GeneratorExit("g"), "v"),
    "no_arguments": (),
    "four_arguments": (ValueError, None, None, None),
}


def _reentering(walk: Iterable, log: list) -> type[Exception]:
    """An exception class whose __init__ steps the walk it is thrown into."""

    class Reentering(Exception):
        def __init__(self) -> None:
            super().__init__()
            kind, value = step(walk)
            log.append(("reentered", kind, type(value).__name__))

    return Reentering


def _thrown(mode: str, walks: int, arguments: str, steps: int) -> list:
    logs = []
    for function in LAZY_FUNCTIONS:
        root = small_tied_model()
        labels = _labels(root)
        _warm(mode, function, root, walks)
        walk = iter(walk_in_mode(mode, function, root))
        log = [_entry(labels, *step(walk)) for _ in range(steps)]
        thrown = (_reentering(walk, log),) if arguments == "reentering" else THROWS[arguments]
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                try:
                    raise KeyError("handled")  # what the caller handles is no context
                except KeyError:
                    log.append(("returned", _label(labels, walk.throw(*thrown))))
            except BaseException as raised:  # noqa: BLE001 - GeneratorExit is compared too
                log.append(
                    (
                        "raise",
                        type(raised).__name__,
                        str(raised),
                        type(raised.__cause__).__name__,
                        type(raised.__context__).__name__,
                    )
                )
        log.append([(w.category.__name__, str(w.message)) for w in warned])
        logs.append([*log, *_log(walk, labels)])  # what is left of the walk, if anything
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
@pytest.mark.parametrize("arguments", [*THROWS, "reentering"])
def test_throw_into_a_walk_is_a_generators_throw(
    arguments: str, steps: int, mode: str, walks: int
) -> None:
    """PEP 479: a StopIteration thrown into torch's generator comes out as RuntimeError;
    any valid throw ends the walk, its exception chained to nothing the caller handles. An
    invalid one raises TypeError and leaves the walk as it was, unless torch's generator is
    suspended in a `yield from` (named_parameters, named_buffers, named_modules past its
    root): the TypeError then unwinds it, and a GeneratorExit closes the generator it waits
    on first (named_modules goes on with the root's next child). An exception class made
    while torch's generator delegates finds the walk executing."""
    _compare(_thrown, mode, walks, arguments, steps)


# ------------------------------------- 10. the item yielded last is held, as a local


def _last_item_held(mode: str, walks: int, function: str, remove_duplicate: bool) -> list:
    root = nn.Module()
    members = root._buffers if "buffers" in function else root._parameters
    for name in ("w1", "w2", "w3"):
        members[_runtime(name)] = torch.ones(1) if "buffers" in function else _p()
    _warm(mode, function, root, walks, remove_duplicate=remove_duplicate)
    walk = iter(walk_in_mode(mode, function, root, remove_duplicate=remove_duplicate))
    item = _value(next(walk))
    held = weakref.ref(item)
    members[next(k for k, v in members.items() if v is item)] = None  # taken out...
    del item  # ... and let go of by the consumer
    gc.collect()
    alive = [held() is not None]
    next(walk)
    gc.collect()
    return [*alive, held() is not None]


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("remove_duplicate", [False, True])
@pytest.mark.parametrize("function", MEMBER_FUNCTIONS)
def test_the_last_item_is_held_until_the_next_step(
    function: str, remove_duplicate: bool, mode: str, walks: int
) -> None:
    """torch's generator holds the item it yielded last in a local until the next step."""
    _compare(_last_item_held, mode, walks, function, remove_duplicate)


# -------------------------------------------- 11. bool() when torch calls it


class _Truth:
    """A flag that counts how often its truth is asked."""

    def __init__(self, value: bool) -> None:
        self.value, self.calls = value, 0

    def __bool__(self) -> bool:
        self.calls += 1
        return self.value


def _recurse_truth(mode: str, walks: int, value: bool) -> list:
    logs = []
    for function in (*MEMBER_FUNCTIONS, "parameter_list"):
        root = small_tied_model()
        labels = _labels(root)
        _warm(mode, function, root, walks)
        truth = _Truth(value)
        walk = iter(walk_in_mode(mode, function, root, recurse=truth))
        calls = [truth.calls]  # at the call; then at the first next(); then at the end
        first = _entry(labels, *step(walk))
        calls.append(truth.calls)
        logs += [first, _log(walk, labels), [function, *calls, truth.calls]]
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("value", [True, False])
def test_recurse_truth_is_asked_at_the_first_next(value: bool, mode: str, walks: int) -> None:
    """torch's generators test `recurse` once, at the first next(), not at the call."""
    _compare(_recurse_truth, mode, walks, value)


def _remove_duplicate_truth(mode: str, walks: int, value: bool) -> list:
    logs = []
    for function in FUNCTIONS_ALL:
        root = small_tied_model()
        labels = _labels(root)
        _warm(mode, function, root, walks)
        truth = _Truth(value)
        walk = iter(walk_in_mode(mode, function, root, remove_duplicate=truth))
        calls = [truth.calls]  # at the call; then at the end
        logs += [_log(walk, labels), [function, *calls, truth.calls]]
    return logs


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("value", [True, False])
def test_remove_duplicate_truth_is_asked_as_torch_asks_it(
    value: bool, mode: str, walks: int
) -> None:
    """torch asks for every module and member (parameters(): named_parameters' walk)."""
    _compare(_remove_duplicate_truth, mode, walks, value)


def _set_to_none_truth(mode: str, walks: int, value: bool) -> list:
    root = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1))
    params = list(nn.Module.parameters(root))
    for _ in range(walks):
        _zero(mode, root, params, True)
    truth = _Truth(value)
    return [_zero(mode, root, params, truth), truth.calls]


@pytest.mark.parametrize(("mode", "walks"), VARIANTS)
@pytest.mark.parametrize("value", [True, False])
def test_set_to_none_truth_is_asked_per_parameter_with_a_grad(
    value: bool, mode: str, walks: int
) -> None:
    """torch's zero_grad tests `set_to_none` once per parameter that has a grad."""
    _compare(_set_to_none_truth, mode, walks, value)


# ---------------------------------------- 13. the caller's prefix is not kept alive


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("function", NAMED)
def test_the_name_cache_keeps_no_prefix_alive(function: str, mode: str) -> None:
    """Names kept for replays must not keep the caller's prefix object alive."""
    root = small_tied_model()
    with _context(mode):
        prefix = _Tagged(_runtime("sub"))
        freed = weakref.ref(prefix)
        exact = _runtime("exact")
        before = refcounts([exact])
        for chosen in (prefix, exact):
            for _ in range(4):  # live, recording, replaying, replaying
                list(walk_in_mode(mode, function, root, prefix=chosen))
            walk = iter(walk_in_mode(mode, function, root, prefix=chosen))
            next(walk)  # abandoned mid-walk
            del walk
        list(walk_in_mode(mode, function, root, prefix="other"))
    del prefix, chosen
    gc.collect()
    assert freed() is None, "a str subclass prefix outlived the walks"
    assert refcounts([exact]) == before, "an exact str prefix gained references"


# ----------------------- 14. random trees, finalizers that change them, gc threshold 1


def _mutate(rng: random.Random, modules: list[nn.Module]) -> None:
    module = rng.choice(modules)
    choice = rng.randrange(7)
    if choice == 0:
        module._parameters[f"f{rng.randrange(3)}"] = _p()
    elif choice == 1 and module._parameters:
        module._parameters.pop(rng.choice(list(module._parameters)))
    elif choice == 2 and module._modules:
        module._modules[rng.choice(list(module._modules))] = None
    elif choice == 3:
        module._modules[f"g{rng.randrange(2)}"] = nn.Linear(1, 1)
    elif choice == 4:
        object.__setattr__(module, "__dict__", dict(vars(module)))
    elif choice == 5:
        module.__class__ = _hiding(type(module))
    else:
        for p in module._parameters.values():
            if p is not None:
                p.requires_grad_(not p.requires_grad)


def _same_outcome(got: tuple, expected: tuple) -> bool:
    if got[0] != expected[0]:
        return False
    if got[0] == "ok":
        return same_items(got[1], expected[1])
    return (type(got[1]), str(got[1])) == (type(expected[1]), str(expected[1]))


def child_gc_random(seeds: int) -> list[str]:
    gc.set_threshold(1)
    wrong = []
    for seed in range(seeds):
        rng, root = random.Random(seed), seeded_tree(seed)
        for turn in range(8):
            modules = list(root.modules())
            for _ in range(rng.randint(1, 3)):
                _Finalizer(functools.partial(_mutate, random.Random(rng.random()), modules))
            del modules
            function, kwargs = rng.choice(every_call())
            mode = rng.choice(MODES)
            with _context(mode):  # the finalizers run somewhere in this walk
                walk, kept = iter(walk_in_mode(mode, function, root, **kwargs)), []
                while not kept or kept[-1][0] == "item":  # items kept: each step allocates
                    kept.append(step(walk))
            if kept[-1][0] == "raise" and not isinstance(kept[-1][1], RuntimeError):
                wrong.append(f"seed {seed} turn {turn} {function}: {kept[-1][1]!r}")
            del walk, kept
            gc.collect()
            expected = outcome(functools.partial(reference, function, root, **kwargs))
            for _ in range(3):  # live, recording, replaying
                with _context(mode):
                    got = outcome(lambda: list(walk_in_mode(mode, function, root, **kwargs)))  # noqa: B023
                if not _same_outcome(got, expected):
                    wrong.append(
                        f"seed {seed} turn {turn} {mode} {function}({kwargs}): "
                        f"{got[0]} vs torch's {expected[0]}"
                    )
    return wrong


@pytest.mark.parametrize("cache", ["1", "0"], ids=["cache", "no_cache"])
def test_finalizers_changing_random_trees_while_they_are_walked(cache: str) -> None:
    """No crash wherever a collection runs finalizers that edit the tree; once they have
    run, every walk is torch's."""
    assert _in_child("child_gc_random", 30, PYPARAMS_CACHE=cache) == []
