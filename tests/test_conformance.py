"""Differential conformance: every pyparams function equals torch's base-class algorithm.

The reference is always torch itself (``m.named_parameters(...)`` and friends, see
``common_utils.TORCH``), compared with ``is``, order and names.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import pyparams
from common_utils import (
    FUNCTIONS,
    PREFIXES,
    argument_combinations,
    assert_conforms,
    assert_same_items,
    devices,
    drive,
    every_call,
    reference,
    run_pyparams,
    seeded_tree,
    torch_iterator,
)

# The calls that read requires_grad.
TRAINABLE_CALLS = [(f, kw) for f, kw in every_call() if "trainable" in f or f == "parameter_list"]


# ----------------------------------------------------------------------------- models


def _linear_stack(device: str) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4, device=device), nn.ReLU(), nn.Linear(4, 2, device=device))


def _batchnorm_net(device: str) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, device=device), nn.BatchNorm2d(2, device=device))
    net[0].bias.requires_grad_(False)
    return net


def _transformer_layer(device: str) -> nn.Module:
    return nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, device=device)


def _own_entries_after_children(device: str) -> nn.Module:
    """Parameters registered after the children still come first (pre-order)."""
    root = nn.Module()
    root.child = nn.Linear(2, 2, device=device)
    root.child.inner = nn.Linear(2, 1, device=device)
    root.register_parameter("late", nn.Parameter(torch.zeros(1, device=device)))
    root.register_buffer("late_buffer", torch.zeros(1, device=device))
    root.child.register_parameter("late", nn.Parameter(torch.zeros(1, device=device)))
    root.second = nn.Linear(1, 1, device=device)
    return root


def _none_entries(device: str) -> nn.Module:
    root = nn.Sequential(nn.Linear(2, 2, device=device), nn.Linear(2, 2, bias=False, device=device))
    root.register_parameter("nothing", None)
    root.register_buffer("no_buffer", None)
    root._modules["missing"] = None
    root.add_module("after", nn.Linear(1, 1, device=device))
    root[0]._modules["gone"] = None
    root[0].register_parameter("empty", None)
    return root


def _tied_parameters(device: str) -> nn.Module:
    root = nn.Module()
    root.embed = nn.Embedding(5, 4, device=device)
    root.body = nn.Linear(4, 4, device=device)
    root.head = nn.Linear(4, 5, bias=False, device=device)
    root.head.weight = root.embed.weight
    root.body.register_parameter("again", root.body.bias)  # tied within one module
    root.register_buffer("shared", torch.zeros(2, device=device))
    root.body.register_buffer("shared_too", root.shared)
    return root


def _shared_submodules(device: str) -> nn.Module:
    shared = nn.Linear(2, 2, device=device)
    deeper = nn.Sequential(shared, nn.Linear(2, 2, device=device))
    root = nn.Module()
    root.a = shared
    root.b = deeper
    root.c = nn.ModuleList([deeper, shared, deeper])
    root.d = shared
    return root


def _raw_entries(device: str) -> nn.Module:
    root = nn.Module()
    root._parameters["raw"] = nn.Parameter(torch.zeros(1, device=device))
    root._buffers["raw_buffer"] = torch.zeros(1, device=device)
    child = nn.Linear(1, 1, device=device)
    root._modules["raw_child"] = child
    child._parameters["extra"] = nn.Parameter(torch.zeros(2, device=device), requires_grad=False)
    root._modules["raw_again"] = child
    return root


def _containers(device: str) -> nn.Module:
    p = nn.Parameter(torch.zeros(2, device=device))
    frozen = nn.Parameter(torch.zeros(2, device=device), requires_grad=False)
    return nn.Sequential(
        nn.ModuleList(
            [nn.Linear(2, 2, device=device), nn.ModuleList([nn.Linear(2, 1, device=device)])]
        ),
        nn.ModuleDict({"x": nn.Linear(1, 1, device=device), "y": nn.Sequential(nn.Tanh())}),
        nn.ParameterList([p, frozen, nn.Parameter(torch.zeros(1, device=device)), p]),
        nn.ParameterDict({"q": p, "r": nn.Parameter(torch.ones(1, device=device)), "s": frozen}),
        nn.ParameterList(),
        nn.ParameterDict(),
    )


def _ordered_dict_members(device: str) -> nn.Module:
    """``_parameters`` / ``_modules`` replaced by OrderedDicts (not exact dicts)."""
    root = nn.Linear(2, 2, device=device)
    root._parameters = OrderedDict(root._parameters)
    root._parameters.move_to_end("weight")
    root._modules = OrderedDict(a=nn.Linear(1, 1, device=device), b=None)
    root._buffers = OrderedDict(x=torch.zeros(1, device=device), y=None)
    return root


MODELS: dict[str, Callable[[str], nn.Module]] = {
    "linear_stack": _linear_stack,
    "batchnorm": _batchnorm_net,
    "transformer_layer": _transformer_layer,
    "own_entries_after_children": _own_entries_after_children,
    "none_entries": _none_entries,
    "tied_parameters": _tied_parameters,
    "shared_submodules": _shared_submodules,
    "raw_entries": _raw_entries,
    "containers": _containers,
    "ordered_dict_members": _ordered_dict_members,
    "random_tree_0": lambda device: seeded_tree(0, device),
    "random_tree_1": lambda device: seeded_tree(1, device, max_depth=4),
    "random_tree_2": lambda device: seeded_tree(2, device, max_fanout=4),
}


# ------------------------------------------------------------------------ conformance


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("model", list(MODELS))
def test_every_function_and_argument_matches_torch(model: str, device: str) -> None:
    assert_conforms(MODELS[model](device), context=f"{model} on {device}")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_argument_combinations_are_complete(function: str) -> None:
    """The grid covers every keyword of the signature (a new argument would be untested)."""
    signature = inspect.signature(getattr(pyparams, function))
    covered = set().union(*argument_combinations(function))
    assert covered == set(signature.parameters) - {"module"}


def test_pre_order_puts_own_entries_before_children() -> None:
    root = _own_entries_after_children("cpu")
    names = [n for n, _ in pyparams.named_parameters(root)]
    assert names.index("late") < names.index("child.weight")
    assert names.index("child.late") < names.index("child.inner.weight")
    assert_conforms(root)


def test_none_entries_are_skipped() -> None:
    root = _none_entries("cpu")
    assert all(v is not None for v in pyparams.parameters(root, remove_duplicate=False))
    assert all(m is not None for m in pyparams.modules(root, remove_duplicate=False))
    assert all(b is not None for b in pyparams.buffers(root, remove_duplicate=False))
    assert_conforms(root)


@pytest.mark.parametrize(
    ("build", "shared_kinds"),
    [
        (_tied_parameters, ("parameters", "buffers")),
        (_shared_submodules, ("parameters", "modules")),
    ],
    ids=["tied", "shared"],
)
def test_sharing_once_with_remove_duplicate_and_like_torch_without(build, shared_kinds) -> None:
    root = build("cpu")
    for function in ("parameters", "buffers", "modules"):
        deduplicated = run_pyparams(function, root)
        everything = run_pyparams(function, root, remove_duplicate=False)
        assert len({id(x) for x in deduplicated}) == len(deduplicated)
        if function in shared_kinds:
            assert len(everything) > len(deduplicated), function  # the model does share
    assert_conforms(root)


def test_raw_member_entries_without_register() -> None:
    root = _raw_entries("cpu")
    assert root._parameters["raw"] in pyparams.parameter_list(root)
    assert_conforms(root)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_positional_arguments_mean_the_same(function: str) -> None:
    root = _tied_parameters("cpu")
    signature = inspect.signature(getattr(pyparams, function)).parameters
    keyword_only = {k for k, p in signature.items() if p.kind == p.KEYWORD_ONLY}
    for kwargs in argument_combinations(function):
        positional = [v for k, v in kwargs.items() if k not in keyword_only]
        keywords = {k: v for k, v in kwargs.items() if k in keyword_only}
        expected = run_pyparams(function, root, **kwargs)
        result = getattr(pyparams, function)(root, *positional, **keywords)
        assert_same_items(list(result), expected, f"{function}(*{positional}, **{keywords})")


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f != "parameter_list"])
def test_results_are_lazy_iterators(function: str) -> None:
    root = _batchnorm_net("cpu")
    iterator = getattr(pyparams, function)(root)
    assert iter(iterator) is iterator
    first = next(iterator)
    assert_same_items([first], reference(function, root)[:1], function)


def test_names_are_plain_str_and_items_are_tuples() -> None:
    root = _shared_submodules("cpu")
    for function in [f for f in FUNCTIONS if f.startswith("named_")]:
        for item in getattr(pyparams, function)(root, prefix="p"):
            assert type(item) is tuple and len(item) == 2 and type(item[0]) is str


def test_parameter_list_is_a_new_list_each_call() -> None:
    root = _linear_stack("cpu")
    first, second = pyparams.parameter_list(root), pyparams.parameter_list(root)
    assert first is not second
    first.clear()
    assert_same_items(pyparams.parameter_list(root), reference("parameter_list", root))


# --------------------------------------------------------------------- parametrizations


class _Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class _Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(-1, -2)


def test_register_parametrization() -> None:
    root = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    parametrize.register_parametrization(root[0], "weight", _Symmetric())
    parametrize.register_parametrization(root[0], "weight", _Double())
    parametrize.register_parametrization(root[1], "bias", _Double(), unsafe=True)
    root[1].parametrizations.bias.original.requires_grad_(False)
    assert "parametrizations.weight.original" in [n for n, _ in pyparams.named_parameters(root[0])]
    assert_conforms(root)


def test_orthogonal_and_weight_norm_parametrizations() -> None:
    from torch.nn.utils import parametrizations

    root = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2), nn.Conv1d(2, 2, 1))
    parametrizations.orthogonal(root[0])
    parametrizations.weight_norm(root[1])
    parametrizations.spectral_norm(root[2])  # has buffers (u, v)
    assert_conforms(root)


def test_legacy_weight_norm_hook() -> None:
    root = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(root[0])
    assert_conforms(root)


def test_parametrization_with_tied_original() -> None:
    root = nn.Module()
    root.a = nn.Linear(3, 3)
    root.b = nn.Linear(3, 3)
    root.b.weight = root.a.weight
    parametrize.register_parametrization(root.a, "weight", _Double())
    assert_conforms(root)


# ------------------------------------------------------------------------------ lazy


def test_lazy_modules_before_and_after_materialization() -> None:
    root = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyLinear(2), nn.LazyBatchNorm1d())
    params = pyparams.parameter_list(root)
    assert any(isinstance(p, nn.parameter.UninitializedParameter) for p in params)
    root[2]._parameters["weight"] = nn.parameter.UninitializedParameter(requires_grad=False)
    assert_conforms(root, context="before materialization")
    root(torch.zeros(2, 5))
    params = pyparams.parameter_list(root)
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in params)
    assert_conforms(root, context="after materialization")


def test_uninitialized_parameter_and_buffer_entries() -> None:
    root = nn.Module()
    root.register_parameter("u", nn.parameter.UninitializedParameter())
    root.register_parameter("frozen", nn.parameter.UninitializedParameter(requires_grad=False))
    root.register_buffer("ub", nn.parameter.UninitializedBuffer())
    root.child = nn.LazyConv2d(2, 3)
    assert_conforms(root)


# -------------------------------------------------------------- compile / distributed


def test_torch_compile_wrapper() -> None:
    inner = _tied_parameters("cpu")
    compiled = torch.compile(inner)
    assert type(compiled) is not type(inner)  # an OptimizedModule around it
    assert_conforms(compiled, context="OptimizedModule")
    outer = nn.Sequential(compiled, torch.compile(nn.Linear(5, 1)))
    assert_conforms(outer, context="compiled children")


def test_ddp_wrapper(gloo_group: None) -> None:
    from torch.nn.parallel import DistributedDataParallel

    inner = _batchnorm_net("cpu")
    inner.add_module("tail", nn.Linear(2, 2))
    ddp = DistributedDataParallel(inner)
    assert_conforms(ddp, context="DDP")


def test_fsdp2_fully_shard(gloo_group: None) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (1,))
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    model[1].bias.requires_grad_(False)
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert all(isinstance(p, DTensor) for p in pyparams.parameters(model))
    assert_conforms(model, context="FSDP2")


def test_dtensor_parameters(gloo_group: None) -> None:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = DeviceMesh("cpu", [0])
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].weight = nn.Parameter(distribute_tensor(model[0].weight.detach(), mesh, [Shard(0)]))
    model[0].bias = nn.Parameter(
        distribute_tensor(model[0].bias.detach(), mesh, [Replicate()]), requires_grad=False
    )
    model[1].register_buffer("db", distribute_tensor(torch.zeros(2), mesh, [Replicate()]))
    model[1].weight = model[0].weight
    assert_conforms(model, context="DTensor")


# ---------------------------------------------------------------------------- TorchScript


class _TiedScriptable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.norm = nn.BatchNorm1d(3)
        self.register_buffer("scale", torch.ones(3))
        self.inner = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        self.inner[0].bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.norm(self.b(self.a(x)))) * self.scale


def _script_variants(tmp_path) -> dict[str, nn.Module]:
    scripted = torch.jit.script(_TiedScriptable())
    traced = torch.jit.trace(_TiedScriptable().eval(), torch.zeros(2, 3))
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    return {"script": scripted, "trace": traced, "load": loaded}


@pytest.mark.parametrize("variant", ["script", "trace", "load"])
def test_torchscript_modules(variant: str, tmp_path) -> None:
    sm = _script_variants(tmp_path)[variant]
    assert isinstance(sm, torch.jit.ScriptModule)
    # The very objects the script module's own methods hand out ...
    assert_same_items(run_pyparams("parameters", sm), list(sm.parameters()), "parameters()")
    assert_same_items(run_pyparams("named_parameters", sm), list(sm.named_parameters()), "named")
    assert_same_items(run_pyparams("buffers", sm), list(sm.buffers()), "buffers()")
    assert_same_items(run_pyparams("named_buffers", sm), list(sm.named_buffers()), "named_buffers")
    assert_same_items(run_pyparams("named_modules", sm), list(sm.named_modules()), "named_modules")
    # ... and the base-class algorithm for every function and argument.
    assert_conforms(sm, context=variant)


def test_torchscript_tied_weights_are_yielded_once(tmp_path) -> None:
    for variant, sm in _script_variants(tmp_path).items():
        params = run_pyparams("parameters", sm)
        assert len({id(p) for p in params}) == len(params), variant
        everything = run_pyparams("parameters", sm, remove_duplicate=False)
        assert len(everything) > len(params), variant


def test_torchscript_nested_in_plain_modules(tmp_path) -> None:
    variants = _script_variants(tmp_path)
    outer = nn.Module()
    outer.head = nn.Linear(3, 3)
    outer.scripted = variants["script"]
    outer.body = nn.Sequential(variants["trace"], nn.ReLU(), variants["load"])
    outer.again = variants["load"]  # a shared script module
    outer.register_parameter("own", nn.Parameter(torch.zeros(1)))
    assert_conforms(outer, context="script modules inside a plain module")


def test_torchscript_outputs_are_the_objects_script_modules_hold(tmp_path) -> None:
    sm = _script_variants(tmp_path)["load"]
    for (name, p), q in zip(pyparams.named_parameters(sm), pyparams.parameters(sm), strict=True):
        assert p is q
        owner = sm
        *path, attribute = name.split(".")
        for step in path:
            owner = getattr(owner, step)
        assert getattr(owner, attribute) is p


# ---------------------------------------------------------------------- lazy requires_grad


def _toggle_script(params: list[nn.Parameter]) -> dict[int, Callable[[], None]]:
    """After the first item: freeze the last parameter, unfreeze the second to last."""

    def act() -> None:
        params[-1].requires_grad_(False)
        params[-2].requires_grad_(True)

    return {0: act}


@pytest.mark.parametrize("function", ["trainable_parameters", "named_trainable_parameters"])
@pytest.mark.parametrize("remove_duplicate", [True, False])
def test_trainable_reads_requires_grad_lazily(function: str, remove_duplicate: bool) -> None:
    def build() -> tuple[nn.Module, list[nn.Parameter]]:
        root = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
        root[2].weight.requires_grad_(False)  # second to last: frozen now, unfrozen mid-walk
        return root, list(root.parameters())

    root, params = build()
    named = function.startswith("named_")
    torch_generator = torch_iterator(function, root, remove_duplicate=remove_duplicate)
    expected, expected_error, _ = drive(torch_generator, _toggle_script(params))
    expected_positions = [
        next(i for i, p in enumerate(params) if p is (x[1] if named else x)) for x in expected
    ]

    root, params = build()
    actual, error, _ = drive(
        getattr(pyparams, function)(root, remove_duplicate=remove_duplicate), _toggle_script(params)
    )
    assert expected_error is error is None

    # Two models built alike: compare positions in each model's own parameter list.
    def positions(items: list, model_params: list[nn.Parameter]) -> list[int]:
        objects = [x[1] if named else x for x in items]
        return [next(i for i, p in enumerate(model_params) if p is o) for o in objects]

    assert positions(actual, params) == expected_positions
    if named:
        assert [n for n, _ in actual] == [n for n, _ in expected]
    assert len(params) - 2 in positions(actual, params)  # unfrozen mid-walk: seen
    assert len(params) - 1 not in positions(actual, params)  # frozen mid-walk: skipped


def test_trainable_sees_a_parameter_frozen_before_it_is_reached() -> None:
    root = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    it = pyparams.trainable_parameters(root)
    assert next(it) is root[0].weight
    root[1].requires_grad_(False)
    assert list(it) == [root[0].bias] and list(it) == []


class _RequiresGradProperty(nn.Parameter):
    """A Parameter subclass that decides ``requires_grad`` in Python."""

    @property
    def requires_grad(self) -> bool:  # type: ignore[override]
        return False


class _RequiresGradAnswered(nn.Parameter):
    """A Parameter subclass that answers every attribute read itself."""

    def __getattribute__(self, name: str):
        return False if name == "requires_grad" else super().__getattribute__(name)


def test_trainable_agrees_with_torch_for_parameter_subclasses() -> None:
    root = nn.Linear(2, 2)
    root.weight = _RequiresGradProperty(torch.zeros(2, 2))
    root.bias = _RequiresGradAnswered(torch.zeros(2))
    root.register_parameter("u", nn.parameter.UninitializedParameter(requires_grad=False))
    assert [name for name, p in root.named_parameters() if p.requires_grad] == []
    assert_conforms(root, TRAINABLE_CALLS)


# ----------------------------------------------------------------------- odd member keys


def test_non_str_member_key_raises_like_torch() -> None:
    """torch builds every name (even for parameters()): an int key is a TypeError."""
    for function in (
        "parameters",
        "named_parameters",
        "trainable_parameters",
        "parameter_list",
        "buffers",
        "named_buffers",
        "modules",
        "named_modules",
    ):
        root = nn.Linear(1, 1)
        root._parameters[1] = nn.Parameter(torch.zeros(1))
        root._buffers[2] = torch.zeros(1)
        root._modules[3] = nn.Linear(1, 1)
        with pytest.raises(TypeError) as expected:
            reference(function, root)
        with pytest.raises(TypeError, match="int") as actual:
            run_pyparams(function, root)
        assert expected.type is actual.type


def _memo_tree() -> nn.Module:
    shared = nn.Linear(2, 2)
    root = nn.Sequential(shared, nn.Sequential(shared, nn.ReLU()), nn.Linear(2, 1))
    root[1].add_module("again", root[1])  # a cycle: only a memo (or remove_duplicate) ends it
    return root


@pytest.mark.parametrize("remove_duplicate", [True, False])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_named_modules_with_a_memo_fills_it_as_torch_does(prefix: str, remove_duplicate) -> None:
    """A memo is torch's recursion state: the same pairs, and the same modules added to it."""
    root = _memo_tree()
    for seen in (lambda: set(), lambda: {root[1]}, lambda: {root}):
        expected_memo, actual_memo = seen(), seen()
        if not remove_duplicate and not expected_memo:
            continue  # torch recurses through the cycle until RecursionError
        kwargs = {"prefix": prefix, "remove_duplicate": remove_duplicate}
        expected = list(root.named_modules(expected_memo, **kwargs))
        actual = run_pyparams("named_modules", root, memo=actual_memo, **kwargs)
        assert_same_items(actual, expected, f"memo {sorted(map(id, expected_memo))}")
        assert actual_memo == expected_memo
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module, got NoneType"):
        pyparams.named_modules(None, memo=set())


# ------------------------------------------------------------------------- transformers


def _transformers_models() -> dict[str, Callable[[], nn.Module]]:
    transformers = pytest.importorskip("transformers")

    def gpt2() -> nn.Module:
        config = transformers.GPT2Config(
            n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64
        )
        return transformers.GPT2LMHeadModel(config)

    def llama() -> nn.Module:
        config = transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            tie_word_embeddings=True,
        )
        return transformers.LlamaForCausalLM(config)

    def t5() -> nn.Module:
        config = transformers.T5Config(
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            vocab_size=128,
        )
        return transformers.T5ForConditionalGeneration(config)

    def bert() -> nn.Module:
        config = transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=128,
            max_position_embeddings=64,
        )
        return transformers.BertForMaskedLM(config)

    return {"gpt2": gpt2, "llama": llama, "t5": t5, "bert": bert}


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "t5", "bert"])
def test_transformers_architectures_on_meta(architecture: str) -> None:
    build = _transformers_models()[architecture]
    with torch.device("meta"):
        model = build()
    assert next(pyparams.parameters(model)).device.type == "meta"
    assert_conforms(model, context=architecture)
    # Frozen embeddings (a common fine-tuning setup) change the trainable view.
    model.get_input_embeddings().requires_grad_(False)
    assert_conforms(model, TRAINABLE_CALLS, context=f"{architecture} with frozen embeddings")
