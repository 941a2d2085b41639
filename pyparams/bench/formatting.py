"""The harness's formatters and its one table renderer (plain text and Markdown).

>>> format_ns(1234.0), format_bytes(2048), format_ratio(63.94), format_ratio(2.5)
('1.23 us', '2.0 KiB', '63.9x', '2.50x')
>>> print(render_table(["model", "x"], [["gpt2", "63.9x"]], markdown=True))
| model | x |
|---|---|
| gpt2 | 63.9x |
>>> print(render_table(["model", "x"], [["gpt2", "63.9x"]], left=1))
model      x
-----  -----
gpt2   63.9x
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_bytes", "format_ns", "format_ratio", "render_table"]


def format_ns(ns: float | None) -> str:
    """``1234.0`` -> ``'1.23 us'``; ``None`` -> ``'-'``."""
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def format_bytes(n: float | None) -> str:
    """``2048`` -> ``'2.0 KiB'``; ``None`` -> ``'-'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_ratio(x: float | None) -> str:
    """A speedup: three significant figures at most; ``None`` -> ``'-'``."""
    return "-" if x is None else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markdown: bool = False,
    left: int = 2,
    breaks: Sequence[int] = (),
) -> str:
    """``rows`` under ``header``: a Markdown table, or aligned plain text whose first
    ``left`` columns are left-aligned (the rest right-aligned, as numbers read), with a
    blank line before each row index in ``breaks`` (plain text only)."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    for index, row in enumerate(rows):
        if index in breaks:
            out.append("")
        out.append(line(row))
    return "\n".join(out)
