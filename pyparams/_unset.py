"""``UNSET``: the default of the public functions' optional arguments.

``m.parameters()`` and ``m.parameters(recurse=True)`` differ where ``m``'s class overrides
``parameters`` with a default of its own, so ``pyparams.parameters(m)`` and
``pyparams.parameters(m, recurse=True)`` must differ the same way. Their defaults are
``UNSET``: the native walk reads it as torch's default, and calls an override with only
the arguments that are not ``UNSET``. The functions' signatures show torch's defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from pyparams._extension import _C

__all__ = ["TORCH_DEFAULTS", "UNSET", "given", "or_torch_default", "shows_torch_defaults"]

# torch's defaults of the arguments the public functions share with its methods.
TORCH_DEFAULTS: dict[str, object] = {
    "prefix": "",
    "recurse": True,
    "remove_duplicate": True,
    "set_to_none": True,
}


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not passed>"

    def __bool__(self) -> NoReturn:
        # Its truth is never torch's default's: a path that asks it has a bug.
        raise TypeError("pyparams: an argument that was not passed has no truth")


UNSET: Any = _Unset()
_C.set_unset(UNSET)

F = TypeVar("F", bound=Callable[..., Any])


def shows_torch_defaults(function: F) -> F:
    """Give ``function`` the signature it stands for: torch's defaults in place of UNSET."""
    signature = inspect.signature(function)
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(default=TORCH_DEFAULTS[p.name]) if p.default is UNSET else p
            for p in signature.parameters.values()
        ]
    )
    return function


def given(**arguments: Any) -> dict[str, Any]:
    """The arguments the caller passed (those not UNSET): what to pass on, by keyword."""
    return {name: value for name, value in arguments.items() if value is not UNSET}


def or_torch_default(name: str, value: Any) -> Any:
    """``value``, or torch's default for ``name`` where it was not passed."""
    return TORCH_DEFAULTS[name] if value is UNSET else value
