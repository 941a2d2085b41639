"""Time warm walks hot and after a cache sweep, at several replay prefetch distances.

    python tools/prefetch_distance.py [--models gpt2 depth-300 moe-32x64] [--distances 0 8 32]
                                      [--sweep-mib 1024] [--rounds 15]

Each round times, for every distance and for torch, one ``list(...parameters())`` call
right after another call of the same walk ("hot") and one right after writing a
``--sweep-mib`` buffer ("after other work": size it beyond the last-level cache to
send the model's objects to memory). Prints medians and ratios over torch's walk in
the same state. The distance is pyparams' ``_C._prefetch_distance`` (0: none).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

import pyparams
from pyparams import _C
from pyparams.bench.sweep import sweeper
from pyparams.bench.zoo import get_entry


def _torch_list(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _pyparams_list(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(pyparams.parameters(model))


def _timed_ns(walk: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    walk()
    return time.perf_counter_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt2", "depth-300", "moe-32x64"])
    parser.add_argument("--distances", nargs="+", type=int, default=[0, 2, 4, 8, 16, 32])
    parser.add_argument("--sweep-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    sweep = sweeper(args.sweep_mib << 20)  # the benchmark's own "after other work" sweep
    default_distance = _C._prefetch_distance()
    gc.disable()
    try:
        for name in args.models:
            model = get_entry(name).build()
            for _ in range(3):  # recorded, then replayed
                list(pyparams.parameters(model))
            contenders = [*args.distances, "torch"]
            times: dict[tuple[object, bool], list[int]] = {
                (c, after): [] for c in contenders for after in (False, True)
            }
            for _ in range(args.rounds):
                for after in (False, True):
                    for contender in contenders:
                        if contender == "torch":
                            walk = partial(_torch_list, model)
                        else:
                            _C._prefetch_distance(contender)
                            walk = partial(_pyparams_list, model)
                        if after:
                            sweep()
                        else:
                            walk()
                        times[(contender, after)].append(_timed_ns(walk))
            median = {key: statistics.median(values) / 1000 for key, values in times.items()}
            print(
                f"{name}: torch hot {median[('torch', False)]:.1f} us, "
                f"after {median[('torch', True)]:.1f} us"
            )
            for distance in args.distances:
                hot, after = median[(distance, False)], median[(distance, True)]
                print(
                    f"  distance {distance:3d}: hot {hot:9.2f} us "
                    f"({median[('torch', False)] / hot:6.1f}x)   after {after:9.2f} us "
                    f"({median[('torch', True)] / after:6.1f}x)",
                    flush=True,
                )
    finally:
        _C._prefetch_distance(default_distance)
        gc.enable()


if __name__ == "__main__":
    main()
