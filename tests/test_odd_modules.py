"""Odd modules: each either matches torch or raises a clear error.

Covers subclasses overriding ``__getattr__`` / ``__setattr__`` / ``__getattribute__``,
member mappings replaced by an ``OrderedDict`` or another mapping, ``__slots__``
mixins, Tensor subclasses and ``__torch_function__`` parameters, DTensor
parameters (a single-process gloo group), objects whose ``__eq__`` / ``__hash__``
raise, and modules whose ``__dict__`` was tampered with.

The reference is always torch's own generator on the same object, compared with
``is`` and names; where torch fails only because it hashes a user object,
pyparams' identity semantics are asserted explicitly (the documented behaviour).
"""

from __future__ import annotations

import collections
import collections.abc
import gc
import weakref
from functools import partial

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    assert_same_items,
    every_call,
    outcome,
    reference,
    run_pyparams,
    same_items,
    torch_iterator,
)

# Every function, with and without remove_duplicate, named ones under a prefix.
CALLS = [
    (f, kw)
    for f, kw in every_call()
    if kw.get("prefix", "root") == "root" and kw.get("recurse", True)
]


def assert_matches_torch(m: nn.Module) -> None:
    """Each call gives torch's items, or raises the class of exception torch raises."""
    for function, kwargs in CALLS:
        label = f"{function}(**{kwargs})"
        a = outcome(partial(run_pyparams, function, m, **kwargs))
        b = outcome(partial(reference, function, m, **kwargs))
        assert a[0] == b[0], (label, a, b)
        if a[0] == "ok":
            assert same_items(a[1], b[1]), (label, a[1], b[1])
        else:
            assert type(a[1]) is type(b[1]), (label, a[1], b[1])


# ------------------------------------------------------------------ attributes
class GetattrOverride(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.w = nn.Parameter(torch.ones(1))

    def __getattr__(self, name):
        if name == "magic":
            return 42
        return super().__getattr__(name)


class SetattrOverride(nn.Module):
    def __setattr__(self, name, value):
        if isinstance(value, nn.Parameter):
            name = "renamed_" + name
        super().__setattr__(name, value)


class GetattributeRedirect(nn.Module):
    """``_parameters`` is served from another dict than the one in ``__dict__``."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "shadow", {"shadowed": nn.Parameter(torch.zeros(1))})
        self.__dict__["_parameters"]["real"] = nn.Parameter(torch.ones(1))

    def __getattribute__(self, name):
        if name == "_parameters":
            return object.__getattribute__(self, "shadow")
        return object.__getattribute__(self, name)


def test_getattr_and_setattr_overrides():
    m = GetattrOverride()
    assert_matches_torch(m)
    s = SetattrOverride()
    s.w = nn.Parameter(torch.ones(1))
    s.child = GetattrOverride()
    assert_matches_torch(nn.Sequential(s, m))


def test_getattribute_override_is_honoured_like_torch():
    m = GetattributeRedirect()
    assert [n for n, _ in reference("named_parameters", m)] == ["shadowed"]
    assert_matches_torch(nn.Sequential(m, m))


def test_a_class_property_is_never_read():
    """What a module is comes from its type, as in torch's walk: a ``__class__`` property
    (user code, which ``isinstance`` would run) is never read."""
    reads = []

    class Disguised(nn.Linear):
        @property
        def __class__(self):
            reads.append(1)
            return nn.Linear

    m = nn.Sequential(Disguised(1, 1), nn.Linear(1, 1))
    for attribute in ("_parameters", "_buffers"):  # not exact dicts: is it TorchScript?
        m[0].__dict__[attribute] = collections.OrderedDict(getattr(m[0], attribute))
    reads.clear()
    for function, kwargs in CALLS:
        run_pyparams(function, m, **kwargs)
    assert reads == []  # counted first: isinstance() in the comparison reads it
    assert_matches_torch(m)


def test_getattr_raising_for_member_dicts():
    class Broken(nn.Module):
        def __getattribute__(self, name):
            if name == "_modules":
                raise KeyError("boom")
            return object.__getattribute__(self, name)

    assert_matches_torch(nn.Sequential(nn.Linear(1, 1), Broken()))


# -------------------------------------------------------------------- mappings
class FrozenMapping(collections.abc.Mapping):
    def __init__(self, data):
        self.data = dict(data)

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


@pytest.mark.parametrize(
    "mapping",
    [collections.OrderedDict, FrozenMapping, dict],
    ids=["OrderedDict", "Mapping", "dict-copy"],
)
@pytest.mark.parametrize("which", ["_parameters", "_buffers", "_modules"])
def test_member_mapping_replaced(mapping, which):
    shared = nn.Linear(2, 2)
    m = nn.Sequential(shared, nn.BatchNorm1d(2), nn.Sequential(shared, nn.Linear(2, 2)))
    for module in m.modules():
        module.__dict__[which] = mapping(getattr(module, which))
    assert_matches_torch(m)


def test_ordered_dict_mutated_during_walk_raises_like_torch():
    m = nn.Linear(2, 2)
    m.__dict__["_parameters"] = collections.OrderedDict(m._parameters)
    for make in (
        partial(pyparams.named_parameters, m),
        partial(torch_iterator, "named_parameters", m),
    ):
        iterator = make()
        next(iterator)
        m._parameters["extra"] = nn.Parameter(torch.ones(1))
        with pytest.raises(RuntimeError):
            next(iterator)
        del m._parameters["extra"]


def test_mapping_whose_items_misbehave():
    class RaisingItems(FrozenMapping):
        def items(self):
            raise ValueError("items() failed")

    class BadPairs(FrozenMapping):
        def items(self):
            return iter([("a", nn.Parameter(torch.ones(1)), "extra")])

    class NotPairs(FrozenMapping):
        def items(self):
            return iter([7])

    class ShortPairs(FrozenMapping):
        def items(self):
            return iter([("a",)])

    m = nn.Linear(1, 1)
    m.__dict__["_parameters"] = RaisingItems({})
    assert_matches_torch(m)  # ValueError from both for parameters
    for broken in (BadPairs({}), NotPairs({}), ShortPairs({})):
        # torch's `for k, v in members` raises; the same error, word for word.
        m.__dict__["_parameters"] = broken
        with pytest.raises((TypeError, ValueError)) as torch_error:
            reference("named_parameters", m)
        with pytest.raises(type(torch_error.value)) as error:
            list(pyparams.named_parameters(m))
        assert str(error.value) == str(torch_error.value)


def test_mapping_whose_items_are_any_two_item_iterables():
    # torch unpacks each item as `k, v = item`: a list, a tuple subclass with its own
    # __iter__, a generator of two.
    class SwappedTuple(tuple):
        def __iter__(self):
            return iter((self[1], self[0]))

    class ListPairs(FrozenMapping):
        def items(self):
            return [[k, v] for k, v in self.data.items()]

    class OddPairs(FrozenMapping):
        def items(self):
            return [SwappedTuple((v, k)) for k, v in self.data.items()]

    class LazyPairs(FrozenMapping):
        def items(self):
            return ((x for x in (k, v)) for k, v in self.data.items())

    for pairs in (ListPairs, OddPairs, LazyPairs):
        m = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1))
        m[1].__dict__["_parameters"] = pairs(m[1]._parameters)
        m.__dict__["_modules"] = pairs(m._modules)
        assert_matches_torch(m)
        assert [n for n, _ in pyparams.named_parameters(m)] == [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
        ]


def test_mapping_items_that_mutate_the_tree():
    """items() that frees the walked children while the walk is between them."""
    holder = nn.Sequential(*[nn.Linear(1, 1) for _ in range(4)])

    class Vanishing(FrozenMapping):
        def items(self):
            for key in list(self.data):
                value = self.data.pop(key)
                gc.collect()
                yield key, value
                del value
                gc.collect()

    for module in list(holder.modules()):
        module.__dict__["_modules"] = Vanishing(module._modules)
    ours = [name for name, _ in pyparams.named_modules(holder)]
    assert ours == ["", "0", "1", "2", "3"]


# ------------------------------------------------------------------ __slots__
class SlotsMixin:
    __slots__ = ("extra",)


class WithSlotsMixin(SlotsMixin, nn.Module):
    def __init__(self):
        super().__init__()
        self.extra = "slot"
        self.w = nn.Parameter(torch.ones(1))
        self.sub = nn.Linear(1, 1)


class MemberSlot:
    __slots__ = ("_parameters",)


class ParametersInASlot(MemberSlot, nn.Module):
    """``_parameters`` lives in a slot, not in ``__dict__``."""

    def __init__(self):
        super().__init__()
        # Module.__setattr__ looks for _parameters in __dict__; register by hand.
        self._parameters["w"] = nn.Parameter(torch.ones(1))


def test_slots_mixins():
    a, b = WithSlotsMixin(), ParametersInASlot()
    assert "_parameters" not in b.__dict__
    assert_matches_torch(nn.Sequential(a, b, a))


# ------------------------------------------------------------- tensor subclasses
class CountingParameter(nn.Parameter):
    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class PlainSubclass(torch.Tensor):
    pass


class FlagProperty(nn.Parameter):
    """A Python-level requires_grad that disagrees with the C++ flag."""

    @property
    def requires_grad(self):
        return False


class RaisingFlag(nn.Parameter):
    @property
    def requires_grad(self):
        raise RuntimeError("no flag for you")


def test_tensor_subclass_and_torch_function_parameters():
    m = nn.Linear(2, 2)
    m.weight = CountingParameter(torch.zeros(2, 2))
    m._parameters["plain_sub"] = torch.zeros(1).as_subclass(PlainSubclass).requires_grad_()
    m._parameters["frozen_sub"] = CountingParameter(torch.zeros(1), requires_grad=False)
    m._parameters["lazy"] = nn.UninitializedParameter()
    CountingParameter.calls = 0
    assert_matches_torch(m)
    assert CountingParameter.calls > 0  # trainable reads went through __torch_function__


def test_python_level_requires_grad_is_read_like_torch():
    m = nn.Linear(2, 2)
    m.weight = FlagProperty(torch.zeros(2, 2))
    assert_matches_torch(m)


def test_requires_grad_that_raises():
    m = nn.Linear(2, 2)
    m.weight = RaisingFlag(torch.zeros(2, 2))
    assert_matches_torch(m)


def test_requires_grad_read_that_mutates_the_walked_dict():
    """A __torch_function__ that empties the dict being walked: RuntimeError, no crash."""
    m = nn.Module()

    class Saboteur(nn.Parameter):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            m._parameters.clear()
            gc.collect()
            return super().__torch_function__(func, types, args, kwargs or {})

    for make in (
        lambda: pyparams.parameter_list(m, trainable=True),
        lambda: list(pyparams.trainable_parameters(m)),
        lambda: reference("trainable_parameters", m),
    ):
        m._parameters.update({f"p{i}": Saboteur(torch.zeros(1)) for i in range(4)})
        with pytest.raises(RuntimeError, match="changed size"):
            make()


def test_reentrant_next_from_torch_function():
    """next() on the same iterator from inside its own walk: ValueError, like a generator."""
    m = nn.Module()
    holder: dict[str, object] = {}

    class Reenter(nn.Parameter):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") == "__get__":  # the requires_grad getter
                next(holder["it"])
            return super().__torch_function__(func, types, args, kwargs or {})

    m._parameters["a"] = Reenter(torch.zeros(1))
    m._parameters["b"] = Reenter(torch.zeros(1))
    errors = []
    for make in (
        lambda: pyparams.trainable_parameters(m),
        lambda: torch_iterator("trainable_parameters", m),
    ):
        holder["it"] = make()
        with pytest.raises(ValueError, match="already executing") as error:
            list(holder["it"])
        errors.append(type(error.value))
    assert errors[0] is errors[1]


# ---------------------------------------------------------------------- DTensor
def test_dtensor_parameters(gloo_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    for module in m:
        module.weight = nn.Parameter(distribute_tensor(module.weight.detach(), mesh, [Shard(0)]))
        module.bias = nn.Parameter(distribute_tensor(module.bias.detach(), mesh, [Replicate()]))
    m[1].bias.requires_grad_(False)
    assert type(m[0].weight.data).__name__ == "DTensor"
    assert_matches_torch(m)


# ------------------------------------------------------------- __eq__ / __hash__
# torch's memo sets hash every module and member (even with remove_duplicate=False):
# a class whose hash raises fails torch's walk, and pyparams' where torch's fails
# (tests/test_memo_hashes.py runs many more such classes).
class RaisingHashModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def __eq__(self, other):
        raise RuntimeError("__eq__ refused")

    def __hash__(self):
        raise RuntimeError("__hash__ refused")


class RaisingHashParameter(nn.Parameter):
    def __eq__(self, other):
        raise RuntimeError("__eq__ refused")

    def __hash__(self):
        raise RuntimeError("__hash__ refused")


def _same_outcome_as_torch(m: nn.Module, function: str, **kwargs: object) -> None:
    theirs = outcome(lambda: reference(function, m, **kwargs))
    ours = outcome(lambda: list(getattr(pyparams, function)(m, **kwargs)))
    if theirs[0] == "raise":
        assert ours[0] == "raise", (function, kwargs, ours)
        assert (type(ours[1]), str(ours[1])) == (type(theirs[1]), str(theirs[1]))
    else:
        assert ours[0] == "ok" and same_items(ours[1], theirs[1]), (function, kwargs)


def test_modules_whose_hash_raises_fail_where_torch_fails():
    shared = RaisingHashModule()
    m = nn.Sequential(shared, nn.Linear(1, 1), shared)
    with pytest.raises(RuntimeError, match="__hash__ refused"):
        reference("named_parameters", m)
    for dup in (True, False):
        for function in ("named_parameters", "named_modules", "parameters"):
            _same_outcome_as_torch(m, function, remove_duplicate=dup)
        # Only the root's members: torch's walk hashes no module.
        _same_outcome_as_torch(shared, "named_parameters", recurse=False, remove_duplicate=dup)


def test_parameters_whose_hash_raises_fail_where_torch_fails():
    p = RaisingHashParameter(torch.ones(1))
    a, b = nn.Module(), nn.Module()
    a._parameters["p"] = p
    b._parameters["p"] = p
    m = nn.Sequential(a, b)
    with pytest.raises(RuntimeError, match="__hash__ refused"):
        reference("parameters", m)
    for dup in (True, False):
        _same_outcome_as_torch(m, "named_parameters", remove_duplicate=dup)
    _same_outcome_as_torch(m, "parameter_list", trainable=True)
    _same_outcome_as_torch(m, "named_buffers")  # no parameter read: nothing hashed


def test_non_tensor_entries_are_deduplicated_by_equality_as_torch_does():
    """Raw values torch's memo compares with ``==``: two equal floats are one."""
    m = nn.Module()
    one, other_one = 1.5, float("1.5")
    m._parameters.update({"a": one, "b": other_one, "c": one})
    assert other_one is not one
    assert reference("parameters", m) == [1.5]
    assert same_items(list(pyparams.parameters(m)), [one])
    assert same_items(list(pyparams.parameters(m, remove_duplicate=False)), [one, other_one, one])
    with pytest.raises(AttributeError):
        pyparams.parameter_list(m, trainable=True)  # a float has no requires_grad


# ---------------------------------------------------------- tampered __dict__
def tampered_cases():
    def missing(attr):
        m = nn.Linear(1, 1)
        del m.__dict__[attr]
        return m

    def replaced(attr, value):
        m = nn.Linear(1, 1)
        m.__dict__[attr] = value
        return m

    def wiped():
        m = nn.Linear(1, 1)
        m.__dict__ = {}
        return m

    class LoudDict(dict):
        def __getitem__(self, key):
            raise KeyError(key)

    def dict_subclass():
        m = nn.Linear(1, 1)
        m.__dict__ = LoudDict(m.__dict__)
        return m

    def non_module_child():
        m = nn.Linear(1, 1)
        m._modules["x"] = 3
        return m

    return {
        "no _parameters": missing("_parameters"),
        "no _modules": missing("_modules"),
        "no _buffers": missing("_buffers"),
        "_modules=None": replaced("_modules", None),
        "_parameters=list": replaced("_parameters", [1, 2]),
        "_parameters=str": replaced("_parameters", "oops"),
        "__dict__ wiped": wiped(),
        "__dict__ subclass": dict_subclass(),
        "non-module child": non_module_child(),
    }


@pytest.mark.parametrize("case", sorted(tampered_cases()))
def test_tampered_dict(case):
    m = tampered_cases()[case]
    parent = nn.Sequential(nn.Linear(1, 1), m)
    for root in (m, parent):
        assert_matches_torch(root)


def test_module_without_super_init():
    class NoInit(nn.Module):
        def __init__(self):
            pass

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        pyparams.parameter_list(NoInit())
    with pytest.raises(AttributeError):
        list(NoInit().parameters())


def test_a_deleted_member_dict_gives_torchs_error():
    """__init__ ran and `_parameters` was deleted since: torch's own AttributeError, no hint
    about super().__init__()."""

    def tree() -> nn.Module:
        root = nn.Sequential(nn.Linear(1, 1))
        del root[0]._parameters
        return root

    expected = outcome(lambda: tree().parameters())
    assert expected[0] == "raise"
    for function in ("parameters", "named_parameters", "parameter_list"):
        got = outcome(lambda f=function: run_pyparams(f, tree()))
        assert (type(got[1]), str(got[1])) == (type(expected[1]), str(expected[1])), function


@pytest.mark.parametrize("bad", [None, 3, "model", torch.ones(1), [nn.Linear(1, 1)]])
def test_not_a_module(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        pyparams.parameter_list(bad)
    with pytest.raises(TypeError, match=type(bad).__name__):
        pyparams.named_modules(bad)


def test_a_weak_proxy_walks_as_its_referent() -> None:
    # isinstance(proxy, nn.Module) holds and `proxy.X()` runs the referent's method.
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    proxy = weakref.proxy(model)
    for function, kwargs in every_call():
        for _ in range(3):  # recorded, then replayed
            assert_same_items(
                run_pyparams(function, proxy, **kwargs),
                reference(function, model, **kwargs),
                f"{function}({kwargs})",
            )
    model[0](torch.ones(1, 2)).sum().backward()
    pyparams.zero_grad(proxy)
    assert model[0].weight.grad is None
    del model
    with pytest.raises(ReferenceError):
        pyparams.parameters(proxy)
    with pytest.raises(ReferenceError):
        pyparams.zero_grad(proxy)
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=0.1)
    with pytest.raises(TypeError, match="ProxyType"):  # a proxy, but of no module
        pyparams.parameters(weakref.proxy(optimizer))
