"""The contenders: ways to get a module's parameters, and the check that they are right.

Each contender is one line of user code (``code``), measured as written. The reference
is PyTorch itself: before a contender is timed, :func:`check` compares its output with
torch's by identity (``is``), order and names (:class:`Reference`). ``torch.list``
(``list(m.parameters())``) is the baseline every speedup is measured against, and
``floor`` (draining an already built list of the same parameters) is the floor to chase.

>>> sorted(CONTENDERS)[:2]
['floor', 'pyparams.list']
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

import pyparams

__all__ = [
    "BASELINE",
    "CONTENDERS",
    "Contender",
    "ContenderMismatch",
    "Reference",
    "check",
    "resolve_contenders",
    "torch_reference",
]

BASELINE = "torch.list"

Bound = tuple[Callable[[], object], Callable[[], Iterable[object]]]


def _drain(iterable: Iterable[object]) -> object:
    """Consume ``iterable`` at C speed, keeping nothing (``deque(maxlen=0)``)."""
    return deque(iterable, maxlen=0)


@dataclass(frozen=True)
class Reference:
    """What torch yields for a module: the expected output of every contender kind."""

    parameters: list[nn.Parameter]
    named: list[tuple[str, nn.Parameter]]
    trainable: list[nn.Parameter]
    recursion_limit: int | None  # the raised limit torch needed, None if the default sufficed

    def expected(self, kind: str) -> Sequence[object]:
        """The expected items for a contender ``kind``."""
        by_kind = {"parameters": self.parameters, "named": self.named, "trainable": self.trainable}
        return by_kind[kind]


@dataclass(frozen=True)
class Contender:
    """A named way to consume a module's parameters.

    ``bind(module, reference)`` returns two zero-argument callables: ``run`` (the timed
    operation, exactly ``code``) and ``produce`` (a fresh iterable of the items, used for
    the correctness check and for the time to the first item).
    """

    name: str
    code: str
    library: str  # "torch", "pyparams" or "floor"
    kind: str  # "parameters", "named" or "trainable": which torch output it must equal
    lazy: bool  # whether the first item comes before the walk is complete
    counterpart: str | None  # the torch contender doing the same job
    bind: Callable[[nn.Module, Reference], Bound]


class ContenderMismatch(AssertionError):
    """A contender's output differs from torch's (objects, order or names)."""


@contextmanager
def _recursion_limit(limit: int) -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def torch_reference(module: nn.Module, depth_hint: int = 0) -> Reference:
    """Torch's own output for ``module``.

    Torch's generators recurse once per level of nesting and raise ``RecursionError`` near
    depth 1000; the reference for deeper trees is then computed by torch itself with the
    recursion limit raised (recorded in ``recursion_limit``) so deep chains are still
    checked against torch, never against a hand-written walk.
    """
    try:
        named = list(module.named_parameters())
        limit = None
    except RecursionError:
        limit = 10 * max(depth_hint, 1000) + 1000
        with _recursion_limit(limit):
            named = list(module.named_parameters())
    params = [p for _, p in named]
    return Reference(
        parameters=params,
        named=named,
        trainable=[p for p in params if p.requires_grad],
        recursion_limit=limit,
    )


def check(contender: Contender, module: nn.Module, reference: Reference) -> int:
    """Raise :class:`ContenderMismatch` unless the contender yields torch's output exactly.

    Compares length, then item by item: the same object (``is``) and, for named
    contenders, the same name. Returns the number of items checked.
    """
    _, produce = contender.bind(module, reference)
    got = list(produce())
    want = reference.expected(contender.kind)
    if len(got) != len(want):
        raise ContenderMismatch(
            f"{contender.name} yielded {len(got)} items, torch yields {len(want)}"
        )
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        if contender.kind == "named":
            assert isinstance(g, tuple) and isinstance(w, tuple)
            if g[0] != w[0] or g[1] is not w[1]:
                raise ContenderMismatch(
                    f"{contender.name} item {index} is ({g[0]!r}, id {id(g[1]):#x}), torch "
                    f"yields ({w[0]!r}, id {id(w[1]):#x})"
                )
        elif g is not w:
            raise ContenderMismatch(
                f"{contender.name} item {index} is not the object torch yields there"
            )
    return len(got)


# Each binder returns (run, produce); `m` is the module, `ref` the torch reference.
def _torch_parameters(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: _drain(m.parameters())), m.parameters


def _torch_list(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: list(m.parameters())), (lambda: list(m.parameters()))


def _torch_named(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: _drain(m.named_parameters())), m.named_parameters


def _torch_trainable(m: nn.Module, ref: Reference) -> Bound:
    def run() -> list[nn.Parameter]:
        return [p for p in m.parameters() if p.requires_grad]

    return run, run


def _pyparams_parameters(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: _drain(pyparams.parameters(m))), (lambda: pyparams.parameters(m))


def _pyparams_list(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: list(pyparams.parameters(m))), (lambda: list(pyparams.parameters(m)))


def _pyparams_parameter_list(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: pyparams.parameter_list(m)), (lambda: pyparams.parameter_list(m))


def _pyparams_named(m: nn.Module, ref: Reference) -> Bound:
    return (lambda: _drain(pyparams.named_parameters(m))), (lambda: pyparams.named_parameters(m))


def _pyparams_trainable(m: nn.Module, ref: Reference) -> Bound:
    return (
        (lambda: list(pyparams.trainable_parameters(m))),
        (lambda: pyparams.trainable_parameters(m)),
    )


def _pyparams_trainable_list(m: nn.Module, ref: Reference) -> Bound:
    def run() -> list:
        return pyparams.parameter_list(m, trainable=True)

    return run, run


def _floor(m: nn.Module, ref: Reference) -> Bound:
    items = list(ref.parameters)
    return (lambda: _drain(items)), (lambda: items)


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender(
            "torch.parameters",
            "for p in m.parameters(): ...",
            "torch",
            "parameters",
            True,
            None,
            _torch_parameters,
        ),
        Contender(
            "torch.list", "list(m.parameters())", "torch", "parameters", False, None, _torch_list
        ),
        Contender(
            "torch.named",
            "for n, p in m.named_parameters(): ...",
            "torch",
            "named",
            True,
            None,
            _torch_named,
        ),
        Contender(
            "torch.trainable",
            "[p for p in m.parameters() if p.requires_grad]",
            "torch",
            "trainable",
            False,
            None,
            _torch_trainable,
        ),
        Contender(
            "pyparams.parameters",
            "for p in pyparams.parameters(m): ...",
            "pyparams",
            "parameters",
            True,
            "torch.parameters",
            _pyparams_parameters,
        ),
        Contender(
            "pyparams.list",
            "list(pyparams.parameters(m))",
            "pyparams",
            "parameters",
            False,
            "torch.list",
            _pyparams_list,
        ),
        Contender(
            "pyparams.parameter_list",
            "pyparams.parameter_list(m)",
            "pyparams",
            "parameters",
            False,
            "torch.list",
            _pyparams_parameter_list,
        ),
        Contender(
            "pyparams.named",
            "for n, p in pyparams.named_parameters(m): ...",
            "pyparams",
            "named",
            True,
            "torch.named",
            _pyparams_named,
        ),
        Contender(
            "pyparams.trainable",
            "list(pyparams.trainable_parameters(m))",
            "pyparams",
            "trainable",
            True,
            "torch.trainable",
            _pyparams_trainable,
        ),
        Contender(
            "pyparams.trainable_list",
            "pyparams.parameter_list(m, trainable=True)",
            "pyparams",
            "trainable",
            False,
            "torch.trainable",
            _pyparams_trainable_list,
        ),
        Contender(
            "floor", "for p in already_built_list: ...", "floor", "parameters", True, None, _floor
        ),
    ]
}


def resolve_contenders(names: Sequence[str] | None) -> list[Contender]:
    """Contenders by name, in registry order, always with the baseline ``torch.list``.

    ``None`` means all of them. Raises ``KeyError`` naming the first unknown name.
    """
    if names is None:
        return list(CONTENDERS.values())
    for name in names:
        if name not in CONTENDERS:
            raise KeyError(f"unknown contender {name!r}; choose from: {', '.join(CONTENDERS)}")
    wanted = {BASELINE, *names}
    return [c for c in CONTENDERS.values() if c.name in wanted]
