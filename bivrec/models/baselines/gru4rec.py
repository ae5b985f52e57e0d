"""GRU4Rec."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import SingleVectorRecommender
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


def left_align(history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned [B, L] -> (left-aligned [B, L], lengths [B] >= 1) for packing."""
    lengths = (history > 0).sum(1)
    shift = history.shape[1] - lengths
    columns = (torch.arange(history.shape[1], device=history.device) + shift[:, None]) % history.shape[1]
    return history.gather(1, columns), lengths.clamp(min=1)


@register("gru4rec")
class GRU4Rec(SingleVectorRecommender):
    """GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR
    2016; with the improvements of Tan et al., DLRS 2016): a GRU reads the item-ID embeddings of the
    history in order and its last hidden state, through a linear layer, is the user vector. As in
    RecBole it is trained here with a full softmax over all items instead of the paper's sampled
    ranking losses, so every model in the table shares one objective.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "gru4rec")
        super().__init__(n_items, features, cfg, dim)
        self.dropout = nn.Dropout(model_option(cfg, "dropout", "gru4rec"))
        self.gru = nn.GRU(dim, dim, num_layers=model_option(cfg, "n_layers", "gru4rec"), batch_first=True)
        self.head = nn.Linear(dim, dim)
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        items, lengths = left_align(history)
        packed = pack_padded_sequence(self.dropout(self.item_embedding(items)), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last_hidden = self.gru(packed)
        return self.head(last_hidden[-1])
