"""The public walking functions: thin, typed wrappers around the native walker.

Each function validates its arguments, then hands the walk to ``pyparams._C``; the
returned iterator is lazy and produces the module's own objects (never copies).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from pyparams._extension import _C

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


def _check_prefix(function: str, prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(
            f"pyparams.{function}(): prefix must be a str, got {type(prefix).__name__}"
        )
    return prefix


def parameters(
    module: nn.Module, recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[nn.Parameter]:
    """Yield the parameters of ``module``, exactly as ``module.parameters()`` does.

    With ``remove_duplicate=False`` it yields what
    ``(p for _, p in module.named_parameters(remove_duplicate=False))`` yields.

    >>> lin = torch.nn.Linear(2, 2)
    >>> [p is q for p, q in zip(pyparams.parameters(lin), lin.parameters())]
    [True, True]
    """
    return _C.walk(module, _C.PARAMETERS, "", bool(recurse), bool(remove_duplicate), False, False)


def trainable_parameters(
    module: nn.Module, recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[nn.Parameter]:
    """Yield the parameters of ``module`` whose ``requires_grad`` is True.

    Equal to ``(p for p in module.parameters() if p.requires_grad)``: the flag is read
    when each parameter is reached, so a toggle made during iteration is seen.

    >>> lin = torch.nn.Linear(2, 2)
    >>> _ = lin.bias.requires_grad_(False)
    >>> [p is lin.weight for p in pyparams.trainable_parameters(lin)]
    [True]
    """
    return _C.walk(module, _C.PARAMETERS, "", bool(recurse), bool(remove_duplicate), True, False)


def named_parameters(
    module: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield ``(name, parameter)`` pairs exactly as ``module.named_parameters()`` does.

    >>> [name for name, _ in pyparams.named_parameters(torch.nn.Linear(2, 2), prefix="fc")]
    ['fc.weight', 'fc.bias']
    """
    prefix = _check_prefix("named_parameters", prefix)
    return _C.walk(module, _C.PARAMETERS, prefix, bool(recurse), bool(remove_duplicate), False, True)


def named_trainable_parameters(
    module: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield the ``(name, parameter)`` pairs of ``named_parameters`` whose parameter requires grad.

    >>> lin = torch.nn.Linear(2, 2).requires_grad_(False)
    >>> list(pyparams.named_trainable_parameters(lin))
    []
    """
    prefix = _check_prefix("named_trainable_parameters", prefix)
    return _C.walk(module, _C.PARAMETERS, prefix, bool(recurse), bool(remove_duplicate), True, True)


def parameter_list(
    module: nn.Module,
    *,
    trainable: bool = False,
    recurse: bool = True,
    remove_duplicate: bool = True,
) -> list[nn.Parameter]:
    """Return the parameters as a new list, walked eagerly in one native call.

    Equal to ``list(module.parameters())`` (or its ``requires_grad`` filter when
    ``trainable=True``); the list holds the module's own parameter objects.

    >>> len(pyparams.parameter_list(torch.nn.Linear(2, 2)))
    2
    """
    return _C.collect(module, _C.PARAMETERS, bool(recurse), bool(remove_duplicate), bool(trainable))


def buffers(
    module: nn.Module, recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[Tensor]:
    """Yield the buffers of ``module`` exactly as ``module.buffers()`` does.

    >>> len(list(pyparams.buffers(torch.nn.BatchNorm1d(4))))
    3
    """
    return _C.walk(module, _C.BUFFERS, "", bool(recurse), bool(remove_duplicate), False, False)


def named_buffers(
    module: nn.Module, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(name, buffer)`` pairs exactly as ``module.named_buffers()`` does.

    >>> [name for name, _ in pyparams.named_buffers(torch.nn.BatchNorm1d(4))]
    ['running_mean', 'running_var', 'num_batches_tracked']
    """
    prefix = _check_prefix("named_buffers", prefix)
    return _C.walk(module, _C.BUFFERS, prefix, bool(recurse), bool(remove_duplicate), False, True)


def modules(module: nn.Module, remove_duplicate: bool = True) -> Iterator[nn.Module]:
    """Yield ``module`` and every submodule, pre-order, exactly as ``module.modules()`` does.

    >>> [type(m).__name__ for m in pyparams.modules(torch.nn.Sequential(torch.nn.ReLU()))]
    ['Sequential', 'ReLU']
    """
    return _C.walk(module, _C.MODULES, "", True, bool(remove_duplicate), False, False)


def named_modules(
    module: nn.Module, prefix: str = "", remove_duplicate: bool = True
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` pairs exactly as ``module.named_modules()`` does.

    >>> [name for name, _ in pyparams.named_modules(torch.nn.Sequential(torch.nn.ReLU()))]
    ['', '0']
    """
    prefix = _check_prefix("named_modules", prefix)
    return _C.walk(module, _C.MODULES, prefix, True, bool(remove_duplicate), False, True)

