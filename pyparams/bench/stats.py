"""Small, dependency-free statistics for the benchmark harness.

Everything here is a pure function over plain floats so that it can be tested on
synthetic data: robust summaries of timing samples (median, quartiles, IQR, relative
spread), paired ratios of interleaved samples, and the two fits the scaling families
report: a least-squares line (cost per module) and a log-log line (growth exponent).

>>> summarize([3.0, 1.0, 2.0, 4.0, 5.0]).median
3.0
>>> round(loglog_fit([10, 100, 1000], [2.0, 200.0, 20000.0]).exponent, 6)
2.0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "LinearFit",
    "LogLogFit",
    "Summary",
    "cost_per_module",
    "linear_fit",
    "loglog_fit",
    "median",
    "paired_ratios",
    "quartiles",
    "summarize",
]


@dataclass(frozen=True)
class Summary:
    """Robust summary of one contender's timing samples (all in the samples' unit)."""

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    rel_spread: float  # iqr / median, 0 when the median is 0
    minimum: float
    maximum: float
    mean: float


@dataclass(frozen=True)
class LinearFit:
    """``y = slope * x + intercept`` fitted by least squares, with its R^2."""

    slope: float
    intercept: float
    r2: float


@dataclass(frozen=True)
class LogLogFit:
    """``y = prefactor * x ** exponent`` fitted by least squares on ``log x, log y``."""

    exponent: float
    prefactor: float
    r2: float


def _require(values: Sequence[float], at_least: int, what: str) -> list[float]:
    data = [float(v) for v in values]
    if len(data) < at_least:
        raise ValueError(f"{what} needs at least {at_least} value(s), got {len(data)}")
    return data


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the two middle values for even counts)."""
    return float(statistics.median(_require(values, 1, "median")))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (inclusive method, as numpy's default).

    >>> quartiles([1, 2, 3, 4, 5])
    (2.0, 3.0, 4.0)
    """
    data = _require(values, 1, "quartiles")
    if len(data) == 1:
        return data[0], data[0], data[0]
    q1, q2, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return float(q1), float(q2), float(q3)


def summarize(values: Sequence[float]) -> Summary:
    """Summarize timing samples: median, quartiles, IQR, relative spread, min, max, mean."""
    data = _require(values, 1, "summarize")
    q1, med, q3 = quartiles(data)
    iqr = q3 - q1
    return Summary(
        n=len(data),
        median=med,
        q1=q1,
        q3=q3,
        iqr=iqr,
        rel_spread=iqr / med if med > 0 else 0.0,
        minimum=min(data),
        maximum=max(data),
        mean=statistics.fmean(data),
    )


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-round ratios ``numerators[i] / denominators[i]`` of interleaved samples.

    Sample ``i`` of two contenders was taken in the same round (A B A B ...), so the
    ratio of a pair cancels slow drift of the machine; the median of these ratios is
    the speedup the harness reports.

    >>> paired_ratios([10.0, 20.0], [1.0, 4.0])
    [10.0, 5.0]
    """
    if len(numerators) != len(denominators):
        raise ValueError(
            f"paired_ratios needs samples of equal length, got {len(numerators)} and "
            f"{len(denominators)}"
        )
    ratios = []
    for num, den in zip(numerators, denominators, strict=True):
        if den <= 0:
            raise ValueError(f"paired_ratios: non-positive denominator {den!r}")
        ratios.append(float(num) / float(den))
    return ratios


def _r2(ys: Sequence[float], predicted: Sequence[float]) -> float:
    mean_y = statistics.fmean(ys)
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - p) ** 2 for y, p in zip(ys, predicted, strict=True))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> LinearFit:
    """Least-squares line through ``(xs, ys)``; needs two distinct x values.

    >>> linear_fit([1, 2, 3], [5, 7, 9])
    LinearFit(slope=2.0, intercept=3.0, r2=1.0)
    """
    x = _require(xs, 2, "linear_fit")
    y = _require(ys, 2, "linear_fit")
    if len(x) != len(y):
        raise ValueError(f"linear_fit: {len(x)} x values but {len(y)} y values")
    mean_x, mean_y = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((xi - mean_x) ** 2 for xi in x)
    if sxx == 0:
        raise ValueError("linear_fit needs at least two distinct x values")
    slope = sum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    fitted = [slope * xi + intercept for xi in x]
    return LinearFit(slope=slope, intercept=intercept, r2=_r2(y, fitted))


def loglog_fit(xs: Sequence[float], ys: Sequence[float]) -> LogLogFit:
    """Fit ``y = prefactor * x ** exponent``; all values must be positive.

    An exponent near 1 means linear cost in the size; near 2, quadratic (the cost of
    yielding through one nested generator per level of depth).
    """
    x = _require(xs, 2, "loglog_fit")
    y = _require(ys, 2, "loglog_fit")
    if any(v <= 0 for v in x + y):
        raise ValueError("loglog_fit needs positive x and y values")
    line = linear_fit([math.log(v) for v in x], [math.log(v) for v in y])
    return LogLogFit(exponent=line.slope, prefactor=math.exp(line.intercept), r2=line.r2)


def cost_per_module(n_modules: Sequence[float], times_ns: Sequence[float]) -> float:
    """Marginal cost in ns of one more module: the slope of time against module count."""
    return linear_fit(n_modules, times_ns).slope
