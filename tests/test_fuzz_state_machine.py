"""Differential fuzzing: pyparams and torch driven in lockstep through random mutations.

A hypothesis state machine builds a random module graph (shared parameters and
submodules, cycles, ``None`` entries, frozen parameters, raw ``_parameters``
entries, ``ParameterList``/``ParameterDict``, parametrizations, ``OrderedDict``
member mappings), opens pairs of iterators (a torch generator and the matching
pyparams iterator over the same root) and interleaves single steps of those
pairs with mutations: add, remove or replace parameters, buffers and
submodules, toggle ``requires_grad``, parametrize a module, delete the root, write
other attributes (``training``), give a module a new ``__dict__``, swap its class for a
subclass (overriding ``named_modules`` or not, hashing alike or not), give a parameter a
class that hashes alike, set a ``named_modules`` attribute on it;
and call ``send()``, ``throw()`` or ``close()`` on both iterators of a pair.

After every step both sides must agree: the same item (names ``==``, objects
``is``), both exhausted, or the same exception class (``RuntimeError`` for a
walked dict that changed size). The one documented difference: on a cycle with
``remove_duplicate=False`` torch recurses until ``RecursionError`` while
pyparams raises ``RuntimeError`` at the first re-entry; the test then drains
the torch generator and requires that it does end in ``RecursionError``.

Profiles: quick by default (CI: 300 programs of 50 steps, derandomized);
``PYPARAMS_FUZZ=long`` runs the long one (3000 programs of 100 steps, random
seeds); ``PYPARAMS_FUZZ_EXAMPLES=n`` overrides the number of programs.
``PYPARAMS_FUZZ_STATS=path`` appends the counters of a run (as JSON) to ``path``.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import sys
from functools import cache, partial

import pytest
import torch
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from torch import nn
from torch.nn.utils import parametrize

import pyparams
from common_utils import (
    FUZZ_LONG,
    LAZY_FUNCTIONS,
    call_kwargs,
    called,
    fuzz_settings,
    outcome,
    reference,
    same_item,
    step,
    torch_iterator,
)

LONG = FUZZ_LONG

STATS: collections.Counter[str] = collections.Counter()

PARAM_NAMES = ("weight", "bias", "p0", "p1", "p2")
CHILD_NAMES = ("a", "b", "c", "0", "1")
PREFIXES = ("", "root", "x.y")
# Torch needs a few generator frames per level; more than this many items after
# pyparams flagged a cycle means torch is not going to hit RecursionError.
DRAIN_LIMIT = 200_000


# What a generator's caller may do between its steps besides next(): the same call on
# both iterators of a pair, compared as a step is (PEP 380 hands it to an override's
# generator where torch's `yield from` waits on it).
GENERATOR_CALLS = {
    "send None": lambda iterator: iterator.send(None),
    "send a value": lambda iterator: iterator.send("sent"),
    "throw ValueError": lambda iterator: iterator.throw(ValueError("thrown")),
    "throw StopIteration": lambda iterator: iterator.throw(StopIteration),
    "throw GeneratorExit": lambda iterator: iterator.throw(GeneratorExit),
    "close": lambda iterator: iterator.close(),
}


class Scale(nn.Module):
    """A parametrization: ``weight`` becomes ``original * 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1


def _hide_children(self, memo=None, prefix="", remove_duplicate=True):
    """A ``named_modules`` override that yields the module alone, memo or not."""
    yield prefix, self


def _walk_as_torch(self, memo=None, prefix="", remove_duplicate=True):
    """A ``named_modules`` override that runs torch's own (``nn.Module.named_modules``)."""
    yield from nn.Module.named_modules(self, memo, prefix, remove_duplicate)


def _walk_as_listed(self, memo=None, prefix="", remove_duplicate=True):
    """A ``named_modules`` override that returns a list's iterator over torch's walk: no
    ``send``, ``throw`` or ``close`` of its own."""
    return iter(list(nn.Module.named_modules(self, memo, prefix, remove_duplicate)))


NAMED_MODULES_OVERRIDES = (None, _hide_children, _walk_as_torch, _walk_as_listed)


def _hash_alike(self) -> int:
    return 7


def _equal_if_hashed_alike(self, other: object) -> bool:
    return "_hashed_by_fuzz" in type(other).__dict__


@cache
def swapped_class(base: type, override, hashed: bool = False) -> type:
    """``base`` with ``named_modules`` overridden by ``override`` (None: a trivial subclass),
    marked in its own ``__dict__`` (a parametrization's subclass of it is not one);
    ``hashed``: its instances hash alike and equal every instance of any such class, so
    torch's memo sets take them all for one."""
    body = {"_swapped_by_fuzz": True}
    if override is not None:
        body["named_modules"] = override
    if hashed:
        body.update(__hash__=_hash_alike, __eq__=_equal_if_hashed_alike, _hashed_by_fuzz=True)
    return type(f"{'Hashed' if hashed else ''}Swapped{base.__name__}", (base,), body)


@contextlib.contextmanager
def shallow_recursion(margin: int = 250):
    """Lowers the recursion limit to `margin` frames above the current depth.

    torch's generators delegate with ``yield from``, so each item costs one frame
    per level and a cycle costs O(limit**2) before ``RecursionError``; the graphs
    here are at most a few dozen levels deep, so a low limit changes nothing else.
    """
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + margin)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def is_cycle_error(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "cycle" in str(error)


def drains_to_recursion_error(reference) -> bool:
    for _ in range(DRAIN_LIMIT):
        kind, value = step(reference)
        if kind == "stop":
            return False
        if kind == "raise":
            return isinstance(value, RecursionError)
    return False


def check_outcomes(ours, theirs, reference, remove_duplicate: bool) -> bool:
    """Asserts that one step agrees; True when the pair is finished."""
    if ours[0] == "item" and theirs[0] == "item":
        assert same_item(ours[1], theirs[1]), (ours[1], theirs[1])
        return False
    if ours[0] == "raise" and is_cycle_error(ours[1]) and not remove_duplicate:
        # Documented improvement: torch recurses around the cycle until it fails.
        STATS["cycles_detected"] += 1
        if theirs[0] == "raise":
            assert isinstance(theirs[1], RecursionError), theirs[1]
        else:
            assert theirs[0] == "item", "torch ended normally where pyparams saw a cycle"
            assert drains_to_recursion_error(reference)
        return True
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "raise":
        assert type(ours[1]) is type(theirs[1]), (ours[1], theirs[1])
        STATS["same_exception"] += 1
    return True


def check_eager(ours, theirs, remove_duplicate: bool) -> None:
    if ours[0] == "raise" and is_cycle_error(ours[1]) and not remove_duplicate:
        assert theirs[0] == "raise" and isinstance(theirs[1], RecursionError), theirs
        return
    assert ours[0] == theirs[0], (ours, theirs)
    if ours[0] == "raise":
        assert type(ours[1]) is type(theirs[1]), (ours[1], theirs[1])
        return
    assert len(ours[1]) == len(theirs[1]), (len(ours[1]), len(theirs[1]))
    assert all(map(same_item, ours[1], theirs[1]))


class WalkUnderMutation(RuleBasedStateMachine):
    """Random module graphs, mutated between the steps of live iterator pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.modules: list[nn.Module] = []
        self.tensors: list[torch.Tensor] = []
        self.pairs: list[tuple[str, object, object, bool]] = []
        self.root: nn.Module | None = None

    # ---------------------------------------------------------------- building
    def new_module(self, kind: int) -> nn.Module:
        t = self.tensors
        if kind == 0:
            module = nn.Module()
        elif kind == 1:
            module = nn.Linear(2, 2)
        elif kind == 2:
            module = nn.BatchNorm1d(2)
        elif kind == 3:
            module = nn.ParameterList([t[0], t[-1], t[0]])
        elif kind == 4:
            module = nn.ParameterDict({"x": t[1 % len(t)], "y": t[0]})
        elif kind == 5:
            module = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        else:
            module = nn.Linear(2, 2)
            parametrize.register_parametrization(module, "weight", Scale())
        self.modules.append(module)
        return module

    @initialize(
        kinds=st.lists(st.integers(0, 6), min_size=1, max_size=8),
        parents=st.lists(st.integers(0, 100), min_size=8, max_size=8),
        frozen=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def build(self, kinds, parents, frozen) -> None:
        self.tensors = [nn.Parameter(torch.zeros(2)) for _ in range(3)] + [torch.ones(1)]
        for tensor, freeze in zip(self.tensors, frozen, strict=True):
            if freeze and tensor.is_leaf:
                tensor.requires_grad_(False)
        for index, kind in enumerate(kinds):
            module = self.new_module(kind)
            if index:
                parent = self.modules[parents[index] % index]
                parent._modules[CHILD_NAMES[index % len(CHILD_NAMES)] + str(index)] = module
        self.root = self.modules[0]
        note(f"built {[type(m).__name__ for m in self.modules]}")

    # --------------------------------------------------------------- mutations
    def mutated(self, what: str) -> None:
        STATS["mutations"] += 1
        STATS[f"mutation:{what}"] += 1

    @rule(
        m=st.integers(0, 99),
        name=st.sampled_from(PARAM_NAMES),
        t=st.integers(-1, 99),
        buffer=st.booleans(),
    )
    def set_member(self, m, name, t, buffer) -> None:
        """Adds or replaces `_parameters[name]` / `_buffers[name]` (raw, or None)."""
        module = self.modules[m % len(self.modules)]
        value = None if t < 0 else self.tensors[t % len(self.tensors)]
        (module._buffers if buffer else module._parameters)[name] = value
        self.mutated("set_member")

    @rule(m=st.integers(0, 99), name=st.sampled_from(PARAM_NAMES), buffer=st.booleans())
    def remove_member(self, m, name, buffer) -> None:
        module = self.modules[m % len(self.modules)]
        (module._buffers if buffer else module._parameters).pop(name, None)
        self.mutated("remove_member")

    @rule(new_tensor=st.booleans(), frozen=st.booleans())
    def new_tensor(self, new_tensor, frozen) -> None:
        tensor = nn.Parameter(torch.zeros(2)) if new_tensor else torch.zeros(3)
        if frozen:
            tensor.requires_grad_(False)
        self.tensors.append(tensor)

    @rule(m=st.integers(0, 99), name=st.sampled_from(CHILD_NAMES), c=st.integers(-1, 99))
    def set_child(self, m, name, c) -> None:
        """Adds or replaces `_modules[name]`: sharing, cycles and None all arise."""
        module = self.modules[m % len(self.modules)]
        module._modules[name] = None if c < 0 else self.modules[c % len(self.modules)]
        self.mutated("set_child")

    @rule(m=st.integers(0, 99), kind=st.integers(0, 6), name=st.sampled_from(CHILD_NAMES))
    def add_new_child(self, m, kind, name) -> None:
        parent = self.modules[m % len(self.modules)]
        parent._modules[name] = self.new_module(kind)
        self.mutated("add_new_child")

    @rule(m=st.integers(0, 99), name=st.sampled_from(CHILD_NAMES))
    def remove_child(self, m, name) -> None:
        self.modules[m % len(self.modules)]._modules.pop(name, None)
        self.mutated("remove_child")

    @rule(t=st.integers(0, 99))
    def toggle_requires_grad(self, t) -> None:
        tensor = self.tensors[t % len(self.tensors)]
        if tensor.is_leaf:
            tensor.requires_grad_(not tensor.requires_grad)
            self.mutated("toggle_requires_grad")

    @rule(
        m=st.integers(0, 99),
        which=st.sampled_from(("_parameters", "_modules", "_buffers")),
        ordered=st.booleans(),
    )
    def replace_mapping(self, m, which, ordered) -> None:
        """Swaps a member mapping for a copy (an OrderedDict or a plain dict)."""
        module = self.modules[m % len(self.modules)]
        mapping = getattr(module, which)
        module.__dict__[which] = (collections.OrderedDict if ordered else dict)(mapping)
        self.mutated("replace_mapping")

    @rule(m=st.integers(0, 99))
    def parametrize_weight(self, m) -> None:
        module = self.modules[m % len(self.modules)]
        if isinstance(module._parameters.get("weight"), nn.Parameter) and not (
            parametrize.is_parametrized(module)
        ):
            with contextlib.suppress(Exception):  # torch's own checks on a mutated graph
                parametrize.register_parametrization(module, "weight", Scale())
            self.mutated("parametrize")

    @rule(m=st.integers(0, 99))
    def remove_parametrization(self, m) -> None:
        module = self.modules[m % len(self.modules)]
        if parametrize.is_parametrized(module, "weight"):
            # A mutated graph may confuse torch; both sides see the result.
            with contextlib.suppress(Exception):
                parametrize.remove_parametrizations(module, "weight")
            self.mutated("unparametrize")

    def module_with_children(self, m: int) -> nn.Module:
        """Module `m` of those with children (any module where none has): there an override
        that hides them changes the walk."""
        parents = [module for module in self.modules if module._modules] or self.modules
        return parents[m % len(parents)]

    @rule(m=st.integers(0, 99), training=st.booleans())
    def write_attribute(self, m, training) -> None:
        """Writes the instance ``__dict__`` for another reason than its members (as
        ``model.train()`` does on every module): a record re-checks it entry by entry."""
        module = self.modules[m % len(self.modules)]
        if training:
            module.training = not module.training
        else:
            module.note = len(self.modules)
        self.mutated("write_attribute")

    @rule(m=st.integers(0, 99))
    def swap_instance_dict(self, m) -> None:
        """Gives a module a new ``__dict__`` with the same entries."""
        module = self.modules[m % len(self.modules)]
        module.__dict__ = dict(module.__dict__)
        self.mutated("swap_instance_dict")

    @rule(
        m=st.integers(0, 99),
        override=st.sampled_from(NAMED_MODULES_OVERRIDES),
        hashed=st.booleans(),
    )
    def swap_class(self, m, override, hashed) -> None:
        """Swaps a module's class for a subclass (trivial, overriding ``named_modules``,
        hashing by class or both), or back to the class it was swapped from."""
        module = self.module_with_children(m)
        cls = type(module)
        swapped_back = "_swapped_by_fuzz" in cls.__dict__
        module.__class__ = cls.__base__ if swapped_back else swapped_class(cls, override, hashed)
        self.mutated("swap_class")

    @rule(t=st.integers(0, 99))
    def swap_parameter_class(self, t) -> None:
        """Gives a parameter a class whose instances hash alike and equal one another
        (torch's memo then keeps the first of them it meets), or takes it back."""
        tensor = self.tensors[t % len(self.tensors)]
        if isinstance(tensor, nn.Parameter):
            cls = type(tensor)
            swapped_back = "_swapped_by_fuzz" in cls.__dict__
            tensor.__class__ = cls.__base__ if swapped_back else swapped_class(cls, None, True)
            self.mutated("swap_parameter_class")

    @rule(m=st.integers(0, 99))
    def toggle_instance_override(self, m) -> None:
        """Sets or removes a ``named_modules`` attribute in a module's instance ``__dict__``
        (torch calls it on a child; the root's is called by ``_named_members``)."""
        module = self.module_with_children(m)
        if module.__dict__.pop("named_modules", None) is None:
            module.__dict__["named_modules"] = partial(_hide_children, module)
        self.mutated("toggle_instance_override")

    @rule(kind=st.integers(0, 6), dice=st.integers(0, 5))
    def delete_root(self, kind, dice) -> None:
        """Drops every reference the test holds to the root; live iterators keep theirs."""
        if dice:  # rarely: a full collection per deletion is slow
            return
        old = self.root
        self.modules = [m for m in self.modules if m is not old]
        self.root = None
        del old
        gc.collect()
        self.root = self.new_module(kind)
        self.modules.insert(0, self.modules.pop())
        self.mutated("delete_root")

    # --------------------------------------------------------------- iteration
    @precondition(lambda self: len(self.pairs) < 4)
    @rule(
        variant=st.sampled_from(LAZY_FUNCTIONS),
        prefix=st.sampled_from(PREFIXES),
        recurse=st.booleans(),
        remove_duplicate=st.booleans(),
        m=st.integers(0, 99),
    )
    def open_pair(self, variant, prefix, recurse, remove_duplicate, m) -> None:
        module = self.root if m % 3 else self.modules[m % len(self.modules)]
        kwargs = call_kwargs(
            variant, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )
        # (An override that is no generator runs at the call: it may raise there.)
        with shallow_recursion():
            ours = called(lambda: getattr(pyparams, variant)(module, **kwargs))
            theirs = called(lambda: torch_iterator(variant, module, **kwargs))
        if ours[0] == "item" and theirs[0] == "item":
            self.pairs.append((variant, ours[1], theirs[1], remove_duplicate))
            STATS["iterators_opened"] += 1
        else:
            assert ours[0] == theirs[0] == "raise", (ours, theirs)
            assert type(ours[1]) is type(theirs[1]), (ours[1], theirs[1])
            STATS["raised_at_the_call"] += 1

    @precondition(lambda self: self.pairs)
    @rule(index=st.integers(0, 3), count=st.integers(1, 8))
    def step_pair(self, index, count) -> None:
        index %= len(self.pairs)
        with shallow_recursion():
            self.step_one(index, count)

    @precondition(lambda self: self.pairs)
    @rule()
    def step_every_pair(self) -> None:
        with shallow_recursion():
            for index in reversed(range(len(self.pairs))):
                self.step_one(index, 1)

    def step_one(self, index: int, count: int) -> None:
        _, ours, theirs, remove_duplicate = self.pairs[index]
        for _ in range(count):
            a, b = step(ours), step(theirs)
            STATS["steps"] += 1
            if check_outcomes(a, b, theirs, remove_duplicate):
                STATS[f"finished:{a[0]}"] += 1
                del self.pairs[index]
                return

    @precondition(lambda self: self.pairs)
    @rule(index=st.integers(0, 3), call=st.sampled_from(tuple(GENERATOR_CALLS)))
    def call_pair(self, index, call) -> None:
        """send(), throw() or close() on both iterators of a pair."""
        index %= len(self.pairs)
        _, ours, theirs, remove_duplicate = self.pairs[index]
        with shallow_recursion():
            a = called(partial(GENERATOR_CALLS[call], ours))
            b = called(partial(GENERATOR_CALLS[call], theirs))
        STATS[f"called:{call}"] += 1
        if check_outcomes(a, b, theirs, remove_duplicate):
            del self.pairs[index]

    @precondition(lambda self: self.pairs)
    @rule(index=st.integers(0, 3))
    def abandon_pair(self, index) -> None:
        del self.pairs[index % len(self.pairs)]
        STATS["abandoned"] += 1

    @rule(
        variant=st.sampled_from(LAZY_FUNCTIONS),
        prefix=st.sampled_from(PREFIXES),
        recurse=st.booleans(),
        remove_duplicate=st.booleans(),
    )
    def eager_variant(self, variant, prefix, recurse, remove_duplicate) -> None:
        kwargs = call_kwargs(
            variant, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )
        with shallow_recursion():
            check_eager(
                outcome(lambda: getattr(pyparams, variant)(self.root, **kwargs)),
                outcome(lambda: torch_iterator(variant, self.root, **kwargs)),
                remove_duplicate,
            )
        STATS["eager_checks"] += 1

    @invariant()
    def parameter_list_matches(self) -> None:
        """After every step, the eager list agrees with torch on the current graph."""
        if self.root is None:
            return
        STATS["cases"] += 1
        with shallow_recursion():
            self.check_parameter_list()

    def check_parameter_list(self) -> None:
        for trainable in (False, True):
            for remove_duplicate in (True, False):
                kwargs = {"trainable": trainable, "remove_duplicate": remove_duplicate}
                ours = outcome(partial(pyparams.parameter_list, self.root, **kwargs))
                theirs = outcome(partial(reference, "parameter_list", self.root, **kwargs))
                check_eager(ours, theirs, remove_duplicate)

    def teardown(self) -> None:
        self.pairs.clear()


WalkUnderMutation.TestCase.settings = fuzz_settings(quick=(300, 50), long=(3000, 100))


class TestWalkUnderMutation(WalkUnderMutation.TestCase):
    pass


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    stats = dict(sorted(STATS.items()))
    sys.stderr.write(f"\nfuzz stats ({'long' if LONG else 'quick'}): {stats}\n")
    path = os.environ.get("PYPARAMS_FUZZ_STATS")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"profile": "long" if LONG else "quick", **stats}) + "\n")
