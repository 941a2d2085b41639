"""Where a leaf walk's time goes: the cost of each stage of one call, on a Linear.

    python tools/call_stages.py

Each line is the median of 7 timeit repeats (200,000 calls each); the differences
between lines are the stages: the Python wrapper, making and dropping the native
iterator, the walk itself (the length hint, the record lookup, the replay, the
pairs), against torch's own call and the floor of building a list at all.
"""

from __future__ import annotations

import timeit

from torch import nn
from torch.compiler import is_dynamo_compiling

import pyparams
from pyparams import _C

CALLS = 200_000
STAGES = {
    "list(())  (the floor of building a list)": "list(())",
    "is_dynamo_compiling()  (the wrapper's compile check)": "is_dynamo_compiling()",
    "_C.walk(...)  (make and drop the iterator)": "_C.walk(leaf, kind=P, named=True)",
    "list(_C.walk(...))  (+ the walk)": "list(_C.walk(leaf, kind=P, named=True))",
    "list(pyparams.named_parameters(leaf))  (+ the wrapper)": (
        "list(pyparams.named_parameters(leaf))"
    ),
    "list(pyparams.parameters(leaf))": "list(pyparams.parameters(leaf))",
    "pyparams.parameter_list(leaf)": "pyparams.parameter_list(leaf)",
    "torch: list(leaf.named_parameters())": "list(leaf.named_parameters())",
    "torch: list(leaf.parameters())": "list(leaf.parameters())",
}


def median_ns(statement: str, namespace: dict[str, object]) -> float:
    runs = timeit.repeat(statement, globals=namespace, number=CALLS, repeat=7)
    return sorted(runs)[len(runs) // 2] / CALLS * 1e9


def main() -> None:
    namespace = {
        "leaf": nn.Linear(2, 2),
        "P": _C.PARAMETERS,
        "_C": _C,
        "pyparams": pyparams,
        "is_dynamo_compiling": is_dynamo_compiling,
    }
    for label, statement in STAGES.items():
        print(f"{label:58s} {median_ns(statement, namespace):7.0f} ns")
    with pyparams.patched():
        for label, statement in [
            ("patched: list(leaf.named_parameters())", "list(leaf.named_parameters())"),
            ("patched: list(leaf.parameters())", "list(leaf.parameters())"),
        ]:
            print(f"{label:58s} {median_ns(statement, namespace):7.0f} ns")


if __name__ == "__main__":
    main()
