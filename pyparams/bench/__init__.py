"""The benchmark harness: pyparams against PyTorch's own iterators on a model zoo.

Modules, one job each:

- what is measured: :mod:`~pyparams.bench.zoo` (models), :mod:`~pyparams.bench.contenders`
  (what is timed, checked against torch), :mod:`~pyparams.bench.states` (the states a
  contender is timed in: cold, warm, invalidated, after other work),
  :mod:`~pyparams.bench.sweep` (the other work: a sweep larger than the last-level cache),
  :mod:`~pyparams.bench.consumers` and :mod:`~pyparams.bench.consumer_walks` (callers of the
  walking methods, and their walks alone), :mod:`~pyparams.bench.claims` (four popular claims,
  tested), :mod:`~pyparams.bench.distributed` (per-rank timings under torchrun, DDP and FSDP2,
  launched by :mod:`~pyparams.bench.torchrun`);
- how: :mod:`~pyparams.bench.timing` (the one timing engine: interleaved rounds, calibration,
  GC paused), :mod:`~pyparams.bench.measure` (a zoo case: check, time, memory),
  :mod:`~pyparams.bench.stats` (medians, spread, fits), :mod:`~pyparams.bench.runner` (a
  whole zoo run), :mod:`~pyparams.bench.targets` (the goals, one declarative table);
- what comes out: :mod:`~pyparams.bench.formatting` (the formatters and the one table
  renderer), :mod:`~pyparams.bench.outputs` (CSV and JSON), :mod:`~pyparams.bench.report_file`
  (the one writer of report.md), :mod:`~pyparams.bench.report`,
  :mod:`~pyparams.bench.consumer_report` and :mod:`~pyparams.bench.distributed_report` (each
  part's tables, files and section), :mod:`~pyparams.bench.plots` (PNGs),
  :mod:`~pyparams.bench.results` (``make results``: everything under benchmarks/results/ and
  its manifest) and :mod:`~pyparams.bench.tables` (README's and docs' tables from those files).

The CLI is :mod:`pyparams.cli`.
"""

__all__: list[str] = []
