"""UniSRec-style modality-only recommender."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.base import Recommender
from bivrec.models.baselines.encoders import CausalTransformer, ItemFeatureProjection
from bivrec.models.base import model_option
from bivrec.models.layers import full_softmax_loss, init_weights


class WhiteningExperts(nn.Module):
    """UniSRec's MoE adaptor: experts ``(x - b_e) W_e`` (parametric whitening) mixed by a softmax gate."""

    def __init__(self, in_dim: int, dim: int, n_experts: int, dropout: float):
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(n_experts, in_dim))
        self.experts = nn.Parameter(torch.empty(n_experts, in_dim, dim))
        nn.init.normal_(self.experts, std=0.02)
        self.gate = nn.Linear(in_dim, n_experts)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, in_dim] -> [N, dim]."""
        # (x - b_e) W_e = x W_e - b_e W_e: never materialises an [N, experts, in_dim] tensor
        projected = torch.einsum("ni,eid->ned", self.dropout(features), self.experts)
        whitened = projected - torch.einsum("ei,eid->ed", self.centres, self.experts)
        return (torch.softmax(self.gate(features), dim=1)[..., None] * whitened).sum(1)


@register("unisrec")
class UniSRec(Recommender):
    """Modality-only transferable baseline in the style of UniSRec (Hou et al., "Towards Universal
    Sequence Representation Learning for Recommender Systems", KDD 2022) and MoRec (Yuan et al.,
    "Where to Go Next for Recommender Systems? ID- vs. Modality-based Recommender Models Revisited",
    SIGIR 2023): there are no item-ID embeddings; every item is its frozen image/text features passed
    through a mixture-of-experts adaptor of parametric-whitening experts (one adaptor per modality,
    summed), a causal Transformer encodes the sequence, and items are scored by the cosine between
    the user vector and the adapted item features, with a temperature in training. Because nothing
    depends on item IDs the model applies to an unseen catalogue. UniSRec's sequence-item and
    sequence-sequence contrastive pre-training is not used (trained from scratch on the dataset).
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        super().__init__(n_items, features, cfg)
        dim, dropout = model_option(cfg, "dim", "unisrec"), model_option(cfg, "dropout", "unisrec")
        n_experts = model_option(cfg, "n_experts", "unisrec")
        self.temperature = float(model_option(cfg, "temperature", "unisrec"))
        self.features = ItemFeatureProjection(
            features, n_items, dim, "unisrec", lambda in_dim, out_dim: WhiteningExperts(in_dim, out_dim, n_experts, dropout)
        )
        self.encoder = CausalTransformer(
            dim, model_option(cfg, "max_len", "unisrec"), model_option(cfg, "n_layers", "unisrec"), model_option(cfg, "n_heads", "unisrec"), dropout
        )
        self.apply(init_weights)

    def _user(self, history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(F.embedding(history, table), history), dim=-1)

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        table = self.features.table()  # adapted once per step, shared by the inputs and the scoring
        loss = full_softmax_loss(self._user(history, table) / self.temperature, F.normalize(table, dim=-1), target)
        return loss, {"rec": loss.item()}

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        return self._user(history, self.features.table())[:, None]

    def item_table(self) -> torch.Tensor:
        return F.normalize(self.features.table(), dim=-1)
