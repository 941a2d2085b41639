"""Helpers shared by the tests (torchvision's ``test/common_utils.py`` pattern)."""

from __future__ import annotations

import pytest

__all__ = ["cpu_and_cuda", "cpu_cuda_and_meta"]


def cpu_and_cuda() -> tuple[object, ...]:
    """``"cpu"`` and ``"cuda"``; the CUDA case is marked ``needs_cuda`` (skipped without CUDA)."""
    return ("cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda))


def cpu_cuda_and_meta() -> tuple[object, ...]:
    """:func:`cpu_and_cuda` plus the ``meta`` device (structure without storage)."""
    return (*cpu_and_cuda(), "meta")
