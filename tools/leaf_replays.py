"""ZeRO-3's pattern (``named_parameters()`` of every leaf module) on the consumers' MoE model,
patched, with records made before and after training steps: what a record's layout costs
when the heap around it has been churned by forward, backward and optimizer steps.

    .venv/bin/python tools/leaf_replays.py [--steps 3] [--repeat 9]

Prints the median ns a leaf of back-to-back passes over all 6,176 leaves, in each state:
records made on a fresh heap, made again after a patch switch, made after the steps, made
after ``cache_clear()`` (which also drops the walked-once table), and last, as the consumer
table times it (the patch switched on for each timed pass, three untimed passes first) on a
fresh process's model and again after the table has measured the ``zero_grad`` consumer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time

import pyparams
from pyparams.bench.consumers import (
    CONSUMERS,
    _leaves,
    _training_step,
    _zero3,
    build_consumer_model,
    measure_consumer,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps before remaking")
    parser.add_argument("--repeat", type=int, default=9, help="timed passes per state")
    args = parser.parse_args()
    model = build_consumer_model("moe-32x64")
    leaves = _leaves(model)

    def passes(label: str) -> None:
        for _ in range(3):  # live, recording, first replay: the timed passes replay
            _zero3(model)
        timed(label)

    def timed(label: str, switched: bool = False) -> None:
        # switched: the patch switched on for each pass, after three untimed passes
        times = []
        gc.disable()
        for _ in range(args.repeat):
            with pyparams.patched() if switched else contextlib.nullcontext():
                for _ in range(3 if switched else 0):
                    _zero3(model)
                start = time.perf_counter_ns()
                _zero3(model)
                times.append((time.perf_counter_ns() - start) / len(leaves))
        gc.enable()
        print(f"{label:<40} {statistics.median(times):6.0f} ns a leaf", flush=True)

    print(f"{len(leaves)} leaves; torch's loop unpatched, the others patched")
    timed("torch, fresh heap")
    pyparams.patch()
    passes("records made on a fresh heap")
    pyparams.unpatch()
    pyparams.patch()  # a switch renews every class version: every record is made anew
    passes("made again after a patch switch")
    pyparams.unpatch()
    for _ in range(args.steps):
        _training_step(model)
    timed(f"torch, after {args.steps} training steps")
    pyparams.patch()
    passes(f"made after {args.steps} training steps")
    pyparams.cache_clear()
    passes("made after cache_clear()")
    pyparams.unpatch()

    model = build_consumer_model("moe-32x64")  # a model no step has touched
    leaves = _leaves(model)
    timed("switched per pass, fresh model", switched=True)
    measure_consumer(CONSUMERS["zero_grad"], model, rounds=5)
    timed("... after the zero_grad consumer", switched=True)
    timed("torch, after the zero_grad consumer")


if __name__ == "__main__":
    main()
