"""The project's performance targets: one declarative table, measured in each run, never asserted.

Every goal the report checks is a row of :data:`TARGETS` (the zoo) or
:data:`CONSUMER_TARGETS` (the consumers section); nothing else in the harness knows a
goal. A zoo target names the cases it covers (:data:`CASES`), the contenders, the state
and the goal; its measured value is the worst case's median of per-round ratios over the
torch contender doing the same job in the same state (``after``: torch after the same
sweep).

>>> [t.label for t in TARGETS if t.state == "after"][:2]
['real architectures >= 25x (after other work)', '300-deep chain >= 100x (after other work)']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyparams.bench.contenders import CONTENDERS
from pyparams.bench.formatting import format_ns, render_table
from pyparams.bench.measure import CaseResult
from pyparams.bench.states import AFTER, DEFAULT_STATE, column_key, torch_column

__all__ = [
    "CASES",
    "CONSUMER_TARGETS",
    "TARGETS",
    "Target",
    "consumer_target",
    "format_targets",
    "measure",
    "where_the_time_goes",
]


def _moe(cases: Sequence[CaseResult]) -> list[CaseResult]:
    named = [c for c in cases if c.model == "moe-32x64"]
    return named or [c for c in cases if c.family == "experts" and (c.size or 0) >= 64]


# Which cases a target covers, by name.
CASES: dict[str, Callable[[Sequence[CaseResult]], list[CaseResult]]] = {
    "real architectures": lambda cases: [c for c in cases if c.family == "arch"],
    "300-deep chain": lambda cases: [c for c in cases if c.model == "depth-300"],
    "20,000 siblings": lambda cases: [
        c for c in cases if c.family == "width" and (c.size or 0) >= 20000
    ],
    "unfused MoE": _moe,
    "every case": list,
}

_LISTS = ("pyparams.list", "pyparams.parameter_list")


@dataclass(frozen=True)
class Target:
    """A goal: ``kind`` ``speedup`` (at least ``goal`` times torch's speed) or ``peak``
    (tracemalloc peak at most ``goal`` times torch's)."""

    cases: str  # a key of CASES
    contenders: tuple[str, ...]
    goal: float
    state: str = DEFAULT_STATE
    kind: str = "speedup"
    what: str = ""  # the label's subject, when not the cases' name

    @property
    def label(self) -> str:
        subject = self.what or self.cases
        if self.kind == "peak":
            return f"{subject} <= {self.goal:g} of torch's generator"
        state = "after other work" if self.state == AFTER else self.state
        return f"{subject} >= {self.goal:g}x ({state})"


TARGETS: tuple[Target, ...] = (
    Target("real architectures", _LISTS, 50.0),
    Target("300-deep chain", _LISTS, 300.0),
    Target("20,000 siblings", _LISTS, 20.0),
    Target("unfused MoE", _LISTS, 20.0),
    Target("real architectures", ("pyparams.named",), 20.0, what="named walks, real architectures"),
    Target("real architectures", _LISTS, 25.0, AFTER),
    Target("300-deep chain", _LISTS, 100.0, AFTER),
    Target("20,000 siblings", _LISTS, 25.0, AFTER),
    Target("unfused MoE", _LISTS, 25.0, AFTER),
    Target(
        "every case",
        ("pyparams.parameters",),
        0.25,
        kind="peak",
        what="lazy iteration tracemalloc peak",
    ),
)

# Consumers section: speedup over torch, the best of patched and native.
CONSUMER_TARGETS: dict[str, float] = {
    "zero_grad": 10.0,
    "requires_grad_": 8.0,
    "num_parameters": 8.0,
    "optimizer": 3.0,
    "zero3_fetch": 5.0,
    "zero3_blocks": 10.0,
    "functional_call": 1.2,
}

# Consumers whose goal is set for the unfused MoE alone (``moe-LAYERSxEXPERTS``):
# functional_call swaps every parameter per call, and only where a model has thousands
# of them is the walk a part of it worth a goal; on GPT-2 it is under 1% of the call.
MOE_ONLY_CONSUMER_TARGETS: frozenset[str] = frozenset({"functional_call"})


def consumer_target(consumer: str, model: str) -> float | None:
    """The goal of ``consumer`` on ``model`` (a consumers row), or None where it has none.

    >>> consumer_target("functional_call", "moe-32x64"), consumer_target("functional_call", "gpt2")
    (1.2, None)
    """
    if consumer in MOE_ONLY_CONSUMER_TARGETS and not model.startswith("moe-"):
        return None
    return CONSUMER_TARGETS.get(consumer)


# Consumers section: the walk's share of the patched consumer's time, at most this for every
# consumer that walks (what remains is not a walk: freeing gradients, kernels, a loop of
# the caller's own). Where the consumer is the walk (ZeRO-3's fetches) it cannot be met.
WALK_SHARE_GOAL = 0.10


def _speedup(case: CaseResult, contender: str, state: str) -> float | None:
    counterpart = CONTENDERS[contender].counterpart
    if counterpart is None:
        return None
    return case.speedup(column_key(contender, state), torch_column(counterpart, state))


def _peak_ratio(case: CaseResult, contender: str) -> float | None:
    counterpart = CONTENDERS[contender].counterpart
    ours, theirs = case.contenders.get(contender), case.contenders.get(counterpart or "")
    if not (
        ours and theirs and ours.memory and theirs.memory and theirs.memory.tracemalloc_peak > 0
    ):
        return None
    return ours.memory.tracemalloc_peak / theirs.memory.tracemalloc_peak


def _times(case: CaseResult, contender: str, state: str) -> dict[str, object]:
    """Where a speedup target's worst case spends its time: the contender's and torch's
    medians in the target's state, and the floor's there (draining a list already built)."""
    counterpart = CONTENDERS[contender].counterpart or ""
    return {
        "worst_case": f"{case.model}[{case.device}]",
        "ns": case.median_ns(column_key(contender, state)),
        "torch_ns": case.median_ns(torch_column(counterpart, state)),
        "floor_ns": case.median_ns(torch_column("floor", state)),
    }


def measure(cases: Sequence[CaseResult]) -> list[dict[str, object]]:
    """Each target whose cases ran, per contender: the worst measured value, whether it
    met the goal, and for speedups the worst case's times (the rows of ``results.json``'s
    ``targets``)."""
    out: list[dict[str, object]] = []
    for target in TARGETS:
        chosen = CASES[target.cases](cases)
        for contender in target.contenders:
            if target.kind == "peak":
                values = [_peak_ratio(c, contender) for c in chosen]
            else:
                values = [_speedup(c, contender, target.state) for c in chosen]
            measured = [(v, c) for v, c in zip(values, chosen, strict=True) if v is not None]
            if not measured:
                continue
            pick = max if target.kind == "peak" else min
            worst, worst_case = pick(measured, key=lambda pair: pair[0])
            met = worst <= target.goal if target.kind == "peak" else worst >= target.goal
            times = _times(worst_case, contender, target.state) if target.kind != "peak" else {}
            out.append(
                {
                    "target": target.label,
                    "state": target.state,
                    "kind": target.kind,
                    "cases": (
                        [f"{len(measured)} cases"]
                        if target.cases == "every case"
                        else [f"{c.model}[{c.device}]" for c in chosen]
                    ),
                    "contender": contender,
                    "measured": worst,
                    "goal": target.goal,
                    "met": met,
                    **times,
                }
            )
    return out


def _value(value: float, kind: str) -> str:
    return f"{value:.2f}" if kind == "peak" else f"{value:.1f}x"


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def where_the_time_goes(target: dict[str, object]) -> str:
    """For a missed speedup target: what the goal allows its worst case, what it took, and
    how much of that the floor (draining a list already built, same state) takes; ``''``
    for a met one, a peak, or a row without times (results written before they were kept).

    >>> where_the_time_goes({"met": False, "kind": "speedup", "goal": 100.0,
    ...     "worst_case": "depth-300[cpu]", "ns": 40_000.0, "torch_ns": 3_000_000.0,
    ...     "floor_ns": 20_000.0}).split("; ")  # doctest: +NORMALIZE_WHITESPACE
    ['depth-300[cpu]: the goal allows 30 us (torch 3 ms / 100)',
     'it took 40 us, of which 20 us (50%) is the floor']
    """
    ns, torch_ns, floor_ns = (_float(target.get(k)) for k in ("ns", "torch_ns", "floor_ns"))
    if target["met"] or target["kind"] != "speedup" or not ns or not torch_ns:
        return ""
    goal = float(target["goal"])  # type: ignore[arg-type]
    text = (
        f"{target['worst_case']}: the goal allows {format_ns(torch_ns / goal)} "
        f"(torch {format_ns(torch_ns)} / {goal:g}); it took {format_ns(ns)}"
    )
    if floor_ns:
        text += f", of which {format_ns(floor_ns)} ({floor_ns / ns:.0%}) is the floor"
    return text


def format_targets(measured: Sequence[dict[str, object]], markdown: bool = False) -> str:
    """The measured targets: a Markdown table (and, for each missed one, where its worst
    case's time goes), or one plain line each (the CLI's)."""
    if not markdown:
        lines = []
        for t in measured:
            line = (
                f"target {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['contender']} "
                f"worst {_value(float(t['measured']), str(t['kind']))}"  # type: ignore[arg-type]
            )
            detail = where_the_time_goes(t)
            lines.append(f"{line} ({detail})" if detail else line)
        return "\n".join(lines)
    rows = [
        [
            f"{t['target']} ({', '.join(t['cases'])})",
            str(t["contender"]),  # type: ignore[call-overload]
            _value(float(t["measured"]), str(t["kind"])),  # type: ignore[arg-type]
            _value(float(t["goal"]), str(t["kind"])),  # type: ignore[arg-type]
            "yes" if t["met"] else "NO",
        ]
        for t in measured
    ]
    table = render_table(
        ["target", "contender", "measured (worst case)", "goal", "met"], rows, markdown=True
    )
    missed = [
        f"- {t['target']}, `{t['contender']}`: {detail}"
        for t in measured
        if (detail := where_the_time_goes(t))
    ]
    if not missed:
        return table
    return "\n".join(
        [
            table,
            "",
            "Where the time goes in each missed target's worst case (medians; the floor is "
            "draining a list of the same parameters that is already built, in the same state):",
            "",
            *missed,
        ]
    )
