"""FDSA."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import CausalTransformer, ItemFeatureProjection, SingleVectorRecommender
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


@register("fdsa")
class FDSA(SingleVectorRecommender):
    """FDSA (Zhang et al., "Feature-level Deeper Self-Attention Network for Sequential
    Recommendation", IJCAI 2019): two causal self-attention streams, one over item-ID embeddings and
    one over item features, whose last outputs are concatenated and mapped to the user vector. The
    feature stream first pools each item's feature fields (here its projected image and text
    features) with vanilla attention. Items are scored by their ID embeddings.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "fdsa")
        super().__init__(n_items, features, cfg, dim)
        stack = [model_option(cfg, key, "fdsa") for key in ("max_len", "n_layers", "n_heads", "dropout")]
        self.features = ItemFeatureProjection(features, n_items, dim, "fdsa")
        self.field_attention = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
        self.item_stream = CausalTransformer(dim, *stack)
        self.feature_stream = CausalTransformer(dim, *stack)
        self.head = nn.Linear(2 * dim, dim)
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        fields = torch.stack(self.features(history), dim=2)  # [B, L, M, d]
        weights = torch.softmax(self.field_attention(fields), dim=2)
        item_features = (weights * fields).sum(2)
        return self.head(
            torch.cat([self.item_stream(self.item_embedding(history), history), self.feature_stream(item_features, history)], 1)
        )
