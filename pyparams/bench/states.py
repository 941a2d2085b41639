"""The walk cache's states a pyparams contender is timed in, and how each is set up.

- ``cold``: ``pyparams.cache_clear()`` before every timed call, so each call is the first
  walk of a root with the cache empty;
- ``warm`` (the default): untimed walks before each sample, so every timed call replays
  the record of an unchanged model;
- ``invalidated``: before every timed call, untimed walks (so a record exists), then
  every module's ``__dict__`` is written (its ``training`` flag flipped and flipped back,
  as ``model.train()`` after ``model.eval()`` does), so the timed replay meets modules
  that changed since it was recorded.

The set-up always runs outside the timed region. Torch contenders and the floor never
touch the cache: they have no state, one column each.

>>> variant("pyparams.list", "cold"), variant("pyparams.list", "warm")
('pyparams.list@cold', 'pyparams.list')
>>> split("pyparams.list@invalidated"), split("torch.list")
(('pyparams.list', 'invalidated'), ('torch.list', None))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

import pyparams

__all__ = [
    "COUNTERS",
    "DEFAULT_STATE",
    "STATES",
    "Variant",
    "cache_counts",
    "invalidate",
    "split",
    "variant",
    "variants",
]

STATES: tuple[str, ...] = ("cold", "warm", "invalidated")
DEFAULT_STATE = "warm"
# The cache_info() fields that count walks; the harness records their growth per sample.
COUNTERS: tuple[str, ...] = ("hits", "misses", "invalidations", "revalidations")
# Untimed walks that make a sample warm: a root's first walk only notes it, its second
# records, so two make the next one a replay.
WARM_WALKS = 2


def variant(name: str, state: str | None) -> str:
    """The result key of contender ``name`` in ``state``: the warm one keeps the plain name."""
    return name if state in (None, DEFAULT_STATE) else f"{name}@{state}"


def split(key: str) -> tuple[str, str | None]:
    """``(contender, state)`` of a result key; ``state`` is ``None`` for a state-less one."""
    name, _, state = key.partition("@")
    if state:
        return name, state
    return name, DEFAULT_STATE if name.startswith("pyparams.") else None


def cache_counts() -> tuple[int, ...]:
    """The cache's walk counters now, in :data:`COUNTERS` order."""
    info = pyparams.cache_info()
    return tuple(int(getattr(info, field)) for field in COUNTERS)


def _modules_of(module: nn.Module) -> list[nn.Module]:
    """Every unique module of the tree, by an explicit stack (any depth, no cache involved:
    a pyparams walk here would revalidate the very record the state is meant to spoil)."""
    seen: set[int] = set()
    found: list[nn.Module] = []
    stack = [module]
    while stack:
        mod = stack.pop()
        if id(mod) not in seen:
            seen.add(id(mod))
            found.append(mod)
            stack.extend(child for child in mod._modules.values() if child is not None)
    return found


def invalidate(modules: Sequence[nn.Module]) -> None:
    """Write every module's ``__dict__``, leaving every value as it was.

    Flipping ``training`` twice stores a different object each time; storing the same
    object (``m.training = m.training``) may leave a dict's version unchanged.
    """
    for mod in modules:
        mod.training = not mod.training
        mod.training = not mod.training


@dataclass(frozen=True)
class Variant:
    """One timed column of a contender: its key, state, and the untimed set-up.

    ``per_call``: the set-up runs before every timed call (cold, invalidated), not once
    before each sample (warm).
    """

    key: str
    state: str
    setup: Callable[[], None]
    per_call: bool


def variants(name: str, module: nn.Module, run: Callable[[], object],
             states: Sequence[str] = STATES) -> list[Variant]:
    """The variants of pyparams contender ``name`` (``run`` is its timed call) on ``module``."""
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise ValueError(f"unknown state {unknown[0]!r}; choose from: {', '.join(STATES)}")
    modules = _modules_of(module) if "invalidated" in states else []

    def warm() -> None:
        for _ in range(WARM_WALKS):
            run()

    def invalidated() -> None:
        warm()
        invalidate(modules)

    setups: dict[str, tuple[Callable[[], None], bool]] = {
        "cold": (pyparams.cache_clear, True),
        "warm": (warm, False),
        "invalidated": (invalidated, True),
    }
    return [Variant(variant(name, s), s, *setups[s]) for s in STATES if s in states]
