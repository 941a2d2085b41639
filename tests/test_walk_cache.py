"""The warm-walk cache: replays are exact, follow every change, and own nothing.

Each test warms the cache on a tree (three walks: live, recording, replaying), changes
the tree the way real code does (between walks, or between two steps of a replaying
iterator), and compares every pyparams function with torch's own methods on the result.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import operator
import random
import signal
import sys
import types
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

import pyparams
from common_utils import (
    LAZY_FUNCTIONS,
    OVERRIDABLE_METHODS,
    assert_conforms,
    build_chain,
    drive,
    every_call,
    lockstep_with_a_change,
    outcome,
    refcounts,
    reference,
    run_pyparams,
    run_python,
    same_items,
    torch_iterator,
    touch,
)
from common_utils import TiedBlock as Block
from common_utils import small_tied_model as model

pytestmark = pytest.mark.skipif(
    not pyparams.cache_info().enabled,
    reason="the walk cache is off (PYPARAMS_CACHE=0, or CPython 3.13.0 or after 3.14: no cache)",
)


@pytest.fixture(autouse=True, params=[True, False], ids=["straight", "op-by-op"])
def straight_replays(request: pytest.FixtureRequest) -> Any:
    """Every test twice: an eager replay (parameter_list) checking its whole record at once
    first, and running its program op by op as a lazy walk's steps do."""
    before = pyparams._C._straight_replays()
    pyparams._C._straight_replays(request.param)
    yield request.param
    pyparams._C._straight_replays(before)


def warm(model: nn.Module) -> None:
    """Every walk of ``model`` recorded, and replayed once."""
    for _ in range(3):
        for function, kwargs in every_call():
            run_pyparams(function, model, **kwargs)


def test_second_walk_records_third_replays() -> None:
    net = model()
    pyparams.cache_clear()
    expected = list(net.parameters())
    counters = []
    for _ in range(3):
        assert same_items(pyparams.parameter_list(net), expected)
        info = pyparams.cache_info()
        counters.append((info.misses, info.hits, info.records))
    assert counters == [(1, 0, 0), (2, 0, 1), (2, 1, 1)]
    assert pyparams.cache_info().bytes > 0
    assert_conforms(net)  # every kind of walk, recorded and replayed, is torch's
    assert pyparams.cache_info().invalidations == 0


def _tied_weight_replaced(net: nn.Module) -> None:
    net[0].proj.weight = nn.Parameter(torch.ones(3, 3))


def _parameter_written_into_dict(net: nn.Module) -> None:
    net[1][0]._parameters["extra"] = nn.Parameter(torch.zeros(2))


def _child_deleted(net: nn.Module) -> None:
    del net[1][0].norm


def _child_added_to_root(net: nn.Module) -> None:
    # A size change of the dict whose frame stays open longest: any step after it
    # reads it again (the last ones leave every frame of the path at once).
    net.add_module("late", nn.Linear(1, 1))


def _child_added_to_last_block(net: nn.Module) -> None:
    net[2].add_module("late", nn.Linear(1, 1))


def _child_set_to_none(net: nn.Module) -> None:
    net[2]._modules["proj"] = None


def _children_dict_replaced(net: nn.Module) -> None:
    net[1].__dict__["_modules"] = {"only": nn.Linear(1, 1)}


def _instance_dict_replaced(net: nn.Module) -> None:
    block = net[0]
    block.__dict__ = dict(block.__dict__)


_OUTLIVING: list[object] = []  # a replaced __dict__ someone still holds


def _instance_dict_replaced_while_the_old_one_lives(net: nn.Module) -> None:
    # The old __dict__ outlives its replacement and never changes again, so no dict the
    # record follows changes: only which dict the module has tells the two apart.
    block = net[0]
    _OUTLIVING[:] = [block.__dict__]
    replacement = dict(block.__dict__)
    replacement["_parameters"] = {"w": nn.Parameter(torch.ones(1))}
    replacement["_buffers"] = {"b": torch.ones(1)}
    replacement["_modules"] = {"only": nn.Linear(1, 1)}
    block.__dict__ = replacement


def _class_assigned(net: nn.Module) -> None:
    class Other(Block):
        pass

    net[2].__class__ = Other


def _class_gains_getattr(net: nn.Module) -> None:
    class Hooked(Block):
        pass

    net[0].__class__ = Hooked
    Hooked.__getattribute__ = lambda self, name: object.__getattribute__(self, name)


def _class_gains_parameters_property(net: nn.Module) -> None:
    class Hidden(Block):
        pass

    net[0].__class__ = Hidden
    Hidden._parameters = property(lambda self: {"w": self.proj.weight})


def _class_gains_named_modules_override(net: nn.Module) -> None:
    class Hiding(Block):
        pass

    net[2].__class__ = Hiding
    Hiding.named_modules = lambda self, memo=None, prefix="", remove_duplicate=True: iter(
        [(prefix, self)]
    )


def _instance_gains_named_modules(net: nn.Module) -> None:
    block = net[1][0]
    block.named_modules = lambda memo=None, prefix="", remove_duplicate=True: iter(
        [(prefix, block)]
    )


def _shared_module_gains_named_modules(net: nn.Module) -> None:
    # The shared Linear is met twice (net[1][1], then net[2].tied): torch calls
    # named_modules on the duplicate too, and so meets an override made between the two.
    shared = net[2].tied
    shared.named_modules = lambda memo=None, prefix="", remove_duplicate=True: iter(
        [(prefix, shared)]
    )


def _shared_module_class_gains_named_modules(net: nn.Module) -> None:
    class Revisited(nn.Linear):
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):
            yield prefix, self

    net[2].tied.__class__ = Revisited


def _requires_grad_toggled(net: nn.Module) -> None:
    for p in net[2].parameters():
        p.requires_grad_(not p.requires_grad)


def _train_and_eval(net: nn.Module) -> None:
    net.eval()  # writes `training` into every module's __dict__
    net.train()


def _attribute_stashed(net: nn.Module) -> None:
    for m in net.modules():
        m.last_input = None  # what forward hooks and caches do


def _cache_cleared_then_a_parameter_written(net: nn.Module) -> None:
    # cache_clear() stops following every dict: a write after it moves no version (dict
    # watchers), so nothing an open replay proved before may vouch for the tree.
    pyparams.cache_clear()
    _parameter_written_into_dict(net)


MUTATIONS: tuple[Callable[[nn.Module], None], ...] = (
    _tied_weight_replaced,
    _parameter_written_into_dict,
    _child_deleted,
    _child_added_to_root,
    _child_added_to_last_block,
    _child_set_to_none,
    _children_dict_replaced,
    _instance_dict_replaced,
    _instance_dict_replaced_while_the_old_one_lives,
    _class_assigned,
    _class_gains_getattr,
    _class_gains_parameters_property,
    _class_gains_named_modules_override,
    _instance_gains_named_modules,
    _shared_module_gains_named_modules,
    _shared_module_class_gains_named_modules,
    _requires_grad_toggled,
    _train_and_eval,
    _attribute_stashed,
    _cache_cleared_then_a_parameter_written,
)


def _dropping_last(method: str) -> Callable[..., Any]:
    """An override of ``method`` that yields what torch's does, less its last item."""
    base = getattr(nn.Module, method)

    def override(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return iter(list(base(self, *args, **kwargs))[:-1])

    return override


@pytest.mark.parametrize("method", OVERRIDABLE_METHODS)
@pytest.mark.parametrize("where", ["class", "instance"])
def test_an_override_that_appears_on_a_recorded_root_is_called(method: str, where: str) -> None:
    # A replay skips asking the root for overrides while the root reads as recorded;
    # an override written since, on its class or in its __dict__, is called as torch
    # would call it, by every walk.
    class Root(nn.Sequential):
        pass

    net = Root(*model())
    warm(net)
    if where == "class":
        setattr(Root, method, _dropping_last(method))
    else:
        setattr(net, method, types.MethodType(_dropping_last(method), net))
    assert_conforms(net)
    assert_conforms(net)  # the walks that record, then those that replay


@pytest.mark.parametrize("method", ["parameters", "buffers", "modules"])
def test_a_record_made_below_an_override_does_not_hide_it(method: str) -> None:
    # With the patch, a class's override that calls super() walks natively from below
    # the overridden level and records that walk. The record proves nothing about the
    # level above it: pyparams' own call of that level must still call the override.
    class Root(nn.Sequential):
        pass

    setattr(Root, method, _dropping_last(method))
    net = Root(*model())
    with pyparams.patched():
        for _ in range(3):
            assert len(list(getattr(net, method)())) > 0
    assert_conforms(net)
    assert_conforms(net)


def test_recording_counts_the_instance_dicts_it_builds() -> None:
    # nn.Identity sets no attribute through __dict__: CPython 3.11 on keeps its
    # attributes inline until something asks for the dict, as recording must (dict
    # versions). 3.10 makes the __dict__ with the first attribute: nothing to build.
    inline = sys.version_info >= (3, 11)
    net = nn.ModuleList(nn.Identity() for _ in range(10))
    pyparams.cache_clear()
    list(pyparams.parameters(net))  # the first walk builds none
    assert pyparams.cache_info().dicts_built == 0
    list(pyparams.parameters(net))  # the second records
    info = pyparams.cache_info()
    assert info.records == 1
    assert (info.dicts_built >= 10) if inline else (info.dicts_built == 0)
    assert info.dict_bytes >= info.dicts_built * sys.getsizeof({})
    assert all(vars(module) is not None for module in net)
    list(pyparams.parameters(net))
    built = pyparams.cache_info()
    assert (built.dicts_built, built.dict_bytes) == (info.dicts_built, info.dict_bytes)  # none
    pyparams.cache_clear()
    cleared = pyparams.cache_info()
    assert (cleared.dicts_built, cleared.dict_bytes) == (0, 0)


def test_many_roots_walked_in_turn_each_get_their_record() -> None:
    # ZeRO-3 walks every leaf module (thousands: an unfused MoE of 32 layers x 64
    # experts has 6,176, DeepSeek-V3 ~47,000) once a step, in turn: each one's second
    # walk must record, whatever the addresses the allocator gave them. 40,000 leaves
    # fill the walked-once table's 65,536 slots to 61%: with one set per address,
    # hundreds of its sets of 8 overflow.
    leaves = [nn.Linear(2, 2) for _ in range(40_000)]
    pyparams.cache_clear()
    for _ in range(2):
        for leaf in leaves:
            list(pyparams.named_parameters(leaf))
    recorded = pyparams.cache_info().records
    if recorded != len(leaves):
        # Say which ones, and why: a third walk records those still in the walked-once
        # table (their second walk did not record), not those it evicted. cache_info()
        # sums every record's bytes: name the missing ones among the first 2,000 only.
        missing = []
        for leaf in leaves[:2_000]:
            hits = pyparams.cache_info().hits
            list(pyparams.named_parameters(leaf))
            if pyparams.cache_info().hits == hits:
                missing.append(leaf)
        for leaf in leaves[2_000:]:
            list(pyparams.named_parameters(leaf))
        third = pyparams.cache_info().records - recorded
        addresses = ", ".join(hex(id(leaf)) for leaf in missing[:10])
        pytest.fail(
            f"{len(leaves) - recorded} of {len(leaves)} roots have no record after two walks"
            f" (among the first 2,000: {addresses}); a third walk recorded {third} of them,"
            f" the rest were evicted from the walked-once table; {pyparams.cache_info()}"
        )
    for leaf in leaves:
        assert same_items(list(pyparams.named_parameters(leaf)), list(leaf.named_parameters()))
    assert pyparams.cache_info().hits == len(leaves)


class _Wide(nn.Module):
    """A size that no other object here has: the next one made after one is freed can take
    its memory."""

    __slots__ = tuple(f"slot{i}" for i in range(24))


def _new_module_where_a_walked_one_was() -> nn.Module | None:
    """A module walked once and freed, and a new one at its address (or None)."""
    pyparams.cache_clear()
    old = _Wide()
    list(pyparams.parameters(old))  # walked once: the next walk of `old` would record
    address = id(old)
    del old
    # Bare objects (cheap) until one takes the address: the allocator may fill other
    # blocks of that size first.
    candidates = [_Wide.__new__(_Wide)]
    while id(candidates[-1]) != address and len(candidates) < 10_000:
        candidates.append(_Wide.__new__(_Wide))
    new = candidates.pop()
    if id(new) != address:
        return None
    nn.Module.__init__(new)
    return new


def test_a_new_root_at_a_freed_roots_address_is_walked_for_the_first_time() -> None:
    # CPython gives a freed object's memory to a later object of its size: a model
    # walked once, freed, and another built in its place has the same address. Its
    # first walk records nothing and builds no instance dict, as any first walk.
    _Wide()  # the first instance sizes the class's inline attributes: later ones are bigger
    for _ in range(10):  # CPython 3.14 has been seen to place the first one elsewhere
        new = _new_module_where_a_walked_one_was()
        if new is not None:
            break
    else:
        pytest.skip("CPython gave no new module a freed one's address")
    list(pyparams.parameters(new))
    info = pyparams.cache_info()
    assert (info.records, info.dicts_built) == (0, 0), info
    list(pyparams.parameters(new))  # its own second walk records
    assert pyparams.cache_info().records == 1


@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="CPython 3.12 on runs the cyclic GC at the next bytecode, never inside an allocation",
)
def test_a_collection_that_records_a_root_while_its_record_is_stored_keeps_one_entry() -> None:
    # Storing a root's first record makes a weakref to it: the allocation may run the
    # cyclic GC, and a gc callback there may walk the same root and store a record
    # first. The root then has one entry, with one weakref with a callback, not a
    # second entry (and a second weakref) that nothing can drop.
    net = model()
    pyparams.cache_clear()
    list(pyparams.parameters(net))  # walked once: the next walk records
    weakrefs = weakref.getweakrefcount(net)  # (dynamo, once imported, keeps one of its own)
    armed = [True]

    def walk_it_twice(phase: str, info: dict) -> None:
        # The first collection once the recording walk has begun (its miss counted):
        # with a threshold of 1, at the first object the walk allocates, which is the
        # store's (the weakref's callback, then the weakref).
        if armed and phase == "start" and pyparams.cache_info().misses == 2:
            armed.clear()
            for _ in range(2):
                list(pyparams.parameters(net))

    threshold = gc.get_threshold()
    gc.callbacks.append(walk_it_twice)
    gc.set_threshold(1)
    try:
        list(pyparams.parameters(net))  # records; the collection runs somewhere in it
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(walk_it_twice)
    assert not armed  # the callback ran
    assert pyparams.cache_info().records == 1
    assert weakref.getweakrefcount(net) == weakrefs + 1, weakref.getweakrefs(net)
    assert same_items(pyparams.parameter_list(net), list(net.parameters()))


@pytest.mark.parametrize("distance", [0, 1, 8, 1_000_000])
def test_replays_are_exact_at_any_prefetch_distance(distance: int) -> None:
    # The replay starts the loads of the op `distance` ahead: never past its
    # program's end (the sanitizer run checks the reads), never changing an answer.
    from pyparams import _C

    net = model()
    before = _C._prefetch_distance()
    try:
        assert _C._prefetch_distance(distance) == distance
        pyparams.cache_clear()
        warm(net)
        assert_conforms(net)
    finally:
        _C._prefetch_distance(before)
    assert _C._prefetch_distance(-5) == 0
    _C._prefetch_distance(before)


def test_walks_leave_only_small_spare_buffers_and_cache_clear_frees_them() -> None:
    # A finished walk leaves its pin buffer and its path for the next walk to take, each
    # kept only when small (at most 512 bytes): a huge tree's buffers are freed at its end.
    spare = pyparams._C._spare_buffer_bytes
    leaf = nn.Linear(2, 2)
    wide = nn.Sequential(*[nn.Linear(1, 1) for _ in range(300)])
    pyparams.cache_clear()
    assert spare() == 0
    for _ in range(3):
        assert same_items(list(pyparams.named_parameters(wide)), list(wide.named_parameters()))
    assert spare() <= 2 * 512
    for _ in range(3):
        assert same_items(list(pyparams.named_parameters(leaf)), list(leaf.named_parameters()))
    assert 0 < spare() <= 2 * 512
    for _ in range(3):
        walk = pyparams.named_parameters(wide)
        assert same_items(list(walk), list(wide.named_parameters()))
        assert spare() <= 2 * 512
    pyparams.cache_clear()
    assert spare() == 0


def test_length_hint_is_what_the_recorded_walk_yielded() -> None:
    # list() sizes its result from it; torch's generators give none (the default). A walk
    # of at most 8 items (what list() makes room for without a hint) has none either: the
    # hint's lookup would cost more than it saves.
    import operator

    net = model()
    pyparams.cache_clear()
    assert operator.length_hint(pyparams.parameters(net), -1) == -1  # no record yet
    warm(net)
    hinted = 0
    for function, kwargs in [
        ("parameters", {}),
        ("named_parameters", {"remove_duplicate": False}),
        ("named_buffers", {}),
        ("modules", {}),
        ("named_modules", {"remove_duplicate": False}),
    ]:
        walk = getattr(pyparams, function)(net, **kwargs)
        expected = list(getattr(net, function)(**kwargs))
        assert isinstance(walk, pyparams._C.WalkIterator)
        assert type(walk).__name__ == "WalkIterator"
        if len(expected) > 8:
            assert operator.length_hint(walk) == len(expected), (function, kwargs)
            hinted += 1
        else:
            assert not hasattr(walk, "__length_hint__"), (function, kwargs)
        assert same_items(list(walk), expected)
        assert operator.length_hint(walk, -1) == -1  # unknown once started
    assert hinted == 4  # all but the buffers'


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_change_between_walks_is_seen(mutate: Callable[[nn.Module], None]) -> None:
    net = model()
    warm(net)
    mutate(net)
    assert_conforms(net)
    assert_conforms(net)  # and again, from whatever the cache made of it


def test_dict_writes_that_change_nothing_keep_the_record() -> None:
    net = model()
    warm(net)
    before = pyparams.cache_info()
    _train_and_eval(net)
    assert_conforms(net)
    after = pyparams.cache_info()
    assert after.revalidations > before.revalidations
    assert after.invalidations == before.invalidations


# Every way Python writes into a dict, made between two walks to each dict a walk reads:
# the cache must see each one. Dict versions come from ma_version_tag on CPython 3.10
# and 3.11 and from a dict watcher on 3.12 to 3.14, whose events differ by write.
def _first_key(d: dict) -> str:
    return next(iter(d))


DICT_WRITES: dict[str, Callable[[dict, object], object]] = {
    "add": lambda d, v: d.__setitem__("added", v),
    "replace": lambda d, v: d.__setitem__(_first_key(d), v),
    "delete": lambda d, v: d.__delitem__(_first_key(d)),
    "pop": lambda d, v: d.pop(_first_key(d)),
    "popitem": lambda d, v: d.popitem(),
    "clear": lambda d, v: d.clear(),
    "update": lambda d, v: d.update(added=v),
    "setdefault": lambda d, v: d.setdefault("added", v),
    "inplace_or": lambda d, v: d.__ior__({"added": v}),
    "reorder": lambda d, v: d.__setitem__(_first_key(d), d.pop(_first_key(d))),
}

# Which module's which dict, and a value of the kind it holds.
WRITTEN_DICTS: dict[str, tuple[Callable[[nn.Module], dict], Callable[[], object]]] = {
    "_parameters": (lambda net: net[1][0].proj._parameters, lambda: nn.Parameter(torch.ones(1))),
    "_buffers": (lambda net: net[2]._buffers, lambda: torch.ones(1)),
    "_modules": (lambda net: net[1]._modules, lambda: nn.Linear(1, 1)),
}


@pytest.mark.parametrize("write", DICT_WRITES)
@pytest.mark.parametrize("which", WRITTEN_DICTS)
def test_every_kind_of_dict_write_between_walks_is_seen(which: str, write: str) -> None:
    net = model()
    warm(net)
    written, value = WRITTEN_DICTS[which]
    DICT_WRITES[write](written(net), value())
    assert_conforms(net)
    assert_conforms(net)


# The same for a module's instance __dict__: what it names as _parameters / _modules.
INSTANCE_DICT_WRITES: dict[str, Callable[[nn.Module], object]] = {
    # Through object.__setattr__, where `module.name = value` ends.
    "object_setattr": lambda m: object.__setattr__(m, "_parameters", {"w": torch.nn.Parameter()}),
    "setitem": lambda m: vars(m).__setitem__("_modules", {"only": nn.Linear(1, 1)}),
    "update": lambda m: vars(m).update(_parameters={}),
    "setdefault_then_pop": lambda m: vars(m).pop("_buffers") and vars(m).setdefault("_buffers", {}),
    "delattr_then_setattr": lambda m: (
        object.__delattr__(m, "_modules"),
        object.__setattr__(m, "_modules", {}),
    ),
}


@pytest.mark.parametrize("write", INSTANCE_DICT_WRITES)
def test_every_kind_of_instance_dict_write_between_walks_is_seen(write: str) -> None:
    net = model()
    warm(net)
    INSTANCE_DICT_WRITES[write](net[1][0])
    assert_conforms(net)
    assert_conforms(net)


# An eager replay (parameter_list) whose record no lazy walk has met the change first: the
# change must fail its own checks (all at once, or op by op), not an earlier walk's.
EAGER_CALLS: tuple[dict[str, Any], ...] = (
    {},
    {"trainable": True},
    {"remove_duplicate": False},
    {"recurse": False},
)


def _first_walk_after(change: Callable[[nn.Module], object], kwargs: dict[str, Any]) -> None:
    net = model()
    for _ in range(3):  # live, recording, replayed: this call's record, and no other walk's
        pyparams.parameter_list(net, **kwargs)
    change(net)
    for _ in range(2):  # the replay that meets the change, then whatever it left
        assert same_items(
            pyparams.parameter_list(net, **kwargs), reference("parameter_list", net, **kwargs)
        ), kwargs


ALL_CHANGES: dict[str, Callable[[nn.Module], object]] = {
    **{f.__name__.strip("_"): f for f in MUTATIONS},
    **{
        f"{which}-{write}": (
            lambda net, which=which, write=write: DICT_WRITES[write](
                WRITTEN_DICTS[which][0](net), WRITTEN_DICTS[which][1]()
            )
        )
        for which in WRITTEN_DICTS
        for write in DICT_WRITES
    },
    **{
        f"__dict__-{write}": (lambda net, write=write: INSTANCE_DICT_WRITES[write](net[1][0]))
        for write in INSTANCE_DICT_WRITES
    },
}


@pytest.mark.parametrize("change", ALL_CHANGES)
def test_an_eager_replay_meets_every_change_itself(change: str) -> None:
    for kwargs in EAGER_CALLS:
        _first_walk_after(ALL_CHANGES[change], kwargs)


def test_a_new_dict_at_a_dead_dicts_address_is_not_taken_for_it() -> None:
    # A module's _parameters dict freed and a new one made at the same address (CPython
    # reuses freed dicts): the same pointer, another dict. The version must differ.
    net = model()
    warm(net)
    linear = net[1][0].proj
    value = nn.Parameter(torch.ones(2))  # made first: it may allocate dicts of its own
    old = linear._parameters
    address = id(old)
    kept = list(old.values())  # so that freeing the dict frees no other dict after it
    # CPython keeps up to 80 freed dicts for reuse; with its list emptied first, the
    # dict freed next is the one the next dict display gets.
    drained = [{} for _ in range(100)]
    vars(linear)["_parameters"] = None
    del old
    new = {"weight": value}  # from CPython's free list of dicts: the same address
    if id(new) != address:
        pytest.skip("CPython gave the new dict another address")
    vars(linear)["_parameters"] = new
    assert_conforms(net)
    del kept, drained


@pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="before 3.13 a class gets a new version tag after every change (2**32 of them)",
)
def test_a_class_that_has_spent_its_version_tags_is_walked_live() -> None:
    # CPython 3.13+ gives a class at most 1000 version tags, then leaves it at 0 for
    # good: a tag of 0 proves nothing (it stays 0 through every later change), so a
    # module of that class is never recorded, and each walk meets the class as it is.
    class Tagless(nn.Linear):
        pass

    for spent in range(1100):
        Tagless.spent = spent  # clears the tag; the lookup below asks for a new one
        assert Tagless.spent == spent
    net = nn.Sequential(nn.Linear(1, 1), Tagless(1, 1))
    warm(net)
    hits = pyparams.cache_info().hits
    pyparams.parameter_list(net)
    assert pyparams.cache_info().hits == hits  # a walk that enters it is never recorded
    Tagless.named_modules = lambda self, memo=None, prefix="", remove_duplicate=True: iter(
        [(prefix, self)]
    )
    assert_conforms(net)


def test_a_signal_handler_that_runs_inside_a_replay_is_seen() -> None:
    # An eager replay checks for signals every 1024 steps, and a handler is Python code
    # that may change the tree: the replay proves its record again after it (one stamp
    # on CPython 3.12+, read before the handler ran, would vouch for the old tree).
    # PyErr_SetInterruptEx, called from C with the walk right after it (map's loop has no
    # bytecode boundary where the handler could run first), makes the handler run at the
    # walk's first signal check, long before the last layer is read.
    net = nn.Sequential(*(nn.Linear(1, 1, bias=False) for _ in range(3000)))
    replacement = nn.Parameter(torch.zeros(1))
    hits_in_handler = []

    def handler(signum: int, frame: object) -> None:
        hits_in_handler.append(pyparams.cache_info().hits)
        net[-1]._parameters["weight"] = replacement

    trip = partial(ctypes.pythonapi.PyErr_SetInterruptEx, ctypes.c_int(signal.SIGUSR1))
    walk = partial(pyparams._C.collect, net, kind=pyparams._C.PARAMETERS)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        for _ in range(2):
            pyparams.parameter_list(net)  # recorded: the next walk replays
        hits = pyparams.cache_info().hits
        _, walked = map(operator.methodcaller("__call__"), [trip, walk])
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert hits_in_handler == [hits + 1]  # once, inside the replaying walk
    assert walked[-1] is replacement
    assert same_items(walked, list(net.parameters()))


def test_a_change_to_one_root_keeps_another_roots_record() -> None:
    first, second = model(), model()
    warm(first)
    warm(second)
    second[1][0].proj._parameters["added"] = nn.Parameter(torch.ones(1))
    before = pyparams.cache_info()
    assert_conforms(first)
    after = pyparams.cache_info()
    assert after.invalidations == before.invalidations  # first's records all stand
    assert after.hits - before.hits == len(every_call())  # every walk of first replayed
    assert_conforms(second)
    assert pyparams.cache_info().invalidations > after.invalidations


@pytest.mark.parametrize("function", LAZY_FUNCTIONS)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_change_between_steps_of_a_replay_is_seen(function: str, mutate) -> None:
    # Lockstep: a replaying iterator and torch's generator, the tree changed after each
    # item in turn; both must then produce the same items, or raise the same error.
    reference_tree = model()
    items = len(reference(function, reference_tree))
    for at in range(items):
        net = model()
        warm(net)
        ours = getattr(pyparams, function)(net)
        theirs = torch_iterator(function, net)
        lockstep_with_a_change(ours, theirs, at, partial(mutate, net), f"{function}:")
        # A replay that ran to its end past a change it had already read must not
        # vouch for the record: the next walk sees the change too.
        assert same_items(run_pyparams(function, net), reference(function, net)), (function, at)


@pytest.mark.parametrize("which", ["_parameters", "_buffers", "_modules", "__dict__"])
def test_a_touch_at_any_step_hands_over_to_the_live_walk_exactly_there(which: str) -> None:
    # Every dict a replay reads, touched after every step in turn: the replay meets
    # the new version at its next read of it (any op of its program, any part of a
    # fused op), rebuilds the live walk's position there, and the walk goes on live.
    net = model()
    modules = list(net.modules())
    calls = [(f, kw) for f, kw in every_call() if f in LAZY_FUNCTIONS]
    handed_over = 0
    for function, kwargs in calls:
        expected = reference(function, net, **kwargs)
        for at in range(len(expected) + 1):
            for touched in modules:
                for _ in range(2):  # a record (again, after a hand-over), replayed once
                    run_pyparams(function, net, **kwargs)
                before = pyparams.cache_info()
                ours = getattr(pyparams, function)(net, **kwargs)
                got = [next(ours) for _ in range(at)]
                touch(touched, which)
                got += list(ours)
                after = pyparams.cache_info()
                assert after.hits == before.hits + 1, (function, kwargs)  # it replayed
                handed_over += after.invalidations - before.invalidations
                assert same_items(got, expected), (function, kwargs, at, type(touched).__name__)
    if which == "__dict__":
        assert handed_over == 0  # revalidated entry by entry, never handed over
    else:
        assert handed_over > 0


def _what_a_walk_holds(net: nn.Module) -> list[object]:
    """Every object of ``net`` a walk pins or holds: modules, their dicts and members."""
    held: list[object] = []
    for m in net.modules():
        held += [m, vars(m), m._parameters, m._buffers, m._modules]
        held += [*m._parameters.values(), *m._buffers.values()]
    return held


# parameter_list replays its steps in one run, its pins and holds lent (no references
# taken while no other code can run). Trees where that run ends the walk, takes what it
# lent for a signal check (every 1,024 steps) and lends again above it, or shares modules.
EAGER_TREES: dict[str, Callable[[], nn.Module]] = {
    "chain": lambda: build_chain(300),
    "wide": lambda: nn.Sequential(*(nn.Linear(1, 1) for _ in range(700))),
    "tied": model,
}


@pytest.mark.parametrize("which", [None, "_parameters", "_buffers", "_modules", "__dict__"])
@pytest.mark.parametrize("tree", EAGER_TREES)
def test_an_eager_replay_leaves_every_reference_count_as_it_found_it(
    tree: str, which: str | None
) -> None:
    # Untouched, the replay runs to its end; a touched dict of the first, a middle or
    # the last module hands it over to the live walk there, which needs every lent
    # reference taken. Either way: torch's list, and every count as before once it is gone.
    net = EAGER_TREES[tree]()
    modules = list(net.modules())
    held = _what_a_walk_holds(net)
    handed_over = 0
    first_middle_last = {id(m): m for m in (modules[0], modules[len(modules) // 2], modules[-1])}
    for touched in first_middle_last.values():
        for kwargs in ({}, {"remove_duplicate": False}, {"trainable": True}, {"recurse": False}):
            for _ in range(2):  # a record (again, after a hand-over), replayed once
                pyparams.parameter_list(net, **kwargs)
            if which is not None:
                touch(touched, which)
            expected = reference("parameter_list", net, **kwargs)
            before_info = pyparams.cache_info()
            before = refcounts(held, clear_type_cache=False)  # (no names among them)
            got = pyparams.parameter_list(net, **kwargs)
            after_info = pyparams.cache_info()
            assert same_items(got, expected), (tree, which, kwargs)
            del got
            assert refcounts(held, clear_type_cache=False) == before, (tree, which, kwargs)
            assert after_info.hits == before_info.hits + 1, kwargs  # it replayed
            handed_over += after_info.invalidations - before_info.invalidations
    # (A walk of parameters reads no _buffers; a touched __dict__ is re-read entry by
    # entry: no hand-over for either.)
    assert (handed_over > 0) == (which in ("_parameters", "_modules"))


@pytest.mark.parametrize(
    "function", ["named_parameters", "named_trainable_parameters", "named_buffers", "named_modules"]
)
def test_named_replays_open_at_once_under_two_prefixes_keep_their_names(function: str) -> None:
    # A record keeps the names of one prefix: a walk under another prefix replaces them,
    # and an iterator still open under the first must go on with its own names.
    net = model()
    warm(net)
    for _ in range(3):
        list(getattr(pyparams, function)(net, prefix="x.y"))
    ours = getattr(pyparams, function)(net, prefix="x.y")
    got = [next(ours)]
    assert same_items(getattr(pyparams, function)(net, prefix=""), reference(function, net))
    got += list(ours)
    assert same_items(got, reference(function, net, prefix="x.y"))


def test_size_change_during_a_replay_raises_as_the_live_walk() -> None:
    net = model()
    warm(net)
    ours, theirs = pyparams.parameters(net), net.parameters()
    assert next(ours) is next(theirs)
    next(ours), next(theirs)  # now inside the first LayerNorm's _parameters
    net[0].norm._parameters["grown"] = nn.Parameter(torch.zeros(1))
    got, expected = outcome(lambda: list(ours)), outcome(lambda: list(theirs))
    assert got[0] == expected[0] == "raise"
    assert type(got[1]) is type(expected[1]) is RuntimeError
    assert str(got[1]) == str(expected[1]) == "dictionary changed size during iteration"


class _DropsItsEntry(nn.Parameter):
    """Once armed, reading its requires_grad deletes its own entry from its module's
    _parameters: the key (built at run time, held by that dict alone) is freed then."""

    @property
    def requires_grad(self) -> bool:
        owner = self.__dict__.pop("armed", None)
        if owner is not None:
            for key in [k for k, v in owner._parameters.items() if v is self]:
                del owner._parameters[key]
        return True


def _dropping_entry_walk(
    walk: Callable[[nn.Module], Any], warm_walks: int
) -> tuple[list[object], type[BaseException] | None, str]:
    net = nn.Sequential(nn.Linear(2, 2))
    dropping = _DropsItsEntry(torch.ones(1))
    net[0]._parameters["".join(("dropped", "_on_read"))] = dropping
    net[0].register_parameter("after", nn.Parameter(torch.zeros(1)))
    pyparams.cache_clear()
    for _ in range(warm_walks):
        list(walk(net))
    dropping.armed = net[0]
    return drive(iter(walk(net)), {})


@pytest.mark.parametrize("warm_walks", [0, 2, 3])  # live; a replay building names; keeping them
def test_a_name_is_taken_before_requires_grad_runs_code_that_drops_its_key(warm_walks: int) -> None:
    # torch builds `prefix + key` before its filter reads requires_grad; a property that
    # deletes the entry then frees the key. The replay must not read the key after the
    # filter ran (the sanitizer suite sees a read of freed memory); the walk then raises
    # as torch's, the dict having changed size.
    got, error, message = _dropping_entry_walk(pyparams.named_trainable_parameters, warm_walks)
    assert pyparams.cache_info().hits == max(warm_walks - 1, 0)  # the last walk replayed
    expected, expected_error, expected_message = _dropping_entry_walk(
        partial(torch_iterator, "named_trainable_parameters"), 0
    )
    assert (
        [n for n, _ in got]
        == [n for n, _ in expected]
        == ["0.weight", "0.bias", "0.dropped_on_read"]
    )
    assert error is expected_error is RuntimeError
    assert message == expected_message == "dictionary changed size during iteration"


def test_random_changes_between_walks_match_torch() -> None:
    rng = random.Random(1234)
    net = model()
    for _ in range(60):
        if rng.random() < 0.5:
            # An earlier change may have removed what this one edits.
            with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
                rng.choice(MUTATIONS)(net)
        function, kwargs = rng.choice(every_call())
        expected = outcome(partial(reference, function, net, **kwargs))
        got = outcome(partial(run_pyparams, function, net, **kwargs))
        assert got[0] == expected[0], (function, kwargs)
        if expected[0] == "ok":
            assert same_items(got[1], expected[1]), (function, kwargs)
        if rng.random() < 0.1:
            net = model()


def test_the_cache_keeps_no_model_alive() -> None:
    net = model()
    warm(net)
    records = pyparams.cache_info().records
    assert records > 0
    alive = [weakref.ref(obj) for obj in (net, *net.modules(), *net.parameters())]
    del net
    gc.collect()
    assert all(ref() is None for ref in alive)
    assert pyparams.cache_info().records < records  # the records went with the root


def test_an_iterator_abandoned_mid_replay_keeps_and_then_releases_the_model() -> None:
    net = model()
    warm(net)
    iterator = pyparams.named_parameters(net)
    next(iterator)
    alive = weakref.ref(net)
    del net
    gc.collect()
    assert alive() is not None  # the iterator holds it, as torch's generator would
    del iterator
    gc.collect()
    assert alive() is None


def test_cache_clear_makes_the_next_walk_cold() -> None:
    net = model()
    weakrefs = weakref.getweakrefcount(net)  # (dynamo, once imported, keeps one of its own)
    warm(net)
    assert weakref.getweakrefcount(net) == weakrefs + 2  # walked once; records
    pyparams.cache_clear()
    assert weakref.getweakrefcount(net) == weakrefs  # both let go
    info = pyparams.cache_info()
    assert (info.hits, info.misses, info.records, info.bytes) == (0, 0, 0, 0)
    assert same_items(pyparams.parameter_list(net), list(net.parameters()))
    assert pyparams.cache_info()[:2] == (0, 1)  # no hit: walked live
    assert pyparams.cache_info().records == 0  # a first walk again: it records nothing
    pyparams.parameter_list(net)
    assert pyparams.cache_info().records == 1


def test_a_dict_made_where_a_followed_one_died_is_followed_afresh() -> None:
    # A member dict the cache followed dies; CPython hands its memory to the next dict
    # made. That dict is new: it has no version of the dead one's (with dict watchers it
    # is not even watched yet), so a record that reads it must see it change.
    donor, holder = nn.Linear(1, 1), nn.Module()
    for _ in range(3):
        pyparams.parameter_list(donor)  # donor._parameters followed
    dead_address = id(donor._parameters)
    donor._parameters = {}  # made before the old one dies, so elsewhere
    spare = []
    for _ in range(10_000):
        fresh: dict = {}
        if id(fresh) == dead_address:
            break
        spare.append(fresh)
    else:
        pytest.fail("no new dict took the dead one's memory: the case is not reached")
    holder._parameters = fresh
    fresh["w"] = nn.Parameter(torch.ones(1))
    for _ in range(3):  # live, recording, replayed
        assert same_items(pyparams.parameter_list(holder), list(holder.parameters()))
    fresh["v"] = nn.Parameter(torch.ones(1))
    assert same_items(pyparams.parameter_list(holder), list(holder.parameters()))
    assert len(pyparams.parameter_list(holder)) == 2


def test_cache_off_walks_live_and_matches_torch() -> None:
    script = (
        "import torch, pyparams\n"
        "net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())\n"
        "for _ in range(3):\n"
        "    pairs = zip(pyparams.parameters(net), net.parameters(), strict=True)\n"
        "    assert [p is q for p, q in pairs] == [True, True]\n"
        "info = pyparams.cache_info()\n"
        "print(info.enabled, info.hits, info.records)\n"
    )
    done = run_python(script, PYPARAMS_CACHE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "0", "0"]


def test_named_replays_hold_no_reference_to_the_models_keys() -> None:
    # The record keeps the names it built; with prefix "" a top-level name is the key
    # itself, which the cache must not hold (nothing the model owns changes by walking).
    net = model()
    # A top-level member and module, whose names are their keys. The keys are built at
    # run time, so that the model alone holds them: a literal is shared with the code
    # objects and the interned strings of the whole process (as are "weight" deeper
    # down and the Sequential's "0", "1", "2"), whose references come and go with
    # whatever else runs: not ours to count.
    keys = ["".join(("top_level_", suffix)) for suffix in ("scale", "head")]
    net.register_parameter(keys[0], nn.Parameter(torch.ones(1)))
    net.add_module(keys[1], nn.Linear(1, 1))
    before = refcounts(keys)
    for prefix in ("", "", "", "top", "top", "top", ""):
        assert same_items(
            list(pyparams.named_parameters(net, prefix=prefix)),
            list(net.named_parameters(prefix=prefix)),
        )
    pyparams.cache_info()
    assert refcounts(keys) == before
