"""Running a benchmark: plan the cases, measure them with a progress bar, fit the families.

>>> options = BenchOptions(preset="quick")
>>> options.settings().repeat
7
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

import pyparams
from pyparams.bench.contenders import Contender, resolve_contenders
from pyparams.bench.extras import available, missing, missing_line, total_memory_bytes
from pyparams.bench.measure import CaseResult, Settings, measure_case
from pyparams.bench.states import AFTER
from pyparams.bench.stats import cost_per_module, loglog_fit
from pyparams.bench.sweep import sweeper
from pyparams.bench.zoo import (
    DEFAULT_MEMORY_CAP_BYTES,
    ZooCache,
    ZooEntry,
    preset_entries,
    resolve_names,
)

__all__ = [
    "DEVICES",
    "BenchOptions",
    "Fit",
    "RunResult",
    "available_devices",
    "extras_note",
    "fit_families",
    "machine_info",
    "plan_cases",
    "run_bench",
    "runnable",
]

DEVICES: tuple[str, ...] = ("cpu", "cuda", "meta")
FITTED_FAMILIES: tuple[str, ...] = ("depth", "width", "experts")

_PRESET_SETTINGS: dict[str, Settings] = {
    # A quick run's sweep is at most 128 MiB (a first look in minutes, not a report: a
    # machine whose last-level cache is larger keeps some of the walk's lines in it).
    "quick": Settings(
        repeat=7,
        min_repeat=5,
        warmup=1,
        min_sample_s=0.001,
        max_case_s=0.6,
        ttf_repeat=5,
        max_sweep_bytes=128 << 20,
    ),
    "default": Settings(
        repeat=21, min_repeat=7, warmup=2, min_sample_s=0.005, max_case_s=4.0, ttf_repeat=9
    ),
    "full": Settings(
        repeat=31, min_repeat=11, warmup=3, min_sample_s=0.005, max_case_s=15.0, ttf_repeat=15
    ),
}


def available_devices() -> list[str]:
    """The devices a default run uses: ``cpu``, and ``cuda`` when it is available."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@dataclass
class BenchOptions:
    """What ``pyparams bench`` was asked to do (``None`` means the preset's default)."""

    preset: str = "default"
    models: list[str] | None = None
    devices: list[str] | None = None
    contenders: list[str] | None = None
    repeat: int | None = None
    memory_cap_bytes: int = DEFAULT_MEMORY_CAP_BYTES
    claims: bool = True
    progress: bool = True
    sweep_bytes: int | None = None  # the after state's sweep (None: sized from the machine)
    command: str = "pyparams bench"  # the command line, as the report shows it

    def settings(self) -> Settings:
        """The measuring settings of the preset, with ``repeat`` overridden if given."""
        base = dataclasses.replace(_PRESET_SETTINGS[self.preset], sweep_bytes=self.sweep_bytes)
        if self.repeat is None:
            return base
        return dataclasses.replace(
            base, repeat=self.repeat, min_repeat=min(base.min_repeat, self.repeat)
        )

    def entries(self) -> list[ZooEntry]:
        """The zoo entries to run (``KeyError`` naming an unknown model)."""
        if self.models is None:
            return preset_entries(self.preset)
        return resolve_names(self.models, self.preset)

    def device_list(self) -> list[str]:
        """The devices asked for (``ValueError`` naming an unknown or absent one)."""
        devices = self.devices if self.devices is not None else available_devices()
        for device in devices:
            if device not in DEVICES:
                raise ValueError(f"unknown device {device!r}; choose from: {', '.join(DEVICES)}")
            if device == "cuda" and not torch.cuda.is_available():
                raise ValueError("device 'cuda' was asked for but CUDA is not available here")
        return list(devices)

    def contender_list(self) -> list[Contender]:
        """The contenders to run (``KeyError`` naming an unknown one)."""
        return resolve_contenders(self.contenders)


@dataclass(frozen=True)
class Fit:
    """A contender's growth over one scaling family on one device."""

    family: str
    device: str
    contender: str
    sizes: list[float]
    medians_ns: list[float]
    exponent: float | None  # log-log slope of time against the family size
    r2: float | None
    ns_per_module: float | None  # least-squares slope of time against module count


@dataclass
class RunResult:
    """A whole run: where it ran, how, every case and the fits."""

    machine: dict[str, object]
    options: dict[str, object]
    settings: dict[str, object]
    cases: list[CaseResult]
    fits: list[Fit]
    wall_seconds: float
    claims: list[object] = field(default_factory=list)  # pyparams.bench.claims.Verdict
    sweep: dict[str, object] = field(default_factory=dict)  # the after state's SweepPlan


def machine_info() -> dict[str, object]:
    """Machine, Python, torch, CUDA device and package versions, for ``results.json``."""
    transformers = None
    if available("transformers"):
        import transformers
    cuda = torch.cuda.is_available()
    cache = pyparams.cache_info()
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": total_memory_bytes(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": getattr(transformers, "__version__", None),
        "pyparams": getattr(pyparams, "__version__", "unknown"),
        "pyparams_cache_env": os.environ.get("PYPARAMS_CACHE"),  # "0": the walk cache was off
        # False also on CPython 3.13.0 and after 3.14 (no cache there): every walk is live.
        "pyparams_cache_enabled": cache.enabled,
        "pyparams_cache_off_reason": cache.off_reason,
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_version": torch.version.cuda,
        "argv": list(sys.argv),
    }


def plan_cases(
    entries: Sequence[ZooEntry], devices: Sequence[str], cache: ZooCache
) -> list[tuple[ZooEntry, str]]:
    """``(entry, device)`` pairs; architectures over the memory cap move to ``meta`` once."""
    planned: list[tuple[ZooEntry, str]] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        for device in devices:
            target, _ = cache.placement(entry, device)
            if (entry.name, target) not in seen:
                seen.add((entry.name, target))
                planned.append((entry, device))
    return planned


def fit_families(cases: Sequence[CaseResult]) -> list[Fit]:
    """Fit time against size (log-log) and module count (linear) per family/device/contender."""
    fits: list[Fit] = []
    keys = sorted({(c.family, c.device) for c in cases if c.family in FITTED_FAMILIES})
    for family, device in keys:
        members = sorted(
            (c for c in cases if (c.family, c.device) == (family, device) and c.size is not None),
            key=lambda c: c.size or 0,
        )
        names = list(dict.fromkeys(n for c in members for n in c.contenders))
        for name in names:
            points = [(c.size, c.n_modules, c.median_ns(name)) for c in members]
            ok = [(s, m, t) for s, m, t in points if s is not None and t is not None]
            sizes = [float(s) for s, _, _ in ok]
            times = [float(t) for _, _, t in ok]
            exponent = r2 = per_module = None
            if len(set(sizes)) >= 2:
                loglog = loglog_fit(sizes, times)
                exponent, r2 = loglog.exponent, loglog.r2
                per_module = cost_per_module([float(m) for _, m, _ in ok], times)
            fits.append(Fit(family, device, name, sizes, times, exponent, r2, per_module))
    return fits


def runnable(entries: Sequence[ZooEntry]) -> list[ZooEntry]:
    """The entries whose extra modules (``ZooEntry.needs``) are installed."""
    return [entry for entry in entries if not missing(entry.needs)]


def extras_note(options: BenchOptions) -> str | None:
    """One line saying what a run of ``options`` leaves out for lack of an extra, or ``None``."""
    entries = options.entries()
    skipped = [entry.name for entry in entries if missing(entry.needs)]
    absent = missing([name for entry in entries for name in entry.needs])
    lost = [f"skipping {', '.join(skipped)}"] if skipped else []
    if options.claims and not available("transformers"):
        lost.append("claims on a synthetic model")
    if not available("matplotlib"):
        absent.append("matplotlib")
        lost.append("no plots")
    if options.progress and not available("tqdm"):
        absent.append("tqdm")
        lost.append("no progress bar")
    return missing_line(absent, "; ".join(lost)) if absent else None


class _NoBar:
    """Stands in for a tqdm bar when progress is off or tqdm is not installed."""

    def __init__(self, items: Sequence[tuple[ZooEntry, str]]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[tuple[ZooEntry, str]]:
        return iter(self.items)

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(planned: Sequence[tuple[ZooEntry, str]], enabled: bool) -> _NoBar:
    if not (enabled and available("tqdm")):
        return _NoBar(planned)
    from tqdm import tqdm

    bar = tqdm(planned, desc="pyparams bench", unit="case", file=sys.stderr, dynamic_ncols=True)
    return bar  # type: ignore[no-any-return]


def run_bench(options: BenchOptions) -> RunResult:
    """Run the benchmark described by ``options`` (validates everything before building).

    Models that need a missing extra are left out (:func:`extras_note` says which).
    """
    start = time.perf_counter()
    entries = runnable(options.entries())
    devices = options.device_list()
    contenders = options.contender_list()
    settings = options.settings()
    cache = ZooCache(options.memory_cap_bytes)
    planned = plan_cases(entries, devices, cache)
    cases: list[CaseResult] = []
    bar = _progress(planned, options.progress)
    for entry, device in bar:
        bar.set_postfix_str(f"{entry.name} [{device}]")
        cases.append(measure_case(cache.get(entry.name, device), contenders, settings))
    bar.close()
    sweeper.cache_clear()  # the after state's buffer (about 1 GiB) is not needed past the zoo
    verdicts: list[object] = []
    if options.claims:
        from pyparams.bench.claims import default_models, run_claims

        claim_devices = [d for d in devices if d != "meta"] or ["cpu"]
        model, huge_model = default_models()
        verdicts = list(
            run_claims(
                model=model,
                huge_model=huge_model,
                devices=claim_devices,
                memory_cap_bytes=options.memory_cap_bytes,
            )
        )
    return RunResult(
        machine=machine_info(),
        options={
            "command": options.command,
            "preset": options.preset,
            "models": [e.name for e in entries],
            "devices": devices,
            "contenders": [c.name for c in contenders],
            "repeat": options.repeat,
            "memory_cap_bytes": options.memory_cap_bytes,
        },
        settings=dataclasses.asdict(settings),
        cases=cases,
        fits=fit_families(cases),
        wall_seconds=time.perf_counter() - start,
        claims=verdicts,
        sweep=settings.sweep_plan().to_dict() if AFTER in settings.states else {},
    )
