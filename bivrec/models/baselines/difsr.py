"""DIF-SR."""

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


@register("difsr")
class DIFSR(SingleVectorRecommender):
    """DIF-SR (Xie et al., "Decoupled Side Information Fusion for Sequential Recommendation", SIGIR
    2022): side information is moved from the input to the attention layer; each source (item ID,
    position, and here each projected feature modality) has its own query/key projections, the
    per-source attention logits are summed (the paper's additive fusion) and the values are the
    item-ID stream only. The paper's auxiliary attribute-prediction loss targets categorical
    attributes and has no counterpart for continuous image/text features, so it is not used.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "difsr")
        super().__init__(n_items, features, cfg, dim)
        dropout = model_option(cfg, "dropout", "difsr")
        self.features = ItemFeatureProjection(features, n_items, dim, "difsr")
        self.positions = nn.Embedding(model_option(cfg, "max_len", "difsr"), dim)
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)
        n_streams = 2 + len(self.features.modalities)  # item ID, position, one per modality
        self.layers = nn.ModuleList(
            SelfAttentionBlock(dim, model_option(cfg, "n_heads", "difsr"), dropout, n_streams)
            for _ in range(model_option(cfg, "n_layers", "difsr"))
        )
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        positions = self.positions.weight[: history.shape[1]].expand(history.shape[0], -1, -1)
        side_streams = [positions] + self.features(history)  # fixed inputs of every layer
        hidden = self.dropout(self.norm(self.item_embedding(history)))
        blocked = attention_blocked(history)
        for layer in self.layers:
            hidden = layer(hidden, [hidden] + side_streams, blocked)
        return hidden[:, -1]
