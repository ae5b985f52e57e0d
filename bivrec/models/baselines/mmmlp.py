"""MMMLP."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import ItemFeatureProjection, SingleVectorRecommender
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


def mlp(width: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width), nn.Dropout(dropout))


class MixerBlock(nn.Module):
    """MLP-Mixer block over a [B, L, d] sequence: an MLP across positions, then one across channels."""

    def __init__(self, length: int, dim: int, dropout: float):
        super().__init__()
        self.sequence_norm, self.channel_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.sequence_mlp, self.channel_mlp = mlp(length, 4 * length, dropout), mlp(dim, 4 * dim, dropout)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``real`` [B, L, 1] keeps padding positions at zero so they never feed the mixing."""
        x = x + self.sequence_mlp(self.sequence_norm(x).transpose(1, 2)).transpose(1, 2) * real
        return x + self.channel_mlp(self.channel_norm(x)) * real


@register("mmmlp")
class MMMLP(SingleVectorRecommender):
    """MMMLP (Liang et al., "MMMLP: Multi-modal Multilayer Perceptron for Sequential
    Recommendations", WWW 2023): an all-MLP model. Each modality's sequence (item IDs and here the
    projected image and text features) passes through its own Multi-Feature Mixer layers (MLP-Mixer
    blocks that mix across positions and across channels); a Fusion Mixer concatenates the
    modalities' channels, maps them to ``dim`` and mixes once more; the output at the most recent
    position is the user vector, scored against the item-ID embeddings.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "mmmlp")
        super().__init__(n_items, features, cfg, dim)
        length, dropout = model_option(cfg, "max_len", "mmmlp"), model_option(cfg, "dropout", "mmmlp")
        n_layers = model_option(cfg, "n_layers", "mmmlp")
        self.features = ItemFeatureProjection(features, n_items, dim, "mmmlp")
        n_streams = 1 + len(self.features.modalities)
        self.streams = nn.ModuleList(
            nn.ModuleList(MixerBlock(length, dim, dropout) for _ in range(n_layers)) for _ in range(n_streams)
        )
        self.fuse = nn.Linear(n_streams * dim, dim)
        self.fusion_mixer = MixerBlock(length, dim, dropout)
        self.output_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.apply(init_weights)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        real = (history > 0).unsqueeze(-1).float()
        inputs = [self.item_embedding(history)] + self.features(history)
        mixed = []
        for blocks, x in zip(self.streams, inputs, strict=True):
            x = self.dropout(x)
            for block in blocks:
                x = block(x, real)
            mixed.append(x)
        fused = self.fusion_mixer(self.fuse(torch.cat(mixed, dim=-1)) * real, real)
        return self.output_norm(fused[:, -1])
