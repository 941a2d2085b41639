"""The walks torch's own methods make, where the native walk leaves a walk to them.

Two cases: a ``torch.compile`` trace (dynamo traces torch's methods, not the C iterator),
and a ``recurse`` or ``remove_duplicate`` that is neither True nor False (an object with
``__bool__``): torch asks their truth where its generators read them, at the first
``next()`` and for every module and member, user code a native walk does not run. For the
second, ``_C.walk`` and ``_C.collect`` call :func:`walk_as_torch` with their own arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from pyparams._extension import _C
from pyparams._unset import UNSET, given, or_torch_default

__all__ = ["TORCH_METHODS", "torch_walk", "walk_as_torch"]

# torch's own walking methods, captured at import (before pyparams can have patched them).
TORCH_METHODS = {
    name: nn.Module.__dict__[name]
    for name in (
        "parameters",
        "named_parameters",
        "buffers",
        "named_buffers",
        "modules",
        "named_modules",
    )
}


def torch_walk(
    module: nn.Module,
    kind: int,
    named: bool,
    prefix: str,
    recurse: bool,
    remove_duplicate: bool,
    trainable: bool,
) -> Iterator[Any]:
    """The walk a public pyparams function stands for, made by torch's own methods.

    What a ``torch.compile`` trace runs (dynamo cannot trace into the C iterator; torch's
    methods it knows). Arguments that are UNSET are not passed on, as the caller did not
    pass them; the others are passed by keyword.
    """
    if kind == _C.MODULES:
        if named:
            return module.named_modules(**given(prefix=prefix, remove_duplicate=remove_duplicate))
        return module.modules(**given(remove_duplicate=remove_duplicate))
    # torch's parameters()/buffers() take no remove_duplicate: anything but True (False, or
    # an object whose truth torch asks as it walks) is the named walk's, names dropped.
    if not named and (remove_duplicate is UNSET or remove_duplicate is True):
        method = module.buffers if kind == _C.BUFFERS else module.parameters
        values = method(**given(recurse=recurse))
        return (p for p in values if p.requires_grad) if trainable else values
    named_method = module.named_buffers if kind == _C.BUFFERS else module.named_parameters
    pairs = named_method(**given(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate))
    if trainable:
        pairs = ((n, p) for n, p in pairs if p.requires_grad)
    return pairs if named else (p for _, p in pairs)


def walk_as_torch(
    module: nn.Module,
    *,
    kind: int,
    named: bool = False,
    prefix: str = UNSET,
    recurse: Any = UNSET,
    remove_duplicate: Any = UNSET,
    trainable: bool = False,
    dispatch: str | None = None,
) -> Iterator[Any]:
    """What ``_C.walk(module, **same)`` stands for, made by torch's own methods.

    Without ``dispatch``, a public function's walk; with it (the patch: the level below
    the patched method on torch's dispatch chain), torch's own function for that method.
    """
    levels = _C.DISPATCH_CHAIN[kind]
    above = [] if dispatch is None else [m for m in levels[: levels.index(dispatch)] if m]
    if not above:
        return torch_walk(module, kind, named, prefix, recurse, remove_duplicate, trainable)
    # torch's callers pass every argument: UNSET is torch's default here.
    prefix = or_torch_default("prefix", prefix)
    recurse = or_torch_default("recurse", recurse)
    remove_duplicate = or_torch_default("remove_duplicate", remove_duplicate)
    method = above[-1]
    function = TORCH_METHODS[method]
    if method in ("parameters", "buffers"):
        return function(module, recurse)
    if method == "modules":
        return function(module, remove_duplicate)
    if method == "named_modules":
        return function(module, None, prefix, remove_duplicate)
    return function(module, prefix, recurse, remove_duplicate)


_C.set_torch_walk(walk_as_torch)
