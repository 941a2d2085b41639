"""The patch's life cycle: never on import, idempotent, nestable, exact restore, foreign
patches detected and refused, subclass overrides kept, safe while other threads walk."""

from __future__ import annotations

import inspect
import pickle
import threading
import typing
import warnings

import pytest
import torch
from torch import nn

import pyparams
from common_utils import assert_same_items, run_python
from pyparams import _patch

NAMES = _patch.NAMES
# torch's own methods: importing pyparams never patches, so these are torch's.
ORIGINAL = {name: nn.Module.__dict__[name] for name in NAMES}


@pytest.fixture(autouse=True)
def _restore_module_class():
    """Every test leaves nn.Module exactly as torch defines it, whatever it did."""
    yield
    for name in NAMES:
        setattr(nn.Module, name, ORIGINAL[name])


def _installed() -> dict[str, object]:
    return {name: nn.Module.__dict__[name] for name in NAMES}


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Sequential(nn.Linear(3, 1)))
    model.tied = model[0]
    return model


def test_import_does_not_patch() -> None:
    code = (
        "import torch, pyparams\n"
        "own = all(getattr(torch.nn.Module, n).__module__ == 'torch.nn.modules.module'\n"
        "          for n in ('parameters', 'named_parameters', 'buffers', 'named_buffers',\n"
        "                    'modules', 'named_modules', 'zero_grad'))\n"
        "print(own, pyparams.is_patched())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
    assert all(getattr(ORIGINAL[n], "__module__", None) == "torch.nn.modules.module" for n in NAMES)


def test_patch_installs_every_replacement_and_unpatch_restores_the_same_objects() -> None:
    assert not pyparams.is_patched()
    pyparams.patch()
    assert pyparams.is_patched()
    installed = _installed()
    assert all(installed[n] is not ORIGINAL[n] for n in NAMES)
    assert all(installed[n].__module__ == "pyparams._patch" for n in NAMES)
    pyparams.unpatch()
    assert not pyparams.is_patched()
    assert all(nn.Module.__dict__[n] is ORIGINAL[n] for n in NAMES)


def test_the_replacements_show_torchs_signatures_and_pickle_by_reference() -> None:
    expected = {n: (inspect.signature(f), typing.get_type_hints(f)) for n, f in ORIGINAL.items()}
    with pyparams.patched():
        for name in NAMES:
            function = getattr(nn.Module, name)
            assert function is not ORIGINAL[name]
            assert (inspect.signature(function), typing.get_type_hints(function)) == expected[name]
            # An unbound method pickles by reference: the replacement while the patch is on.
            assert pickle.loads(pickle.dumps(function)) is function


class _Duck:
    """No nn.Module: it borrows torch's walking methods, as wrappers and mocks do."""

    def __init__(self) -> None:
        self.inner = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        return self.inner.named_parameters(prefix, recurse, remove_duplicate)

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self.inner.named_buffers(prefix, recurse, remove_duplicate)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        return self.inner.named_modules(memo, prefix, remove_duplicate)

    def parameters(self, recurse=True):
        return self.inner.parameters(recurse)


@pytest.mark.parametrize("name", NAMES)
def test_the_replacements_on_a_duck_type_run_as_torchs_own(name: str) -> None:
    # torch's own functions only call methods of self: on an object that is no Module
    # the replacements do the same (pyparams' public functions raise TypeError there).
    duck = _Duck()

    def run() -> tuple:
        for p in duck.inner.parameters():
            p.grad = torch.ones_like(p)
        try:
            result = getattr(nn.Module, name)(duck)
            items = None if result is None else list(result)
        except AttributeError as error:  # torch's own reach into Module internals
            items = repr(error)
        return items, [p.grad is None for p in duck.inner.parameters()]

    expected = run()
    with pyparams.patched():
        actual = run()
    assert actual[1] == expected[1]
    if expected[0] is None or isinstance(expected[0], str):  # zero_grad, or torch's error
        assert actual[0] == expected[0]
    else:
        assert expected[0]
        assert_same_items(actual[0], expected[0], f"patched nn.Module.{name}(duck)")


def test_patch_and_unpatch_are_idempotent() -> None:
    pyparams.patch()
    first = _installed()
    pyparams.patch()
    assert _installed() == first and pyparams.is_patched()
    pyparams.unpatch()
    pyparams.unpatch()
    assert _installed() == ORIGINAL and not pyparams.is_patched()


def test_patched_context_nests_and_only_the_outermost_restores() -> None:
    with pyparams.patched():
        with pyparams.patched():
            assert pyparams.is_patched()
        assert pyparams.is_patched()  # the inner block found it patched: leaves it
    assert _installed() == ORIGINAL


def test_patched_context_keeps_a_patch_made_before_it_and_restores_after_an_error() -> None:
    pyparams.patch()
    with pyparams.patched():
        pass
    assert pyparams.is_patched()
    pyparams.unpatch()
    with pytest.raises(ZeroDivisionError), pyparams.patched():
        1 / 0  # noqa: B018
    assert _installed() == ORIGINAL


def test_signatures_and_docstrings_are_torchs() -> None:
    with pyparams.patched():
        for name in NAMES:
            ours, theirs = nn.Module.__dict__[name], ORIGINAL[name]
            expected = inspect.signature(theirs).parameters
            actual = inspect.signature(ours).parameters
            assert [(p.name, p.kind, p.default) for p in actual.values()] == [
                (p.name, p.kind, p.default) for p in expected.values()
            ], name
            assert ours.__doc__ == theirs.__doc__ and ours.__name__ == theirs.__name__


def test_patched_methods_yield_torchs_objects() -> None:
    model = _model()
    calls = [
        ("parameters", {}),
        ("named_parameters", {"prefix": "p"}),
        ("buffers", {}),
        ("named_buffers", {}),
        ("modules", {}),
        ("named_modules", {"prefix": "m"}),
        ("named_parameters", {"remove_duplicate": False}),
    ]
    expected = [list(getattr(model, name)(**kw)) for name, kw in calls]
    with pyparams.patched():
        actual = [list(getattr(model, name)(**kw)) for name, kw in calls]
        # torch's own recursion state (a memo) keeps torch's walk, from there down.
        with_memo = list(model.named_modules(set(), "x"))
    for (name, kw), a, e in zip(calls, actual, expected, strict=True):
        assert_same_items(a, e, f"{name}({kw})")
    assert_same_items(with_memo, list(model.named_modules(set(), "x")), "named_modules(memo)")


def test_the_iterator_is_no_generator_as_readme_says() -> None:
    # README's limits: code that asks for a generator sees the difference, and torch's
    # clip_grad_norm_ does (its empty-generator warning).
    model = nn.ReLU()
    assert inspect.isgenerator(model.parameters())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert any("empty generator" in str(w.message) for w in caught)
    with pyparams.patched(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not inspect.isgenerator(model.parameters())
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert not any("empty generator" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["parameters", "zero_grad", "named_modules"])
def test_a_foreign_patch_made_before_is_refused_and_nothing_changes(name: str) -> None:
    def foreign(self, *args, **kwargs):  # another library's replacement
        return ORIGINAL[name](self, *args, **kwargs)

    setattr(nn.Module, name, foreign)
    with pytest.raises(RuntimeError, match=rf"nn\.Module\.{name} .*another library"):
        pyparams.patch()
    assert nn.Module.__dict__[name] is foreign
    assert all(nn.Module.__dict__[n] is ORIGINAL[n] for n in NAMES if n != name)
    assert not pyparams.is_patched()


@pytest.mark.parametrize("name", ["named_parameters", "zero_grad"])
def test_a_foreign_patch_made_in_between_is_never_clobbered(name: str) -> None:
    pyparams.patch()
    ours = nn.Module.__dict__[name]

    def foreign(self, *args, **kwargs):
        return ours(self, *args, **kwargs)

    setattr(nn.Module, name, foreign)
    with pytest.raises(RuntimeError, match=rf"nn\.Module\.{name} is now .*foreign"):
        pyparams.unpatch()
    assert nn.Module.__dict__[name] is foreign  # nothing restored, nothing dropped
    assert all(nn.Module.__dict__[n] is not ORIGINAL[n] for n in NAMES if n != name)
    setattr(nn.Module, name, ours)  # the other library undoes its patch ...
    pyparams.unpatch()  # ... and then pyparams restores torch's
    assert _installed() == ORIGINAL


@pytest.mark.parametrize("undo", [pyparams.unpatch, pyparams.patch])
def test_torchs_own_function_put_back_in_one_slot_is_no_foreign_patch(undo) -> None:
    # A library saved torch's zero_grad before the patch and restores it afterwards:
    # the mixed state is completed, either way, instead of refused for good.
    saved = nn.Module.zero_grad
    pyparams.patch()
    nn.Module.zero_grad = saved
    assert not pyparams.is_patched()
    undo()
    expected = ORIGINAL if undo is pyparams.unpatch else _patch._REPLACEMENTS
    assert _installed() == expected
    with pyparams.patched():
        assert pyparams.is_patched()
    assert _installed() == expected


class _OnlyWeights(nn.Module):
    """Overrides named_parameters and calls the base class's: no recursion, torch's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            if name.endswith("weight"):
                yield name, p


class _ReversedModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.ReLU()

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        return iter(list(super().named_modules(memo, prefix, remove_duplicate))[::-1])


@pytest.mark.parametrize("build", [_OnlyWeights, _ReversedModules])
def test_subclass_overrides_are_kept(build) -> None:
    model = nn.Sequential(build(), nn.Linear(2, 1))
    inner = model[0]
    probes = {
        "inner.parameters": lambda: list(inner.parameters()),
        "inner.named_parameters": lambda: list(inner.named_parameters()),
        "inner.modules": lambda: list(inner.modules()),
        "outer.named_modules": lambda: list(model.named_modules()),
        "outer.parameters": lambda: list(model.parameters()),
    }
    expected = {key: probe() for key, probe in probes.items()}
    with pyparams.patched():
        assert type(inner).__dict__.get("parameters") is None  # not replaced on the subclass
        for key, probe in probes.items():
            assert_same_items(probe(), expected[key], key)


def test_threads_walking_while_the_patch_is_toggled_see_torchs_answer() -> None:
    model = _model()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    expected = {
        "parameters": list(model.parameters()),
        "named_parameters": list(model.named_parameters()),
        "named_modules": list(model.named_modules()),
        "buffers": list(model.buffers()),
    }
    stop = threading.Event()
    failures: list[str] = []
    counts = [0]

    def reader() -> None:
        while not stop.is_set():
            for name, items in expected.items():
                got = list(getattr(model, name)())
                if len(got) != len(items) or any(
                    (g is not e) if not isinstance(e, tuple) else (g[0] != e[0] or g[1] is not e[1])
                    for g, e in zip(got, items, strict=False)
                ):
                    failures.append(name)
            model.zero_grad(set_to_none=False)
            counts[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(300):
            pyparams.patch()
            pyparams.unpatch()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert counts[0] > 0
    assert failures == []
    assert _installed() == ORIGINAL


def test_dynamo_captures_follow_the_patch() -> None:
    """torch._dynamo asks `is` against the named_parameters/named_buffers it captured."""
    from torch._dynamo import output_graph
    from torch._dynamo.variables import builder

    with pyparams.patched():
        for module in (output_graph, builder):
            assert module.og_module_named_parameters_fn_ptr is nn.Module.named_parameters
            assert module.og_module_named_buffers_fn_ptr is nn.Module.named_buffers
    for module in (output_graph, builder):
        assert module.og_module_named_parameters_fn_ptr is ORIGINAL["named_parameters"]
        assert module.og_module_named_buffers_fn_ptr is ORIGINAL["named_buffers"]
