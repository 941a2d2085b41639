"""The benchmark harness: pyparams against PyTorch's own iterators on a model zoo.

Modules, one job each: :mod:`~pyparams.bench.zoo` (models), :mod:`~pyparams.bench.contenders`
(what is timed, checked against torch), :mod:`~pyparams.bench.measure` (timing and memory),
:mod:`~pyparams.bench.stats` (medians, spread, fits), :mod:`~pyparams.bench.runner` (a whole
run), :mod:`~pyparams.bench.report` and :mod:`~pyparams.bench.plots` (table, files, PNGs),
:mod:`~pyparams.bench.claims` (four popular claims, tested). The CLI is :mod:`pyparams.cli`.
"""

__all__: list[str] = []
