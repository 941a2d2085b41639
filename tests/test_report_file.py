"""report.md has one writer: each part of a run writes its own section, in a fixed order,
and writing a section again replaces it and keeps the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyparams.bench.report_file import SECTIONS, TITLE, read_sections, write_section


def test_sections_keep_their_order_whoever_writes_first(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    write_section(report, "distributed", "## Distributed\nd1\n")
    write_section(report, "zoo", "## Summary\nz1\n")
    write_section(report, "consumers", "## Consumers\nc1")
    text = report.read_text()
    assert text.startswith(TITLE + "\n")
    assert text.index("z1") < text.index("c1") < text.index("d1")
    assert list(read_sections(report)) == list(SECTIONS)


def test_writing_a_section_again_replaces_only_it(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    write_section(report, "zoo", "## Summary\nold zoo\n")
    write_section(report, "consumers", "## Consumers\nold consumers\n")
    write_section(report, "zoo", "## Summary\nnew zoo\n")
    sections = read_sections(report)
    assert sections == {
        "zoo": "## Summary\nnew zoo\n",
        "consumers": "## Consumers\nold consumers\n",
    }
    assert report.read_text().count("## Summary") == 1


def test_an_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown report section 'plots'"):
        write_section(tmp_path / "report.md", "plots", "x")
