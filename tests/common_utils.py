"""Helpers shared by the tests (torchvision's ``test/common_utils.py`` pattern).

- device lists for ``pytest.mark.parametrize`` (``cpu_and_cuda``, ``devices``);
- ``TORCH``, the one table of what torch yields for every pyparams function (torch's
  methods called on the module), the argument combinations each function takes, and
  ``assert_same_items``, which compares with ``is``, order and names;
- ``outcome`` / ``step``: a call or one ``next()`` as a comparable value, exception included;
- ``touch``: a write that gives one dict of a module a new version and changes nothing else;
- ``subprocess_env``: the environment for a child Python that imports this checkout;
- ``needs_transformers``: a mark for tests of zoo models built with transformers (which
  has no wheels for free-threaded CPython; such tests skip where it is not installed);
- module tree builders: random trees with sharing, ``None`` entries, frozen parts and raw
  ``_parameters`` / ``_modules`` entries, and deep chains.
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pyparams

__all__ = [
    "FUNCTIONS",
    "FUZZ_LONG",
    "LAZY_FUNCTIONS",
    "PREFIXES",
    "REPO",
    "TORCH",
    "argument_combinations",
    "assert_conforms",
    "assert_same_items",
    "build_chain",
    "build_random_tree",
    "call_kwargs",
    "cpu_and_cuda",
    "devices",
    "drive",
    "every_call",
    "fuzz_settings",
    "lockstep_with_a_change",
    "needs_transformers",
    "outcome",
    "refcounts",
    "reference",
    "run_pyparams",
    "same_item",
    "same_items",
    "seeded_tree",
    "step",
    "subprocess_env",
    "torch_iterator",
    "touch",
]

REPO = Path(pyparams.__file__).resolve().parent.parent

# The state machines' profiles: quick (CI, derandomized) unless PYPARAMS_FUZZ=long.
FUZZ_LONG = os.environ.get("PYPARAMS_FUZZ", "quick") == "long"


def fuzz_settings(*, quick: tuple[int, int], long: tuple[int, int]) -> Any:
    """Hypothesis settings for a state machine: (programs, steps) per profile.

    ``PYPARAMS_FUZZ_EXAMPLES`` overrides the number of programs.
    """
    from hypothesis import HealthCheck, settings

    examples, steps = long if FUZZ_LONG else quick
    return settings(
        max_examples=int(os.environ.get("PYPARAMS_FUZZ_EXAMPLES", examples)),
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not FUZZ_LONG,
    )


def refcounts(objects: Iterable[object], *, clear_type_cache: bool = True) -> list[int]:
    """The reference counts of ``objects``, after a collection and with CPython's type
    attribute cache emptied: that cache holds a reference to each name it looked up (a
    module's key, after ``add_module``'s ``hasattr(self, name)``) until another lookup takes
    its slot, a count that moves with whatever else runs. A test that counts no names may
    keep the cache (``clear_type_cache=False``): on CPython 3.10 emptying it also voids
    every class's version tag (``PyType_Modified(object)``), so a replay after it meets a
    changed class and goes live."""
    gc.collect()
    if clear_type_cache:
        _clear_type_cache()
    return [sys.getrefcount(o) for o in objects]


# 3.13 deprecates sys._clear_type_cache() for sys._clear_internal_caches(), which empties
# the type cache too.
_clear_type_cache = getattr(sys, "_clear_internal_caches", None) or sys._clear_type_cache


def subprocess_env(pythonpath: Sequence[str | Path] = (REPO,), **extra: str) -> dict[str, str]:
    """This process's environment for a child Python, importing from ``pythonpath`` only."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra)
    return env


def run_python(
    code: str, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -c code *args`` in a child (:func:`subprocess_env`, plus ``env``), as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
    )


needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)


def cpu_and_cuda() -> tuple[object, ...]:
    """``"cpu"`` and ``"cuda"``; the CUDA case is marked ``needs_cuda`` (skipped without CUDA)."""
    return ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))


def devices() -> tuple[object, ...]:
    """:func:`cpu_and_cuda` plus the ``meta`` device (structure without storage)."""
    return (*cpu_and_cuda(), "meta")


# --------------------------------------------------------------------------------------
# The reference: what torch yields, through torch's methods bound on the module, so that
# an override anywhere in the tree runs exactly as it does for ``module.parameters()``.
# The one table every suite draws from; each entry is lazy (a generator) so that
# mutation and requires_grad toggles interleave with it as they do with torch.
# --------------------------------------------------------------------------------------

FUNCTIONS: tuple[str, ...] = (
    "parameters",
    "trainable_parameters",
    "named_parameters",
    "named_trainable_parameters",
    "parameter_list",
    "buffers",
    "named_buffers",
    "modules",
    "named_modules",
)
LAZY_FUNCTIONS: tuple[str, ...] = tuple(f for f in FUNCTIONS if f != "parameter_list")
# torch's methods a walk may reach that a module class (or instance) can override.
OVERRIDABLE_METHODS: tuple[str, ...] = (
    "parameters",
    "named_parameters",
    "buffers",
    "named_buffers",
    "_named_members",
    "modules",
    "named_modules",
)

PREFIXES: tuple[str, ...] = ("", "root", "a.b")


# Each passes on only the arguments its caller passed: an override with defaults of its
# own tells `m.parameters()` from `m.parameters(recurse=True)`, and so must pyparams.


def _torch_parameters(m: nn.Module, **kw: Any) -> Iterator[nn.Parameter]:
    # torch's parameters() has no remove_duplicate argument: anything but True (an object
    # with __bool__ included, asked as named_parameters asks it) walks named_parameters.
    if kw.get("remove_duplicate", True) is True:
        return m.parameters(**{k: v for k, v in kw.items() if k != "remove_duplicate"})
    return (p for _, p in m.named_parameters(**kw))


def _torch_trainable(m: nn.Module, **kw: Any) -> Iterator[nn.Parameter]:
    return (p for p in _torch_parameters(m, **kw) if p.requires_grad)


def _torch_named_trainable(m: nn.Module, **kw: Any) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in m.named_parameters(**kw) if p.requires_grad)


def _torch_parameter_list(m: nn.Module, *, trainable: bool = False, **kw: Any) -> list:
    source = _torch_trainable if trainable else _torch_parameters
    return list(source(m, **kw))


def _torch_buffers(m: nn.Module, **kw: Any) -> Iterator[torch.Tensor]:
    if kw.get("remove_duplicate", True) is True:  # as _torch_parameters
        return m.buffers(**{k: v for k, v in kw.items() if k != "remove_duplicate"})
    return (b for _, b in m.named_buffers(**kw))


TORCH: dict[str, Callable[..., Iterable]] = {
    "parameters": _torch_parameters,
    "trainable_parameters": _torch_trainable,
    "named_parameters": lambda m, **kw: m.named_parameters(**kw),
    "named_trainable_parameters": _torch_named_trainable,
    "parameter_list": _torch_parameter_list,
    "buffers": _torch_buffers,
    "named_buffers": lambda m, **kw: m.named_buffers(**kw),
    "modules": lambda m, **kw: m.modules(**kw),
    "named_modules": lambda m, **kw: m.named_modules(**kw),
}


def torch_iterator(function: str, module: nn.Module, **kwargs: Any) -> Iterable:
    """torch's lazy counterpart of ``pyparams.<function>(module, **kwargs)`` (a list for
    ``parameter_list``)."""
    return TORCH[function](module, **kwargs)


def walk_in_mode(mode: str, function: str, module: object, **kwargs: Any) -> Iterable:
    """``pyparams.<function>`` in mode "pyparams", else torch's methods (patched when the
    caller's context is)."""
    if mode == "pyparams":
        return getattr(pyparams, function)(module, **kwargs)
    return torch_iterator(function, module, **kwargs)


def reference(function: str, module: nn.Module, **kwargs: Any) -> list:
    """What torch yields for ``pyparams.<function>(module, **kwargs)``, as a list."""
    return list(torch_iterator(function, module, **kwargs))


def run_pyparams(function: str, module: nn.Module, **kwargs: Any) -> list:
    """``pyparams.<function>(module, **kwargs)``, consumed into a list."""
    result = getattr(pyparams, function)(module, **kwargs)
    if function == "parameter_list":
        assert type(result) is list, f"parameter_list returned {type(result).__name__}"
        return result
    if isinstance(result, list):  # only what an override of the very method returned
        overridden = getattr(type(module), function, None) is not getattr(nn.Module, function, None)
        assert overridden, f"{function} must be lazy, returned a list"
    return list(result)


def argument_combinations(function: str) -> list[dict[str, Any]]:
    """Every keyword combination ``function`` accepts (prefix x recurse x remove_duplicate)."""
    named = function.startswith("named_")
    axes: dict[str, tuple[Any, ...]] = {}
    if named:
        axes["prefix"] = PREFIXES
    if function == "parameter_list":
        axes["trainable"] = (False, True)
    if function not in ("modules", "named_modules"):
        axes["recurse"] = (True, False)
    axes["remove_duplicate"] = (True, False)
    if function == "named_modules":
        # A set would be filled by the first walk; test_conformance gives each walk its own.
        axes["memo"] = (None,)
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def call_kwargs(function: str, **candidates: Any) -> dict[str, Any]:
    """The ``candidates`` that ``pyparams.<function>`` takes (no prefix for unnamed ones...)."""
    accepted = inspect.signature(getattr(pyparams, function)).parameters
    return {k: v for k, v in candidates.items() if k in accepted}


def every_call() -> list[tuple[str, dict[str, Any]]]:
    """(function, kwargs) for every function and every argument combination."""
    return [(f, kw) for f in FUNCTIONS for kw in argument_combinations(f)]


def _describe(item: object) -> str:
    if isinstance(item, tuple) and len(item) == 2:
        return f"({item[0]!r}, {_describe(item[1])})"
    if isinstance(item, torch.Tensor):
        shape = tuple(item.shape) if not _is_uninitialized(item) else "uninitialized"
        return f"<{type(item).__name__} {shape} id={id(item):#x}>"
    return f"<{type(item).__name__} id={id(item):#x}>"


def _is_uninitialized(item: object) -> bool:
    return isinstance(item, nn.parameter.UninitializedTensorMixin)


def same_item(actual: object, expected: object) -> bool:
    """The same object (``is``); for a pair, an equal str name and the same object."""
    if isinstance(expected, tuple):
        return (
            isinstance(actual, tuple)
            and len(actual) == len(expected) == 2
            and type(actual[0]) is str
            and actual[0] == expected[0]
            and actual[1] is expected[1]
        )
    return actual is expected


def same_items(actual: Iterable[object], expected: Iterable[object]) -> bool:
    """True for the same objects (``is``) in the same order; for pairs, equal str names too."""
    actual = list(actual)
    expected = list(expected)
    return len(actual) == len(expected) and all(map(same_item, actual, expected))


def assert_same_items(
    actual: Iterable[object], expected: Iterable[object], context: str = ""
) -> None:
    """Assert the same objects (``is``) in the same order; for pairs, equal names too."""
    actual = list(actual)
    expected = list(expected)
    if same_items(actual, expected):
        return
    lines = [f"{context}: pyparams yielded {len(actual)} items, torch {len(expected)}"]
    for index in range(max(len(actual), len(expected))):
        a = _describe(actual[index]) if index < len(actual) else "-"
        e = _describe(expected[index]) if index < len(expected) else "-"
        ok = index < min(len(actual), len(expected)) and same_item(actual[index], expected[index])
        lines.append(f"  {'   ' if ok else '>>>'} [{index}] pyparams {a}  torch {e}")
        if len(lines) > 60:
            lines.append("  ...")
            break
    raise AssertionError("\n".join(lines))


def assert_conforms(
    module: nn.Module, calls: Iterable[tuple[str, dict[str, Any]]] | None = None, context: str = ""
) -> None:
    """pyparams equals the torch reference for every (function, kwargs) in ``calls``."""
    for function, kwargs in calls if calls is not None else every_call():
        expected = reference(function, module, **kwargs)
        actual = run_pyparams(function, module, **kwargs)
        assert_same_items(actual, expected, f"{context} pyparams.{function}(**{kwargs})")


def outcome(thunk: Callable[[], Iterable[object]]) -> tuple[str, Any]:
    """``("ok", list(thunk()))``, or ``("raise", error)``: the exception is compared too."""
    try:
        return ("ok", list(thunk()))
    except Exception as error:  # noqa: BLE001 - the exception is what is compared
        return ("raise", error)


def step(iterator: Iterator[object]) -> tuple[str, Any]:
    """One ``next()``: ``("item", value)``, ``("stop", None)`` or ``("raise", error)``."""
    try:
        return ("item", next(iterator))
    except StopIteration:
        return ("stop", None)
    except Exception as error:  # noqa: BLE001 - the exception is what is compared
        return ("raise", error)


def called(call: Callable[[], object]) -> tuple[str, Any]:
    """``call()`` reported as ``step`` reports a step (a ``send``, ``throw`` or ``close``;
    close's None is its "item"), a ``GeneratorExit`` raised by it included."""
    try:
        return ("item", call())
    except StopIteration:
        return ("stop", None)
    except BaseException as error:  # noqa: BLE001 - GeneratorExit is compared too
        return ("raise", error)


def lockstep_with_a_change(
    ours: Iterator[object],
    theirs: Iterator[object],
    at: int,
    change: Callable[[], None],
    context: str = "",
    limit: int = 10_000,
) -> str:
    """Step pyparams' iterator and torch's in turn over one tree, calling ``change()``
    once, right after step ``at``; both must then make the same steps: the same items
    (``is``, names), the end at the same step, or the same exception and message.
    Returns how torch's ended: ``"stop"``, ``"raise"`` (or ``"item"`` past ``limit``).
    ``context`` names the case in a failure's message."""
    log_ours: list[tuple[str, Any]] = []
    log_theirs: list[tuple[str, Any]] = []
    for index in range(limit):
        a, b = step(ours), step(theirs)
        log_ours.append(a)
        log_theirs.append(b)
        if index == at:
            change()
        if a[0] != "item" or b[0] != "item":
            break
    context = f"{context} change after step {at}".lstrip()
    assert [kind for kind, _ in log_ours] == [kind for kind, _ in log_theirs], context
    for (kind, a), (_, b) in zip(log_ours, log_theirs, strict=True):
        if kind == "item":
            assert same_item(a, b), context
        elif kind == "raise":
            assert (type(a), str(a)) == (type(b), str(b)), context
    return log_theirs[-1][0]


def drive(
    iterator: Iterator[object], actions: dict[int, Callable[[], None]], limit: int = 10_000
) -> tuple[list[object], type[BaseException] | None, str]:
    """Consume ``iterator``, calling ``actions[i]()`` right after item ``i`` is produced.

    Returns the items, and the type and message of the exception that ended it (if any).
    The same script run on torch's generator and on pyparams' iterator gives the same
    interleaving of mutations and reads.
    """
    items: list[object] = []
    try:
        for item in iterator:
            items.append(item)
            action = actions.get(len(items) - 1)
            if action is not None:
                action()
            if len(items) >= limit:
                break
    except Exception as error:  # noqa: BLE001 - the exception is part of what is compared
        return items, type(error), str(error)
    return items, None, ""


def touch(module: nn.Module, which: str) -> None:
    """A write that gives one dict of ``module`` a new version and changes nothing else."""
    if which == "__dict__":
        module.training = module.training
        return
    mapping = getattr(module, which)
    if mapping:
        key = next(iter(mapping))
        mapping[key] = mapping[key]
    else:
        mapping["touched"] = None
        del mapping["touched"]


# --------------------------------------------------------------------------------------
# Tree builders
# --------------------------------------------------------------------------------------

Chooser = Callable[[int, int], int]  # choose(lo, hi) -> an int in [lo, hi]


def _param(choose: Chooser, device: str) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(choose(1, 3), device=device))
    if choose(0, 3) == 0:  # frozen part
        p.requires_grad_(False)
    return p


def build_random_tree(
    choose: Chooser, device: str = "cpu", max_depth: int = 3, max_fanout: int = 3
) -> nn.Module:
    """A random module tree driven by ``choose(lo, hi)``.

    ``choose`` may be ``random.Random(seed).randint`` or a hypothesis draw. The tree has
    tied parameters and buffers, shared submodules (only finished subtrees are shared, so
    there is no cycle), ``None`` entries, frozen parameters, entries written straight into
    ``_parameters`` / ``_buffers`` / ``_modules``, and containers.
    """
    param_pool: list[nn.Parameter] = []
    buffer_pool: list[torch.Tensor] = []
    module_pool: list[nn.Module] = []
    counter = itertools.count()

    def new_param() -> nn.Parameter:
        if param_pool and choose(0, 3) == 0:
            return param_pool[choose(0, len(param_pool) - 1)]  # tied
        p = _param(choose, device)
        param_pool.append(p)
        return p

    def new_buffer() -> torch.Tensor:
        if buffer_pool and choose(0, 3) == 0:
            return buffer_pool[choose(0, len(buffer_pool) - 1)]  # shared buffer
        b = torch.zeros(choose(1, 2), device=device)
        buffer_pool.append(b)
        return b

    def fill_members(module: nn.Module) -> None:
        for _ in range(choose(0, 3)):
            name = f"p{next(counter)}"
            how = choose(0, 4)
            if how == 0:
                module.register_parameter(name, None)  # None entry
            elif how == 1:
                module._parameters[name] = new_param()  # raw entry, no register_parameter
            else:
                module.register_parameter(name, new_param())
        for _ in range(choose(0, 2)):
            name = f"b{next(counter)}"
            how = choose(0, 4)
            if how == 0:
                module.register_buffer(name, None)
            elif how == 1:
                module._buffers[name] = new_buffer()
            else:
                module.register_buffer(name, new_buffer(), persistent=bool(choose(0, 1)))

    def make(depth: int) -> nn.Module:
        kind = choose(0, 6)
        if kind == 1:
            module: nn.Module = nn.ParameterList([new_param() for _ in range(choose(0, 3))])
        elif kind == 2:
            entries = {f"k{next(counter)}": new_param() for _ in range(choose(0, 2))}
            module = nn.ParameterDict(entries)
        elif kind == 3:
            module = nn.Sequential()
        elif kind == 4:
            module = nn.ModuleDict()
        elif kind == 5:
            module = nn.ModuleList()
        elif kind == 6:
            module = nn.Linear(choose(1, 2), 1, bias=bool(choose(0, 1)), device=device)
            if choose(0, 2) == 0:
                module.requires_grad_(False)
        else:
            module = nn.Module()
        if kind in (0, 6):
            fill_members(module)
        if depth < max_depth:
            for _ in range(choose(1 if depth == 0 else 0, max_fanout)):
                name = f"m{next(counter)}"
                how = choose(0, 5)
                if how == 0:
                    module._modules[name] = None  # None entry
                    continue
                if how == 1 and module_pool:
                    child = module_pool[choose(0, len(module_pool) - 1)]  # shared submodule
                else:
                    child = make(depth + 1)
                if how == 2:
                    module._modules[name] = child  # raw entry, no add_module
                else:
                    module.add_module(name, child)
        module_pool.append(module)
        return module

    return make(0)


def seeded_tree(seed: int, device: str = "cpu", **kwargs: Any) -> nn.Module:
    """:func:`build_random_tree` driven by ``random.Random(seed)``."""
    return build_random_tree(random.Random(seed).randint, device=device, **kwargs)


class TiedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(3)
        self.proj = nn.Linear(3, 3)
        self.register_buffer("steps", torch.zeros(1))


def small_tied_model() -> nn.Module:
    """Three blocks, one in a ModuleList: a shared submodule, a tied and a frozen parameter."""
    shared = nn.Linear(3, 3)
    net = nn.Sequential(TiedBlock(), nn.ModuleList([TiedBlock(), shared]), TiedBlock())
    net[2].tied = shared  # a shared submodule
    net[0].proj.weight = net[2].proj.weight  # a tied parameter
    net[1][0].proj.bias.requires_grad_(False)
    return net


def build_chain(depth: int, device: str = "cpu") -> nn.Module:
    """``depth`` nested modules, each with a parameter and a buffer; written via ``_modules``."""
    root = nn.Module()
    current = root
    for _ in range(depth):
        child = nn.Module()
        child._parameters["w"] = nn.Parameter(torch.zeros(1, device=device))
        child._buffers["b"] = torch.zeros(1, device=device)
        current._modules["c"] = child
        current = child
    return root
