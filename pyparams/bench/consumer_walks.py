"""The walks a consumer makes, recorded once and replayed alone: the walk's share of a consumer.

A consumer's walk is not guessed: one run of the consumer, with torch's own methods, records
every call it makes to ``nn.Module``'s walking methods (the ones ``pyparams.patch()``
replaces) and how many items it takes from each. Calls those methods make to each other
(``parameters`` -> ``named_parameters`` -> ``named_modules`` -> a child's ``named_modules``)
are torch's walk itself, not the consumer's, and are not recorded. Replaying the record
(the same modules, arguments and item counts, nothing else) is the walk alone, timed with
torch's methods and with the patch on, next to the consumer's total.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

from torch import nn

import pyparams
from pyparams import _patch

__all__ = ["WalkCall", "record_walks", "replay_walks"]

WALKING = ("parameters", "named_parameters", "buffers", "named_buffers", "modules", "named_modules")

# Code objects of torch's walking methods: a call made from one of them is torch's
# recursion (part of the walk already recorded), not a call of the consumer's.
_TORCH_CODES = frozenset(
    [_patch._TORCH[name].__code__ for name in WALKING]
    + [nn.Module.__dict__["_named_members"].__code__]
)


@dataclass
class WalkCall:
    """One call of a walking method by a consumer, how many items it took, and whether
    it ran the walk to its end."""

    module: nn.Module
    method: str
    args: tuple
    kwargs: dict
    taken: int = 0
    finished: bool = False


def _recorder(name: str, calls: list[WalkCall]) -> Callable[..., Iterator[object]]:
    torch_method = _patch._TORCH[name]

    def record(self: nn.Module, *args: object, **kwargs: object) -> Iterator[object]:
        walk = torch_method(self, *args, **kwargs)
        if sys._getframe(1).f_code in _TORCH_CODES:
            return walk
        call = WalkCall(self, name, _fresh(args), _fresh(kwargs))
        calls.append(call)
        return _counted(walk, call)

    return record


def _fresh(arguments: tuple | dict) -> tuple | dict:
    """The arguments with each set (a memo the walk fills) copied."""
    if isinstance(arguments, dict):
        return {k: set(v) if isinstance(v, set) else v for k, v in arguments.items()}
    return tuple(set(v) if isinstance(v, set) else v for v in arguments)


def _call(module: nn.Module, method: str, args: tuple, kwargs: dict) -> Iterator[object]:
    """A call with arguments that are no literals, each memo set fresh (the walk fills it)."""
    return getattr(module, method)(*_fresh(args), **_fresh(kwargs))


def _counted(walk: Iterator[object], call: WalkCall) -> Iterator[object]:
    for item in walk:
        call.taken += 1
        yield item
    call.finished = True


def record_walks(run: Callable[[], object]) -> list[WalkCall]:
    """Runs ``run()`` once with torch's walking methods (the patch must be off) and returns
    the walk calls it made, in order, with the items it took from each."""
    if pyparams.is_patched():
        raise RuntimeError("record_walks() records torch's own walks: unpatch first")
    calls: list[WalkCall] = []
    for name in WALKING:
        setattr(nn.Module, name, _recorder(name, calls))
    try:
        run()
    finally:
        for name in WALKING:
            setattr(nn.Module, name, _patch._TORCH[name])
    return calls


def replay_walks(calls: list[WalkCall]) -> Callable[[], None]:
    """A function that makes the recorded calls again, through whatever ``nn.Module``
    holds when it runs (torch's methods, or the patch's): ``list()`` of each, run to its
    end where the consumer ran it to its end (only a finished walk is recorded by the walk
    cache: stopping one item short would time pyparams cold), else for the items it took.

    Consecutive calls of one method with the same literal arguments become one loop of
    plain calls, compiled, so the replay's own cost per call is a list comprehension's
    (a generic call through ``getattr`` and ``**kwargs`` would add ~300 ns to each call
    and overstate the walk of consumers that make thousands of small ones)."""
    loops: list[tuple[str, str, list[object]]] = []  # (loop variables, body, what it iterates)
    for c in calls:
        arguments = _literal_arguments(c)
        if arguments is None:  # e.g. a memo set: called generically, on its own
            head, walk = "module, method, args, kwargs", "_call(module, method, args, kwargs)"
            item: object = (c.module, c.method, c.args, c.kwargs)
        else:
            head, walk, item = "module", f"module.{c.method}({arguments})", c.module
        walk = f"list({walk})" if c.finished else f"list(islice({walk}, {c.taken}))"
        if arguments is not None and loops and loops[-1][:2] == (head, walk):
            loops[-1][2].append(item)
        else:
            loops.append((head, walk, [item]))
    body = [
        f"    for {head} in _loops[{index}]:\n        {walk}"
        for index, (head, walk, _) in enumerate(loops)
    ]
    text = "\n".join(["def replay():", *body, "    return None"])
    namespace: dict[str, object] = {
        "_loops": [items for *_, items in loops],
        "islice": islice,
        "_call": _call,
    }
    exec(compile(text, "<replay_walks>", "exec"), namespace)
    return namespace["replay"]  # type: ignore[return-value]


_LITERALS = (bool, int, str, type(None))


def _literal_arguments(call: WalkCall) -> str | None:
    """The call's arguments as source text, when every one is a plain literal."""
    values = (*call.args, *call.kwargs.values())
    if not all(type(value) in _LITERALS for value in values):
        return None
    return ", ".join(
        [repr(value) for value in call.args]
        + [f"{name}={value!r}" for name, value in call.kwargs.items()]
    )
