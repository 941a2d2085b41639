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
from pyparams.bench.formatting import render_table
from pyparams.bench.measure import CaseResult
from pyparams.bench.states import AFTER, DEFAULT_STATE, column_key, torch_column

__all__ = ["CASES", "CONSUMER_TARGETS", "TARGETS", "Target", "format_targets", "measure"]


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
    "zero3_fetch": 10.0,
    "zero3_blocks": 10.0,
    "functional_call": 1.2,
}


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


def measure(cases: Sequence[CaseResult]) -> list[dict[str, object]]:
    """Each target whose cases ran, per contender: the worst measured value and whether
    it met the goal (the rows of ``results.json``'s ``targets``)."""
    out: list[dict[str, object]] = []
    for target in TARGETS:
        chosen = CASES[target.cases](cases)
        for contender in target.contenders:
            if target.kind == "peak":
                values = [_peak_ratio(c, contender) for c in chosen]
            else:
                values = [_speedup(c, contender, target.state) for c in chosen]
            measured = [v for v in values if v is not None]
            if not measured:
                continue
            worst = max(measured) if target.kind == "peak" else min(measured)
            met = worst <= target.goal if target.kind == "peak" else worst >= target.goal
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
                }
            )
    return out


def _value(value: float, kind: str) -> str:
    return f"{value:.2f}" if kind == "peak" else f"{value:.1f}x"


def format_targets(measured: Sequence[dict[str, object]], markdown: bool = False) -> str:
    """The measured targets: a Markdown table, or one plain line each (the CLI's)."""
    if not markdown:
        return "\n".join(
            f"target {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['contender']} "
            f"worst {_value(float(t['measured']), str(t['kind']))}"  # type: ignore[arg-type]
            for t in measured
        )
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
    return render_table(
        ["target", "contender", "measured (worst case)", "goal", "met"], rows, markdown=True
    )
