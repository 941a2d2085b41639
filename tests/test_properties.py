"""Property tests: random module trees, every function and argument combination vs torch.

Hypothesis drives ``common_utils.build_random_tree`` one integer choice at a time, so a
failing tree shrinks to a small one. Trees have depth, fan-out, tied parameters and
buffers, shared submodules, ``None`` entries, frozen parts, raw ``_parameters`` /
``_buffers`` / ``_modules`` entries, and ParameterList / ParameterDict containers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import pyparams
from common_utils import (
    assert_conforms,
    assert_same_items,
    build_random_tree,
    drive,
    every_call,
    reference,
    run_pyparams,
    torch_iterator,
)

settings.register_profile(
    "pyparams-default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "pyparams-thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# HYPOTHESIS_PROFILE=pyparams-thorough for a longer search.
settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "pyparams-default"))


@st.composite
def module_trees(draw: st.DrawFn, max_depth: int = 3, max_fanout: int = 3) -> nn.Module:
    return build_random_tree(
        lambda lo, hi: draw(st.integers(lo, hi)),
        device="meta",
        max_depth=max_depth,
        max_fanout=max_fanout,
    )


@given(module_trees())
def test_every_function_matches_torch_on_random_trees(tree: nn.Module) -> None:
    assert_conforms(tree)


@given(module_trees(max_depth=5, max_fanout=2))
def test_deeper_random_trees(tree: nn.Module) -> None:
    assert_conforms(
        tree,
        [
            (f, kw)
            for f, kw in every_call()
            if kw.get("prefix", "root") == "root" and not kw.get("trainable")
        ],
    )


@given(module_trees(), st.data())
def test_partial_iteration_is_a_prefix_of_torch(tree: nn.Module, data: st.DataObject) -> None:
    """Taking k items then stopping gives torch's first k items (laziness keeps order)."""
    lazy_calls = [c for c in every_call() if c[0] != "parameter_list"]
    function, kwargs = data.draw(st.sampled_from(lazy_calls))
    expected = reference(function, tree, **kwargs)
    k = data.draw(st.integers(0, len(expected)))
    iterator = getattr(pyparams, function)(tree, **kwargs)
    taken = [next(iterator) for _ in range(k)]
    assert_same_items(taken, expected[:k], f"first {k} of {function}(**{kwargs})")


@given(module_trees(), st.data())
def test_requires_grad_toggled_mid_walk_matches_torch_filter(
    tree: nn.Module, data: st.DataObject
) -> None:
    """Flip requires_grad of random parameters after random steps, on torch and pyparams alike."""
    params = run_pyparams("parameters", tree, remove_duplicate=False)
    if not params:
        return
    remove_duplicate = data.draw(st.booleans())
    indices = st.integers(0, len(params) - 1)
    flips = data.draw(st.dictionaries(st.integers(0, 8), indices, max_size=4))

    def actions() -> dict:
        def flip(index: int):
            return lambda: params[index].requires_grad_(not params[index].requires_grad)

        return {step: flip(index) for step, index in flips.items()}

    initial = [p.requires_grad for p in params]
    function = "named_trainable_parameters"
    torch_gen = torch_iterator(function, tree, remove_duplicate=remove_duplicate)
    expected, expected_error, _ = drive(torch_gen, actions())
    for p, flag in zip(params, initial, strict=True):
        p.requires_grad_(flag)
    actual, error, _ = drive(
        getattr(pyparams, function)(tree, remove_duplicate=remove_duplicate), actions()
    )
    assert error is expected_error is None
    assert_same_items(actual, expected, f"flips {flips}")


@pytest.mark.parametrize("seed", range(3))
def test_random_trees_on_cpu_with_seeds(seed: int) -> None:
    """A few fixed trees with storage (the hypothesis trees live on ``meta``)."""
    import random

    tree = build_random_tree(random.Random(seed).randint, device="cpu", max_depth=4, max_fanout=3)
    assert_conforms(tree)
