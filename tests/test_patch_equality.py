"""Equality under the patch.

1. The whole conformance suite (tests/test_conformance.py) runs again here with the patch
   on: pyparams' functions under the patch, against torch's own methods run (created and
   stepped) with the patch off.
2. The patched methods themselves against torch's, for every model and argument.
3. The consumers: functional_call, optimizers, clip_grad_norm_, zero_grad, requires_grad_,
   state_dict/load_state_dict, parametrizations, lazy modules, compiled modules and
   transformers models give the same tensors and names, and train bit-identically.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator

import pytest
import torch
from test_conformance import *  # noqa: F403 - every conformance test, collected again here
from test_conformance import MODELS
from torch import nn
from torch.nn.utils import parametrize

import common_utils
import pyparams
from common_utils import PREFIXES, assert_same_items, devices

# ------------------------------------------------- 1. the conformance suite, patched


@contextlib.contextmanager
def _patch_off() -> Iterator[None]:
    pyparams.unpatch()
    try:
        yield
    finally:
        pyparams.patch()


def _stepped_unpatched(iterator: Iterator[object]) -> Iterator[object]:
    """torch's generator, each step run with the patch off (so all of it is torch's code)."""
    while True:
        with _patch_off():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def _unpatched_reference(make: Callable[..., object]) -> Callable[..., object]:
    def reference(module: nn.Module, **kwargs: object) -> object:
        with _patch_off():
            result = make(module, **kwargs)
        return result if isinstance(result, list) else _stepped_unpatched(iter(result))

    return reference


@pytest.fixture(autouse=True)
def _patch_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test in this file runs patched; the conformance reference stays torch's."""
    for name, make in list(common_utils.TORCH.items()):
        monkeypatch.setitem(common_utils.TORCH, name, _unpatched_reference(make))
    with pyparams.patched():
        yield
    assert not pyparams.is_patched()


def test_the_reference_runs_unpatched_and_the_rest_patched() -> None:
    seen = []
    module = nn.Linear(2, 2)
    assert pyparams.is_patched()
    reference = common_utils.TORCH["parameters"](module)
    for _ in reference:
        seen.append(pyparams.is_patched())
    assert seen == [True, True]  # back on between steps
    probe = _unpatched_reference(lambda m: iter([pyparams.is_patched()]))
    assert list(probe(module)) == [False]


# -------------------------------------------- 2. the patched methods against torch's

_METHOD_CALLS: list[tuple[str, dict[str, object]]] = [
    *(("parameters", {"recurse": r}) for r in (True, False)),
    *(("buffers", {"recurse": r}) for r in (True, False)),
    *(
        (name, {"prefix": p, "recurse": r, "remove_duplicate": d})
        for name in ("named_parameters", "named_buffers")
        for p, r, d in itertools.product(PREFIXES, (True, False), (True, False))
    ),
    *(("modules", {"remove_duplicate": d}) for d in (True, False)),
    *(
        ("named_modules", {"prefix": p, "remove_duplicate": d})
        for p, d in itertools.product(PREFIXES, (True, False))
    ),
    ("named_modules", {"memo": "fresh set", "prefix": "m"}),
    ("named_parameters", {"prefix": "positional"}),
]


def _call(module: nn.Module, name: str, kwargs: dict[str, object]) -> list[object]:
    kwargs = {k: (set() if v == "fresh set" else v) for k, v in kwargs.items()}
    if kwargs.get("prefix") == "positional":
        return list(getattr(module, name)("p", True, False))
    return list(getattr(module, name)(**kwargs))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("model", list(MODELS))
def test_patched_methods_equal_torchs(model: str, device: str) -> None:
    module = MODELS[model](device)
    for name, kwargs in _METHOD_CALLS:
        with _patch_off():
            expected = _call(module, name, kwargs)
        actual = _call(module, name, kwargs)
        assert_same_items(actual, expected, f"{model}: patched {name}({kwargs})")


# --------------------------------------------------------------------- 3. consumers


def _run_both(scenario: Callable[[], object]) -> tuple[object, object]:
    """``scenario()`` with the patch off, then on; models are built inside, seeded."""
    with _patch_off():
        torch.manual_seed(0)
        expected = scenario()
    torch.manual_seed(0)
    actual = scenario()
    return actual, expected


def _assert_same(actual: object, expected: object, path: str = "result") -> None:
    """Equal structure; tensors bit-identical (same dtype, shape, values, requires_grad)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        assert actual.requires_grad == expected.requires_grad, path
        assert torch.equal(actual.detach(), expected.detach()), path
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys differ"
        for key in expected:
            _assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


class _Net(nn.Module):
    """Linear layers, a norm with buffers, a tied weight and a frozen part."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 6))
        self.norm = nn.BatchNorm1d(6)
        self.frozen = nn.Linear(6, 6).requires_grad_(False)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).mean(1)
        return self.head(self.frozen(self.norm(self.body(h))))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return torch.randint(0, 10, (8, 5), generator=generator), torch.randint(
        0, 10, (8,), generator=generator
    )


def _names(module: nn.Module, tensors: list[torch.Tensor]) -> list[str]:
    name_of = {id(p): n for n, p in nn.Module.named_parameters(module, remove_duplicate=False)}
    return [name_of[id(t)] for t in tensors]


def _train(
    build: Callable[[], nn.Module],
    optimizer: Callable[..., torch.optim.Optimizer],
    steps: int = 3,
    compile: bool = False,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]] = _batch,
) -> dict[str, object]:
    model = build()
    run = torch.compile(model, backend="aot_eager") if compile else model
    opt = optimizer(model.parameters())
    losses, norms = [], []
    for step in range(steps):
        inputs, target = batch(step)
        loss = nn.functional.cross_entropy(run(inputs), target)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5))
        opt.step()
        model.zero_grad()
        losses.append(loss.detach())
    groups = [_names(model, g["params"]) for g in opt.param_groups]
    return {
        "losses": losses,
        "norms": norms,
        "param_groups": groups,
        "state_dict": model.state_dict(),
        "optimizer_state": opt.state_dict()["state"],
        "grads": [p.grad for p in model.parameters()],
    }


_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "Adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "AdamW-foreach": lambda p: torch.optim.AdamW(p, lr=0.01, foreach=True),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
}


@pytest.mark.parametrize("optimizer", list(_OPTIMIZERS))
def test_training_is_bit_identical(optimizer: str) -> None:
    actual, expected = _run_both(lambda: _train(_Net, _OPTIMIZERS[optimizer]))
    _assert_same(actual, expected)


def test_functional_call_and_named_parameter_dicts() -> None:
    def scenario() -> object:
        model = _Net().eval()
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        replaced = {name: torch.ones_like(p) for name, p in params.items()}
        inputs, _ = _batch(0)
        return {
            "names": list(params),
            "buffers": list(buffers),
            "same": torch.func.functional_call(model, {**params, **buffers}, (inputs,)),
            "replaced": torch.func.functional_call(model, replaced, (inputs,), tie_weights=True),
        }

    _assert_same(*_run_both(scenario))


def test_zero_grad_requires_grad_and_freezing() -> None:
    def scenario() -> object:
        model = _Net()
        model(_batch(0)[0]).sum().backward()
        model.body.zero_grad(set_to_none=False)
        after_zero = [p.grad for p in model.parameters()]
        model.body.requires_grad_(False)
        model.norm.requires_grad_(True)
        flags = [(n, p.requires_grad) for n, p in model.named_parameters()]
        model.zero_grad()
        return {
            "after_zero": after_zero,
            "flags": flags,
            "grads": [p.grad for p in model.parameters()],
        }

    _assert_same(*_run_both(scenario))


def test_state_dict_and_load_state_dict() -> None:
    def scenario() -> object:
        model = _Net()
        state = model.state_dict()
        other = _Net()
        result = other.load_state_dict(state)
        state["extra"] = torch.zeros(1)
        del state["norm.running_mean"]
        loose = other.load_state_dict(state, strict=False)
        return {
            "state": model.state_dict(keep_vars=True),
            "loaded": other.state_dict(),
            "result": (result.missing_keys, result.unexpected_keys),
            "loose": (loose.missing_keys, loose.unexpected_keys),
            "same_storage": [
                model.state_dict()[k].data_ptr() == v.data_ptr()
                for k, v in model.state_dict(keep_vars=True).items()
            ],
        }

    _assert_same(*_run_both(scenario))


class _Symmetric(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.triu() + weight.triu(1).transpose(-1, -2)


def _parametrized() -> nn.Module:
    model = _Net()
    parametrize.register_parametrization(model.body[0], "weight", _Symmetric())
    nn.utils.parametrizations.weight_norm(model.body[3])
    return model


def test_parametrizations_train_bit_identically() -> None:
    actual, expected = _run_both(lambda: _train(_parametrized, _OPTIMIZERS["AdamW"]))
    _assert_same(actual, expected)
    assert any("parametrizations.weight.original" in n for n in actual["param_groups"][0])


class _LazyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Sequential(nn.LazyLinear(7), nn.LazyBatchNorm1d(), nn.LazyLinear(10))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(tokens).mean(1))


def test_lazy_modules_materialize_and_train_bit_identically() -> None:
    def build() -> nn.Module:
        model = _LazyNet()
        model(_batch(99)[0])  # materialize before the optimizer sees the parameters
        return model

    actual, expected = _run_both(lambda: _train(build, _OPTIMIZERS["Adam"]))
    _assert_same(actual, expected)


def test_compiled_module_trains_bit_identically() -> None:
    torch._dynamo.reset()
    actual, expected = _run_both(lambda: _train(_Net, _OPTIMIZERS["AdamW"], steps=2, compile=True))
    _assert_same(actual, expected)


# ------------------------------------------------------------------------ transformers


def _tiny_gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


def test_transformers_model_helpers_and_training() -> None:
    def scenario() -> object:
        model = _tiny_gpt2()
        model.tie_weights()
        embeddings = model.get_input_embeddings()
        facts = {
            "num_parameters": model.num_parameters(),
            "num_trainable": model.num_parameters(only_trainable=True),
            "num_no_embeddings": model.num_parameters(exclude_embeddings=True),
            "tied": model.lm_head.weight is embeddings.weight,
            "embeddings_is_wte": embeddings is model.transformer.wte,
            "names": [n for n, _ in model.named_parameters()],
        }
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = []
        for step in range(3):
            ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(step))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            model.zero_grad()
            losses.append(loss.detach())
        return {**facts, "losses": losses, "state": model.state_dict()}

    actual, expected = _run_both(scenario)
    _assert_same(actual, expected)
    assert actual["tied"] and actual["embeddings_is_wte"]
