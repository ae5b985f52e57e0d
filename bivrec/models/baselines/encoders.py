"""Blocks shared by the baselines: the two training heads, causal self-attention, capsule routing and
item-feature projections. Loss and readout come from ``bivrec.models.layers`` (shared with BiVRec).

Histories are right-aligned ([B, L], most recent item in the last column, 0 = padding), so a
single-vector model's user state is the output at the last position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models.base import MODALITIES, Recommender
from bivrec.models.layers import full_softmax_loss, hard_readout



class SingleVectorRecommender(Recommender):
    """A model whose user is one vector, scored against learned item-ID embeddings."""

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict, dim: int):
        super().__init__(n_items, features, cfg)
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, d] user vector."""
        raise NotImplementedError

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        return self.encode(history)[:, None]

    def item_table(self) -> torch.Tensor:
        return self.item_embedding.weight

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = full_softmax_loss(self.encode(history), self.item_table(), target)
        return loss, {"rec": loss.item()}


class MultiInterestRecommender(Recommender):
    """A model with K interest vectors per user, trained with the ComiRec hard readout."""

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict, dim: int):
        super().__init__(n_items, features, cfg)
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)

    def item_table(self) -> torch.Tensor:
        return self.item_embedding.weight

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        table = self.item_table()
        user = hard_readout(self.user_interests(history), table[target])
        loss = full_softmax_loss(user, table, target)
        return loss, {"rec": loss.item()}


def attention_blocked(history: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] True where query i may not attend key j: the future, and padding keys.

    Every position may attend itself, so padding rows stay finite (their outputs are never read).
    """
    length = history.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
    allowed = causal & ((history > 0)[:, None, :] | torch.eye(length, dtype=torch.bool, device=history.device))
    return ~allowed[:, None]


class SelfAttentionBlock(nn.Module):
    """Multi-head causal self-attention + position-wise feed-forward, post-LayerNorm (SASRec style).

    The attention logits are the sum over ``n_streams`` inputs of that stream's scaled q·kᵀ, while
    the values always come from ``values``. One stream equal to ``values`` is standard
    self-attention (SASRec); a fused stream is NOVA; ID, position and feature streams are DIF-SR.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, n_streams: int = 1):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"model dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.queries = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_streams))
        self.keys = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_streams))
        self.values = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.attention_norm, self.output_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, values: torch.Tensor, streams: list[torch.Tensor], blocked: torch.Tensor) -> torch.Tensor:
        logits = sum(
            self._heads(query(stream)) @ self._heads(key(stream)).transpose(-1, -2)
            for query, key, stream in zip(self.queries, self.keys, streams, strict=True)
        ) / math.sqrt(self.head_dim)
        weights = self.dropout(torch.softmax(logits.masked_fill(blocked, float("-inf")), dim=-1))
        context = (weights @ self._heads(self.values(values))).transpose(1, 2).flatten(2)
        hidden = self.attention_norm(values + self.dropout(self.output(context)))
        return self.output_norm(hidden + self.dropout(self.feed_forward(hidden)))


class CausalTransformer(nn.Module):
    """Learned positions + LayerNorm + dropout + a stack of self-attention blocks; returns the last position."""

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        self.positions = nn.Embedding(max_len, dim)
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.layers = nn.ModuleList(SelfAttentionBlock(dim, n_heads, dropout) for _ in range(n_layers))

    def forward(self, item_vectors: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[B, L, d] item vectors of ``history`` [B, L] -> [B, d]."""
        hidden = self.dropout(self.norm(item_vectors + self.positions.weight[: history.shape[1]]))
        blocked = attention_blocked(history)
        for layer in self.layers:
            hidden = layer(hidden, [hidden], blocked)
        return hidden[:, -1]


def squash(capsules: torch.Tensor) -> torch.Tensor:
    """Capsule non-linearity: keeps the direction, maps the norm into [0, 1)."""
    squared_norm = capsules.pow(2).sum(-1, keepdim=True)
    return capsules * squared_norm / (1 + squared_norm) / torch.sqrt(squared_norm + 1e-9)


def dynamic_routing(predictions: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """Behaviour-to-interest routing of MIND / ComiRec-DR (as in the ComiRec code).

    ``predictions`` [B, K, L, d] are each item's vote for each interest, ``mask`` [B, L] marks real
    items, ``logits`` [B, K, L] the initial routing logits. Coupling = softmax over interests; only
    the last iteration passes gradients to the votes. Returns [B, K, d].
    """
    detached = predictions.detach()
    real = mask[:, None, :]
    for iteration in range(iterations):
        coupling = torch.softmax(logits, dim=1) * real
        last = iteration == iterations - 1
        capsules = squash((coupling[:, :, None, :] @ (predictions if last else detached)).squeeze(2))
        if not last:
            logits = logits + (detached @ capsules[..., None]).squeeze(-1)
    return capsules


class ItemFeatureProjection(nn.Module):
    """Every available modality of ``features`` projected to ``dim``; a missing modality gives zeros.

    ``make_projection(in_dim, dim)`` builds each modality's projection (a linear layer by default).

    The feature tables are non-persistent buffers: inputs moved with the model, never checkpointed.
    """

    def __init__(self, features: ItemFeatures | None, n_items: int, dim: int, model: str, make_projection=nn.Linear):
        super().__init__()
        self.modalities = [m for m in MODALITIES if features is not None and getattr(features, m) is not None]
        if not self.modalities:
            raise ValueError(f"model {model!r} uses item features, but no image or text features were given")
        self.projections = nn.ModuleDict()
        for modality in self.modalities:
            table, mask = getattr(features, modality), getattr(features, f"{modality}_mask")
            if table.shape[0] != n_items + 1 or mask is None or mask.shape != (n_items + 1,):
                raise ValueError(f"{modality} features have {table.shape[0]} rows; expected n_items + 1 = {n_items + 1}")
            self.register_buffer(f"{modality}_table", table.float(), persistent=False)
            self.register_buffer(f"{modality}_mask", mask.float()[:, None], persistent=False)
            self.projections[modality] = make_projection(table.shape[1], dim)

    def raw(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N+1, D], mask [N+1, 1]) of one modality."""
        return getattr(self, f"{modality}_table"), getattr(self, f"{modality}_mask")

    def table(self) -> torch.Tensor:
        """[N+1, d]: the sum over modalities of every item's projected features."""
        return sum(self.projections[m](self.raw(m)[0]) * self.raw(m)[1] for m in self.modalities)

    def forward(self, items: torch.Tensor) -> list[torch.Tensor]:
        """Item ids [...] -> one [..., d] tensor per modality (zeros for items without it)."""
        out = []
        for modality in self.modalities:
            table, mask = self.raw(modality)
            out.append(self.projections[modality](F.embedding(items, table)) * F.embedding(items, mask))
        return out
