"""A walk's speed on the running interpreter: ``list(pyparams.parameters(m))`` and
``pyparams.parameter_list(m)`` against ``list(m.parameters())``, medians of interleaved
samples, with the GIL and cache state.

Run it with each interpreter's venv to compare builds, e.g. a free-threaded 3.13t against
3.13 with the GIL (the models need torch only, so the same trees are walked everywhere):

    .venv-3.13t/bin/python tools/walk_speed.py
    .venv-3.13/bin/python tools/walk_speed.py
    PYPARAMS_CACHE=0 .venv-3.13/bin/python tools/walk_speed.py   # the live walk alone

``--threads N`` adds walks of torch alone from N threads, before pyparams is imported (a
free-threaded build runs them without the GIL) and after (with the GIL pyparams enables).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import threading
import time

import torch
from torch import nn


def gpt2_shaped(blocks: int = 12, width: int = 64) -> nn.Module:
    """GPT-2 small's module tree (transformers' GPT2LMHeadModel, 148 parameters, tied head)
    in plain torch, with small widths: a walk's cost depends on the tree, not the sizes."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.Module()
            self.attn.c_attn = nn.Linear(width, 3 * width)
            self.attn.c_proj = nn.Linear(width, width)
            self.attn.attn_dropout = nn.Dropout()
            self.attn.resid_dropout = nn.Dropout()
            self.ln_2 = nn.LayerNorm(width)
            self.mlp = nn.Module()
            self.mlp.c_fc = nn.Linear(width, 4 * width)
            self.mlp.c_proj = nn.Linear(4 * width, width)
            self.mlp.act = nn.GELU()
            self.mlp.dropout = nn.Dropout()

    model = nn.Module()
    model.transformer = nn.Module()
    model.transformer.wte = nn.Embedding(1024, width)
    model.transformer.wpe = nn.Embedding(128, width)
    model.transformer.drop = nn.Dropout()
    model.transformer.h = nn.ModuleList(Block() for _ in range(blocks))
    model.transformer.ln_f = nn.LayerNorm(width)
    model.lm_head = nn.Linear(width, 1024, bias=False)
    model.lm_head.weight = model.transformer.wte.weight
    return model


def chain(depth: int) -> nn.Module:
    root = current = nn.Module()
    for _ in range(depth):
        child = nn.Module()
        child.w = nn.Parameter(torch.zeros(1))
        current.c = child
        current = child
    return root


def per_call(walk, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        walk()
    return (time.perf_counter() - start) / calls


def measure(model: nn.Module, samples: int, calls: int, pyparams) -> tuple[float, float, float]:
    """Medians (seconds per call) of torch's list, pyparams' lazy walk drained by ``list()``
    and its eager ``parameter_list``, in interleaved samples."""
    theirs = lambda: list(model.parameters())  # noqa: E731
    lazy = lambda: list(pyparams.parameters(model))  # noqa: E731
    eager = lambda: pyparams.parameter_list(model)  # noqa: E731
    for ours in (lazy, eager):
        assert all(a is b for a, b in zip(ours(), theirs(), strict=True))
    for _ in range(3):
        per_call(lazy, calls), per_call(eager, calls), per_call(theirs, calls)
    t, p, e = [], [], []
    for _ in range(samples):
        t.append(per_call(theirs, calls))
        p.append(per_call(lazy, calls))
        e.append(per_call(eager, calls))
    return statistics.median(t), statistics.median(p), statistics.median(e)


def threaded(model: nn.Module, threads: int, walks: int) -> float:
    """Seconds for ``threads`` threads to do ``walks`` torch walks each."""

    def work() -> None:
        for _ in range(walks):
            list(model.parameters())

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=31)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)
    models = {"gpt2-shaped": gpt2_shaped(), "chain-300": chain(300)}
    before = {}
    if args.threads:
        for name, model in models.items():
            one = threaded(model, 1, 400)
            before[name] = (one, threaded(model, args.threads, 400), gil())
    import pyparams

    build = "free-threaded" if free_threaded else "GIL build"
    print(
        f"Python {sys.version.split()[0]} ({build}), torch {torch.__version__}, "
        f"GIL enabled: {gil()}, cache enabled: {pyparams.cache_info().enabled}"
    )
    for name, model in models.items():
        calls = 200 if name == "gpt2-shaped" else 50
        t, p, e = measure(model, args.samples, calls, pyparams)
        print(
            f"{name:12s} torch list {t * 1e6:8.1f} us   pyparams list {p * 1e6:7.2f} us "
            f"{t / p:6.1f}x   parameter_list {e * 1e6:7.2f} us {t / e:6.1f}x"
        )
    for name, (one, many, was_enabled) in before.items():
        model = models[name]
        one_after = threaded(model, 1, 400)
        many_after = threaded(model, args.threads, 400)
        print(
            f"{name:12s} torch walks, {args.threads} threads vs 1 (same walks per thread): "
            f"GIL {'on' if was_enabled else 'off'} before import {many / one:.2f}x the time, "
            f"GIL {'on' if gil() else 'off'} after {many_after / one_after:.2f}x"
        )


if __name__ == "__main__":
    main()
