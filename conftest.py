"""What the documentation's examples run with: the doctests of the package's docstrings
(``--doctest-modules``) and of README.md and docs/*.md (``--doctest-glob``).

Both are configured in pyproject.toml and run with the rest of ``make test``. The examples
import nothing themselves: ``torch``, ``nn`` and ``pyparams`` are in their namespace.
``pyparams`` is the installed package: in importlib mode the checkout's root is not on
``sys.path``, and pytest's doctest collector takes a module that is already imported (all of
the package's are, by the import below) from ``sys.modules`` instead of importing the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pyparams

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "pyparams"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Import only what holds tests or doctests.

    ``--doctest-modules`` imports every ``.py`` file on the collected paths. Under tests/ and
    benchmarks/ that would include scripts (a torchrun worker, one that sleeps for an hour on
    purpose): outside the package only test modules and conftests are collected.
    """
    if collection_path.suffix != ".py" or PACKAGE in collection_path.parents:
        return None
    name = collection_path.name
    if name == "conftest.py" or name.startswith("test_"):
        return None
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """docs/design.md prints the walk cache's counters, which need the cache on (it is off with
    PYPARAMS_CACHE=0, on CPython 3.13.0 and from 3.14 on: docs/python-versions.md)."""
    if pyparams.cache_info().enabled:
        return
    skip = pytest.mark.skip(reason="the walk cache is off in this interpreter")
    for item in items:
        if item.path == ROOT / "docs" / "design.md":
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def doctest_namespace_for_examples(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace.update(torch=torch, nn=nn, pyparams=pyparams)
