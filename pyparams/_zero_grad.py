"""pyparams.zero_grad: ``Module.zero_grad`` with both the walk and the per-parameter loop native."""

from __future__ import annotations

import warnings
import weakref

from torch import nn
from torch.compiler import is_dynamo_compiling

from pyparams._extension import _C
from pyparams._unset import UNSET, given, or_torch_default, shows_torch_defaults

__all__ = ["zero_grad"]

# torch's own implementation, captured before anything can be patched: what a
# compiled region runs, and what tells an override of zero_grad apart.
_TORCH_ZERO_GRAD = nn.Module.__dict__["zero_grad"]

# Word for word the warning torch's Module.zero_grad gives on a DataParallel replica.
REPLICA_WARNING = (
    "Calling .zero_grad() from a module created with nn.DataParallel() has no effect. "
    "The parameters are copied (in a differentiable manner) from the original module. "
    "This means they are not leaf nodes in autograd and so don't accumulate gradients. "
    "If you need gradients in your forward method, consider using autograd.grad instead."
)


def reset_grads(module: nn.Module, set_to_none: bool) -> None:
    """The loop of torch's ``Module.zero_grad`` over ``module.parameters()``, in C++.

    The walk honours an override of ``parameters`` on ``module``, as torch's
    ``self.parameters()`` call does.
    """
    walk = _C.walk(module, kind=_C.PARAMETERS, dispatch="parameters")
    _C.zero_grad(walk, set_to_none=set_to_none)  # its truth asked per parameter, as torch does


@shows_torch_defaults
def zero_grad(module: nn.Module, set_to_none: bool = UNSET) -> None:
    """Reset the gradients of ``module``'s parameters exactly as ``module.zero_grad()`` does.

    Same warning for a ``DataParallel`` replica, ``set_to_none=True`` sets each
    ``p.grad`` to None, ``set_to_none=False`` detaches (or un-requires) and zeroes it
    in place; tensor subclasses go through their own Python attributes. Where
    ``module.zero_grad`` is not torch's own method bound to ``module`` (an override in a
    subclass or on the instance, another module's method, ``None``), it is called as
    ``module.zero_grad(...)`` calls it: with ``set_to_none`` only if it was passed (by
    keyword), and its result returned.

    >>> lin = torch.nn.Linear(2, 2)
    >>> lin(torch.ones(1, 2)).sum().backward()
    >>> pyparams.zero_grad(lin)
    >>> [p.grad for p in lin.parameters()]
    [None, None]
    """
    proxy = type(module) in weakref.ProxyTypes
    if not issubclass(type(module), nn.Module) and not (proxy and isinstance(module, nn.Module)):
        raise TypeError(f"pyparams expected a torch.nn.Module, got {type(module).__name__}")
    method = module.zero_grad  # the lookup `module.zero_grad()` makes, errors included
    if proxy:  # `proxy.zero_grad()` runs its referent's method: that is the module
        module = getattr(method, "__self__", module)
    if getattr(method, "__self__", None) is not module or not _is_base(
        getattr(method, "__func__", None)
    ):
        return method(**given(set_to_none=set_to_none))  # and its result, as torch's call
    set_to_none = or_torch_default("set_to_none", set_to_none)
    if is_dynamo_compiling():  # folded to True by dynamo (see pyparams._patch)
        _TORCH_ZERO_GRAD(module, set_to_none)  # torch's own code, which dynamo traces
        return
    if getattr(module, "_is_replica", False):
        warnings.warn(REPLICA_WARNING, stacklevel=2)
    reset_grads(module, set_to_none)


def _is_base(method: object) -> bool:
    # torch's zero_grad, or pyparams' replacement while the patch is on.
    return method is _TORCH_ZERO_GRAD or getattr(method, "_pyparams_replaces", None) == "zero_grad"
