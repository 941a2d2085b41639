"""Type stubs for the native extension pyparams._C (see pyparams._api for the public API)."""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NoReturn, final

from torch import nn

__version__: Final[str]
__torch_version__: Final[str]
PARAMETERS: Final[int]
BUFFERS: Final[int]
MODULES: Final[int]
# torch's dispatch chain per kind: the method at each level (None: the kind has none),
# "children" last.
DISPATCH_CHAIN: Final[dict[int, tuple[str | None, ...]]]

@final
class WalkIterator(Iterator[Any]):
    """Lazy native walk over a torch.nn.Module tree (made by pyparams)."""

    def __iter__(self) -> WalkIterator: ...
    def __next__(self) -> Any: ...
    def send(self, value: None, /) -> Any: ...
    def throw(self, type: Any, value: Any = None, traceback: Any = None, /) -> NoReturn: ...
    def close(self) -> None: ...
    # A walk that will replay more than 8 items also has __length_hint__ (PEP 424).

def walk(
    module: nn.Module,
    *,
    kind: int,
    named: bool = False,
    prefix: str = "",
    recurse: bool = True,
    remove_duplicate: bool = True,
    trainable: bool = False,
    dispatch: str | None = None,
) -> WalkIterator | Iterator[Any]: ...
def collect(
    module: nn.Module,
    *,
    kind: int,
    recurse: bool = True,
    remove_duplicate: bool = True,
    trainable: bool = False,
    dispatch: str | None = None,
) -> list[Any]: ...
def set_torch_walk(walk: Callable[..., Iterator[Any]], /) -> None: ...
def set_unset(unset: object, /) -> None: ...
def cache_info() -> tuple[int, int, int, int, int, int, bool, int, int, str]: ...
def cache_clear() -> None: ...
def register_base_method(name: str, function: Callable[..., Any]) -> None: ...
def zero_grad(parameters: Iterable[Any], *, set_to_none: bool = True) -> None: ...
