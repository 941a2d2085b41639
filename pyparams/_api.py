"""The public walking functions: thin, typed wrappers around the native walker.

Each function validates its arguments, then hands the walk to ``pyparams._C``; the
returned iterator is lazy and produces the module's own objects (never copies). Where
the module's class overrides a method on torch's dispatch chain (``parameters`` ->
``named_parameters`` -> ``_named_members`` -> ``named_modules``), the native walk calls
the override where torch would; an override of the method a function mirrors gets the
arguments the caller passed, by keyword, and no others (the defaults are
:data:`~pyparams._unset.UNSET`), and what it returns is returned as it is. Inside a
``torch.compile`` trace, torch's own methods are called instead, so the trace has no graph
break.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn
from torch.compiler import is_dynamo_compiling as _is_compiling

from pyparams._extension import _C
from pyparams._torch_walks import torch_walk
from pyparams._unset import UNSET, given, shows_torch_defaults

__all__ = [
    "buffers",
    "modules",
    "named_buffers",
    "named_modules",
    "named_parameters",
    "named_trainable_parameters",
    "parameter_list",
    "parameters",
    "trainable_parameters",
]


def _bad_prefix(function: str, prefix: object) -> TypeError:
    # Deliberately at the call (torch raises only at the first next(), and only
    # for some trees): a wrong prefix is a bug at the call site.
    return TypeError(f"pyparams.{function}(): prefix must be a str, got {type(prefix).__name__}")


# Bound once: each public call is one native call (the flags' truth is read there).
_walk = _C.walk
_collect = _C.collect
_PARAMETERS = _C.PARAMETERS
_BUFFERS = _C.BUFFERS
_MODULES = _C.MODULES


@shows_torch_defaults
def parameters(
    module: nn.Module, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[nn.Parameter]:
    """Yield the parameters of ``module``, exactly as ``module.parameters()`` does.

    With ``remove_duplicate=False`` it yields what
    ``(p for _, p in module.named_parameters(remove_duplicate=False))`` yields.

    >>> lin = torch.nn.Linear(2, 2)
    >>> [p is q for p, q in zip(pyparams.parameters(lin), lin.parameters())]
    [True, True]
    """
    if _is_compiling():
        return torch_walk(module, _PARAMETERS, False, UNSET, recurse, remove_duplicate, False)
    return _walk(module, kind=_PARAMETERS, recurse=recurse, remove_duplicate=remove_duplicate)


@shows_torch_defaults
def trainable_parameters(
    module: nn.Module, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[nn.Parameter]:
    """Yield the parameters of ``module`` whose ``requires_grad`` is True.

    Equal to ``(p for p in module.parameters() if p.requires_grad)``: the flag is read
    when each parameter is reached, so a toggle made during iteration is seen.

    >>> lin = torch.nn.Linear(2, 2)
    >>> _ = lin.bias.requires_grad_(False)
    >>> [p is lin.weight for p in pyparams.trainable_parameters(lin)]
    [True]
    """
    if _is_compiling():
        return torch_walk(module, _PARAMETERS, False, UNSET, recurse, remove_duplicate, True)
    return _walk(
        module, kind=_PARAMETERS, recurse=recurse, remove_duplicate=remove_duplicate, trainable=True
    )


@shows_torch_defaults
def named_parameters(
    module: nn.Module, prefix: str = UNSET, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield ``(name, parameter)`` pairs exactly as ``module.named_parameters()`` does.

    >>> [name for name, _ in pyparams.named_parameters(torch.nn.Linear(2, 2), prefix="fc")]
    ['fc.weight', 'fc.bias']
    """
    if prefix is not UNSET and not isinstance(prefix, str):
        raise _bad_prefix("named_parameters", prefix)
    if _is_compiling():
        return torch_walk(module, _PARAMETERS, True, prefix, recurse, remove_duplicate, False)
    return _walk(
        module,
        kind=_PARAMETERS,
        named=True,
        prefix=prefix,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
    )


@shows_torch_defaults
def named_trainable_parameters(
    module: nn.Module, prefix: str = UNSET, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield the ``(name, parameter)`` pairs of ``named_parameters`` whose parameter requires grad.

    >>> lin = torch.nn.Linear(2, 2).requires_grad_(False)
    >>> list(pyparams.named_trainable_parameters(lin))
    []
    """
    if prefix is not UNSET and not isinstance(prefix, str):
        raise _bad_prefix("named_trainable_parameters", prefix)
    if _is_compiling():
        return torch_walk(module, _PARAMETERS, True, prefix, recurse, remove_duplicate, True)
    return _walk(
        module,
        kind=_PARAMETERS,
        named=True,
        prefix=prefix,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
        trainable=True,
    )


@shows_torch_defaults
def parameter_list(
    module: nn.Module,
    *,
    trainable: bool = False,
    recurse: bool = UNSET,
    remove_duplicate: bool = UNSET,
) -> list[nn.Parameter]:
    """Return the parameters as a new list, walked eagerly in one native call.

    Equal to ``list(module.parameters())`` (or its ``requires_grad`` filter when
    ``trainable=True``); the list holds the module's own parameter objects.

    >>> len(pyparams.parameter_list(torch.nn.Linear(2, 2)))
    2
    """
    if _is_compiling():
        return list(
            torch_walk(module, _PARAMETERS, False, UNSET, recurse, remove_duplicate, trainable)
        )
    return _collect(
        module,
        kind=_PARAMETERS,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
        trainable=trainable,
    )


@shows_torch_defaults
def buffers(
    module: nn.Module, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[Tensor]:
    """Yield the buffers of ``module`` exactly as ``module.buffers()`` does.

    >>> len(list(pyparams.buffers(torch.nn.BatchNorm1d(4))))
    3
    """
    if _is_compiling():
        return torch_walk(module, _BUFFERS, False, UNSET, recurse, remove_duplicate, False)
    return _walk(module, kind=_BUFFERS, recurse=recurse, remove_duplicate=remove_duplicate)


@shows_torch_defaults
def named_buffers(
    module: nn.Module, prefix: str = UNSET, recurse: bool = UNSET, remove_duplicate: bool = UNSET
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(name, buffer)`` pairs exactly as ``module.named_buffers()`` does.

    >>> [name for name, _ in pyparams.named_buffers(torch.nn.BatchNorm1d(4))]
    ['running_mean', 'running_var', 'num_batches_tracked']
    """
    if prefix is not UNSET and not isinstance(prefix, str):
        raise _bad_prefix("named_buffers", prefix)
    if _is_compiling():
        return torch_walk(module, _BUFFERS, True, prefix, recurse, remove_duplicate, False)
    return _walk(
        module,
        kind=_BUFFERS,
        named=True,
        prefix=prefix,
        recurse=recurse,
        remove_duplicate=remove_duplicate,
    )


@shows_torch_defaults
def modules(module: nn.Module, remove_duplicate: bool = UNSET) -> Iterator[nn.Module]:
    """Yield ``module`` and every submodule, pre-order, exactly as ``module.modules()`` does.

    >>> [type(m).__name__ for m in pyparams.modules(torch.nn.Sequential(torch.nn.ReLU()))]
    ['Sequential', 'ReLU']
    """
    if _is_compiling():
        return torch_walk(module, _MODULES, False, UNSET, UNSET, remove_duplicate, False)
    return _walk(module, kind=_MODULES, remove_duplicate=remove_duplicate)


@shows_torch_defaults
def named_modules(
    module: nn.Module,
    prefix: str = UNSET,
    remove_duplicate: bool = UNSET,
    *,
    memo: set[nn.Module] | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` pairs exactly as ``module.named_modules()`` does.

    A ``memo`` (torch's set of modules already seen, which the walk adds to) is
    passed on to ``module.named_modules()``: that walk is torch's.

    >>> [name for name, _ in pyparams.named_modules(torch.nn.Sequential(torch.nn.ReLU()))]
    ['', '0']
    """
    if prefix is not UNSET and not isinstance(prefix, str):
        raise _bad_prefix("named_modules", prefix)
    if memo is not None:
        # torch's recursion state, which the caller reads afterwards: the walk that
        # fills it is torch's own (or the module's override), as with the patch.
        if not isinstance(module, nn.Module):
            raise TypeError(f"pyparams expected a torch.nn.Module, got {type(module).__name__}")
        return module.named_modules(
            memo=memo, **given(prefix=prefix, remove_duplicate=remove_duplicate)
        )
    if _is_compiling():
        return torch_walk(module, _MODULES, True, prefix, UNSET, remove_duplicate, False)
    return _walk(
        module, kind=_MODULES, named=True, prefix=prefix, remove_duplicate=remove_duplicate
    )
