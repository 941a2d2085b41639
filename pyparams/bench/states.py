"""The walk cache's states a pyparams contender is timed in, and how each is set up.

- ``cold``: ``pyparams.cache_clear()`` before every timed call, so each call is the first
  walk of a root with the cache empty;
- ``warm`` (the default): untimed walks before each sample, so every timed call replays
  the record of an unchanged model;
- ``invalidated``: before every timed call, untimed walks (so a record exists), then
  every module's ``__dict__`` is written (its ``training`` flag flipped and flipped back,
  as ``model.train()`` after ``model.eval()`` does), so the timed replay meets modules
  that changed since it was recorded;
- ``after`` (after other work): before every timed call, untimed walks as for ``warm``,
  then a sweep through a buffer larger than the last-level cache
  (:mod:`pyparams.bench.sweep`), as a step's forward, backward and optimizer do between
  two walks. One call per sample.

The set-up always runs outside the timed region. Torch contenders have no cache: their
plain column is the hot loop, and they get an ``after`` column with the same sweep, so
the ratios compare like with like. The floor likewise: what draining a list that is
already built costs after the sweep is what no walk can go below there.

>>> column_key("pyparams.list", "cold"), column_key("pyparams.list", "warm")
('pyparams.list@cold', 'pyparams.list')
>>> split("pyparams.list@invalidated"), split("torch.list"), split("torch.list@after")
(('pyparams.list', 'invalidated'), ('torch.list', None), ('torch.list', 'after'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

import pyparams

__all__ = [
    "AFTER",
    "COUNTERS",
    "DEFAULT_STATE",
    "STATES",
    "TORCH_STATES",
    "StateColumn",
    "cache_counts",
    "column_key",
    "invalidate",
    "split",
    "state_columns",
    "torch_column",
]

STATES: tuple[str, ...] = ("cold", "warm", "invalidated", "after")
AFTER = "after"
TORCH_STATES: tuple[str, ...] = (AFTER,)  # the states a torch contender is timed in too
DEFAULT_STATE = "warm"
# The cache_info() fields that count walks; the harness records their growth per sample.
COUNTERS: tuple[str, ...] = ("hits", "misses", "invalidations", "revalidations")
# Untimed walks that make a sample warm: a root's first walk only notes it, its second
# records, so two make the next one a replay.
WARM_WALKS = 2


def column_key(name: str, state: str | None) -> str:
    """The result key of contender ``name`` in ``state``: the warm one keeps the plain name."""
    return name if state in (None, DEFAULT_STATE) else f"{name}@{state}"


def torch_column(name: str, state: str | None) -> str:
    """The key of torch contender ``name``'s column that a pyparams column in ``state`` is
    compared with: the same state where torch has it (``after``), else its hot loop."""
    return column_key(name, state) if state in TORCH_STATES else name


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
class StateColumn:
    """One timed column of a contender in a state: its key, state, and the untimed set-up.

    ``per_call``: the set-up runs before every timed call (cold, invalidated, after), not
    once before each sample (warm); ``calls_per_sample``: a fixed count (``after``: one,
    the sweep costs far more than the call), ``None`` to calibrate; ``counted``: the
    cache's counters are recorded (pyparams' columns).
    """

    key: str
    state: str
    setup: Callable[[], None]
    per_call: bool
    calls_per_sample: int | None = None
    counted: bool = True


def _check_states(states: Sequence[str]) -> None:
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise ValueError(f"unknown state {unknown[0]!r}; choose from: {', '.join(STATES)}")


def state_columns(
    name: str,
    library: str,
    module: nn.Module,
    run: Callable[[], object],
    states: Sequence[str],
    sweep: Callable[[], None],
) -> list[StateColumn]:
    """The state columns of contender ``name`` (``run`` is its timed call) on ``module``:
    every state of ``states`` for a pyparams contender, the :data:`TORCH_STATES` among them
    for a torch one and the floor (their plain column is not listed here). ``sweep`` is
    the other work of the ``after`` state."""
    _check_states(states)
    if library in ("torch", "floor"):
        return [
            StateColumn(column_key(name, s), s, sweep, True, 1, counted=False)
            for s in TORCH_STATES
            if s in states
        ]
    if library != "pyparams":
        return []
    modules = _modules_of(module) if "invalidated" in states else []

    def warm() -> None:
        for _ in range(WARM_WALKS):
            run()

    def invalidated() -> None:
        warm()
        invalidate(modules)

    def after() -> None:
        warm()
        sweep()

    setups: dict[str, tuple[Callable[[], None], bool, int | None]] = {
        "cold": (pyparams.cache_clear, True, None),
        "warm": (warm, False, None),
        "invalidated": (invalidated, True, None),
        AFTER: (after, True, 1),
    }
    return [StateColumn(column_key(name, s), s, *setups[s]) for s in STATES if s in states]
