"""The interface every model shares, so one training loop and one evaluator serve them all."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models.layers import max_interest_scores


#: the item modalities a model can read from ``ItemFeatures``
MODALITIES = ("image", "text")


def model_option(cfg: dict, key: str, model: str):
    """``cfg[key]`` with an error naming the params.yaml key when it is missing."""
    if key not in cfg:
        raise KeyError(f"{model} model config lacks {key!r} (set it under model: or model.{model}: in params.yaml)")
    return cfg[key]


class Recommender(nn.Module):
    """Base class (RecBole-style) for BiVRec and every baseline.

    Subclasses take ``(n_items, features, cfg)`` where ``cfg`` is the merged model config (the
    shared ``model`` keys plus the model's own section) and implement:

    - ``loss(history, target) -> (total, parts)``: ``history`` [B, L] right-aligned item ids with 0
      as padding, ``target`` [B] next item; ``parts`` maps loss-term names to floats for logging.
    - ``user_interests(history) -> [B, K, d]``: K = 1 for single-vector models.
    - ``item_table() -> [n_items + 1, d]``: row 0 is padding and is never recommended.

    Scores are inner products ``user_interests @ item_table().T``; a multi-interest user's score
    for an item is its best interest's score (ComiRec retrieval, see ``bivrec.evaluate``). A model
    whose ranking is not an inner product (BiVRec's fused readout) overrides ``item_scores``.
    """

    #: models without trainable parameters (popularity) skip the optimisation loop
    trainable: bool = True

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        super().__init__()
        self.n_items = n_items
        self.cfg = cfg

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        raise NotImplementedError

    def item_scores(
        self, history: torch.Tensor, item_table: torch.Tensor, out: torch.Tensor | None = None, work: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, N+1] ranking scores of every item (``item_table`` = ``self.item_table()``), padding at -inf.

        ``out`` and ``work`` are optional [B, N+1] buffers the evaluator reuses across batches.
        """
        return max_interest_scores(self.user_interests(history).float(), item_table, out, work)
