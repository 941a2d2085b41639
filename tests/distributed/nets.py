"""Small models for the distributed tests, and how each scenario wraps them.

A :class:`Net` is an embedding, ``n_blocks`` residual blocks (``LayerNorm``, ``Linear`` and a
buffer each) and a head; ``tied=True`` ties the head to the embedding, ``frozen=True``
freezes the embedding and the first block. Every rank builds the same weights (same seed).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SCENARIOS", "Block", "Net", "build", "wrap"]

VOCAB = 16
WIDTH = 8

# scenario -> (how it is wrapped, Net keyword arguments)
SCENARIOS: dict[str, tuple[str, dict[str, bool]]] = {
    "ddp": ("ddp", {}),
    "fsdp-reshard": ("fsdp-reshard", {}),
    "fsdp-keep": ("fsdp-keep", {}),
    "fsdp-frozen": ("fsdp-reshard", {"frozen": True}),
    "fsdp-tied": ("fsdp-keep", {"tied": True}),
}


class Block(nn.Module):
    """``x + fc(norm(x)) * scale``, with ``scale`` a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.register_buffer("scale", torch.full((WIDTH,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x)) * self.scale


class Net(nn.Module):
    """Embedding, blocks, head; optionally tied and partly frozen."""

    def __init__(self, n_blocks: int = 3, tied: bool = False, frozen: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(n_blocks))
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        if frozen:
            self.embed.requires_grad_(False)
            self.blocks[0].requires_grad_(False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def build(scenario: str, device: torch.device, seed: int = 0) -> Net:
    """The scenario's model, the same weights on every rank."""
    _, kwargs = SCENARIOS[scenario]
    torch.manual_seed(seed)
    return Net(**kwargs).to(device)


def wrap(scenario: str, model: Net, mesh: object, device: torch.device) -> nn.Module:
    """DDP, or ``fully_shard`` on every block and then on the root."""
    how, _ = SCENARIOS[scenario]
    if how == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    reshard = how == "fsdp-reshard"
    for block in model.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    return model
