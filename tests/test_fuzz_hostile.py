"""Differential fuzzing with hostile objects: user code that runs in the middle of walk steps.

Code that changes the tree would be seen by both sides if they shared it, so two identical
trees are built from one seed: torch's methods walk one, pyparams the other (the mirror).
Mutation rules apply the same change to both (objects are addressed by their index in each
tree's canonical list, both grown in step). Hostile objects are planted in both at the same
place; when one's code runs it applies its planned mutation to its OWN tree and counts its
calls. The kinds: a non-str key in a module's instance ``__dict__`` with the hash of a name
torch looks up (its ``__eq__`` runs in that lookup); a ``Parameter`` whose ``requires_grad``
is a property (read by trainable walks); a ``Parameter``, or a module's class, whose
``__hash__`` (its identity still) runs code where torch's duplicate-removing sets hash it;
a ``TorchFunctionMode`` active during steps (it counts calls, may flip requires_grad);
finalizers in reference cycles, freed by the collector
(threshold 1) at the first allocation of a step. Where a collection runs depends on what each
side allocates, so finalizers only make changes torch cannot see the moment of: an instance
``__dict__`` swapped for a copy, a member re-set to itself, a class swapped for a trivial
subclass (each frees or invalidates what a walk or a record may hold). No cycles are made.

A pair (torch's iterator on one tree, pyparams' on the mirror: same function, options and
prefix) is stepped in lockstep: each step's item (its index in its tree's list; names and
their types), exhaustion or exception (class and message) must agree, and so must every
hostile call count (a finalizer's once the block is over and collected). Each tree may
first be walked fully 0, 1 or 2 times, so that pyparams' walk is live, recording or
replaying. Modes: ``pyparams`` (its functions), ``patched``
(torch's methods under ``pyparams.patched()``, against torch's unpatched), ``both``.
Profiles: quick (CI, derandomized); ``PYPARAMS_FUZZ=long``; ``PYPARAMS_FUZZ_EXAMPLES=n``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import random
import sys

import pytest
import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from torch import nn
from torch.overrides import TorchFunctionMode

import pyparams
from common_utils import (
    FUZZ_LONG,
    LAZY_FUNCTIONS,
    build_random_tree,
    call_kwargs,
    fuzz_settings,
    step,
    torch_iterator,
)

LONG = FUZZ_LONG
STATS: collections.Counter[str] = collections.Counter()
ARMED = [False]  # hostile code acts (and counts) only while a walk runs
# What torch looks up: on every module walked first, then on the walk's root only.
LOOKED_UP = (
    "named_modules",
    "_modules",
    "_parameters",
    "_buffers",
    "parameters",
    "named_parameters",
    "_named_members",
    "buffers",
    "named_buffers",
    "modules",
)
NAMES = ("weight", "bias", "a", "0", "p1")
MEMBERS = ("_parameters", "_buffers", "_modules")
MODES = ("pyparams", "patched", "both")
SAFE_OPS = ("redict", "reset_same", "subclass")
OPS = (
    "pop_param",
    "set_child",
    "pop_child",
    "set_param",
    "toggle",
    "set_buffer",
    "pop_buffer",
    "copy_dict",
    "tag",
    *SAFE_OPS,
)  # the simplest (first) ones change what a walk yields
PLANS = st.tuples(
    st.sampled_from(OPS), st.integers(0, 99), st.sampled_from(NAMES), st.integers(-1, 99)
)
SAFE_PLANS = st.tuples(st.sampled_from(SAFE_OPS), st.integers(0, 99), st.just(""), st.just(0))
real_requires_grad = torch.Tensor.requires_grad.__get__


class Tagged(str):
    """A str whose sums stay tagged: torch builds names with ``+``."""

    def __add__(self, other: str) -> Tagged:
        return Tagged(str.__add__(self, other))

    def __radd__(self, other: str) -> Tagged:
        return Tagged(str.__add__(other, self))


PREFIXES = ("", "root", "x.y", Tagged("t"))


@functools.cache
def trivial(cls: type) -> type:
    """A subclass of ``cls`` that changes nothing a walk sees."""
    return type(f"Trivial{cls.__name__}", (cls,), {})


def reaches(start: nn.Module, target: nn.Module) -> bool:
    stack, seen = [start], set()
    while stack:
        module = stack.pop()
        if module is target:
            return True
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            stack.extend(vars(module).get("_modules", {}).values())
    return False


def apply(side: Side, plan: tuple) -> None:
    """One mutation of ``side``'s tree; both trees resolve ``plan`` to the same objects."""
    op, m, name, t = plan
    module = side.modules[m % len(side.modules)]
    d = vars(module)
    which = "_modules" if "child" in op else "_buffers" if "buffer" in op else "_parameters"
    members = d.get(MEMBERS[t % 3] if op in ("copy_dict", "tag") else which)
    if not isinstance(members, dict):
        return
    if op == "redict":
        object.__setattr__(module, "__dict__", dict(d))
    elif op == "reset_same":
        for mapping in (d.get(w) for w in MEMBERS):
            if type(mapping) is dict and mapping:
                key = next(iter(mapping))
                mapping[key] = mapping[key]
    elif op == "subclass":
        object.__setattr__(module, "__class__", trivial(type(module)))
    elif op.startswith("pop_"):
        members.pop(list(members)[t % len(members)] if members else name, None)
    elif op in ("set_param", "set_buffer"):
        name = list(members)[t % len(members)] if t % 2 and members else name  # or a new key
        members[name] = side.tensors[t % len(side.tensors)] if t >= 0 and side.tensors else None
    elif op == "set_child":
        name = list(members)[t % len(members)] if t % 2 and members else name
        child = None if t < 0 else side.modules[t % len(side.modules)]
        if child is None or not reaches(child, module):  # no cycles
            members[name] = child
    elif op == "toggle" and side.tensors:
        tensor = side.tensors[t % len(side.tensors)]
        if tensor.is_leaf and tensor.is_floating_point():
            tensor.requires_grad_(not real_requires_grad(tensor))
    elif op == "copy_dict":
        d[MEMBERS[t % 3]] = (collections.OrderedDict if t % 2 else dict)(members)
    elif op == "tag" and members:  # a key becomes a str subclass (or back), in place
        target = list(members)[t % len(members)]
        entries = list(members.items())
        members.clear()
        members.update(
            ((str(k) if type(k) is Tagged else Tagged(k)) if k is target else k, v)
            for k, v in entries
        )


class Trigger:
    """A hostile object's state: its side, its planned mutation, runs left, calls seen."""

    def __init__(self, side: Side, plan: tuple, runs: int, always: bool = False) -> None:
        self.side, self.plan, self.runs, self.always, self.count = side, plan, runs, always, 0
        side.hostiles.append(self)

    def fire(self) -> None:
        if not (ARMED[0] or self.always):
            return
        self.count += 1
        if self.runs > 0:
            self.runs -= 1
            armed, ARMED[0] = ARMED[0], False
            try:
                with contextlib.suppress(Exception):
                    apply(self.side, self.plan)
                self.side.junk.append([{"x": i} for i in range(32)])  # reuses freed memory
                del self.side.junk[:-8]
            finally:
                ARMED[0] = armed


# CPython 3.12+ specializes torch's attribute loads (`module._parameters`, `self._modules`) to
# LOAD_ATTR_WITH_HINT, which compares key pointers at the index it met last, without hashing:
# whether torch's lookup runs a colliding key's __eq__ then depends on the specializer's state,
# not on the walk. There colliders are not planted (test_hostile.py covers them on every
# version, with dicts laid out so the hint misses); the other hostile kinds still are.
COLLIDERS_COUNT_ALIKE = sys.version_info < (3, 12)


class Collider:
    """An instance ``__dict__`` key with the hash of ``name``: looking ``name`` up compares
    with it."""

    def __init__(self, name: str, trigger: Trigger) -> None:
        self.name, self.trigger = name, trigger

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        self.trigger.fire()
        return False


class HostileParameter(nn.Parameter):
    @property
    def requires_grad(self) -> bool:
        self.__dict__["trigger"].fire()
        return self.__dict__["answer"]


class HashingParameter(nn.Parameter):
    """Hashes by identity, as torch's tensors do, and fires its trigger each time torch's
    memo hashes it (``v in memo``, ``memo.add(v)``)."""

    def __hash__(self) -> int:
        self.__dict__["trigger"].fire()
        return id(self)


def _firing_hash(self: nn.Module) -> int:
    vars(self)["hash_trigger"].fire()
    return object.__hash__(self)


@functools.cache
def hashing(cls: type) -> type:
    """A subclass of ``cls`` whose hash (object's) fires the instance's ``hash_trigger``."""
    return type(f"Hashing{cls.__name__}", (cls,), {"__hash__": _firing_hash})


class Finalizer:
    """Garbage in a reference cycle: its trigger fires when the collector frees it."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger, self.cycle = trigger, self

    def __del__(self) -> None:
        self.trigger.fire()


class CountingMode(TorchFunctionMode):
    """Counts the calls it sees; answers requires_grad the other way round if ``flip``."""

    def __init__(self, flip: bool) -> None:
        super().__init__()
        self.flip, self.calls = flip, collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.calls[getattr(func, "__qualname__", getattr(func, "__name__", "?"))] += 1
        if getattr(func, "__self__", None) is torch.Tensor.requires_grad:
            self.calls["requires_grad"] += 1
            return (not result) if self.flip else result
        return result


class Side:
    """One tree, the canonical list of its objects, and its hostile objects."""

    def __init__(self, seed: int) -> None:
        self.objs: list[object] = []
        self.ids: dict[int, int] = {}
        self.modules: list[nn.Module] = []
        self.tensors: list[torch.Tensor] = []
        self.hostiles: list[Trigger] = []
        self.junk: list[object] = []
        self.root = build_random_tree(random.Random(seed).randint, max_depth=2)
        self.adopt(self.root)

    def adopt(self, obj: object) -> None:
        """Lists ``obj`` and what is below it, depth first (the same order on both sides)."""
        stack = [obj]
        while stack:
            o = stack.pop()
            if o is None or id(o) in self.ids:
                continue
            self.ids[id(o)] = len(self.objs)
            self.objs.append(o)
            if isinstance(o, nn.Module):
                self.modules.append(o)
                d = vars(o)
                stack.extend(reversed([v for w in MEMBERS for v in d[w].values()]))
            else:
                self.tensors.append(o)

    def label(self, kind: str, value: object) -> object:
        if kind == "raise":
            return ("raise", type(value).__name__, str(value))
        if kind != "item":
            return None
        if isinstance(value, tuple) and len(value) == 2:
            return (value[0], type(value[0]).__name__, self.label("item", value[1]))
        return self.ids.get(id(value), f"new {type(value).__name__}")

    def shape(self) -> list:
        """The tree, by canonical indices: equal on both sides whenever they are in sync."""

        def entries(mapping: object) -> object:
            if not isinstance(mapping, dict):
                return type(mapping).__name__
            return [type(mapping).__name__] + [
                (k, type(k).__name__, self.label("item", v)) for k, v in mapping.items()
            ]

        return [
            (
                type(m).__name__,
                [k if type(k) is str else type(k).__name__ for k in vars(m)],
                [entries(vars(m).get(w)) for w in MEMBERS],
            )
            for m in self.modules
        ] + [real_requires_grad(t) for t in self.tensors]


def clear_cache() -> None:
    """pyparams.cache_clear(), keeping its counters for the stats."""
    info = pyparams.cache_info()
    STATS["cache_hits"] += info.hits
    STATS["cache_misses"] += info.misses
    STATS["cache_invalidations"] += info.invalidations
    pyparams.cache_clear()


def make(mode: str, function: str, root: nn.Module, kwargs: dict) -> object:
    if mode in ("torch", "patched"):
        return torch_iterator(function, root, **kwargs)
    return getattr(pyparams, function)(root, **kwargs)


class HostileWalks(RuleBasedStateMachine):
    """Two mirrored trees, hostile objects in both, pairs of walks stepped in lockstep."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[dict] = []
        self.sides: tuple[Side, Side] = ()

    @initialize(seed=st.integers(0, 10**6))
    def build(self, seed: int) -> None:
        assert not pyparams.is_patched()
        self.sides = (Side(seed), Side(seed))  # (torch's tree, the mirror)

    def run(self, i: int, mode: str, thunks: list, finals=(), flip=None) -> list:
        """The ``thunks`` on side ``i`` in one ``mode`` block (so that a patched walk's record
        outlives no patch toggle), hostile code armed: after each, its result, the call count
        of every hostile object but the finalizers, and the calls a torch function mode saw
        (if ``flip`` is set); at the end, after a collection, every count. Finalizers for
        ``finals`` are freed by the collector at the block's first counted allocation."""
        side, tf = self.sides[i], CountingMode(flip) if flip is not None else None
        patch = pyparams.patched() if mode in ("patched", "both") else contextlib.nullcontext()
        log = []
        with patch, tf if tf is not None else contextlib.nullcontext():
            triggers = [Trigger(side, plan, 1, always=True) for plan in finals]
            threshold, enabled = gc.get_threshold(), gc.isenabled()
            pending = iter(thunks)  # allocated before: the first collection is in a thunk
            if triggers:
                gc.disable()
                for trigger in triggers:
                    Finalizer(trigger)  # freed at once, but for its cycle
                gc.set_threshold(1)
                if enabled:
                    gc.enable()
            ARMED[0] = True
            try:
                for thunk in pending:
                    result = thunk()
                    log.append(
                        (
                            result,
                            [h.count for h in side.hostiles if not h.always],
                            tf and dict(tf.calls),
                        )
                    )
            finally:
                ARMED[0] = False
                gc.set_threshold(*threshold)
        # A finalizer runs where the collector runs, and that depends on what each side
        # allocates (pyparams' steps allocate few objects the collector counts, often none,
        # and 3.12+ collects at the next eval-breaker check): its count is compared once the
        # block is over and collected, the others step by step.
        if any(t.count == 0 for t in triggers):
            STATS["finalizers_after_block"] += 1
        gc.collect()
        log.append(("collected", [h.count for h in side.hostiles]))
        STATS["mode_calls"] += sum(tf.calls.values()) if tf is not None else 0
        return log

    def lockstep(self, what: str, modes: tuple, thunks_for, **kwargs) -> list:
        """``thunks_for(i)`` on each side i in its mode: every entry of the logs agrees."""
        logs = [self.run(i, mode, thunks_for(i), **kwargs) for i, mode in enumerate(modes)]
        for index, (theirs, ours) in enumerate(zip(*logs, strict=False)):
            assert ours == theirs, f"{what}, [{index}]: torch {theirs}, pyparams {ours}"
        assert len(logs[0]) == len(logs[1]), f"{what}: torch {logs[0]}, pyparams {logs[1]}"
        STATS["hostile_calls"] += sum(logs[0][-1][1]) if logs[0] else 0
        return logs[0]

    # ------------------------------------------------------------- mutations
    @rule(plan=PLANS)
    def mutate(self, plan) -> None:
        for side in self.sides:
            apply(side, plan)
        STATS[f"mutation:{plan[0]}"] += 1

    @rule(kind=st.integers(0, 3), frozen=st.booleans())
    def fresh(self, kind, frozen) -> None:
        for side in self.sides:
            if kind < 2:
                obj = nn.Parameter(torch.zeros(1), not frozen) if kind else torch.zeros(1)
            else:
                obj = nn.Linear(1, 1) if kind == 2 else nn.Module()
            side.adopt(obj)

    @rule(
        m=st.integers(0, 99),
        kind=st.sampled_from(("collider", "parameter", "hashing parameter", "hashing module")),
        looked_up=st.sampled_from(LOOKED_UP),
        name=st.sampled_from(NAMES),
        runs=st.integers(1, 3),
        answer=st.booleans(),
        plan=PLANS,
    )
    def plant(self, m, kind, looked_up, name, runs, answer, plan) -> None:
        """A colliding key in a module's instance __dict__, a hostile parameter, or a
        parameter or module whose hash (its identity) runs code where torch's memo hashes."""
        if kind == "collider" and not COLLIDERS_COUNT_ALIKE:
            kind = "parameter"
        for side in self.sides:
            module = side.modules[m % len(side.modules)]
            mapping = vars(module)
            if kind == "collider":
                entries = list(mapping.items())
                mapping.clear()
                mapping[Collider(looked_up, Trigger(side, plan, runs))] = None  # probed first
                mapping.update(entries)
            elif kind == "hashing module":
                mapping["hash_trigger"] = Trigger(side, plan, runs)
                object.__setattr__(module, "__class__", hashing(type(module)))
            else:
                cls = HostileParameter if kind == "parameter" else HashingParameter
                p = cls(torch.zeros(1))
                p.__dict__.update(trigger=Trigger(side, plan, runs), answer=answer)
                side.adopt(p)
                mapping["_parameters"][name] = p
        STATS[f"planted:{kind}"] += 1

    @rule()
    def cache_clear(self) -> None:
        clear_cache()

    # ------------------------------------------------------------- walks
    def stepper(self, its: list, i: int):
        def thunk() -> tuple:
            kind, value = step(its[i]) if its[i] is not None else ("none", None)
            return kind, self.sides[i].label(kind, value)

        return thunk

    @precondition(lambda self: len(self.pairs) < 3)
    @rule(
        function=st.sampled_from(LAZY_FUNCTIONS),
        prefix=st.sampled_from(PREFIXES),
        recurse=st.booleans(),
        remove_duplicate=st.booleans(),
        m=st.integers(0, 99),
        mode=st.sampled_from(MODES),
        warm=st.integers(0, 2),
        clear=st.booleans(),
        steps=st.integers(0, 3),
        flip=st.sampled_from((None, False, True)),
    )
    def open_pair(
        self, function, prefix, recurse, remove_duplicate, m, mode, warm, clear, steps, flip
    ) -> None:
        """``warm`` full walks of each tree, then a pair of walks, and its first ``steps``."""
        kwargs = call_kwargs(
            function, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )
        roots = [s.root if m % 3 else s.modules[m % len(s.modules)] for s in self.sides]
        pair = {
            "modes": ("torch", mode),
            "its": [None, None],
            "what": f"{mode} {function}({kwargs}) warm={warm}",
        }
        if clear:
            clear_cache()

        def walk(i: int, keep: bool):
            def thunk() -> object:
                try:
                    iterator = iter(make(pair["modes"][i], function, roots[i], kwargs))
                except Exception as error:  # noqa: BLE001 - the exception is compared
                    return self.sides[i].label("raise", error)
                if keep:
                    pair["its"][i] = iterator
                    return "opened"
                log: list[tuple] = []
                while not log or log[-1][0] == "item":
                    kind, value = step(iterator)
                    log.append((kind, self.sides[i].label(kind, value)))
                return log

            return thunk

        # pyparams' walk of the pair is then live, recording or replaying
        self.lockstep(
            pair["what"],
            pair["modes"],
            lambda i: [
                *(walk(i, False) for _ in range(warm)),
                walk(i, True),
                *(self.stepper(pair["its"], i) for _ in range(steps)),
            ],
            flip=flip,
        )
        self.pairs.append(pair)
        STATS[f"opened:{mode}:warm{warm}"] += 1

    @rule(
        trainable=st.booleans(),
        recurse=st.booleans(),
        remove_duplicate=st.booleans(),
        m=st.integers(0, 99),
        mode=st.sampled_from(MODES),
        warm=st.integers(0, 2),
        clear=st.booleans(),
        finals=st.lists(SAFE_PLANS, max_size=2),
        flip=st.sampled_from((None, False, True)),
    )
    def eager_walk(
        self, trainable, recurse, remove_duplicate, m, mode, warm, clear, finals, flip
    ) -> None:
        """``warm`` + 1 calls of ``parameter_list``: its run of replayed steps, lent references
        and whole-record check meet the hostile objects (and ``finals``' finalizers) too."""
        kwargs = {"trainable": trainable, "recurse": recurse, "remove_duplicate": remove_duplicate}
        roots = [s.root if m % 3 else s.modules[m % len(s.modules)] for s in self.sides]
        modes = ("torch", mode)
        if clear:
            clear_cache()

        def walk(i: int):
            def thunk() -> object:
                try:
                    result = make(modes[i], "parameter_list", roots[i], kwargs)
                except Exception as error:  # noqa: BLE001 - the exception is compared
                    return self.sides[i].label("raise", error)
                return [self.sides[i].label("item", value) for value in result]

            return thunk

        hits = pyparams.cache_info().hits
        self.lockstep(
            f"{mode} parameter_list({kwargs}) warm={warm}",
            modes,
            lambda i: [walk(i) for _ in range(warm + 1)],
            finals=finals,
            flip=flip,
        )
        STATS[f"eager:{mode}:warm{warm}"] += 1
        STATS["eager_replays"] += pyparams.cache_info().hits - hits

    @precondition(lambda self: self.pairs)
    @rule(
        index=st.integers(0, 2),
        count=st.integers(1, 6),
        finals=st.lists(SAFE_PLANS, max_size=2),
        flip=st.sampled_from((None, False, True)),
    )
    def step_pair(self, index, count, finals, flip) -> None:
        self.step_one(index % len(self.pairs), count, finals, flip)

    @precondition(lambda self: self.pairs)
    @rule(finals=st.lists(SAFE_PLANS, max_size=1), flip=st.sampled_from((None, False, True)))
    def step_every_pair(self, finals, flip) -> None:
        for index in reversed(range(len(self.pairs))):
            self.step_one(index, 1, finals, flip)

    def step_one(self, index: int, count: int, finals: list, flip: bool | None) -> None:
        """``count`` steps of a pair, even past its end (an ended walk stays ended)."""
        pair = self.pairs[index]
        log = self.lockstep(
            f"{pair['what']}, step",
            pair["modes"],
            lambda i: [self.stepper(pair["its"], i)] * count,
            finals=finals,
            flip=flip,
        )
        STATS["steps"] += count
        STATS["finalizers"] += len(finals)
        ended = [entry[0][0] for entry in log if entry[0] != "collected" and entry[0][0] != "item"]
        if ended:
            STATS[f"finished:{ended[0]}"] += 1
            del self.pairs[index]

    @precondition(lambda self: self.pairs)
    @rule(index=st.integers(0, 2))
    def abandon_pair(self, index) -> None:
        del self.pairs[index % len(self.pairs)]

    @invariant()
    def trees_in_sync(self) -> None:
        """A check of the harness: equal counts mean equal mutations, so equal trees."""
        if self.sides:
            assert self.sides[0].shape() == self.sides[1].shape()

    def teardown(self) -> None:
        ARMED[0] = False
        self.pairs.clear()
        clear_cache()


HostileWalks.TestCase.settings = fuzz_settings(quick=(60, 30), long=(1000, 60))


class TestHostileWalks(HostileWalks.TestCase):
    pass


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    sys.stderr.write(f"\nhostile fuzz stats: {dict(sorted(STATS.items()))}\n")
