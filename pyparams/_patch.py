"""pyparams.patch(): native walks inside code you do not own.

Replaces ``nn.Module.parameters``, ``named_parameters``, ``buffers``, ``named_buffers``,
``modules``, ``named_modules`` and ``zero_grad`` on the base class with functions of
torch's exact signatures whose bodies run pyparams' native walker. They return the same
objects in the same order as torch's, so code that calls them (optimizers,
``clip_grad_norm_``, ``functional_call``, ``state_dict``, transformers, DeepSpeed) gets
the same answer faster. Never applied on import.

Each replacement is a Python function (not a C one) that runs torch's own function when
``torch.compiler.is_dynamo_compiling()``: inside a dynamo trace the call is then inlined
exactly as torch's method is, with the same graphs and graph breaks.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator

from torch import Tensor, nn
from torch.compiler import is_dynamo_compiling
from torch.nn import Parameter

from pyparams import _zero_grad
from pyparams._extension import _C
from pyparams._torch_walks import TORCH_METHODS

__all__ = ["is_patched", "patch", "patched", "unpatch"]

# `pyparams._patch.Module.parameters`, as a replacement's __module__ and __qualname__ name
# it: what pickle looks up (an unbound method pickles by reference, as torch's does), and
# what get_type_hints() resolves torch's forward reference 'Module' to.
Module = nn.Module

_PARAMETERS = _C.PARAMETERS
_BUFFERS = _C.BUFFERS
_MODULES = _C.MODULES

# The methods replaced, in the order they are installed.
NAMES = (*TORCH_METHODS, "zero_grad")

# torch's own functions, captured at import (before pyparams can have patched anything).
_TORCH = {**TORCH_METHODS, "zero_grad": nn.Module.__dict__["zero_grad"]}
_torch_parameters = _TORCH["parameters"]
_torch_named_parameters = _TORCH["named_parameters"]
_torch_buffers = _TORCH["buffers"]
_torch_named_buffers = _TORCH["named_buffers"]
_torch_modules = _TORCH["modules"]
_torch_named_modules = _TORCH["named_modules"]
_torch_zero_grad = _TORCH["zero_grad"]


def _below(kind: int, method: str) -> str:
    """The level after ``method`` on torch's dispatch chain for ``kind`` (the native table)."""
    levels = _C.DISPATCH_CHAIN[kind]
    return next(level for level in levels[levels.index(method) + 1 :] if level is not None)


# Where each replacement starts the native walk: one step below itself on torch's
# dispatch chain, so that an override calling super() does not come back to itself.
_BELOW_PARAMETERS = _below(_PARAMETERS, "parameters")  # named_parameters
_BELOW_NAMED_PARAMETERS = _below(_PARAMETERS, "named_parameters")  # _named_members
_BELOW_BUFFERS = _below(_BUFFERS, "buffers")  # named_buffers
_BELOW_NAMED_BUFFERS = _below(_BUFFERS, "named_buffers")  # _named_members
_BELOW_MODULES = _below(_MODULES, "modules")  # named_modules
_BELOW_NAMED_MODULES = _below(_MODULES, "named_modules")  # children

# The replacements. Each starts the native walk one step below itself on torch's
# dispatch chain, so that an override calling super() does not come back to itself.
# Inside a dynamo trace, and for arguments the native walk does not take (a memo, a
# prefix that is not exactly str), each runs torch's own function instead; so does _C.walk
# for a recurse or remove_duplicate that is neither True nor False (_torch_walks).
#
# Dynamo folds is_dynamo_compiling() to True while it traces (as it does is_compiling());
# run eagerly it is one call that returns False, ~45 ns cheaper per call than
# is_compiling() (which also calls torch.jit.is_scripting() and reads a flag that a
# compile or export session holds while it runs eager Python: there the native walk, which
# returns the same objects, runs instead of torch's).


def parameters(self: nn.Module, recurse: bool = True) -> Iterator[Parameter]:
    if is_dynamo_compiling():
        return _torch_parameters(self, recurse)
    return _C.walk(self, kind=_PARAMETERS, recurse=recurse, dispatch=_BELOW_PARAMETERS)


def named_parameters(
    self: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, Parameter]]:
    if is_dynamo_compiling() or type(prefix) is not str:
        return _torch_named_parameters(self, prefix, recurse, remove_duplicate)
    return _C.walk(
        self,
        kind=_PARAMETERS,
        named=True,
        prefix=prefix,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
        dispatch=_BELOW_NAMED_PARAMETERS,
    )


def buffers(self: nn.Module, recurse: bool = True) -> Iterator[Tensor]:
    if is_dynamo_compiling():
        return _torch_buffers(self, recurse)
    return _C.walk(self, kind=_BUFFERS, recurse=recurse, dispatch=_BELOW_BUFFERS)


def named_buffers(
    self: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, Tensor]]:
    if is_dynamo_compiling() or type(prefix) is not str:
        return _torch_named_buffers(self, prefix, recurse, remove_duplicate)
    return _C.walk(
        self,
        kind=_BUFFERS,
        named=True,
        prefix=prefix,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
        dispatch=_BELOW_NAMED_BUFFERS,
    )


def modules(self: nn.Module, remove_duplicate: bool = True) -> Iterator[nn.Module]:
    if is_dynamo_compiling():
        return _torch_modules(self, remove_duplicate)
    return _C.walk(self, kind=_MODULES, remove_duplicate=remove_duplicate, dispatch=_BELOW_MODULES)


def named_modules(
    self: nn.Module,
    memo: set[nn.Module] | None = None,
    prefix: str = "",
    remove_duplicate: bool = True,
):
    # A memo is torch's recursion state (a caller's own set, or torch's walk of a
    # child): that walk stays torch's, from this module down.
    if is_dynamo_compiling() or memo is not None or type(prefix) is not str:
        return _torch_named_modules(self, memo, prefix, remove_duplicate)
    return _C.walk(
        self,
        kind=_MODULES,
        named=True,
        prefix=prefix,
        remove_duplicate=remove_duplicate,
        dispatch=_BELOW_NAMED_MODULES,
    )


def zero_grad(self: nn.Module, set_to_none: bool = True) -> None:
    if is_dynamo_compiling():
        return _torch_zero_grad(self, set_to_none)
    if getattr(self, "_is_replica", False):
        warnings.warn(_zero_grad.REPLICA_WARNING, stacklevel=2)
    _zero_grad.reset_grads(self, set_to_none)
    return None


_REPLACEMENTS = {
    "parameters": parameters,
    "named_parameters": named_parameters,
    "buffers": buffers,
    "named_buffers": named_buffers,
    "modules": modules,
    "named_modules": named_modules,
    "zero_grad": zero_grad,
}

for _name, _function in _REPLACEMENTS.items():
    # torch's docstring, name and annotations (inspect.signature shows torch's; the
    # forward reference 'Module' resolves through Module below).
    _function.__doc__ = _TORCH[_name].__doc__
    _function.__qualname__ = f"Module.{_name}"
    _function.__annotations__ = dict(_TORCH[_name].__annotations__)
    _function._pyparams_replaces = _name  # type: ignore[attr-defined]
    if _name != "zero_grad":
        # The native walker treats it as torch's base method, never as an override.
        _C.register_base_method(_name, _function)
# Reached through _REPLACEMENTS only: they carry torch's docstrings, whose examples are
# torch's (not meant to run here), and a module attribute would hand them to doctest.
del _name, _function
del parameters, named_parameters, buffers, named_buffers, modules, named_modules, zero_grad

_lock = threading.Lock()


def _is_torch_own(name: str, function: object) -> bool:
    return (
        function is _TORCH[name]
        and getattr(function, "__module__", None) == "torch.nn.modules.module"
        and getattr(function, "__qualname__", None) == f"Module.{name}"
    )


def _is_foreign(name: str, function: object) -> bool:
    """Neither pyparams' replacement nor torch's own: another library's, never overwritten.

    A slot that holds torch's own function while the others hold pyparams' (a library
    saved it before the patch and put it back) is no one else's: patch() and unpatch()
    complete it.
    """
    return function is not _REPLACEMENTS[name] and not _is_torch_own(name, function)


def _describe(function: object) -> str:
    module = getattr(function, "__module__", "?")
    qualname = getattr(function, "__qualname__", type(function).__name__)
    return f"{module}.{qualname}"


def _found() -> dict[str, object]:
    return {name: nn.Module.__dict__.get(name) for name in NAMES}


def is_patched() -> bool:
    """Whether pyparams' replacements are installed on ``torch.nn.Module``.

    >>> pyparams.is_patched()
    False
    """
    found = _found()
    return all(found[name] is _REPLACEMENTS[name] for name in NAMES)


def patch() -> None:
    """Replace ``nn.Module``'s walking methods and ``zero_grad`` with native ones, process-wide.

    Idempotent. Refuses (``RuntimeError``, nothing changed) when any of these methods
    is neither torch's own nor pyparams': another library has replaced it, and pyparams
    never overwrites someone else's function. Subclasses that override a method keep their
    override. Undo with :func:`unpatch`, or scope it with :func:`patched`.

    >>> pyparams.patch()
    >>> type(torch.nn.Linear(2, 2).parameters()).__name__
    'WalkIterator'
    >>> pyparams.unpatch()
    """
    with _lock:
        found = _found()
        if all(found[name] is _REPLACEMENTS[name] for name in NAMES):
            return
        foreign = [name for name in NAMES if _is_foreign(name, found[name])]
        if foreign:
            raise RuntimeError(
                "pyparams.patch(): refusing to replace "
                + ", ".join(f"nn.Module.{n} (now {_describe(found[n])})" for n in foreign)
                + ": it is no longer torch's own function, so another library has replaced it."
                " Nothing was changed. Undo that library's patch first, or call"
                " pyparams.patch() before it patches."
            )
        for name in NAMES:
            setattr(nn.Module, name, _REPLACEMENTS[name])
        _sync_dynamo(_TORCH, _REPLACEMENTS)


def unpatch() -> None:
    """Put torch's own methods back on ``nn.Module``. Idempotent.

    Refuses (``RuntimeError``, nothing changed) when another library has replaced one
    of pyparams' functions since :func:`patch` with a function that is not torch's own:
    restoring torch's would silently drop that library's function.

    >>> pyparams.unpatch()
    >>> type(torch.nn.Linear(2, 2).parameters()).__name__
    'generator'
    """
    with _lock:
        found = _found()
        ours = [name for name in NAMES if found[name] is _REPLACEMENTS[name]]
        if not ours:
            return
        foreign = [name for name in NAMES if _is_foreign(name, found[name])]
        if foreign:
            raise RuntimeError(
                "pyparams.unpatch(): refusing to restore torch's methods: "
                + ", ".join(f"nn.Module.{n} is now {_describe(found[n])}" for n in foreign)
                + ", neither pyparams' replacement nor torch's own function, so another"
                " library replaced it after pyparams.patch(). Nothing was changed. Undo that"
                " library's patch first."
            )
        for name in NAMES:
            setattr(nn.Module, name, _TORCH[name])
        _sync_dynamo(_REPLACEMENTS, _TORCH)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Patch for the duration of a ``with`` block; nestable.

    Only the outermost block that found the methods unpatched restores them on exit. Put
    the block around the training loop, not around each step: from CPython 3.13 on, each
    patch and unpatch spends a version tag of every module class (1000 per class), and
    without one, walks of its modules are live.

    >>> with pyparams.patched():
    ...     pyparams.is_patched()
    True
    """
    was_patched = is_patched()
    if not was_patched:
        patch()
    try:
        yield
    finally:
        if not was_patched:
            unpatch()


# torch._dynamo captured Module.named_parameters / named_buffers when it was imported,
# and asks `is` against them to decide that a module's parameters are its own (to mark
# them static and to register their names). It also caches the code objects of
# nn.Module's methods. Keep both in step with what nn.Module holds, so a compiled
# module is treated alike, patched or not. Modules not imported yet capture the current
# methods themselves when they are.
_DYNAMO_CAPTURES = {
    "torch._dynamo.output_graph": ("named_parameters", "named_buffers"),
    "torch._dynamo.variables.builder": ("named_parameters", "named_buffers"),
}


def _sync_dynamo(old: dict[str, object], new: dict[str, object]) -> None:
    for module_name, methods in _DYNAMO_CAPTURES.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for method in methods:
            attribute = f"og_module_{method}_fn_ptr"
            if getattr(module, attribute, None) is old[method]:
                setattr(module, attribute, new[method])
    nn_module_variables = sys.modules.get("torch._dynamo.variables.nn_module")
    cached = getattr(
        getattr(nn_module_variables, "UnspecializedNNModuleVariable", None),
        "_nn_module_method_ids",
        None,
    )
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()
