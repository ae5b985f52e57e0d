"""NOVA."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import (
    ItemFeatureProjection,
    SelfAttentionBlock,
    SingleVectorRecommender,
    attention_blocked,
)
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


@register("nova")
class NOVA(SingleVectorRecommender):
    """NOVA (Liu et al., "Noninvasive Self-attention for Side Information Fusion in Sequential
    Recommendation", AAAI 2021): side information (here projected image and text features and the
    position) is fused into the queries and keys of every self-attention layer, while the values
    carry only the item-ID stream, so side information steers the attention without mixing into
    the item representation space. Fusion by sum (the paper's additive variant); causal attention
    as in SASRec; items are scored by their ID embeddings.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "nova")
        super().__init__(n_items, features, cfg, dim)
        dropout = model_option(cfg, "dropout", "nova")
        self.features = ItemFeatureProjection(features, n_items, dim, "nova")
        self.positions = nn.Embedding(model_option(cfg, "max_len", "nova"), dim)
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            SelfAttentionBlock(dim, model_option(cfg, "n_heads", "nova"), dropout) for _ in range(model_option(cfg, "n_layers", "nova"))
        )
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        side = self.positions.weight[: history.shape[1]] + sum(self.features(history))
        hidden = self.dropout(self.norm(self.item_embedding(history)))
        blocked = attention_blocked(history)
        for layer in self.layers:
            hidden = layer(hidden, [hidden + side], blocked)
        return hidden[:, -1]
