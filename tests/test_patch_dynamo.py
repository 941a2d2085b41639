"""torch.compile under the patch: inside a dynamo trace the replacements behave as torch's
own methods (same graphs, same graph breaks, same outputs), and the pyparams functions
compile with fullgraph=True to torch's result."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

import pyparams


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Sequential(nn.Linear(4, 2), nn.Tanh())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.lin(x)))


class _NextParameter(_Base):
    def forward(self, x):
        p = next(self.parameters())
        return self.body(x.to(p.dtype)) * p.mean()


class _NamedParameters(_Base):
    def forward(self, x):
        total = sum(p.sum() for name, p in self.named_parameters() if "weight" in name)
        return self.body(x) + total


class _Modules(_Base):
    def forward(self, x):
        count = sum(1 for m in self.modules() if isinstance(m, nn.Linear))
        return self.body(x) * count


class _NamedModulesAndBuffers(_Base):
    def forward(self, x):
        names = [name for name, _ in self.named_modules(prefix="root")]
        buffers = [b for b in self.buffers() if b.is_floating_point()]
        return self.body(x) * len(names) + sum(b.sum() for b in buffers)


class _ParametersOfAChild(_Base):
    def forward(self, x):
        weights = [p for _, p in self.head.named_parameters(prefix="head", recurse=True)]
        return self.body(x) + weights[0].sum() + len(list(self.head.children()))


class _GraphBreakInside(_Base):
    """A graph break of its own (print), then parameters: counts must match too."""

    def forward(self, x):
        y = self.body(x)
        print("", end="")
        return y * next(self.parameters()).sum()


MODELS: dict[str, Callable[[], nn.Module]] = {
    cls.__name__.lstrip("_"): cls
    for cls in (
        _NextParameter,
        _NamedParameters,
        _Modules,
        _NamedModulesAndBuffers,
        _ParametersOfAChild,
        _GraphBreakInside,
    )
}


def _explain(model: nn.Module, x: torch.Tensor) -> tuple[int, int, list[str], list[int]]:
    dynamo.reset()
    explained = dynamo.explain(model)(x)
    ops = [len(list(graph.graph.nodes)) for graph in explained.graphs]
    return (
        explained.graph_count,
        explained.graph_break_count,
        [str(reason.reason) for reason in explained.break_reasons],
        ops,
    )


def _compiled_output(model: nn.Module, x: torch.Tensor, backend: str) -> torch.Tensor:
    dynamo.reset()
    return torch.compile(model, backend=backend)(x)


@pytest.mark.parametrize("name", list(MODELS))
def test_same_graphs_and_graph_breaks_patched_and_unpatched(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(3, 4)
    expected = _explain(model, x)
    with pyparams.patched():
        actual = _explain(model, x)
    assert actual == expected


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("name", list(MODELS))
def test_same_outputs_and_gradients_patched_and_unpatched(name: str, backend: str) -> None:
    x = torch.randn(3, 4)
    results = []
    for patch in (False, True):
        torch.manual_seed(0)
        model = MODELS[name]()
        with pyparams.patched() if patch else _nothing():
            out = _compiled_output(model, x, backend)
            out.sum().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    (expected, expected_grads), (actual, actual_grads) = results
    assert torch.equal(actual, expected)
    assert all(torch.equal(a, e) for a, e in zip(actual_grads, expected_grads, strict=True))


def test_fullgraph_compiles_with_the_patch() -> None:
    torch.manual_seed(0)
    model = _NamedModulesAndBuffers().eval()
    x = torch.randn(3, 4)
    expected = model(x)
    with pyparams.patched():
        dynamo.reset()
        actual = torch.compile(model, backend="eager", fullgraph=True)(x)
    assert torch.equal(actual, expected)


def test_export_gives_the_same_signature_and_graph() -> None:
    x = torch.randn(3, 4)

    def export() -> tuple[list[tuple[str, str | None]], str]:
        torch.manual_seed(0)
        program = torch.export.export(_NamedParameters().eval(), (x,), strict=True)
        specs = [(spec.kind.name, spec.target) for spec in program.graph_signature.input_specs]
        return specs, str(program.graph)

    expected = export()
    with pyparams.patched():
        assert export() == expected


# ------------------------------------------------------- the pyparams functions compiled

_FUNCTION_CALLS: dict[str, Callable[[nn.Module], list]] = {
    "parameters": lambda m: list(pyparams.parameters(m)),
    "trainable_parameters": lambda m: list(pyparams.trainable_parameters(m)),
    "named_parameters": lambda m: list(pyparams.named_parameters(m, prefix="m")),
    "named_trainable_parameters": lambda m: list(pyparams.named_trainable_parameters(m)),
    "parameter_list": lambda m: pyparams.parameter_list(m),
    "buffers": lambda m: list(pyparams.buffers(m)),
    "named_buffers": lambda m: list(pyparams.named_buffers(m)),
    "modules": lambda m: list(pyparams.modules(m)),
    "named_modules": lambda m: list(pyparams.named_modules(m)),
}
_TORCH_CALLS: dict[str, Callable[[nn.Module], list]] = {
    "parameters": lambda m: list(m.parameters()),
    "trainable_parameters": lambda m: [p for p in m.parameters() if p.requires_grad],
    "named_parameters": lambda m: list(m.named_parameters(prefix="m")),
    "named_trainable_parameters": lambda m: [
        (n, p) for n, p in m.named_parameters() if p.requires_grad
    ],
    "parameter_list": lambda m: list(m.parameters()),
    "buffers": lambda m: list(m.buffers()),
    "named_buffers": lambda m: list(m.named_buffers()),
    "modules": lambda m: list(m.modules()),
    "named_modules": lambda m: list(m.named_modules()),
}


def _reduce(items: list) -> torch.Tensor:
    """A tensor that depends on every item, its order and (for pairs) its name."""
    total = torch.zeros(())
    for index, item in enumerate(items):
        name, value = item if isinstance(item, tuple) else ("", item)
        weight = (index + 1) * (len(name) + 1)
        if isinstance(value, torch.Tensor):
            total = total + value.float().sum() * weight
        else:
            total = total + weight
    return total


@pytest.mark.parametrize("patch", [False, True], ids=["unpatched", "patched"])
@pytest.mark.parametrize("function", list(_FUNCTION_CALLS))
def test_pyparams_functions_compile_fullgraph_to_torchs_result(function: str, patch: bool) -> None:
    torch.manual_seed(0)
    model = _Base()
    model.lin.bias.requires_grad_(False)

    def run(m: nn.Module) -> torch.Tensor:
        return _reduce(_FUNCTION_CALLS[function](m))

    expected = _reduce(_TORCH_CALLS[function](model))
    with pyparams.patched() if patch else _nothing():
        dynamo.reset()
        actual = torch.compile(run, backend="eager", fullgraph=True)(model)
    assert torch.equal(actual, expected)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _grow(model: nn.Module) -> None:
    """Changes what every walk yields: a new parameter, buffer and submodule."""
    model.extra_weight = nn.Parameter(torch.full((4,), 0.5))
    model.register_buffer("extra_buffer", torch.full((4,), 2.0))
    model.extra_linear = nn.Linear(4, 4)


@pytest.mark.parametrize("name", list(MODELS))
def test_guards_see_a_changed_tree_patched_as_unpatched(name: str) -> None:
    """Dynamo guards on what the walk read: after the tree changes, the compiled module
    must recompile (or fall back) and agree with eager, patched as unpatched."""
    x = torch.randn(3, 4)
    for patch in (False, True):
        torch.manual_seed(0)
        model = MODELS[name]().eval()
        with pyparams.patched() if patch else _nothing():
            dynamo.reset()
            compiled = torch.compile(model, backend="eager")
            assert torch.equal(compiled(x), model(x))
            _grow(model)
            assert torch.equal(compiled(x), model(x)), f"patched={patch}"
