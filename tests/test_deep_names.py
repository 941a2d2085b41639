"""Names deep in a tree: torch's names, in memory linear in the depth.

A named walk names every module, as torch does. Where a module's name grows past 200
characters (and is made of exact str only), its frame, and a replay's path entry, keep
the key alone and the name is built where it is used: the module's item, its members'
names. These tests walk trees whose names cross that length at every kind of step and
compare with torch where its recursion reaches; past it, with the names built here.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    assert_same_items,
    call_kwargs,
    drive,
    refcounts,
    reference,
    run_pyparams,
    same_items,
    torch_iterator,
    touch,
)

# The length past which a name is built, not kept (kMaxKeptNameLength in the extension).
KEPT = 200
NAMED = ("named_parameters", "named_trainable_parameters", "named_buffers", "named_modules")
# Keys of every width CPython stores (1, 2 and 4 bytes a character), the empty key
# (torch's `"" + key` rule), digits as ModuleList makes, and long ones.
KEYS = ("layer", "", "é", "блок", "\U0001d518x", "0", "a_rather_long_key_of_a_block")
# A long prefix puts every child past the length at once; one of 4-byte characters
# makes every name wide.
PREFIXES = ("", "model", "p" * (KEPT + 10), "\U0001d518")


def _param(requires_grad: bool = True) -> nn.Parameter:
    return nn.Parameter(torch.zeros(1), requires_grad=requires_grad)


def deep_tree(depth: int = 90) -> nn.Module:
    """A chain of ``depth`` modules under keys of every kind, names crossing KEPT part-way.

    Each level: a parameter (every third one frozen) and a buffer; on some, a leaf sibling
    with a member of its own, a ``None`` child, a parameter entry that is ``None``, or a
    module met again further down (a duplicate, skipped with remove_duplicate)."""
    root = nn.Module()
    current = root
    shared = nn.Linear(1, 1)
    for level in range(depth):
        child = nn.Module()
        child._parameters["w"] = _param(requires_grad=level % 3 != 0)
        child._buffers[KEYS[level % len(KEYS)] or "b"] = torch.zeros(1)
        if level % 4 == 1:
            side = nn.Module()
            side._parameters["side"] = _param()
            side._buffers["side_b"] = torch.zeros(1)
            current._modules["side"] = side
        if level % 5 == 2:
            current._modules["gap"] = None
            current._parameters["none"] = None
        if level in (depth // 3, depth - 2):
            current._modules["shared"] = shared  # a duplicate the second time
        current._modules[KEYS[level % len(KEYS)]] = child
        current = child
    current._modules["tail"] = nn.Linear(1, 1)
    return root


def chain_names(depth: int, key: str = "c") -> list[str]:
    """The names torch gives the modules of a chain of ``depth`` under ``key``."""
    return [".".join([key] * level) for level in range(depth + 1)]


def calls(function: str) -> list[dict[str, object]]:
    return [
        call_kwargs(function, prefix=prefix, recurse=recurse, remove_duplicate=dedup)
        for prefix in PREFIXES
        for recurse in (True, False)
        for dedup in (True, False)
    ]


def test_the_tree_has_names_on_both_sides_of_the_kept_length() -> None:
    lengths = [len(name) for name, _ in deep_tree().named_modules()]
    assert min(lengths) == 0
    assert sum(length <= KEPT for length in lengths) > 10
    assert sum(length > KEPT for length in lengths) > 10
    assert max(lengths) > 2 * KEPT


@pytest.mark.parametrize("function", NAMED)
def test_deep_names_match_torch_cold_recorded_and_replayed(function: str) -> None:
    model = deep_tree()
    for kwargs in calls(function):
        expected = reference(function, model, **kwargs)
        pyparams.cache_clear()
        before = pyparams.cache_info()
        for walk in ("cold", "recording", "replay"):
            assert_same_items(
                run_pyparams(function, model, **kwargs), expected, f"{walk} {function}{kwargs}"
            )
        if before.enabled:  # (conftest.py runs this module early: see _RECORDED_WALK_MODULES)
            assert pyparams.cache_info().hits == before.hits + 1, kwargs  # the third replayed


@pytest.mark.parametrize("function", ["named_parameters", "named_modules"])
@pytest.mark.parametrize("which", ["_parameters", "_modules"])
def test_a_replay_handed_over_deep_goes_on_with_torchs_names(function: str, which: str) -> None:
    # The replay meets a changed dict at a module past the kept length (its path
    # entries keep keys alone): the live walk rebuilds its frames from them and names
    # what follows as torch does.
    model = deep_tree(60)
    modules = [m for m in model.modules() if getattr(m, which)]
    touched = modules[len(modules) // 2 :: 7]
    for prefix in ("", "model"):
        expected = reference(function, model, prefix=prefix)
        for at in range(0, len(expected) + 1, 3):
            for module in touched:
                for _ in range(2):
                    run_pyparams(function, model, prefix=prefix)
                walk = getattr(pyparams, function)(model, prefix=prefix)
                got = [next(walk) for _ in range(at)]
                touch(module, which)
                got += list(walk)
                assert same_items(got, expected), (prefix, at)


def _rename_deep(model: nn.Module) -> Callable[[], None]:
    """An action that renames a module past the kept length, and adds a parameter below."""

    def rename() -> None:
        parent = model
        for _ in range(40):
            parent = parent._modules["level"]
        child = parent._modules.pop("level")
        parent._modules["renamed_" + "x" * 30] = child
        child._parameters["late"] = _param()

    return rename


def _named_chain(depth: int) -> nn.Module:
    root = current = nn.Module()
    for _ in range(depth):
        child = nn.Module()
        child._parameters["w"] = _param()
        current._modules["level"] = child
        current = child
    return root


@pytest.mark.parametrize("function", ["named_parameters", "named_modules"])
@pytest.mark.parametrize("warm_walks", [0, 2])
def test_a_deep_rename_mid_walk_is_named_as_torch_names_it(function: str, warm_walks: int) -> None:
    # A module ahead of the walk, past the kept length, renamed after each step in
    # turn: the names built from kept keys are those torch builds from the dicts then.
    for at in range(0, 60, 4):
        results = []
        for side in ("torch", "pyparams"):
            model = _named_chain(60)
            if side == "pyparams":
                for _ in range(warm_walks):
                    run_pyparams(function, model)
                walk: Iterator = getattr(pyparams, function)(model)
            else:
                walk = iter(torch_iterator(function, model))
            items, error, message = drive(walk, {at: _rename_deep(model)})
            results.append(([(name, type(value)) for name, value in items], error, message))
        assert results[0] == results[1], at


def _leaf_chain(depth: int) -> nn.Module:
    """``depth`` nested modules under the key "c", a parameter and a buffer at the bottom."""
    root = current = nn.Module()
    for _ in range(depth):
        child = nn.Module()
        current._modules["c"] = child
        current = child
    current._parameters["w"] = _param()
    current._buffers["b"] = torch.zeros(1)
    return root


@pytest.mark.parametrize("function", NAMED)
def test_a_deep_named_walk_holds_memory_linear_in_its_depth(function: str) -> None:
    # Past torch's recursion limit, so the names are checked by construction. Keeping
    # every level's name would hold ~depth**2 characters (400 MB at this depth); a frame
    # keeps its key instead.
    depth = 20_000
    model = _leaf_chain(depth)
    deepest = ".".join(["c"] * depth)
    suffix = {"named_modules": "", "named_buffers": ".b"}.get(function, ".w")
    pyparams.cache_clear()
    for walk in ("cold", "recording", "replay"):
        tracemalloc.start()
        try:
            iterator = getattr(pyparams, function)(model)
            if function == "named_modules":
                # every module's name, each dropped after its check, as a loop would
                for level, (name, _) in enumerate(iterator):
                    assert len(name) == max(2 * level - 1, 0), (walk, level)
                assert name == deepest, walk
                del name
            else:
                assert [name for name, _ in iterator] == [deepest + suffix], walk
            peak = tracemalloc.get_traced_memory()[1]
            if walk == "cold":
                # An exhausted walk, still alive, holds nothing, nor does one closed
                # deep in the tree: the deep name built last (2 bytes a level) goes too.
                held = tracemalloc.get_traced_memory()[0]
                assert held < depth, f"{held:,} bytes held by an exhausted walk"
                pyparams.cache_clear()  # (live again: a record would be the cache's bytes)
                closed = getattr(pyparams, function)(model)
                for _ in range(depth if function == "named_modules" else 1):
                    next(closed)
                closed.close()
                held = tracemalloc.get_traced_memory()[0]
                assert held < depth, f"{held:,} bytes held by a closed walk"
                pyparams.cache_clear()
                list(getattr(pyparams, function)(model))  # the walk the next one records
            del iterator
        finally:
            tracemalloc.stop()
        assert peak < 2_000 * depth, f"{walk}: {peak:,} bytes at depth {depth:,}"


def test_deep_named_modules_names_are_torchs_past_its_recursion_limit() -> None:
    depth = 3_000
    model = _leaf_chain(depth)
    with pytest.raises(RecursionError):
        list(model.named_modules())
    expected = chain_names(depth)
    for walk in ("cold", "recording", "replay"):
        got = [name for name, _ in pyparams.named_modules(model)]
        assert got == expected, walk


def _long_first_key_tree(first: str) -> nn.Module:
    """root -first-> a -(a key longer than KEPT)-> b -"x"-> c -""-> d: the deep names start
    from an empty name (the prefix "" and, with first="", the empty key too)."""
    root = nn.Module()
    names = [first, "k" * (KEPT + 5), "x", ""]
    current = root
    for level, key in enumerate(names):
        child = nn.Module()
        if level >= 2:
            child._parameters["w"] = _param()
            child._buffers[""] = torch.zeros(1)
        current._modules[key] = child
        current = child
    return root


@pytest.mark.parametrize("first", ["", "a"])
@pytest.mark.parametrize("function", NAMED)
def test_names_that_start_empty_follow_torchs_dot_rule(function: str, first: str) -> None:
    # torch adds "." only after a name that is not empty: "" + "" + key is the key itself.
    model = _long_first_key_tree(first)
    for kwargs in calls(function):
        expected = reference(function, model, **kwargs)
        pyparams.cache_clear()
        for walk in ("cold", "recording", "replay"):
            assert_same_items(
                run_pyparams(function, model, **kwargs), expected, f"{walk} {function}{kwargs}"
            )


def test_a_long_prefix_names_every_module_from_it() -> None:
    model = deep_tree(10)
    prefix = "q" * (KEPT + 1)
    got = list(pyparams.named_parameters(model, prefix=prefix))
    assert all(name.startswith(prefix + ".") for name, _ in got)
    assert_same_items(got, reference("named_parameters", model, prefix=prefix), "long prefix")


class _Prefixing(nn.Module):
    """An override of named_modules deep in a tree: torch hands it the full prefix."""

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        self.prefixes.append(prefix)
        yield from super().named_modules(memo, prefix + "_seen", remove_duplicate)


def _chain_with_override(depth: int, at: int) -> tuple[nn.Module, _Prefixing]:
    root = current = nn.Module()
    override = None
    for level in range(depth):
        child = _Prefixing() if level == at else nn.Module()
        if level == at:
            child.prefixes = []
            override = child
        child._parameters["w"] = _param()
        current._modules["level_" + str(level % 3)] = child
        current = child
    assert override is not None
    return root, override


def _shape(items: list) -> list:
    """Names and types: the two trees under comparison are built apart."""
    return [(item[0], type(item[1])) if isinstance(item, tuple) else type(item) for item in items]


@pytest.mark.parametrize("function", [*NAMED, "parameters", "modules"])
def test_a_deep_override_gets_torchs_prefix(function: str) -> None:
    # Past the kept length the override's module has no name kept: the prefix it is
    # handed is built then, the string torch hands it.
    for prefix in ("", "model"):
        kwargs = call_kwargs(function, prefix=prefix)
        theirs, their_override = _chain_with_override(60, 45)
        expected = _shape(reference(function, theirs, **kwargs))
        assert len(their_override.prefixes[-1]) > KEPT
        ours, our_override = _chain_with_override(60, 45)
        for walk in ("cold", "recording", "replay"):
            assert _shape(run_pyparams(function, ours, **kwargs)) == expected, (walk, prefix)
            assert our_override.prefixes[-1] == their_override.prefixes[-1], (walk, prefix)


def _every_key_and_module(model: nn.Module) -> list[object]:
    found: list[object] = []
    for module in model.modules():
        found.append(module)
        found.extend(module._modules)
        found.extend(module._parameters)
    return found


@pytest.mark.parametrize("tree", ["deep", "long_first_key"])
def test_deep_named_walks_leave_every_reference_count_as_they_found_it(tree: str) -> None:
    # Frames and path entries hold keys, the walk one deep name (the key itself where
    # every name above it is empty): all let go at the walk's end, whether it ran out,
    # was abandoned deep in the tree, or was handed over from a replay.
    model = deep_tree(60) if tree == "deep" else _long_first_key_tree("")
    modules = list(model.modules())
    watched = _every_key_and_module(model)
    before = refcounts(watched)
    for function in NAMED:
        pyparams.cache_clear()
        for _ in range(3):  # live, recording, replaying
            run_pyparams(function, model)
            walk = getattr(pyparams, function)(model)
            for _ in range(len(reference(function, model)) * 3 // 4):
                next(walk)
            del walk  # abandoned
            walk = getattr(pyparams, function)(model)
            next(walk)
            touch(modules[len(modules) * 2 // 3], "_parameters")  # a hand-over further down
            list(walk)
    pyparams.cache_clear()
    assert refcounts(watched) == before
