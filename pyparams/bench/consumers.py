"""Consumer benchmarks: what ``pyparams.patch()`` saves inside code you do not own.

Each consumer is a real caller of nn.Module's walking methods (``zero_grad``,
``requires_grad_``, transformers' ``num_parameters``, optimizer construction, the ZeRO-3
fetch pattern, ``functional_call``, ``clip_grad_norm_``, ``state_dict``, ``train()`` and a
whole CPU training step), run as torch ships it, with the patch on, and through pyparams'
native consumer where one exists (``pyparams.zero_grad``). For every consumer and model:

1. each mode's result is checked against torch's first (same objects, names, values); a
   mode that differs is never timed;
2. rounds are interleaved (A B C, C B A, ...) with the GC paused; every call is timed on
   its own, its set-up (gradients to reset, the patch switched on or off) untimed;
3. medians are quoted, speedups are medians of per-round ratios over torch.

The walk alone: one untimed run of the consumer with torch's methods records every call it
makes to the walking methods and the items it takes (:mod:`pyparams.bench.consumer_walks`);
replaying exactly those calls is timed, with torch's methods and patched, in the same
interleaved rounds as the consumer. The walk's share is that median over the consumer's
median (torch's walk over torch's total, the patched walk over the patched total); the rest
is what the consumer spends outside the walk. pyparams' walks are timed warm: each timed
call replays the walk cache's record of the model (see ``_column``).

Inside a step loop (the consumers of :data:`IN_STEP`): the same modes timed again, each
call right after an untimed forward, backward and optimizer step in the same mode, as a
training loop calls them, in interleaved rounds of their own (:data:`STEP_ROUNDS`). The
timing is :mod:`pyparams.bench.timing`'s; the table and files are
:mod:`pyparams.bench.consumer_report`'s.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

import pyparams
from pyparams.bench.consumer_walks import WalkCall, record_walks, replay_walks
from pyparams.bench.stats import median, paired_ratios
from pyparams.bench.targets import consumer_target
from pyparams.bench.timing import Column, interleaved, sample, timer_overhead_ns
from pyparams.bench.zoo import ZOO, UnfusedMoE, ZooCache

__all__ = [
    "CONSUMERS",
    "CONSUMER_MODELS",
    "MODES",
    "Consumer",
    "ConsumerRow",
    "build_consumer_model",
    "check_consumer_model",
    "measure_consumer",
    "run_consumers",
]

MODES: tuple[str, ...] = ("torch", "patched", "native")
CONSUMER_MODELS: tuple[str, ...] = ("moe-32x64", "gpt2")
# The consumers a training loop calls every step, timed a second time inside one: each
# call right after an untimed forward, backward and optimizer step, which sweep the caches.
IN_STEP: tuple[str, ...] = ("zero_grad", "optimizer", "num_parameters", "zero3_fetch")
STEP = "step"
# A step of GPT-2 takes about a second on a small CPU, and each in-step call needs its own.
# With 3 rounds GPT-2's in-step zero_grad (freeing ~500 MB of gradients) read 0.56x-1.24x
# between runs of the same code; 7 cost ~30 s more per report.
STEP_ROUNDS = 7


class RoutedMoE(UnfusedMoE):
    """The zoo's unfused MoE with a top-2 routed SwiGLU forward, for the training step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            weights, chosen = layer.router(x).softmax(-1).topk(2, dim=-1)
            out = torch.zeros_like(x)
            for expert_index in chosen.unique().tolist():
                rows, slot = (chosen == expert_index).nonzero(as_tuple=True)
                expert = layer.experts[expert_index]
                h = x[rows]
                y = expert.down_proj(nn.functional.silu(expert.gate_proj(h)) * expert.up_proj(h))
                out = out.index_add(0, rows, y * weights[rows, slot].unsqueeze(-1))
            x = x + out
        return x


@dataclass
class Model:
    """A consumer benchmark's model: the module, one batch, a loss, its walk's unit."""

    name: str
    module: nn.Module
    batch: Callable[[], tuple]
    loss: Callable[[nn.Module, tuple], torch.Tensor]


def check_consumer_model(name: str) -> None:
    """``ValueError`` naming ``name`` unless :func:`build_consumer_model` can build it: a
    routed ``moe-LxE`` (both counts positive) or a zoo architecture."""
    architectures = [n for n, entry in ZOO.items() if entry.family == "arch"]
    if not (re.fullmatch(r"moe-[1-9][0-9]*x[1-9][0-9]*", name) or name in architectures):
        raise ValueError(
            f"unknown consumer model {name!r}; choose moe-LAYERSxEXPERTS (as moe-32x64) "
            f"or one of: {', '.join(architectures)}"
        )


def build_consumer_model(name: str, cache: ZooCache | None = None) -> Model:
    """``moe-32x64`` (routed, width 8) or a zoo architecture built from its config."""
    torch.manual_seed(0)
    if name.startswith("moe-"):
        layers, experts = (int(n) for n in name.removeprefix("moe-").split("x"))
        module = RoutedMoE(layers, experts)
        x = torch.randn(16, 8)
        return Model(name, module, lambda: (x,), lambda m, b: m(*b).pow(2).mean())
    built = (cache or ZooCache()).get(name, "cpu")
    module = built.module
    for p in module.parameters():  # materialized uninitialized: give it sane values
        with torch.no_grad():
            p.normal_(0, 0.02)
    vocab = int(getattr(module.config, "vocab_size", 128))
    ids = torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(0))
    return Model(name, module, lambda: (ids,), lambda m, b: m(input_ids=b[0], labels=b[0]).loss)


# --------------------------------------------------------------------------- consumers


@dataclass(frozen=True)
class Consumer:
    """A caller of the walking methods. ``run(model)`` is what gets timed, and nothing
    else; ``setup(model)`` runs untimed before each call; ``native`` is pyparams' own
    consumer (if any); ``observe(model)``, untimed after a run, reads the state to compare
    when the run returns nothing comparable (else its result is compared); ``check`` turns
    that into comparable data."""

    name: str
    description: str
    run: Callable[[Model], object]
    setup: Callable[[Model], None] = lambda model: None
    native: Callable[[Model], object] | None = None
    observe: Callable[[Model], object] | None = None
    check: Callable[[object], object] = lambda result: result


def _parameter_list(model: Model) -> list[nn.Parameter]:
    """The parameters, walked once: a set-up that walked would warm (torch's walk: evict)
    the CPU caches for the timed call differently in each mode."""
    cached = getattr(model, "_parameter_list", None)
    if cached is None:
        cached = list(nn.Module.parameters(model.module))
        model._parameter_list = cached  # type: ignore[attr-defined]
    return cached


def _give_grads(model: Model) -> None:
    for p in _parameter_list(model):
        if p.grad is None:
            p.grad = torch.ones_like(p)


def _fresh_grads(model: Model) -> None:
    """Every parameter's grad all ones again (clip_grad_norm_ scales them in place)."""
    for p in _parameter_list(model):
        if p.grad is None:
            p.grad = torch.ones_like(p)
        else:
            p.grad.fill_(1.0)


def _grads_are_none(model: Model) -> list[bool]:
    return [p.grad is None for p in _parameter_list(model)]


def _requires_grad(model: Model) -> None:
    model.module.requires_grad_(False)
    model.module.requires_grad_(True)


def _requires_grad_flags(model: Model) -> list[bool]:
    return [p.requires_grad for p in _parameter_list(model)]


def _num_parameters(model: Model) -> int:
    # As transformers' Trainer calls it every step (floating_point_ops): the embeddings
    # excluded, which walks named_modules() then named_parameters().
    return _transformers_num_parameters()(model.module, exclude_embeddings=True)


@functools.cache
def _transformers_num_parameters() -> Callable[..., int]:
    """transformers' function, imported once (not inside each timed call)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # the bench extra is missing: the same walks and loop, written out
        return _num_parameters_written_out
    return PreTrainedModel.num_parameters


def _num_parameters_written_out(module: nn.Module, exclude_embeddings: bool) -> int:
    embeddings = (
        [f"{n}.weight" for n, m in module.named_modules() if isinstance(m, nn.Embedding)]
        if exclude_embeddings
        else []
    )
    return sum(p.numel() for n, p in module.named_parameters() if n not in embeddings)


def _module_list(model: Model) -> list[nn.Module]:
    """torch's module order, walked once (like ``_parameter_list``)."""
    cached = getattr(model, "_module_list", None)
    if cached is None:
        cached = list(nn.Module.modules(model.module))
        model._module_list = cached  # type: ignore[attr-defined]
    return cached


def _leaves(model: Model) -> list[nn.Module]:
    """The modules without children, found once (finding them is no part of the pattern)."""
    cached = getattr(model, "_leaves", None)
    if cached is None:
        cached = [m for m in _module_list(model) if not m._modules]
        model._leaves = cached  # type: ignore[attr-defined]
    return cached


def _zero3_leaves(model: Model) -> list[nn.Module]:
    """ZeRO-3's leaf modules (``deepspeed.utils.set_z3_leaf_modules``), found once: the MoE
    layers, which it fetches whole; a model without them, its blocks (the entries of its
    first ``ModuleList`` of two or more modules), the unit per-block sharding fetches."""
    cached = getattr(model, "_zero3_leaves", None)
    if cached is None:
        modules = _module_list(model)
        cached = [m for m in modules if type(m).__name__ == "MoELayer"] or list(
            next(m for m in modules if isinstance(m, nn.ModuleList) and len(m) > 1)
        )
        model._zero3_leaves = cached  # type: ignore[attr-defined]
    return cached


def _names_and_ids(lists: list[list[tuple[str, nn.Parameter]]]) -> list[list[tuple[str, int]]]:
    # What the ZeRO-3 patterns are compared by: each walk's names and parameter identities.
    return [[(n, id(p)) for n, p in items] for items in lists]


def _zero3(model: Model) -> list[list[tuple[str, nn.Parameter]]]:
    # ZeRO-3 fetches a module's parameters with named_parameters(recurse=True) before
    # each leaf module runs, every step.
    return [list(leaf.named_parameters(recurse=True)) for leaf in _leaves(model)]


def _zero3_blocks(model: Model) -> list[list[tuple[str, nn.Parameter]]]:
    # ... and each z3 leaf module's (an MoE layer's) parameters, every expert's, whole.
    return [list(block.named_parameters(recurse=True)) for block in _zero3_leaves(model)]


def _functional_call(model: Model) -> torch.Tensor:
    params = getattr(model, "_params", None)
    if params is None:
        module = model.module
        params = {
            **dict(nn.Module.named_parameters(module)),
            **dict(nn.Module.named_buffers(module)),
        }
        model._params = params  # type: ignore[attr-defined]
    with torch.no_grad():
        return model.loss(_Functional(model.module, params), model.batch())


class _Functional:
    """``module(*args)`` through ``torch.func.functional_call`` with fixed tensors."""

    def __init__(self, module: nn.Module, params: dict[str, torch.Tensor]) -> None:
        self.module, self.params = module, params

    def __call__(self, *args: object, **kwargs: object) -> object:
        return torch.func.functional_call(self.module, self.params, args, kwargs)


def _clip(model: Model) -> torch.Tensor:
    return nn.utils.clip_grad_norm_(model.module.parameters(), 1.0)


def _state_dict_entries(state: object) -> list[tuple[str, int]]:
    return [(k, v.data_ptr()) for k, v in state.items()]  # type: ignore[attr-defined]


def _evaluation_mode(model: Model) -> None:
    model.module.eval()  # returns None: pytest-benchmark reads a set-up's result as arguments


def _training_flags(model: Model) -> list[bool]:
    return [m.training for m in _module_list(model)]


def _optimizer(model: Model) -> list[nn.Parameter]:
    return torch.optim.AdamW(model.module.parameters(), lr=1e-3).param_groups[0]["params"]


def _step(model: Model) -> torch.Tensor:
    state = getattr(model, "_optimizer", None)
    if state is None:
        state = torch.optim.AdamW(nn.Module.parameters(model.module), lr=1e-5)
        model._optimizer = state  # type: ignore[attr-defined]
    loss = model.loss(model.module, model.batch())
    loss.backward()
    nn.utils.clip_grad_norm_(model.module.parameters(), 1.0)
    state.step()
    model.module.zero_grad()
    return loss.detach()


def _same_objects(result: object) -> object:
    return [id(x) for x in result]  # type: ignore[union-attr]


CONSUMERS: dict[str, Consumer] = {
    c.name: c
    for c in (
        Consumer(
            "zero_grad",
            "model.zero_grad() (set_to_none), every parameter with a grad",
            lambda m: m.module.zero_grad(),
            setup=_give_grads,
            native=lambda m: pyparams.zero_grad(m.module),
            observe=_grads_are_none,
        ),
        Consumer(
            "requires_grad_",
            "model.requires_grad_(False) then (True): freezing",
            _requires_grad,
            observe=_requires_grad_flags,
        ),
        Consumer(
            "num_parameters",
            "transformers' num_parameters(exclude_embeddings=True), as its Trainer calls it",
            _num_parameters,
        ),
        Consumer(
            "optimizer",
            "torch.optim.AdamW(model.parameters()) construction",
            _optimizer,
            check=_same_objects,
        ),
        Consumer(
            "zero3_fetch",
            "named_parameters(recurse=True) of every leaf module (ZeRO-3)",
            _zero3,
            check=_names_and_ids,
        ),
        Consumer(
            "zero3_blocks",
            "named_parameters(recurse=True) of every ZeRO-3 leaf module: MoE layer (GPT-2: block)",
            _zero3_blocks,
            check=_names_and_ids,
        ),
        Consumer(
            "functional_call",
            "torch.func.functional_call forward (no grad), loss",
            _functional_call,
            check=lambda loss: float(loss),
        ),
        Consumer(
            "clip_grad_norm_",
            "clip_grad_norm_(model.parameters(), 1.0)",
            _clip,
            setup=_fresh_grads,
            check=lambda norm: float(norm),
        ),
        Consumer(
            "state_dict",
            "model.state_dict()",
            lambda m: m.module.state_dict(),
            check=_state_dict_entries,
        ),
        Consumer(
            "train",
            "model.train() (after an untimed eval())",
            lambda m: m.module.train(),
            setup=_evaluation_mode,
            observe=_training_flags,
        ),
        Consumer(
            "train_step",
            "forward, backward, clip_grad_norm_, AdamW step, zero_grad",
            _step,
            check=lambda loss: None,
        ),
    )
}


# ---------------------------------------------------------------------------- measuring


@dataclass
class ConsumerRow:
    """One consumer on one model. Keys of ``medians_ns``: each mode, ``walk:<mode>`` (the
    walk alone) and ``<mode>@step`` (inside a step loop); of ``speedups``: each mode but
    torch, and ``<mode>@step``."""

    model: str
    consumer: str
    description: str
    medians_ns: dict[str, float] = field(default_factory=dict)
    speedups: dict[str, float] = field(default_factory=dict)
    walk_share: dict[str, float] = field(default_factory=dict)
    walk_calls: int = 0
    target: float | None = None
    error: str = ""

    @property
    def best(self) -> float | None:
        """The best speedup of a consumer called back to back (the target's figure)."""
        return max((v for k, v in self.speedups.items() if STEP not in k), default=None)


def _patch_state(patch: bool) -> Callable[[], contextlib.AbstractContextManager[object]]:
    """The patch switched on (or off) for a sample, off again after it."""

    @contextlib.contextmanager
    def state() -> Iterator[None]:
        (pyparams.patch if patch else pyparams.unpatch)()
        try:
            yield
        finally:
            pyparams.unpatch()

    return state


def _column(
    name: str,
    run: Callable[[], object],
    setup: Callable[[], None],
    patch: bool,
    before_call: Callable[[], None] | None = None,
) -> Column:
    """One call timed on its own per sample, in the patch state asked for. Switching the
    patch changes nn.Module's class attributes, which renews every module class's version:
    CPython's attribute caches empty and the walk cache's records no longer match. Three
    untimed calls first (the first meets the change, the second records, the third is the
    records' first replay, which sets up a named walk's table of names), so the timed one
    runs as it does when the patch simply stays on (or off): warm."""

    def warm() -> None:
        for _ in range(3):
            setup()
            run()

    return Column(
        name,
        run,
        before_sample=warm,
        before_call=before_call or setup,
        context=_patch_state(patch),
        calls_per_sample=1,
    )


def _modes(consumer: Consumer) -> dict[str, tuple[Callable[[Model], object], bool]]:
    modes = {"torch": (consumer.run, False), "patched": (consumer.run, True)}
    if consumer.native is not None:
        modes["native"] = (consumer.native, False)
    return modes


def _check(consumer: Consumer, model: Model) -> str:
    """'' when every mode gives torch's result, else what differs (then nothing is timed)."""
    if consumer.name == "train_step":
        return _check_train_step(model)
    results = {}
    for mode, (run, patch) in _modes(consumer).items():
        (pyparams.patch if patch else pyparams.unpatch)()
        try:
            consumer.setup(model)
            torch.manual_seed(0)  # dropout draws the same masks in every mode
            result = run(model)
            if consumer.observe is not None:
                result = consumer.observe(model)
            results[mode] = consumer.check(result)
        finally:
            pyparams.unpatch()
    wrong = [mode for mode, result in results.items() if result != results["torch"]]
    return f"{', '.join(wrong)} differ from torch" if wrong else ""


def _check_train_step(model: Model) -> str:
    """One step from the same state, unpatched and patched: same loss, same weights."""
    outcomes = []
    for patch in (False, True):
        twin = Model(model.name, copy.deepcopy(model.module), model.batch, model.loss)
        (pyparams.patch if patch else pyparams.unpatch)()
        try:
            torch.manual_seed(0)
            loss = _step(twin)
        finally:
            pyparams.unpatch()
        outcomes.append((loss, [p.detach() for p in twin.module.parameters()]))
    (loss_a, params_a), (loss_b, params_b) = outcomes
    same = torch.equal(loss_a, loss_b) and all(
        torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True)
    )
    return "" if same else "patched training step differs from torch"


def _training_step(model: Model) -> None:
    """The other work of a step, untimed: forward, backward, optimizer step (no zero_grad:
    the consumer may be it). Gradients of the steps between two zero_grad calls add up."""
    state = getattr(model, "_optimizer", None)
    if state is None:
        state = torch.optim.AdamW(nn.Module.parameters(model.module), lr=1e-5)
        model._optimizer = state  # type: ignore[attr-defined]
    model.loss(model.module, model.batch()).backward()
    state.step()


def measure_consumer(
    consumer: Consumer, model: Model, rounds: int, step_rounds: int | None = None
) -> ConsumerRow:
    """Check the consumer's modes against torch, then time them (and the walk alone) in
    interleaved rounds; a consumer of :data:`IN_STEP` also inside a step loop, in
    ``step_rounds`` rounds of its own (default: ``rounds``, at most :data:`STEP_ROUNDS`)."""
    target = consumer_target(consumer.name, model.name)
    row = ConsumerRow(model.name, consumer.name, consumer.description, target=target)
    row.error = _check(consumer, model)
    if row.error:
        return row
    modes = _modes(consumer)
    calls = _record(consumer, model)
    row.walk_calls = len(calls)
    setup = functools.partial(consumer.setup, model)
    columns = [
        _column(mode, functools.partial(run, model), setup, patch)
        for mode, (run, patch) in modes.items()
    ]
    if calls:
        replay = replay_walks(calls)
        columns += [
            _column(f"walk:{mode}", replay, _nothing, patch)
            for mode, patch in (("torch", False), ("patched", True))
        ]
    samples = _timed(columns, rounds)
    if consumer.name in IN_STEP:

        def in_step() -> None:
            _training_step(model)
            setup()

        steps = [
            _column(
                f"{mode}@{STEP}", functools.partial(run, model), setup, patch, before_call=in_step
            )
            for mode, (run, patch) in modes.items()
        ]
        # no warm-up sample: the column's untimed warm calls do that, without a step
        samples.update(_timed(steps, step_rounds or min(rounds, STEP_ROUNDS), warm_up=False))
    row.medians_ns = {name: median(values) for name, values in samples.items()}
    for name in samples:
        mode, _, state = name.partition("@")
        if mode in modes and mode != "torch":
            base = f"torch@{state}" if state else "torch"
            row.speedups[name] = median(paired_ratios(samples[base], samples[name]))
    if calls:
        row.walk_share = {
            "torch": row.medians_ns["walk:torch"] / row.medians_ns["torch"],
            "patched": row.medians_ns["walk:patched"] / row.medians_ns["patched"],
        }
    return row


def _nothing() -> None:
    pass


def _timed(columns: list[Column], rounds: int, warm_up: bool = True) -> dict[str, list[float]]:
    """An untimed warm-up sample per column (``warm_up``), then ``rounds`` interleaved
    rounds of one call each."""
    overhead = timer_overhead_ns()
    if warm_up:
        for column in columns:
            sample(column, 1, overhead=overhead)
    return interleaved(
        columns, dict.fromkeys((c.name for c in columns), 1), rounds, overhead=overhead
    )


def _record(consumer: Consumer, model: Model) -> list[WalkCall]:
    """The walk calls one run of the consumer makes with torch's methods (untimed)."""
    pyparams.unpatch()
    consumer.setup(model)
    torch.manual_seed(0)
    return record_walks(lambda: consumer.run(model))


def run_consumers(
    models: Sequence[str] = CONSUMER_MODELS,
    consumers: Sequence[str] | None = None,
    rounds: int = 11,
    cache: ZooCache | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ConsumerRow]:
    """Every consumer on every model; the patch is off again when this returns."""
    chosen = [CONSUMERS[name] for name in (consumers or list(CONSUMERS))]
    rows = []
    was_patched = pyparams.is_patched()
    pyparams.unpatch()
    try:
        for model_name in models:
            model = build_consumer_model(model_name, cache)
            for consumer in chosen:
                if progress is not None:
                    progress(f"{model_name}: {consumer.name}")
                rows.append(measure_consumer(consumer, model, rounds))
    finally:
        if was_patched:
            pyparams.patch()
    return rows
