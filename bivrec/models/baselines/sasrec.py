"""SASRec."""

from __future__ import annotations

import torch

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import CausalTransformer, SingleVectorRecommender
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


@register("sasrec")
class SASRec(SingleVectorRecommender):
    """SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018): item-ID
    embeddings plus learned position embeddings go through a stack of causal self-attention blocks;
    the output at the most recent position is the user vector, scored against the (shared) item
    embeddings. Trained with a full softmax over all items (as in RecBole) rather than the paper's
    one-negative binary cross-entropy.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "sasrec")
        super().__init__(n_items, features, cfg, dim)
        self.encoder = CausalTransformer(
            dim,
            model_option(cfg, "max_len", "sasrec"),
            model_option(cfg, "n_layers", "sasrec"),
            model_option(cfg, "n_heads", "sasrec"),
            model_option(cfg, "dropout", "sasrec"),
        )
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.item_embedding(history), history)
