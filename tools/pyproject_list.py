"""Print one list of pyproject.toml, space-separated: what the Makefile hands to pip.

    python tools/pyproject_list.py build-system.requires
    python tools/pyproject_list.py project.optional-dependencies.test

CPython 3.10 has no tomllib; pip's own TOML parser (tomli, vendored in pip since 21.2,
and pip is in every venv the Makefile makes) reads the file there. A missing key is an
error (exit status 1), so a recipe that runs this before `&&` stops instead of handing
pip an empty list.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # CPython 3.10
    from pip._vendor import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def main(dotted_key: str) -> int:
    with PYPROJECT.open("rb") as file:
        value: object = tomllib.load(file)
    for key in dotted_key.split("."):
        if not isinstance(value, dict) or key not in value:
            print(f"pyproject.toml has no {dotted_key!r} (missing {key!r})", file=sys.stderr)
            return 1
        value = value[key]
    if not isinstance(value, list):
        print(f"pyproject.toml's {dotted_key!r} is not a list", file=sys.stderr)
        return 1
    print(" ".join(value))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
