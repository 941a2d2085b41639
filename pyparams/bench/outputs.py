"""Writing records: the harness's one CSV writer and one JSON writer.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
>>> write_csv(path, [{"a": 1}, {"a": 2, "b": 3}])
>>> path.read_text().splitlines()
['a,b', '1,', '2,3']
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_csv", "write_json"]


def write_csv(path: Path, records: Sequence[dict[str, object]]) -> None:
    """One row per record; the columns are every key, in first-seen order."""
    keys = list(dict.fromkeys(key for record in records for key in record)) or ["model"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def write_json(path: Path, data: object) -> None:
    """``data`` as indented JSON; what JSON cannot hold is written as its ``str``."""
    path.write_text(json.dumps(data, indent=1, default=str))
