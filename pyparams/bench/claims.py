"""Four popular claims about ``Module.parameters()``, each tested on real models.

A widely read explanation of ``parameters()`` claims that

1. it yields only tensors with ``requires_grad=True``;
2. ``list(model.parameters())`` creates a full copy of the parameters in memory and can
   exhaust RAM on huge models;
3. the iterator is memory-efficient where the list is not;
4. it recurses into nested submodules.

:func:`run_claims` measures each on a materialized model (GPT-2 by default, real storage
filled with zeros so its pages are resident), on a huge model's structure (DeepSeek-V3 on
``meta``) and on nested chains, and returns a :class:`Verdict` per claim: the verdict is
computed from the evidence measured in this run, never written in advance.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import pyparams
from pyparams.bench.extras import available, rss_bytes
from pyparams.bench.formatting import format_bytes
from pyparams.bench.measure import measure_memory, synchronize
from pyparams.bench.outputs import write_json
from pyparams.bench.zoo import DEFAULT_MEMORY_CAP_BYTES, ZooCache, build_chain, raw_walk

__all__ = [
    "CLAIMS",
    "OUTPUT_FILES",
    "SYNTHETIC_MODEL",
    "Verdict",
    "default_models",
    "format_verdicts",
    "run_claims",
    "write_claims",
]

OUTPUT_FILES: tuple[str, ...] = ("claims.json", "claims.md")  # what write_claims writes
# Without transformers the claims run on this synthetic zoo model, with no huge model.
SYNTHETIC_MODEL = "experts-32"

CLAIMS: tuple[str, ...] = (
    "parameters() yields only tensors with requires_grad=True",
    "list(model.parameters()) creates a full copy of the parameters in memory and can "
    "exhaust RAM on huge models",
    "the parameters() iterator is memory-efficient where the list is not",
    "parameters() recurses into nested submodules",
)


@dataclass
class Verdict:
    """The outcome of testing one claim: verdict, a one-line reason, and the evidence."""

    number: int
    claim: str
    verdict: str  # TRUE, FALSE, MISLEADING, MIXED
    reason: str
    evidence: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)


def _combine(per_device: list[tuple[str, str]]) -> tuple[str, str]:
    verdicts = {v for v, _ in per_device}
    if len(verdicts) == 1:
        return per_device[0]
    return "MIXED", "; ".join(f"{v}: {r}" for v, r in per_device)


def _claim1(label: str, model: nn.Module) -> tuple[str, str, list[str], dict[str, object]]:
    params = list(model.parameters())
    frozen = params[: len(params) // 2]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        for p in frozen:
            p.requires_grad_(False)
        yielded = list(model.parameters())
        yielded_frozen = sum(not p.requires_grad for p in yielded)
        trainable = list(pyparams.trainable_parameters(model))
        all_trainable = all(p.requires_grad for p in trainable)
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
    evidence = [
        f"{label}: froze {len(frozen)} of {len(params)} parameter tensors; model.parameters() "
        f"then yielded {len(yielded)}, {yielded_frozen} of them with requires_grad=False",
        f"{label}: pyparams.trainable_parameters(model) yielded {len(trainable)}"
        f"{', all with requires_grad=True' if all_trainable else ', SOME FROZEN'}",
    ]
    data = {
        "frozen_set": len(frozen),
        "yielded": len(yielded),
        "yielded_frozen": yielded_frozen,
        "pyparams_trainable": len(trainable),
    }
    if yielded_frozen > 0:
        reason = "parameters() yields frozen tensors too; filter on requires_grad"
        return "FALSE", reason, evidence, data
    return "TRUE", "no frozen tensor was yielded", evidence, data


def _rss() -> int:
    return rss_bytes() or 0  # 0 without psutil or /proc: the RSS deltas then read 0 B


def _cuda_allocated(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    synchronize(device)
    return torch.cuda.memory_allocated()


ClaimOutcome = tuple[str, str, list[str], dict[str, object]]


def _claim2(label: str, model: nn.Module, device: str) -> ClaimOutcome:
    own = raw_walk(model)[1]
    own_ids = {id(p) for p in own}
    own_ptrs = {p.untyped_storage().data_ptr() for p in own}
    storage = sum(p.numel() * p.element_size() for p in own)
    rss0, cuda0 = _rss(), _cuda_allocated(device)
    held = list(model.parameters())
    rss_list, cuda1 = _rss() - rss0, _cuda_allocated(device)
    same_objects = sum(id(p) in own_ids for p in held)
    duplicated = sum(
        p.untyped_storage().nbytes() for p in held if p.untyped_storage().data_ptr() not in own_ptrs
    )
    list_bytes = sys.getsizeof(held)
    rss1, cuda2 = _rss(), _cuda_allocated(device)
    copies = [p.detach().clone() for p in held]
    rss_copy, cuda3 = _rss() - rss1, _cuda_allocated(device)
    del copies
    evidence = [
        f"{label}: {same_objects} of {len(held)} list items are the model's own Parameter "
        f"objects (is); {duplicated} bytes of tensor storage duplicated (data pointers)",
        f"{label}: holding the list: RSS {format_bytes(rss_list)}, "
        f"list object {format_bytes(list_bytes)} for {format_bytes(storage)} of parameters; "
        f"an actual copy (clone) costs RSS {format_bytes(rss_copy)}",
    ]
    data: dict[str, object] = {
        "items": len(held),
        "same_objects": same_objects,
        "duplicated_bytes": duplicated,
        "rss_delta_list": rss_list,
        "rss_delta_copy": rss_copy,
        "list_bytes": list_bytes,
        "storage_bytes": storage,
    }
    if cuda0 is not None and cuda1 is not None and cuda2 is not None and cuda3 is not None:
        data.update(cuda_delta_list=cuda1 - cuda0, cuda_delta_copy=cuda3 - cuda2)
        evidence.append(
            f"{label}: CUDA memory_allocated delta: list {format_bytes(cuda1 - cuda0)}, "
            f"clone {format_bytes(cuda3 - cuda2)}"
        )
    no_copy = (
        same_objects == len(held) == len(own)
        and duplicated == 0
        and (cuda0 is None or data["cuda_delta_list"] == 0)
    )
    if no_copy:
        return (
            "FALSE",
            "the list holds references to the same tensors, 8 bytes each; nothing is copied",
            evidence,
            data,
        )
    return "TRUE", "the list did not hold the model's own tensors", evidence, data


def _claim3(label: str, model: nn.Module, device: str) -> ClaimOutcome:
    storage = sum(p.numel() * p.element_size() for p in raw_walk(model)[1])
    gen = measure_memory(lambda: deque(model.parameters(), maxlen=0), device).tracemalloc_peak
    lst = measure_memory(lambda: list(model.parameters()), device).tracemalloc_peak
    # pyparams' transient peak, on a warm walk: its walk cache's record (made by an
    # earlier walk, counted in cache_info().bytes) is reported apart, not as transient.
    for _ in range(2):
        deque(pyparams.parameters(model), maxlen=0)
    native = measure_memory(
        lambda: deque(pyparams.parameters(model), maxlen=0), device
    ).tracemalloc_peak
    evidence = [
        f"{label}: tracemalloc peak: iterating model.parameters() {format_bytes(gen)}, "
        f"list(model.parameters()) {format_bytes(lst)}, iterating pyparams.parameters() "
        f"{format_bytes(native)} (warm; the walk cache's records, "
        f"{format_bytes(pyparams.cache_info().bytes)} in all, apart); "
        f"tensor storage {format_bytes(storage)}",
    ]
    data = {
        "generator_peak": gen,
        "list_peak": lst,
        "pyparams_peak": native,
        "storage_bytes": storage,
    }
    if gen >= lst / 2:
        return (
            "FALSE",
            "torch's generator is not meaningfully lighter than the list: it keeps "
            "sets of every module and parameter seen",
            evidence,
            data,
        )
    if storage and lst < storage / 100:
        return (
            "MISLEADING",
            "the generator is lighter, but the list costs references only, "
            "a vanishing fraction of the tensors",
            evidence,
            data,
        )
    return "TRUE", "the list costs a substantial fraction of the tensors", evidence, data


def _claim4(label: str, model: nn.Module) -> tuple[str, str, list[str], dict[str, object]]:
    walked = len(raw_walk(model)[1])
    recursive = len(list(model.parameters()))
    shallow = len(list(model.parameters(recurse=False)))
    evidence = [
        f"{label}: parameters() yielded {recursive}, parameters(recurse=False) {shallow}; "
        f"a walk over every submodule's _parameters finds {walked}"
    ]
    data = {"recursive": recursive, "shallow": shallow, "walked": walked}
    if recursive == walked and recursive > shallow:
        return "TRUE", "it walks every nested submodule", evidence, data
    return "FALSE", "parameters() missed nested parameters", evidence, data


def _chain_evidence(depths: Sequence[int]) -> tuple[list[str], dict[str, object]]:
    lines, data = [], {}
    for depth in depths:
        chain = build_chain(depth)
        try:
            torch_count: object = len(list(chain.parameters()))
        except RecursionError:
            torch_count = "RecursionError"
        try:
            native: object = len(list(pyparams.parameters(chain)))
        except Exception as exc:  # noqa: BLE001 - reported as evidence, never hidden
            native = type(exc).__name__
        data[f"chain_{depth}"] = {"torch": torch_count, "pyparams": native}
        lines.append(
            f"chain of {depth} nested modules: model.parameters() -> {torch_count}, "
            f"pyparams.parameters() -> {native}"
        )
    return lines, data


def run_claims(
    model: str = "gpt2",
    devices: Sequence[str] = ("cpu",),
    huge_model: str | None = "deepseek-v3",
    chain_depths: Sequence[int] = (3, 300, 5000),
    memory_cap_bytes: int = DEFAULT_MEMORY_CAP_BYTES,
    cache: ZooCache | None = None,
) -> list[Verdict]:
    """Test the four claims on ``model`` materialized on each device (not ``meta``).

    ``huge_model`` (on ``meta``, structure only) adds what the list would cost for a model
    too large to hold; ``chain_depths`` adds nested-chain counts to claim 4. ``cache``
    supplies the models (a new one, capped at ``memory_cap_bytes``, by default).
    """
    if cache is None:
        cache = ZooCache(memory_cap_bytes)
    per_claim: list[list[tuple[str, str, list[str], dict[str, object]]]] = [[], [], [], []]
    for device in devices:
        if device == "meta":
            raise ValueError("claims need real storage: use cpu or cuda, not meta")
        built = cache.get(model, device)
        if built.device == "meta":
            raise ValueError(f"{model!r} is over the memory cap; claims need it materialized")
        with torch.no_grad():
            for p in built.module.parameters():
                p.zero_()  # make the pages resident, so RSS counts the model
        label = f"{model} [{device}]"
        per_claim[0].append(_claim1(label, built.module))
        per_claim[1].append(_claim2(label, built.module, device))
        per_claim[2].append(_claim3(label, built.module, device))
        per_claim[3].append(_claim4(label, built.module))
    extra: list[list[str]] = [[], [], [], []]
    extra_data: list[dict[str, object]] = [{}, {}, {}, {}]
    if huge_model is not None:
        huge = cache.get(huge_model, "meta")
        held = list(huge.module.parameters())
        size = huge.structure.storage_bytes
        extra[1].append(
            f"{huge_model} [meta]: list(model.parameters()) is a "
            f"{format_bytes(sys.getsizeof(held))} list of {len(held)} references, for "
            f"{format_bytes(size)} of fp32 parameters"
        )
        extra_data[1] = {"huge_list_bytes": sys.getsizeof(held), "huge_storage_bytes": size}
        del held
        gen = measure_memory(lambda: deque(huge.module.parameters(), maxlen=0), "meta")
        lst = measure_memory(lambda: list(huge.module.parameters()), "meta")
        extra[2].append(
            f"{huge_model} [meta]: tracemalloc peak: iterating "
            f"{format_bytes(gen.tracemalloc_peak)}, list {format_bytes(lst.tracemalloc_peak)}"
        )
        extra_data[2] = {
            "huge_generator_peak": gen.tracemalloc_peak,
            "huge_list_peak": lst.tracemalloc_peak,
        }
    chain_lines, chain_data = _chain_evidence(chain_depths)
    extra[3].extend(chain_lines)
    extra_data[3] = chain_data
    verdicts = []
    for index, outcomes in enumerate(per_claim):
        verdict, reason = _combine([(v, r) for v, r, _, _ in outcomes])
        evidence = [line for _, _, lines, _ in outcomes for line in lines] + extra[index]
        data = {
            label: d for label, (_, _, _, d) in zip(devices, outcomes, strict=True)
        } | extra_data[index]
        verdicts.append(Verdict(index + 1, CLAIMS[index], verdict, reason, evidence, data))
    return verdicts


def default_models() -> tuple[str, str | None]:
    """``(model, huge_model)``: GPT-2 and DeepSeek-V3, or a synthetic model without transformers."""
    if available("transformers"):
        return "gpt2", "deepseek-v3"
    return SYNTHETIC_MODEL, None


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    """Plain text: each claim, its verdict with the reason, and the evidence lines."""
    lines = []
    for v in verdicts:
        lines.append(f'Claim {v.number}: "{v.claim}"')
        lines.append(f"  Verdict: {v.verdict} - {v.reason}")
        lines.extend(f"    - {line}" for line in v.evidence)
    return "\n".join(lines)


def write_claims(verdicts: Sequence[Verdict], out: Path) -> list[Path]:
    """``claims.json`` (every verdict, its evidence and data) and ``claims.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data, text = (out / name for name in OUTPUT_FILES)
    write_json(data, [dataclasses.asdict(v) for v in verdicts])
    text.write_text(f"```\n{format_verdicts(verdicts)}\n```\n")
    return [data, text]
