"""Most-popular baseline: the floor of every comparison table."""

from __future__ import annotations

import torch

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.base import Recommender


@register("popularity")
class Popularity(Recommender):
    """Recommends every user the items with the most training interactions (ties: smaller item id).

    Not trained: call ``fit_counts(data.item_counts)`` once after construction. The counts live in a
    buffer so they are saved and restored with the model's ``state_dict``.
    """

    trainable = False

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        super().__init__(n_items, features, cfg)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit_counts(self, counts: torch.Tensor) -> None:
        """Set the per-item interaction counts [n_items + 1] of the training users (row 0 ignored)."""
        if counts.shape != self.counts.shape:
            raise ValueError(f"item counts have shape {list(counts.shape)}, expected [{self.n_items + 1}]")
        self.counts.copy_(counts.to(self.counts))
        self.counts[0] = 0

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        return torch.ones(history.shape[0], 1, 1, device=self.counts.device)

    def item_table(self) -> torch.Tensor:
        return self.counts[:, None]
