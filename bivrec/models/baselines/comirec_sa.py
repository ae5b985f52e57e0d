"""ComiRec-SA."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import MultiInterestRecommender
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights, masked_softmax


@register("comirec_sa")
class ComiRecSA(MultiInterestRecommender):
    """ComiRec-SA (Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020):
    the multi-interest extractor is multi-head self-attentive pooling: a two-layer tanh network over
    the position-aware item embeddings gives K attention distributions over the history, and each
    interest is the attention-weighted sum of the item embeddings. Training uses the hard readout
    and full ranking merges the interests' top-N lists.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "comirec_sa")
        super().__init__(n_items, features, cfg, dim)
        self.positions = nn.Embedding(model_option(cfg, "max_len", "comirec_sa"), dim)
        hidden = model_option(cfg, "attention_hidden", "comirec_sa")
        self.attention = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.Tanh(), nn.Linear(hidden, model_option(cfg, "n_interests", "comirec_sa"), bias=False)
        )
        self.apply(init_weights)

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        items = self.item_embedding(history)
        logits = self.attention(items + self.positions.weight[: history.shape[1]]).transpose(1, 2)  # [B, K, L]
        weights = masked_softmax(logits, (history > 0)[:, None, :], dim=2)
        return weights @ items
