"""The interface every model shares, so one training loop and one evaluator serve them all."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models.layers import buffer_view, item_chunks, max_interest_scores


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
    whose ranking is not an inner product (BiVRec's fused readout) overrides ``ranking_scores``.
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

    def ranking_scores(
        self, history: torch.Tensor, item_table: torch.Tensor, chunk_size: int | None = None, buffers: list | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Ranking scores of the real items, ``chunk_size`` items at a time (None = all at once): yields
        ``(start, scores [B, stop - start])`` for items start..stop-1 (``item_table`` = ``self.item_table()``).

        ``buffers``: optional flat buffers of at least B * chunk_size values that the yielded scores may
        live in, reused by the next chunk (the evaluator consumes each chunk before asking for the next).
        """
        interests = self.user_interests(history).float()
        out, work = buffers if buffers is not None else (None, None)
        for start, stop in item_chunks(self.n_items, chunk_size):
            rows, cols = interests.shape[0], stop - start
            yield start, max_interest_scores(interests, item_table[start:stop], buffer_view(out, rows, cols), buffer_view(work, rows, cols))

    def item_scores(self, history: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """[B, N+1] ranking scores of every item in one matrix, padding column at -inf."""
        scores = torch.full((history.shape[0], self.n_items + 1), float("-inf"), device=history.device)
        for start, chunk in self.ranking_scores(history, item_table):
            scores[:, start : start + chunk.shape[1]] = chunk
        return scores
