"""Where torch breaks, pyparams holds: depth, cycles, mutation, deletion, bad input, leaks.

Where torch has defined behaviour (mutation mid-iteration, cycles with remove_duplicate=True)
the reference is still torch's own generator, driven through the same interleaving.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    FUNCTIONS,
    LAZY_FUNCTIONS,
    REPO,
    argument_combinations,
    assert_conforms,
    assert_same_items,
    build_chain,
    devices,
    drive,
    every_call,
    lockstep_with_a_change,
    refcounts,
    reference,
    run_pyparams,
    run_python,
    seeded_tree,
    small_tied_model,
    step,
    subprocess_env,
    torch_iterator,
)

DEPTH = 5000


def _call(function: str, module: object, **kwargs):
    return getattr(pyparams, function)(module, **kwargs)


# ------------------------------------------------------------------------------- depth


def _chain_expectation(root: nn.Module, function: str, kwargs: dict) -> list:
    """What torch's algorithm yields on a chain, computed without recursion.

    A chain has no sharing, so remove_duplicate does not matter; the walk is root, then
    each module's own entries before its single child.
    """
    prefix = kwargs.get("prefix", "")
    recurse = kwargs.get("recurse", True)
    nodes, names = [root], [prefix]
    while recurse and "c" in nodes[-1]._modules:
        nodes.append(nodes[-1]._modules["c"])
        names.append(names[-1] + ("." if names[-1] else "") + "c")
    if function in ("modules", "named_modules"):
        return list(zip(names, nodes, strict=True)) if function == "named_modules" else nodes
    attribute = "_buffers" if "buffers" in function else "_parameters"
    pairs = [
        (n + ("." if n else "") + k, v)
        for n, m in zip(names, nodes, strict=True)
        for k, v in getattr(m, attribute).items()
    ]
    if "trainable" in function or kwargs.get("trainable"):
        pairs = [(n, v) for n, v in pairs if v.requires_grad]
    return pairs if function.startswith("named_") else [v for _, v in pairs]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("function", FUNCTIONS)
def test_depth_5000_chain_works_where_torch_raises_recursion_error(
    function: str, device: str
) -> None:
    root = build_chain(DEPTH, device)
    root._modules["c"]._modules["c"]._parameters["w"].requires_grad_(False)
    # The reference algorithm itself works on a shallow chain (it is checked against torch)...
    shallow = build_chain(50, device)
    shallow._modules["c"]._parameters["w"].requires_grad_(False)
    for kwargs in argument_combinations(function):
        assert_same_items(
            _chain_expectation(shallow, function, kwargs),
            reference(function, shallow, **kwargs),
            f"chain model of {function}",
        )
    # ... torch cannot walk the deep one ...
    with pytest.raises(RecursionError):
        reference(function, root)
    # ... pyparams can, with every argument combination.
    for kwargs in argument_combinations(function):
        actual = run_pyparams(function, root, **kwargs)
        expected = _chain_expectation(root, function, kwargs)
        assert_same_items(actual, expected, f"{function}(**{kwargs})")


_NESTED_OVERRIDES = """
import sys
import pyparams
from torch import nn

class Wrapper(nn.Sequential):
    # Hands its subtree to a walk of its own, which the walk above it iterates.
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        return super().named_modules(prefix=prefix, remove_duplicate=remove_duplicate)

m = nn.Linear(1, 1)
for _ in range(20_000):
    m = Wrapper(m)
if sys.argv[1] == "patched":
    pyparams.patch()
walk = pyparams.parameters(m) if sys.argv[1] == "pyparams" else m.parameters()
try:
    list(walk)
except RecursionError as error:
    print("RecursionError:", error)
"""


@pytest.mark.parametrize("how", ["torch", "pyparams", "patched"])
def test_walks_nested_through_overrides_without_end_raise_recursion_error(how: str) -> None:
    # 20,000 walks nested in one another through overrides: torch nests generator frames
    # and raises RecursionError. Patched, every level is a native walk iterating the next
    # one; uncounted, they exhausted the C stack (SIGSEGV). In a child: it may crash.
    done = run_python(_NESTED_OVERRIDES, how, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("RecursionError: maximum recursion depth exceeded")


# ------------------------------------------------------------------------------ cycles


def _cycle() -> tuple[nn.Module, nn.Module]:
    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    a.register_buffer("ab", torch.zeros(1))
    a._modules["child"] = b
    b._modules["child"] = a
    return a, b


CYCLE_FUNCTIONS = (
    "parameters",
    "named_parameters",
    "trainable_parameters",
    "buffers",
    "named_buffers",
    "modules",
    "named_modules",
    "parameter_list",
)


@pytest.mark.parametrize("function", CYCLE_FUNCTIONS)
def test_cycle_without_dedup_raises_a_clear_runtime_error(function: str) -> None:
    a, _ = _cycle()
    with pytest.raises(RecursionError):  # torch recurses until the interpreter stops it
        reference(function, a, remove_duplicate=False)
    with pytest.raises(RuntimeError, match="cycle") as info:
        run_pyparams(function, a, remove_duplicate=False)
    assert not isinstance(info.value, RecursionError)
    assert "Linear" in str(info.value)  # names what loops


@pytest.mark.parametrize("function", FUNCTIONS)
def test_cycle_with_dedup_matches_torch(function: str) -> None:
    a, b = _cycle()
    b._modules["self"] = b  # a self loop too
    assert_conforms(
        a, [(function, kw) for kw in argument_combinations(function) if kw["remove_duplicate"]]
    )


def test_iterator_is_exhausted_after_an_error() -> None:
    a, _ = _cycle()
    for function in ("parameters", "named_modules", "buffers"):
        iterator = _call(function, a, remove_duplicate=False)
        with pytest.raises(RuntimeError):
            for _ in iterator:
                pass
        with pytest.raises(StopIteration):  # like a generator after it raised
            next(iterator)
        assert list(iterator) == []


# ----------------------------------------------------------------- mutation mid-iteration


def _mutation_model() -> nn.Module:
    root = nn.Module()
    root.register_parameter("r0", nn.Parameter(torch.zeros(1)))
    root.register_parameter("r1", nn.Parameter(torch.zeros(1)))
    root.register_buffer("rb", torch.zeros(1))
    root.a = nn.Linear(1, 1)
    root.a.register_buffer("ab", torch.zeros(1))
    root.a.inner = nn.Linear(1, 1)
    root.b = nn.Linear(1, 1)
    return root


def _param() -> nn.Parameter:
    return nn.Parameter(torch.zeros(1))


# Each scenario: (step after which to act, action on a fresh model). The same scenario is
# run against torch's generator and pyparams' iterator; items, error type and message must
# agree.
SCENARIOS: dict[str, tuple[int, Callable[[nn.Module], None]]] = {
    "add_own_parameter": (0, lambda m: m.register_parameter("new", _param())),
    "delete_own_parameter": (0, lambda m: m._parameters.pop("r1")),
    "add_parameter_after_last": (1, lambda m: m.register_parameter("new", _param())),
    "replace_value_same_key": (0, lambda m: m._parameters.__setitem__("r1", _param())),
    "swap_keys_same_size": (
        0,
        lambda m: (m._parameters.pop("r1"), m._parameters.__setitem__("z", _param())),
    ),
    "add_child_before_children_start": (1, lambda m: m.add_module("c", nn.Linear(1, 1))),
    "add_sibling_while_in_child": (2, lambda m: m.add_module("c", nn.Linear(1, 1))),
    "delete_sibling_while_in_child": (2, lambda m: m._modules.pop("b")),
    "add_child_to_current_leaf": (2, lambda m: m.a.add_module("extra", nn.Linear(1, 1))),
    "add_buffer": (0, lambda m: m.register_buffer("nb", torch.zeros(1))),
    "clear_child_dict": (3, lambda m: m.a._modules.clear()),
    "set_child_none": (2, lambda m: m._modules.__setitem__("b", None)),
}


@pytest.mark.parametrize(
    "function",
    [
        "named_parameters",
        "named_buffers",
        "named_modules",
        "parameters",
        "modules",
        "named_trainable_parameters",
    ],
)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_mutation_mid_iteration_behaves_like_torch(scenario: str, function: str) -> None:
    step, action = SCENARIOS[scenario]

    def run(make_iterator: Callable[[nn.Module], object]) -> tuple[list, object, str]:
        model = _mutation_model()
        before = {
            id(v): n
            for kind in ("named_parameters", "named_buffers", "named_modules")
            for n, v in reference(kind, model, remove_duplicate=False)
        }
        items, error, message = drive(make_iterator(model), {step: lambda: action(model)})
        # Compare across two fresh models by names (objects are not shared between runs).
        labels = [
            x[0] if isinstance(x, tuple) else before.get(id(x), f"new {type(x).__name__}")
            for x in items
        ]
        return labels, error, message

    expected = run(lambda m: torch_iterator(function, m))
    actual = run(lambda m: _call(function, m))
    assert actual == expected


class _NoticedKey(str):
    """A dict key whose release is noticed: it notes the step, then grows the tree."""

    def __del__(self) -> None:
        self.noticed.append(self.steps[0])
        self.grow()


def _walk_dropping_a_dict(
    function: str, ours: bool, which: str, owner_index: int, at: int, grown: str
) -> tuple[list[tuple[str, object]], list[int]]:
    """A walk of ``small_tied_model()`` (and an empty module after it) whose module
    ``owner_index`` has its ``which`` dict replaced, after ``at`` items, by a copy
    without one key: the old dict, and the key, die when the last walk frame reading it
    lets go. The key's ``__del__`` then grows the tree: a parameter and a buffer on the
    last block's last module (``grown="last"``), or a child of the root (``"root"``:
    a walk that let go as it entered the empty module must still see it). Returns the
    steps, each item named by where it sits in the tree, and the steps at which the key
    died."""
    net = small_tied_model()
    modules = list(net.modules())
    net.add_module("empty", nn.Module())
    labels: dict[int, str] = {}
    for kind in ("modules", "parameters", "buffers"):
        for name, item in getattr(net, f"named_{kind}")(remove_duplicate=False):
            labels.setdefault(id(item), f"{kind}:{name}")
    steps, noticed = [0], []

    def grow() -> None:
        if grown == "root":
            net._modules["late"] = nn.Identity()
            labels[id(net._modules["late"])] = "late module"
            return
        late = nn.Parameter(torch.zeros(1))
        labels[id(late)] = "late parameter"
        modules[-1]._parameters["late"] = late
        modules[-1]._buffers["late"] = torch.zeros(1)
        labels[id(modules[-1]._buffers["late"])] = "late buffer"

    # The key goes first, an empty entry last: a walk's frame keeps the last key it
    # read in a local (torch's generators do), but none keeps the first.
    owner = list(net.modules())[owner_index]
    key = _NoticedKey("noticed")
    key.steps, key.noticed, key.grow = steps, noticed, grow
    mapping = getattr(owner, which)
    entries = list(mapping.items())
    mapping.clear()
    mapping[key] = None
    mapping.update(entries)
    mapping["last"] = None
    del key, mapping, entries
    if ours:
        for _ in range(3):
            run_pyparams(function, net)
    walk = getattr(pyparams, function)(net) if ours else torch_iterator(function, net)

    def label(item: object) -> object:
        if isinstance(item, tuple):
            return (item[0], labels[id(item[1])])
        return labels.get(id(item), item)

    log = []
    while True:
        if steps[0] == at:
            kept = {k: v for k, v in getattr(owner, which).items() if type(k) is str}
            owner.__dict__[which] = kept
        kind, item = step(walk)
        log.append((kind, label(item) if kind == "item" else repr(item)))
        if kind != "item":
            return log, noticed
        steps[0] += 1


@pytest.mark.parametrize("grown", ["last", "root"])
@pytest.mark.parametrize("which", ["_modules", "_parameters", "_buffers"])
def test_a_dict_only_the_replay_still_holds_is_freed_where_torch_frees_it(
    which: str, grown: str
) -> None:
    # A walk holds each dict it reads as torch's generators do: a children dict until its
    # frame is left, the member dict started last until the next is read. A dict whose
    # module's was replaced meanwhile dies when the walk lets go, which may run code: it
    # runs where it runs under torch, and the walk sees what it did as torch's does. (A
    # replay, which holds them too, goes live there.)
    later = 0  # runs where the key outlived its dict's replacement: a frame held it
    for function in (
        "parameters",
        "named_parameters",
        "buffers",
        "modules",
        "named_modules",
        "trainable_parameters",
    ):
        size = len(reference(function, small_tied_model()))
        for owner_index in range(len(list(small_tied_model().modules())) + 1):
            for at in range(size + 1):
                expected = _walk_dropping_a_dict(function, False, which, owner_index, at, grown)
                before = pyparams.cache_info()
                got = _walk_dropping_a_dict(function, True, which, owner_index, at, grown)
                replayed = pyparams.cache_info().hits > before.hits
                assert replayed == pyparams.cache_info().enabled
                assert got == expected, (function, owner_index, at)
                later += bool(expected[1]) and expected[1][0] > at
    if which == "_modules":  # a frame holds its children dict until its subtree is done
        assert later > 0


def test_mutation_error_then_exhausted() -> None:
    model = _mutation_model()
    iterator = pyparams.parameters(model)
    next(iterator)
    model.register_parameter("new", _param())
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        next(iterator)
    with pytest.raises(StopIteration):
        next(iterator)


def _new_entry(which: str) -> object:
    if which == "_parameters":
        return _param()
    if which == "_buffers":
        return torch.zeros(1)
    return nn.Linear(1, 1)


@pytest.mark.parametrize("warm_walks", [0, 1, 2], ids=["live", "recording", "replaying"])
@pytest.mark.parametrize("which", ["_parameters", "_buffers", "_modules"])
def test_keys_replaced_at_the_same_size_raise_where_torch_raises(
    which: str, warm_walks: int
) -> None:
    # A dict whose first key is deleted and a new one added keeps its size, so no
    # "changed size": an iteration past its first entry then meets one entry more than
    # it started with, and Python's dict iteration raises "dictionary keys changed during
    # iteration" there (before it: the new key is simply walked). Every step, every
    # module, in lockstep with torch on the same tree; live, recording and replaying
    # walks (a replay hands over to the live walk with the entries it has left).
    checked = 0
    for function in LAZY_FUNCTIONS:
        # Every walk reads _modules; parameters and buffers walks their own member dict.
        members = next((m for m in ("_parameters", "_buffers") if m[1:] in function), None)
        if which not in ("_modules", members):
            continue
        size = len(reference(function, small_tied_model()))
        owners = len(list(small_tied_model().modules()))
        for owner_index in range(owners):
            for at in range(size + 1):
                net = small_tied_model()
                owner = list(net.modules())[owner_index]
                mapping = getattr(owner, which)
                if not mapping:
                    continue
                for _ in range(warm_walks):
                    run_pyparams(function, net)

                def replace_first_key(mapping=mapping) -> None:
                    del mapping[next(iter(mapping))]
                    mapping["replacement"] = _new_entry(which)

                ours, theirs = getattr(pyparams, function)(net), torch_iterator(function, net)
                ended = lockstep_with_a_change(
                    ours, theirs, at, replace_first_key, f"{function} module {owner_index}:"
                )
                checked += ended == "raise"
    assert checked > 0  # some walks met the new entry past their start


class _ReentrantDict(dict):
    """A `_modules` mapping whose items() advances the iterator that is walking it."""

    iterator = None

    def items(self):
        next(self.iterator)
        return super().items()


def test_reentrant_next_raises_like_a_running_generator() -> None:
    def run(make_iterator) -> tuple[type | None, str]:
        root = nn.Linear(1, 1)
        root._modules = _ReentrantDict(child=nn.Linear(1, 1))
        iterator = make_iterator(root)
        root._modules.iterator = iterator
        items, error, _ = drive(iterator, {})
        return len(items), error

    assert run(lambda m: pyparams.modules(m)) == run(lambda m: torch_iterator("modules", m))


# ---------------------------------------------------------------------- model deletion


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f != "parameter_list"])
def test_model_deleted_mid_iteration(function: str, device: str) -> None:
    model = seeded_tree(5, device, max_depth=4)
    model.tail = nn.Sequential(nn.Linear(1, 1, device=device), nn.BatchNorm1d(1, device=device))
    expected = reference(function, model)
    iterator = _call(function, model)
    first = next(iterator)
    model_ref = weakref.ref(model)
    tail_ref = weakref.ref(model.tail)
    del model
    gc.collect()
    rest = list(iterator)  # the iterator held what it needed
    assert_same_items([first, *rest], expected, function)
    del iterator, first, rest, expected
    gc.collect()
    assert model_ref() is None and tail_ref() is None  # and let go of it afterwards


def test_child_detached_and_dropped_mid_iteration() -> None:
    model = _mutation_model()
    iterator = pyparams.named_parameters(model)
    while next(iterator)[0] != "a.inner.weight":
        pass
    inner_ref = weakref.ref(model.a.inner)
    model.a._modules["inner"] = None  # same size: no error, the walk keeps its frame
    gc.collect()
    assert inner_ref() is not None
    expected_rest = ["a.inner.bias", "b.weight", "b.bias"]
    assert [n for n, _ in iterator] == expected_rest
    gc.collect()
    assert inner_ref() is None


# ---------------------------------------------------------------------- weak references


@pytest.mark.parametrize("steps", [0, 1, None])  # never stepped, mid-walk, exhausted
@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
def test_an_iterator_takes_weak_references_as_torchs_generator_does(
    function: str, steps: int | None
) -> None:
    model = small_tied_model()
    for _ in range(3):  # live, recording, replaying
        list(_call(function, model))
    for make in (lambda: torch_iterator(function, model), lambda: _call(function, model)):
        iterator = make()
        died: list[object] = []
        ref = weakref.ref(iterator, died.append)
        assert ref() is iterator
        if steps is None:
            list(iterator)
        else:
            for _ in range(steps):
                next(iterator)
        del iterator
        assert ref() is None and died == [ref]  # freed at once, its callback called once


def test_a_weakref_callback_that_walks_and_changes_the_tree_while_the_iterator_dies() -> None:
    model = small_tied_model()
    for _ in range(3):
        list(pyparams.named_parameters(model))
    seen: list[list[str]] = []

    def callback(_: object) -> None:  # user code, run while the iterator is being freed
        seen.append([name for name, _ in pyparams.named_parameters(model)])
        model.register_parameter("added", nn.Parameter(torch.zeros(1)))

    watched = refcounts([model, model._parameters, *model.parameters()])
    iterator = pyparams.named_parameters(model)
    next(iterator)
    ref = weakref.ref(iterator, callback)
    del iterator
    assert ref() is None
    assert seen == [[name for name, _ in model.named_parameters() if name != "added"]]
    assert_conforms(model, [("named_parameters", {})])  # no record trusted after the write
    del model._parameters["added"]
    assert refcounts([model, model._parameters, *model.parameters()]) == watched


# ---------------------------------------------------------------------------- bad input


class _NoSuperInit(nn.Module):
    def __init__(self) -> None:  # never calls super().__init__()
        self.x = 1


BAD_MODULES = {"None": None, "int": 3, "tensor": torch.zeros(1), "class": nn.Linear}


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("bad", list(BAD_MODULES))
def test_bad_module_raises_type_error_naming_the_type(function: str, bad: str) -> None:
    value = BAD_MODULES[bad]
    with pytest.raises(TypeError, match=type(value).__name__):
        result = _call(function, value)
        list(result)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_module_without_super_init_names_the_problem(function: str) -> None:
    with pytest.raises(AttributeError) as torch_error:
        reference(function, _NoSuperInit())
    with pytest.raises(AttributeError, match="_NoSuperInit") as info:
        run_pyparams(function, _NoSuperInit())
    assert "super().__init__()" in str(info.value)  # the fix, not just the symptom
    assert torch_error.type is info.type


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f.startswith("named_")])
@pytest.mark.parametrize("prefix", [3, None, b"root"])
def test_non_str_prefix_raises_type_error_naming_the_type(function: str, prefix: object) -> None:
    with pytest.raises(TypeError, match=type(prefix).__name__):
        list(_call(function, nn.Linear(1, 1), prefix=prefix))


def test_native_entry_points_name_each_bad_argument() -> None:
    from pyparams import _C

    lin = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        _C.walk(lin, _C.PARAMETERS)
    with pytest.raises(TypeError, match="missing required keyword-only argument: 'kind'"):
        _C.walk(lin, named=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'recursive'"):
        _C.walk(lin, kind=_C.PARAMETERS, recursive=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'prefix'"):
        _C.collect(lin, kind=_C.PARAMETERS, prefix="")
    with pytest.raises(ValueError, match="kind must be"):
        _C.walk(lin, kind=7)
    # Keywords that are equal strings but not the interned ones are found by value.
    spelled = {"".join(["ki", "nd"]): _C.PARAMETERS, "".join(["na", "med"]): True}
    assert [name for name, _ in _C.walk(lin, **spelled)] == ["weight", "bias"]
    assert _C.collect(lin, **{"".join(["ki", "nd"]): _C.BUFFERS}) == []


def test_non_module_child_raises_attribute_error_like_torch() -> None:
    for function in FUNCTIONS:
        root = nn.Sequential(nn.Linear(1, 1))
        root._modules["bad"] = 3
        kwargs = {} if function in ("modules", "named_modules") else {"recurse": True}
        with pytest.raises(AttributeError) as torch_error:
            reference(function, root, **kwargs)
        with pytest.raises(AttributeError) as info:
            run_pyparams(function, root, **kwargs)
        assert str(info.value) == str(torch_error.value)


class _YieldsANonModule(nn.Linear):
    # An override whose entries reach the walk's member read: torch reads `_parameters`
    # of what it yields, and fails on the int with its own message (no hint about
    # super().__init__(), which is no fix for an int).
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        return [("", self), ("bad", 3)]


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if "modules" not in f])
def test_a_non_module_from_a_named_modules_override_raises_torchs_error(function: str) -> None:
    with pytest.raises(AttributeError) as torch_error:
        reference(function, _YieldsANonModule(1, 1))
    for _ in range(3):  # live, then where a record would be kept
        with pytest.raises(AttributeError) as info:
            run_pyparams(function, _YieldsANonModule(1, 1))
        assert str(info.value) == str(torch_error.value)


# ------------------------------------------------------------------------------- pairs

NAMED_FUNCTIONS = [f for f in LAZY_FUNCTIONS if f.startswith("named_")]


@pytest.mark.parametrize("function", NAMED_FUNCTIONS)
def test_pairs_unpacked_one_at_a_time_are_torchs_in_every_walk_state(function: str) -> None:
    # A pair the consumer lets go is refilled for the next item (as dict.items() does):
    # a for loop that unpacks each one sees torch's items, walk after walk (live,
    # recording, replaying while the names are built, replaying with them kept).
    net = small_tied_model()
    for kwargs in argument_combinations(function):
        expected = reference(function, net, **kwargs)
        for _ in range(4):
            got = [(name, value) for name, value in _call(function, net, **kwargs)]
            assert_same_items(got, expected, f"{function} {kwargs}")


@pytest.mark.parametrize("function", NAMED_FUNCTIONS)
def test_a_pair_the_consumer_keeps_never_changes(function: str) -> None:
    net = small_tied_model()
    expected = reference(function, net)
    for _ in range(4):
        iterator = _call(function, net)
        kept = [next(iterator), next(iterator)]
        snapshot = [(name, value) for name, value in kept]
        rest = [(name, value) for name, value in iterator]  # each let go at once
        assert all(
            a is b
            for pair, copy in zip(kept, snapshot, strict=True)
            for a, b in zip(pair, copy, strict=True)
        )
        assert_same_items([*kept, *rest], expected, function)


def test_a_refilled_pair_is_tracked_by_the_collector_again() -> None:
    # The collector untracks a tuple whose items it cannot reach through (a str and an
    # int): refilled with a Parameter, the pair must be tracked again, or a cycle
    # through it would never be collected.
    net = nn.Module()
    net._parameters["count"] = 5  # a direct write: torch yields it as it is
    net.weight = _param()
    iterator = pyparams.named_parameters(net)
    assert next(iterator) == ("count", 5)
    gc.collect()
    second = next(iterator)
    assert second == ("weight", net.weight)
    assert gc.is_tracked(second)


@pytest.mark.parametrize("function", NAMED_FUNCTIONS)
def test_the_last_pair_is_let_go_when_the_walk_ends(function: str) -> None:
    net = small_tied_model()
    last = reference(function, net)[-1][1]
    gc.collect()
    before = sys.getrefcount(last)
    for _ in range(4):
        iterator = _call(function, net)
        for _pair in iterator:
            pass
        del _pair
        assert sys.getrefcount(last) == before  # exhausted: nothing of it is held
        iterator = _call(function, net)
        for _ in range(2):
            next(iterator)
        del iterator
        assert sys.getrefcount(last) == before


# ------------------------------------------------------------------------------- leaks


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_reference_leaks(function: str, device: str) -> None:
    root = nn.Sequential(nn.Linear(2, 2, device=device), nn.BatchNorm1d(2, device=device))
    root[0].register_buffer("shared", root[1].running_mean)
    root.add_module("again", root[0])
    param, child = root[0].weight, root[0]
    watched = [
        param,
        child,
        root,
        child._parameters,
        child._modules,
        root._modules,
        root._parameters,
        root[1]._buffers,
        root[1].running_mean,
    ]
    calls = argument_combinations(function)
    before = refcounts(watched)
    for _ in range(300):
        for kwargs in calls:
            run_pyparams(function, root, **kwargs)  # full
            if function != "parameter_list":
                iterator = _call(function, root, **kwargs)
                next(iterator, None)  # abandoned after one item
                del iterator
    assert refcounts(watched) == before


def test_no_reference_leaks_on_error_paths() -> None:
    a, b = _cycle()
    watched = [a, b, a._modules, b._modules, a.weight, a._parameters]
    before = refcounts(watched)
    for _ in range(1000):
        for function in ("parameters", "named_modules", "named_buffers"):
            with pytest.raises(RuntimeError):
                list(_call(function, a, remove_duplicate=False))
        with pytest.raises(TypeError):
            pyparams.named_parameters(a, prefix=3)
        model = _mutation_model()
        iterator = pyparams.named_parameters(model)
        next(iterator)
        model.register_parameter("x", _param())
        with pytest.raises(RuntimeError):
            next(iterator)
    assert refcounts(watched) == before


def test_dedup_set_memory_is_visible_to_tracemalloc() -> None:
    """The pointer set is allocated through PyMem_Raw*, so tracemalloc counts it."""
    count = 20_000
    root = nn.Module()
    for i in range(count):
        root._parameters[f"p{i}"] = nn.Parameter(torch.empty(0, device="meta"))
    tracemalloc.start()
    try:
        iterator = pyparams.parameters(root)
        for _ in range(count - 1):
            next(iterator)
        with_set, _ = tracemalloc.get_traced_memory()
        del iterator
        without_set, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert with_set - without_set >= count * 8  # at least one pointer per parameter


# ------------------------------------------------------------------------------ signals


# Each script builds a tree and defines call(name); this part times each call out.
_INTERRUPT_EACH = """
import signal, sys

signal.signal(signal.SIGALRM, signal.default_int_handler)  # behaves as Ctrl-C
for name in sys.argv[1:]:
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        call(name)
    except KeyboardInterrupt:
        print("interrupted", name, flush=True)
    else:
        print("finished?!", name, flush=True)
"""

ENDLESS_DAG_SCRIPT = textwrap.dedent(
    """
    import collections
    import torch, pyparams
    from torch import nn

    # A DAG of 6 levels x 100 edges: with remove_duplicate=False the walk visits 100**6
    # modules (no cycle, so no error): effectively endless unless a signal stops it.
    level = nn.Module()
    for _ in range(6):
        parent = nn.Module()
        for i in range(100):
            parent._modules[str(i)] = level
        level = parent

    def call(name):
        walk = getattr(pyparams, name)(level, remove_duplicate=False)
        if name == "parameter_list":
            return
        if "modules" in name:  # every step yields: drained in C, no bytecode between
            collections.deque(walk, maxlen=0)
        else:
            next(walk, None)
    """
)

ENDLESS_MEMBERS_SCRIPT = textwrap.dedent(
    """
    import itertools
    import torch, pyparams
    from torch import nn

    # One module whose _parameters.items() is a native iterator that never ends, of one
    # frozen parameter: a trainable walk skips it (and a deduplicating one, once seen)
    # without ever leaving the module, so only a check between members sees a signal.
    # (torch's generator loops the same, in Python, where Ctrl-C is seen.)
    class EndlessMembers(dict):
        def items(self):
            return itertools.repeat(("w", frozen))

    frozen = nn.Parameter(torch.zeros(1), requires_grad=False)
    module = nn.Module()
    module._parameters = EndlessMembers()

    def call(name):
        walk = getattr(pyparams, name)(module)
        if name != "parameter_list":
            next(walk, None)
    """
)


def _assert_each_call_is_interrupted(tmp_path: Path, script: str, functions: list[str]) -> None:
    path = tmp_path / "interrupt.py"
    path.write_text(script + _INTERRUPT_EACH)
    try:
        done = subprocess.run(
            [sys.executable, str(path), *functions],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
            env=subprocess_env(),
        )
    except subprocess.TimeoutExpired as error:  # a walk that ignores signals never returns
        pytest.fail(f"the native walk did not react to SIGINT: {error.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [f"interrupted {f}" for f in functions]


def test_long_native_walk_is_interruptible(tmp_path: Path) -> None:
    functions = ["parameters", "trainable_parameters", "buffers", "parameter_list"]
    _assert_each_call_is_interrupted(
        tmp_path, ENDLESS_DAG_SCRIPT, [*functions, "modules", "named_modules"]
    )


def test_a_walk_that_never_leaves_one_module_is_interruptible(tmp_path: Path) -> None:
    _assert_each_call_is_interrupted(
        tmp_path, ENDLESS_MEMBERS_SCRIPT, ["trainable_parameters", "parameter_list"]
    )


# --------------------------------------------------------------------- devices / memory


@pytest.mark.parametrize("device", devices())
def test_walks_never_copy_tensors(device: str) -> None:
    model = nn.Sequential(nn.Linear(64, 64, device=device), nn.BatchNorm1d(64, device=device))
    if device == "cuda":
        torch.cuda.synchronize()
        allocated = torch.cuda.memory_allocated()
    for function, kwargs in every_call():
        for item in run_pyparams(function, model, **kwargs):
            value = item[1] if isinstance(item, tuple) else item
            if isinstance(value, torch.Tensor):
                assert value.device.type == device
    if device == "cuda":
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == allocated
    assert_conforms(model, context=device)
