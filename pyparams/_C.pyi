"""Type stubs for the native extension pyparams._C (see pyparams._api for the public API)."""

from collections.abc import Iterator
from typing import Any, Final, final

from torch import nn

__version__: Final[str]
__torch_version__: Final[str]
PARAMETERS: Final[int]
BUFFERS: Final[int]
MODULES: Final[int]

@final
class WalkIterator(Iterator[Any]):
    """Lazy native walk over a torch.nn.Module tree (made by pyparams)."""

    def __iter__(self) -> WalkIterator: ...
    def __next__(self) -> Any: ...

def walk(
    module: nn.Module,
    kind: int,
    prefix: str,
    recurse: bool,
    remove_duplicate: bool,
    trainable: bool,
    named: bool,
) -> WalkIterator: ...
def collect(
    module: nn.Module, kind: int, recurse: bool, remove_duplicate: bool, trainable: bool
) -> list[Any]: ...
