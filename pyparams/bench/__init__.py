"""The benchmark harness: pyparams against PyTorch's own iterators on a model zoo.

Modules, one job each: :mod:`~pyparams.bench.zoo` (models), :mod:`~pyparams.bench.contenders`
(what is timed, checked against torch), :mod:`~pyparams.bench.measure` (timing and memory),
:mod:`~pyparams.bench.stats` (medians, spread, fits), :mod:`~pyparams.bench.runner` (a whole
run), :mod:`~pyparams.bench.report` and :mod:`~pyparams.bench.plots` (table, files, PNGs),
:mod:`~pyparams.bench.claims` (four popular claims, tested), :mod:`~pyparams.bench.distributed`
(per-rank timings under torchrun, DDP and FSDP2), :mod:`~pyparams.bench.distributed_report`
(their table, files and plot) and :mod:`~pyparams.bench.torchrun` (launching with a timeout,
no process left behind). The CLI is :mod:`pyparams.cli`.
"""

__all__: list[str] = []
