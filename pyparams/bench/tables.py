"""README's and docs' result tables, generated from ``benchmarks/results/``, never typed.

A table in ``README.md`` or ``docs/*.md`` stands between two markers::

    <!-- pyparams-table: NAME -->
    ...
    <!-- /pyparams-table -->

and :data:`TABLES` says how each NAME is made from the committed results (``results.json``,
``consumers.json``, ``distributed.json``): ``--write`` rewrites what stands between the
markers, ``--check`` exits 1 naming each table that differs from what the results give.

    python -m pyparams.bench.tables --write      # after make results
    python -m pyparams.bench.tables --check      # what tests/test_result_tables.py runs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pyparams.bench.claims import Verdict, format_verdicts
from pyparams.bench.consumer_report import format_consumers
from pyparams.bench.consumers import ConsumerRow
from pyparams.bench.distributed_report import format_speedups, rows
from pyparams.bench.formatting import format_ratio, render_table
from pyparams.bench.measure import CaseResult, ContenderResult, MemoryUse
from pyparams.bench.report import format_summary
from pyparams.bench.states import AFTER, column_key, torch_column
from pyparams.bench.targets import CASES, TARGETS, format_targets, measure

__all__ = ["MARKER", "TABLES", "Results", "check", "documents", "main", "render", "write"]

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(
    r"(<!-- pyparams-table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /pyparams-table -->)",
    re.DOTALL,
)


class Results:
    """The committed results in ``folder``, each file read once, when first needed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._json: dict[str, object] = {}

    def _read(self, name: str) -> object:
        if name not in self._json:
            path = self.folder / name
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `make results` first")
            self._json[name] = json.loads(path.read_text())
        return self._json[name]

    def zoo(self) -> dict[str, object]:
        return self._read("results.json")  # type: ignore[return-value]

    def cases(self) -> list[CaseResult]:
        return [_case(data) for data in self.zoo()["cases"]]  # type: ignore[union-attr]

    def verdicts(self) -> list[Verdict]:
        return [Verdict(**data) for data in self.zoo()["claims"]]  # type: ignore[union-attr]

    def consumers(self) -> list[ConsumerRow]:
        return [ConsumerRow(**data) for data in self._read("consumers.json")]  # type: ignore[union-attr]

    def distributed(self) -> list[dict[str, object]]:
        return rows(self._read("distributed.json")["samples"])  # type: ignore[index]


def _case(data: dict[str, object]) -> CaseResult:
    """A :class:`CaseResult` again, from its ``results.json`` form."""
    contenders = {}
    for name, result in data["contenders"].items():  # type: ignore[attr-defined]
        memory = result["memory"]
        contenders[name] = ContenderResult(
            **{**result, "memory": MemoryUse(**memory) if memory else None}
        )
    return CaseResult(**{**data, "contenders": contenders})  # type: ignore[arg-type]


def _range(values: Sequence[float | None]) -> str:
    found = sorted(v for v in values if v is not None)
    if not found:
        return "-"
    low, high = format_ratio(found[0]), format_ratio(found[-1])
    return low if low == high else f"{low}-{high}"


def _family_goals(family: str, met: dict[tuple[object, object], object]) -> str:
    """``>= 50x: met / >= 25x: missed``: the pyparams.list goals of a family, hot / after."""
    goals = []
    for state in ("warm", AFTER):
        target = next(
            (
                t
                for t in TARGETS
                if t.cases == family and t.state == state and "pyparams.list" in t.contenders
            ),
            None,
        )
        verdict = "met" if target and met.get((target.label, "pyparams.list")) else "missed"
        goals.append("-" if target is None else f">= {target.goal:g}x: {verdict}")
    return " / ".join(goals)


def headline(results: Results) -> str:
    """README's one table: ``list(pyparams.parameters(m))`` over ``list(m.parameters())``
    per family, hot and after other work, with the goals and verdicts; memory; claims."""
    cases = results.cases()
    measured = measure(cases)
    met = {(t["target"], t["contender"]): t["met"] for t in measured}
    table = []
    for family in ("real architectures", "300-deep chain", "20,000 siblings", "unfused MoE"):
        chosen = CASES[family](cases)
        if chosen:
            table.append(
                [
                    f"{family} ({', '.join(c.model for c in chosen)})",
                    *(
                        _range(
                            [
                                c.speedup(
                                    column_key("pyparams.list", state),
                                    torch_column("torch.list", state),
                                )
                                for c in chosen
                            ]
                        )
                        for state in ("warm", AFTER)
                    ),
                    _family_goals(family, met),
                ]
            )
    for row in measured:
        if row["kind"] == "peak":
            table.append(
                [
                    f"tracemalloc peak of a lazy walk over torch's generator "
                    f"({', '.join(row['cases'])})",  # type: ignore[arg-type]
                    f"{float(row['measured']):.2f} worst",
                    "-",  # type: ignore[arg-type]
                    f"<= {float(row['goal']):g}: {'met' if row['met'] else 'missed'}",
                ]
            )  # type: ignore[arg-type]
    for verdict in results.verdicts():
        table.append([f"claim: {verdict.claim}", f"{verdict.verdict}: {verdict.reason}", "-", "-"])
    return render_table(
        ["what", "hot (warm)", "after other work", "goal (hot / after)"], table, markdown=True
    )


def _zoo(results: Results) -> str:
    return format_summary(results.cases(), markdown=True)


def _targets(results: Results) -> str:
    return format_targets(measure(results.cases()), markdown=True)


def _claims(results: Results) -> str:
    return f"```\n{format_verdicts(results.verdicts())}\n```"


def _consumers(results: Results) -> str:
    return format_consumers(results.consumers(), markdown=True)


def _distributed(results: Results) -> str:
    return format_speedups(results.distributed())


TABLES: dict[str, Callable[[Results], str]] = {
    "headline": headline,
    "zoo": _zoo,
    "targets": _targets,
    "claims": _claims,
    "consumers": _consumers,
    "distributed": _distributed,
}


def render(name: str, results: Results) -> str:
    """Table ``name`` from ``results`` (``KeyError`` naming an unknown table)."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name](results).rstrip("\n") + "\n"


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose tables are generated: README.md and docs/*.md, where they exist."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def _rewritten(text: str, results: Results) -> str:
    return MARKER.sub(lambda m: m.group(1) + render(m.group("name"), results) + m.group(4), text)


def check(paths: Sequence[Path], results: Results) -> list[str]:
    """``path: table NAME`` for each table in ``paths`` that the results would change."""
    stale = []
    for path in paths:
        for match in MARKER.finditer(path.read_text()):
            if match.group("body") != render(match.group("name"), results):
                stale.append(f"{path}: table {match.group('name')}")
    return stale


def write(paths: Sequence[Path], results: Results) -> list[Path]:
    """Rewrite every table in ``paths`` from the results; returns the files changed."""
    changed = []
    for path in paths:
        text = path.read_text()
        new = _rewritten(text, results)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyparams.bench.tables", description=__doc__.splitlines()[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the tables")
    action.add_argument(
        "--check", action="store_true", help="exit 1 if a table differs from what the results give"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the folder holding README.md and docs/ (default: this checkout)",
    )
    args = parser.parse_args(argv)
    results, paths = Results(args.results), documents(args.root)
    try:
        if args.write:
            for path in write(paths, results):
                print(f"rewrote tables in {path}")
            return 0
        stale = check(paths, results)
    except (FileNotFoundError, KeyError) as exc:
        print(f"pyparams.bench.tables: error: {exc.args[0]}", file=sys.stderr)
        return 2
    for line in stale:
        print(f"{line} differs from {args.results}: python -m pyparams.bench.tables --write")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
