"""The model zoo: real architectures from ``transformers`` configs and scaling families.

No weights are ever downloaded: every architecture is built from its config class.
Structure is what the walker sees, so a huge model is built on the ``meta`` device
(no storage) and a model under the memory cap is materialized on CPU/CUDA with
``to_empty`` (real, uninitialized storage; tied weights re-tied and checked against the
``meta`` build). Scaling families are small synthetic trees built directly on the device:

- ``depth-N``: a chain of N nested modules, one 1-element parameter each;
- ``width-N``: N sibling ``nn.Linear(2, 2)`` in one ``ModuleList``;
- ``experts-E``: 8 layers of an unfused mixture of E experts (gate/up/down ``Linear``);
- ``frozen-P``: a GPT-2-XL-shaped model (48 blocks, tiny widths) with P% of its
  parameters frozen, the fine-tuning case where only a few parameters train;
- ``moe-32x64``: 32 layers x 64 unfused experts (a single shape, family ``moe``).

Built models are cached per ``(name, device)`` within a run (:class:`ZooCache`).

>>> entry = get_entry("depth-10")
>>> entry.family, entry.size
('depth', 10.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from pyparams.bench.gc_pause import gc_paused

__all__ = [
    "ARCH_FAMILY",
    "DEFAULT_MEMORY_CAP_BYTES",
    "FAMILIES",
    "PRESETS",
    "SCALING_FAMILIES",
    "ZOO",
    "BuiltModel",
    "Structure",
    "ZooCache",
    "ZooEntry",
    "get_entry",
    "measure_structure",
    "preset_entries",
    "raw_walk",
    "resolve_names",
]

DEFAULT_MEMORY_CAP_BYTES: int = 4 * 1024**3
ARCH_FAMILY = "arch"
SCALING_FAMILIES: tuple[str, ...] = ("depth", "width", "experts", "frozen")
FAMILIES: tuple[str, ...] = (ARCH_FAMILY, *SCALING_FAMILIES, "moe")
PRESETS: tuple[str, ...] = ("quick", "default", "full")


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: how to build it and which presets include it."""

    name: str
    family: str
    description: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    presets: frozenset[str] = frozenset()
    size: float | None = None  # x value of a scaling family (depth, width, experts, % frozen)
    needs: tuple[str, ...] = ()  # modules beyond torch that building it imports (an extra)


@dataclass(frozen=True)
class Structure:
    """What the walker walks: unique modules, unique parameter tensors, elements, bytes."""

    n_modules: int
    n_param_tensors: int
    n_params: int
    storage_bytes: int
    n_trainable_tensors: int


@dataclass
class BuiltModel:
    """A zoo model built on a device, with how it got there."""

    entry: ZooEntry
    module: nn.Module
    device: str
    requested_device: str
    structure: Structure
    build_seconds: float
    note: str = ""


# --------------------------------------------------------------------------- helpers


def raw_walk(module: nn.Module) -> tuple[int, list[nn.Parameter]]:
    """The number of unique modules and the unique parameter objects of the tree.

    An explicit-stack walk over the raw ``_modules``/``_parameters`` dicts (any depth
    works), independent of both ``parameters()`` and pyparams, so counts can be checked
    against it.
    """
    seen_modules: set[int] = set()
    seen: dict[int, nn.Parameter] = {}
    stack = [module]
    while stack:
        mod = stack.pop()
        if id(mod) in seen_modules:
            continue
        seen_modules.add(id(mod))
        for param in mod._parameters.values():
            if param is not None:
                seen.setdefault(id(param), param)
        stack.extend(child for child in mod._modules.values() if child is not None)
    return len(seen_modules), list(seen.values())


def measure_structure(module: nn.Module) -> Structure:
    """Count unique modules and parameters, their elements, storage and trainable ones."""
    n_modules, params = raw_walk(module)
    return Structure(
        n_modules=n_modules,
        n_param_tensors=len(params),
        n_params=sum(p.numel() for p in params),
        storage_bytes=sum(p.numel() * p.element_size() for p in params),
        n_trainable_tensors=sum(bool(p.requires_grad) for p in params),
    )


# --------------------------------------------------------------- real architectures


def _hf(model_class: str, config_class: str, **config: object) -> Callable[[], nn.Module]:
    """A builder for ``transformers.<model_class>(transformers.<config_class>(**config))``."""

    def build() -> nn.Module:
        import transformers

        cfg = getattr(transformers, config_class)(**config)
        return getattr(transformers, model_class)(cfg)

    return build


# A table: one model to a row reads better than one value to a line.
# fmt: off
_GPT2_XL_TINY = {"n_layer": 48, "n_embd": 64, "n_head": 4, "vocab_size": 1024, "n_positions": 128,
                 "bos_token_id": 0, "eos_token_id": 0}

_ARCHS: list[tuple[str, str, Callable[[], nn.Module], frozenset[str]]] = [
    ("gpt2", "GPT-2 small (124M)", _hf("GPT2LMHeadModel", "GPT2Config"),
     frozenset({"quick", "default", "full"})),
    ("gpt2-xl", "GPT-2-XL (1.5B)",
     _hf("GPT2LMHeadModel", "GPT2Config", n_layer=48, n_embd=1600, n_head=25),
     frozenset({"default", "full"})),
    ("gpt2-xl-tiny", "GPT-2-XL shape: 48 blocks, width 64",
     _hf("GPT2LMHeadModel", "GPT2Config", **_GPT2_XL_TINY), frozenset({"full"})),
    ("bert-large", "BERT-large (335M)",
     _hf("BertForMaskedLM", "BertConfig", hidden_size=1024, num_hidden_layers=24,
         num_attention_heads=16, intermediate_size=4096),
     frozenset({"default", "full"})),
    ("t5-large", "T5-large (738M)",
     _hf("T5ForConditionalGeneration", "T5Config", d_model=1024, d_ff=4096, d_kv=64,
         num_layers=24, num_heads=16),
     frozenset({"default", "full"})),
    ("t5-11b", "T5 11B shape",
     _hf("T5ForConditionalGeneration", "T5Config", d_model=1024, d_ff=65536, d_kv=128,
         num_layers=24, num_heads=128),
     frozenset({"default", "full"})),
    ("llama-2-7b", "Llama-2-7B",
     _hf("LlamaForCausalLM", "LlamaConfig", hidden_size=4096, intermediate_size=11008,
         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
         vocab_size=32000),
     frozenset({"quick", "default", "full"})),
    ("llama-3-70b", "Llama-3-70B",
     _hf("LlamaForCausalLM", "LlamaConfig", hidden_size=8192, intermediate_size=28672,
         num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
         vocab_size=128256),
     frozenset({"default", "full"})),
    ("mixtral-8x7b", "Mixtral-8x7B (fused experts)", _hf("MixtralForCausalLM", "MixtralConfig"),
     frozenset({"quick", "default", "full"})),
    ("deepseek-v3", "DeepSeek-V3 (671B, fused experts)",
     _hf("DeepseekV3ForCausalLM", "DeepseekV3Config"), frozenset({"default", "full"})),
    ("qwen3-moe", "Qwen3-30B-A3B (fused experts)",
     _hf("Qwen3MoeForCausalLM", "Qwen3MoeConfig", vocab_size=151936, hidden_size=2048,
         intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
         num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
         num_experts_per_tok=8),
     frozenset({"default", "full"})),
    ("gpt2-tiny", "GPT-2, 2 blocks, width 32 (for tests)",
     _hf("GPT2LMHeadModel", "GPT2Config", n_layer=2, n_embd=32, n_head=2, vocab_size=128,
         n_positions=64, bos_token_id=0, eos_token_id=0),
     frozenset()),
]
# fmt: on


# ---------------------------------------------------------------- scaling families


class Nest(nn.Module):
    """One level of the ``depth`` chain: a 1-element parameter and the next level."""

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        if inner is not None:
            self.inner = inner


class Siblings(nn.Module):
    """The ``width`` family: ``n`` sibling ``nn.Linear(2, 2)`` in one ``ModuleList``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))


class Expert(nn.Module):
    """An unfused SwiGLU expert: three separate bias-free ``Linear`` modules."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, dim, bias=False)
        self.up_proj = nn.Linear(dim, dim, bias=False)
        self.down_proj = nn.Linear(dim, dim, bias=False)


class MoELayer(nn.Module):
    """A router and ``n_experts`` unfused experts (the pre-fusion transformers layout)."""

    def __init__(self, n_experts: int, dim: int) -> None:
        super().__init__()
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim) for _ in range(n_experts))


class UnfusedMoE(nn.Module):
    """``n_layers`` mixture-of-experts layers, ``n_experts`` unfused experts each."""

    def __init__(self, n_layers: int, n_experts: int, dim: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MoELayer(n_experts, dim) for _ in range(n_layers))


def build_chain(depth: int) -> nn.Module:
    """A chain of ``depth`` nested :class:`Nest` modules (built bottom-up, no recursion)."""
    module: nn.Module | None = None
    for _ in range(depth):
        module = Nest(module)
    assert module is not None
    return module


def freeze_fraction(module: nn.Module, fraction: float) -> nn.Module:
    """Freeze ``fraction`` of ``module``'s parameter tensors, spread evenly along the walk."""
    params = list(module.parameters())
    for i, param in enumerate(params):
        param.requires_grad_(int((i + 1) * fraction) == int(i * fraction))
    return module


def _frozen_builder(percent: int) -> Callable[[], nn.Module]:
    base = _hf("GPT2LMHeadModel", "GPT2Config", **_GPT2_XL_TINY)
    return lambda: freeze_fraction(base(), percent / 100)


_Q, _D, _F = "quick", "default", "full"
_SCALING: list[tuple[str, str, str, Callable[[], nn.Module], float, frozenset[str]]] = []
for _n, _p in [
    (10, {_Q, _D, _F}),
    (30, {_D, _F}),
    (100, {_Q, _D, _F}),
    (300, {_Q, _D, _F}),
    (900, {_D, _F}),
    (1000, {_Q, _F}),
    (2000, {_F}),
    (3000, {_D, _F}),
    (5000, {_D, _F}),
]:
    _SCALING.append(
        (
            f"depth-{_n}",
            "depth",
            f"chain of {_n} nested modules",
            (lambda n=_n: build_chain(n)),
            float(_n),
            frozenset(_p),
        )
    )
for _n, _p in [
    (100, {_Q, _D, _F}),
    (300, {_D, _F}),
    (1000, {_Q, _D, _F}),
    (3000, {_D, _F}),
    (5000, {_Q}),
    (10000, {_D, _F}),
    (20000, {_D, _F}),
    (50000, {_F}),
    (100000, {_F}),
]:
    _SCALING.append(
        (
            f"width-{_n}",
            "width",
            f"{_n} sibling Linear(2, 2)",
            (lambda n=_n: Siblings(n)),
            float(_n),
            frozenset(_p),
        )
    )
for _n, _p in [
    (8, {_Q, _D, _F}),
    (16, {_D, _F}),
    (32, {_Q, _D, _F}),
    (64, {_D, _F}),
    (128, {_D, _F}),
    (256, {_D, _F}),
]:
    _SCALING.append(
        (
            f"experts-{_n}",
            "experts",
            f"8 layers x {_n} unfused experts",
            (lambda n=_n: UnfusedMoE(8, n)),
            float(_n),
            frozenset(_p),
        )
    )
for _n in (0, 50, 99):
    _SCALING.append(
        (
            f"frozen-{_n}",
            "frozen",
            f"GPT-2-XL shape (width 64), {_n}% frozen",
            _frozen_builder(_n),
            float(_n),
            frozenset({_Q, _D, _F}),
        )
    )
_SCALING.append(
    (
        "moe-32x64",
        "moe",
        "32 layers x 64 unfused experts",
        lambda: UnfusedMoE(32, 64),
        64.0,
        frozenset({_D, _F}),
    )
)

# The families whose builders go through _hf (transformers, the ``bench`` extra).
_FAMILY_NEEDS: dict[str, tuple[str, ...]] = {
    ARCH_FAMILY: ("transformers",),
    "frozen": ("transformers",),
}

ZOO: dict[str, ZooEntry] = {
    name: ZooEntry(
        name=name,
        family=ARCH_FAMILY,
        description=desc,
        build=build,
        presets=presets,
        needs=_FAMILY_NEEDS[ARCH_FAMILY],
    )
    for name, desc, build, presets in _ARCHS
}
ZOO.update(
    (
        name,
        ZooEntry(
            name=name,
            family=family,
            description=desc,
            build=build,
            presets=presets,
            size=size,
            needs=_FAMILY_NEEDS.get(family, ()),
        ),
    )
    for name, family, desc, build, size, presets in _SCALING
)


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; ``KeyError`` naming it and the choices otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from: {', '.join(ZOO)}") from None


def preset_entries(preset: str) -> list[ZooEntry]:
    """The entries a preset (``quick``, ``default``, ``full``) runs, in zoo order."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    return [entry for entry in ZOO.values() if preset in entry.presets]


def resolve_names(names: Sequence[str], preset: str = "full") -> list[ZooEntry]:
    """Entries for model names; a family name (``depth``, ``arch``...) means its preset members.

    Raises ``KeyError`` naming the first unknown name.
    """
    entries: list[ZooEntry] = []
    for name in names:
        if name in FAMILIES:
            chosen = [e for e in preset_entries(preset) if e.family == name]
        else:
            chosen = [get_entry(name)]
        entries.extend(e for e in chosen if e not in entries)
    return entries


# -------------------------------------------------------------------------- caching


class ZooCache:
    """Builds zoo models on demand and keeps them for the rest of the run.

    Architectures go to ``meta`` when their fp32 storage is over ``memory_cap_bytes``;
    :meth:`placement` says where a model will land before building it on a device.
    """

    def __init__(self, memory_cap_bytes: int = DEFAULT_MEMORY_CAP_BYTES) -> None:
        self.memory_cap_bytes = memory_cap_bytes
        self._built: dict[tuple[str, str], BuiltModel] = {}

    def _build_raw(self, entry: ZooEntry, device: str) -> tuple[nn.Module, float]:
        start = time.perf_counter()
        with gc_paused(), torch.device(device):
            module = entry.build()
        return module, time.perf_counter() - start

    def placement(self, entry: ZooEntry, device: str) -> tuple[str, str]:
        """``(device it will live on, note)``: architectures over the cap live on ``meta``."""
        if device == "meta" or entry.family != ARCH_FAMILY:
            return device, ""
        size = self.get(entry.name, "meta").structure.storage_bytes
        if size > self.memory_cap_bytes:
            return "meta", (
                f"{size / 2**30:.1f} GiB fp32 > {self.memory_cap_bytes / 2**30:g} GiB cap: "
                f"structure on meta"
            )
        return device, ""

    def get(self, name: str, device: str) -> BuiltModel:
        """The model ``name`` for ``device`` (maybe placed on ``meta``, see :meth:`placement`)."""
        entry = get_entry(name)
        target, note = self.placement(entry, device)
        key = (name, target)
        if key in self._built:
            cached = self._built[key]
            return BuiltModel(
                cached.entry,
                cached.module,
                cached.device,
                device,
                cached.structure,
                cached.build_seconds,
                note or cached.note,
            )
        if entry.family == ARCH_FAMILY and target != "meta":
            module, seconds = self._materialize(entry, target)
        else:
            module, seconds = self._build_raw(entry, target)
        built = BuiltModel(entry, module, target, device, measure_structure(module), seconds, note)
        self._built[key] = built
        return built

    def _materialize(self, entry: ZooEntry, device: str) -> tuple[nn.Module, float]:
        """Build on meta, allocate real (uninitialized) storage, re-tie, check the structure."""
        start = time.perf_counter()
        module, _ = self._build_raw(entry, "meta")
        module.to_empty(device=device)
        tie = getattr(module, "tie_weights", None)
        if callable(tie):
            tie()
        seconds = time.perf_counter() - start
        reference = self.get(entry.name, "meta").module
        got = [name for name, _ in module.named_parameters()]
        want = [name for name, _ in reference.named_parameters()]
        if got != want:
            raise RuntimeError(
                f"materializing {entry.name!r} on {device} changed its parameters "
                f"({len(got)} vs {len(want)} on meta)"
            )
        return module, seconds
