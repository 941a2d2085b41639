"""``pyparams claims``: each verdict follows from evidence measured on a real model."""

from __future__ import annotations

import sys

import pytest
import torch

from common_utils import cpu_and_cuda, needs_transformers
from pyparams.bench.claims import CLAIMS, Verdict, format_verdicts, run_claims
from pyparams.bench.zoo import ZooCache

MODEL = "gpt2"  # 124M parameters: large enough that a copy is unmistakable in RSS
CHAINS = (3, 50, 1500)


@pytest.fixture(scope="module", params=cpu_and_cuda())
def verdicts(request: pytest.FixtureRequest) -> tuple[str, list[Verdict]]:
    pytest.importorskip("transformers")  # the claims run on GPT-2
    device = request.param
    if device == "cuda" and not torch.cuda.is_available():  # also skipped by the marker
        pytest.skip("CUDA is not available")
    return device, run_claims(
        model=MODEL, devices=[device], huge_model="mixtral-8x7b", chain_depths=CHAINS
    )


@pytest.fixture(scope="module")
def n_tensors() -> int:
    """How many parameter tensors the model has, counted by torch on a separate build."""
    pytest.importorskip("transformers")
    return len(list(ZooCache().get(MODEL, "meta").module.parameters()))


def checked(
    verdicts: tuple[str, list[Verdict]], number: int, expected: str
) -> tuple[Verdict, dict]:
    """Claim ``number`` after asserting its verdict, and its evidence on the device."""
    device, found = verdicts
    claim = found[number - 1]
    assert (claim.number, claim.verdict) == (number, expected), claim.reason
    return claim, claim.data[device]


def test_four_claims_in_order(verdicts: tuple[str, list[Verdict]]) -> None:
    _, found = verdicts
    assert [v.number for v in found] == [1, 2, 3, 4]
    assert [v.claim for v in found] == list(CLAIMS)
    text = format_verdicts(found)
    for v in found:
        assert f"Claim {v.number}:" in text and f"Verdict: {v.verdict}" in text
        assert v.evidence and all(line in text for line in v.evidence)


def test_claim1_frozen_parameters_are_yielded(
    verdicts: tuple[str, list[Verdict]], n_tensors: int
) -> None:
    _, data = checked(verdicts, 1, "FALSE")
    assert data["frozen_set"] == n_tensors // 2
    assert data["yielded"] == n_tensors
    assert data["yielded_frozen"] == n_tensors // 2
    assert data["pyparams_trainable"] == n_tensors - n_tensors // 2


def test_claim2_the_list_copies_nothing(
    verdicts: tuple[str, list[Verdict]], n_tensors: int
) -> None:
    claim, data = checked(verdicts, 2, "FALSE")
    assert data["items"] == data["same_objects"] == n_tensors
    assert data["duplicated_bytes"] == 0
    assert data["list_bytes"] == sys.getsizeof([None] * n_tensors)
    storage = data["storage_bytes"]
    if verdicts[0] == "cpu":
        # the control: a real copy shows up in RSS, the list does not
        assert data["rss_delta_copy"] > storage // 2
        assert data["rss_delta_list"] < storage // 100
    else:
        assert data["cuda_delta_list"] == 0
        assert data["cuda_delta_copy"] >= storage
    huge = claim.data["huge_storage_bytes"]
    assert claim.data["huge_list_bytes"] < huge / 1e6


def test_claim3_the_generator_is_not_lighter_than_the_list(
    verdicts: tuple[str, list[Verdict]], n_tensors: int
) -> None:
    """torch's generator keeps a set of every module and parameter seen, so it costs about
    what the list costs: the claim is FALSE, and pyparams' walk is lighter than both."""
    _, data = checked(verdicts, 3, "FALSE")
    assert data["list_peak"] >= sys.getsizeof([None] * n_tensors)
    assert data["generator_peak"] >= sys.getsizeof(set(range(n_tensors)))  # torch's memo
    assert 0 < data["pyparams_peak"] < data["generator_peak"]


def test_claim4_recursion_into_nested_modules(
    verdicts: tuple[str, list[Verdict]], n_tensors: int
) -> None:
    claim, data = checked(verdicts, 4, "TRUE")
    assert data["recursive"] == n_tensors
    assert data["shallow"] < n_tensors
    assert claim.data["chain_3"] == {"torch": 3, "pyparams": 3}
    assert claim.data["chain_50"] == {"torch": 50, "pyparams": 50}
    assert claim.data["chain_1500"] == {"torch": "RecursionError", "pyparams": 1500}


def test_claims_refuse_meta() -> None:
    with pytest.raises(ValueError, match="meta"):
        run_claims(model="gpt2-tiny", devices=["meta"], huge_model=None, chain_depths=())


@needs_transformers
def test_claims_leave_requires_grad_as_found() -> None:
    """Claim 1 freezes half the model to test it; the flags found are restored, frozen
    ones included, on the very model the claims ran on."""
    cache = ZooCache()
    model = cache.get("gpt2-tiny", "cpu").module
    params = list(model.parameters())
    for p in params[1::3]:
        p.requires_grad_(False)
    found = [p.requires_grad for p in params]
    verdicts = run_claims(
        model="gpt2-tiny", devices=["cpu"], huge_model=None, chain_depths=(2,), cache=cache
    )
    assert verdicts[0].verdict == "FALSE"
    assert [p.requires_grad for p in params] == found
    assert torch.is_grad_enabled()
