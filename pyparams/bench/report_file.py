"""The one writer of ``report.md``: its sections, in a fixed order, whoever writes them.

The zoo run, the consumers section and the distributed run each write their own section
(:data:`SECTIONS`), in any order and at any time; each lands between its markers and the
file is rewritten in section order, so running one part again replaces only its part.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "report.md"
>>> write_section(path, "consumers", "## Consumers\\n")
>>> write_section(path, "zoo", "## Summary\\n")
>>> [line for line in path.read_text().splitlines() if line.startswith("##")]
['## Summary', '## Consumers']
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SECTIONS", "TITLE", "read_sections", "write_section"]

TITLE = "# pyparams benchmark report"
SECTIONS: tuple[str, ...] = ("zoo", "consumers", "distributed")
_BLOCK = re.compile(r"<!-- pyparams-report: (\w+) -->\n(.*?)<!-- /pyparams-report -->\n", re.DOTALL)


def read_sections(path: Path) -> dict[str, str]:
    """The sections of the report at ``path`` (none if it does not exist)."""
    if not path.exists():
        return {}
    return {name: text for name, text in _BLOCK.findall(path.read_text())}


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` as section ``name`` of the report at ``path``, keeping the others."""
    if name not in SECTIONS:
        raise ValueError(f"unknown report section {name!r}; choose from: {', '.join(SECTIONS)}")
    sections = read_sections(path)
    sections[name] = text if text.endswith("\n") else text + "\n"
    blocks = [
        f"<!-- pyparams-report: {key} -->\n{sections[key]}<!-- /pyparams-report -->\n"
        for key in SECTIONS
        if key in sections
    ]
    path.write_text(TITLE + "\n\n" + "\n".join(blocks))
