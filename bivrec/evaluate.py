"""Full-ranking evaluation over all items (ComiRec protocol) and paired significance tests.

Every user of a split is scored against the whole catalogue with inner products
``user_interests(history) @ item_table().T``. A multi-interest model follows ComiRec: each interest
retrieves its own top-N, the candidates are merged by score, de-duplicated and cut to N. That list
is exactly the top-N of the per-item maximum over interests (an item in the merged top-N is
necessarily in the top-N of the interest that scores it highest), so the evaluator ranks by that
maximum, which needs no candidate bookkeeping. Padding item 0 is never recommended. A model may
rank by another score (``Recommender.ranking_scores``; BiVRec's fused readout mixes its two views'
probabilities). ``candidates`` restricts the ranking to a set of items (the item cold-start protocol
ranks new items among new items).

Ranking is deterministic: score descending, ties broken by the smaller item id. Items are scored in
chunks (``eval.item_chunk_size``) with a running top-N, so a catalogue of any size evaluates in bounded
memory; the chunk size never changes the ranking.

Metrics, per user, with ``T`` the set of distinct target items and ``hits`` the ranked top-N
positions (1-based ``r``) holding a target:

- ``recall@N`` = |hits| / |T|
- ``ndcg@N`` (ComiRec): DCG / IDCG over |hits| positions, 0 without a hit, where
  DCG = sum over hits of 1 / log2(r + 1)
- ``ndcg_std@N`` (standard): DCG / IDCG over min(|T|, N) positions
- ``hitrate@N`` = 1 if |hits| > 0 else 0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from bivrec.data.dataset import EvalSplit
from bivrec.models.base import Recommender

METRIC_NAMES = ("recall", "ndcg", "ndcg_std", "hitrate")


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "recall@20", "ndcg@20", "ndcg_std@20", "hitrate@20", ... (means over users)
    per_user: dict[str, np.ndarray]  # same keys, one value per user of the split, plus "users"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def eval_options(eval_cfg: dict) -> dict:
    """``evaluate``'s keyword arguments from the params.yaml ``eval`` section."""
    return {
        "topk": eval_cfg["topk"],
        "user_batch_size": eval_cfg.get("user_batch_size", 1024),
        "item_chunk_size": eval_cfg.get("item_chunk_size"),
    }


def evaluate(
    model: Recommender,
    split: EvalSplit,
    topk=(20, 50),
    user_batch_size: int = 1024,
    candidates: torch.Tensor | None = None,
    item_chunk_size: int | None = None,
) -> EvalResult:
    """Rank all items (or only the ``candidates``, a bool mask [N+1]) for every user of ``split`` and
    compute the metrics at each N in ``topk``.

    Items are scored ``item_chunk_size`` at a time (None = all at once) and a running top-N is kept,
    so memory is bounded by user_batch_size x item_chunk_size scores; the ranking does not depend on
    the chunk size.
    """
    topk = sorted({int(n) for n in topk})
    if not topk or topk[0] < 1:
        raise ValueError(f"topk must be positive integers, got {topk}")
    if len(split) and bool((split.targets > 0).sum(1).min() == 0):
        raise ValueError("evaluation split has users without targets")
    device = model_device(model)
    excluded = None
    if candidates is not None:
        if candidates.dtype != torch.bool or candidates.dim() != 1:
            raise ValueError(f"candidates must be a 1-d bool mask over items, got {candidates.dtype} {tuple(candidates.shape)}")
        if candidates.shape[0] != model.n_items + 1:
            raise ValueError(f"candidates mask has {candidates.shape[0]} entries; expected n_items + 1 = {model.n_items + 1}")
        targets = split.targets[split.targets > 0]
        if not bool(candidates.to(targets.device)[targets].all()):
            raise ValueError("evaluation split has targets outside the candidates")
        excluded = ~candidates.to(device)
    chunk = model.n_items if item_chunk_size is None else min(int(item_chunk_size), model.n_items)
    was_training = model.training
    model.eval()
    per_user_parts: dict[str, list[torch.Tensor]] = {f"{m}@{n}": [] for m in METRIC_NAMES for n in topk}
    try:
        with torch.no_grad():
            item_table = model.item_table().float()
            # score buffers reused by every batch and chunk: fresh large allocations cost more than the matmuls
            rows = min(user_batch_size, len(split))
            buffers = [torch.empty(rows * max(chunk, 1), device=device) for _ in range(2)]
            for start in range(0, len(split), user_batch_size):
                history = split.history[start : start + user_batch_size].to(device)
                targets = split.targets[start : start + user_batch_size].to(device)
                best = RunningTop(max(topk), model.n_items)
                for first_item, scores in model.ranking_scores(history, item_table, item_chunk_size, buffers):
                    if excluded is not None:
                        scores.masked_fill_(excluded[first_item : first_item + scores.shape[1]], float("-inf"))
                    best.add(first_item, scores)
                for name, values in ranking_metrics(best.ranked(), targets, topk).items():
                    per_user_parts[name].append(values.cpu())
    finally:
        model.train(was_training)
    per_user = {
        name: (torch.cat(parts) if parts else torch.zeros(0)).double().numpy()
        for name, parts in per_user_parts.items()
    }
    metrics = {name: float(values.mean()) if values.size else float("nan") for name, values in per_user.items()}
    per_user["users"] = split.users.cpu().numpy()
    return EvalResult(metrics, per_user)


def top_columns(scores: torch.Tensor, n: int) -> torch.Tensor:
    """[B, M] scores -> [B, min(n, M)] column indices of the best scores, ties broken by the smaller
    column, in ascending column order.

    ``torch.topk`` is exact about the values but arbitrary about which of several tied columns it
    returns, so rows whose n-th and (n+1)-th best values tie get their boundary columns re-chosen by
    position.
    """
    width = scores.shape[1]
    if n >= width:
        return torch.arange(width, device=scores.device).expand(scores.shape[0], width)
    values, columns = torch.topk(scores, n + 1, dim=1)  # one extra value shows a tie at the boundary
    columns = columns[:, :n]
    rows = (values[:, n - 1] == values[:, n]).nonzero().squeeze(1)
    if rows.numel():
        tied_scores = scores[rows]
        threshold = values[rows, n - 1 : n]
        above = tied_scores > threshold
        still_needed = n - above.sum(1, keepdim=True)
        at_threshold = tied_scores == threshold
        chosen = above | (at_threshold & (at_threshold.cumsum(1) <= still_needed))
        columns[rows] = chosen.nonzero()[:, 1].view(-1, n)
    return columns.sort(dim=1).values


class RunningTop:
    """The best ``n`` items of a user batch over score chunks that arrive in item order.

    Kept in ascending item order, so the kept items followed by a new chunk's items are in item order
    too and ``top_columns``' tie-break by column is the tie-break by item id: the result equals the
    top-n of the whole score matrix.
    """

    def __init__(self, n: int, n_items: int):
        self.n = min(n, n_items)  # never more than the real items
        self.items: torch.Tensor | None = None  # [B, <= n] ascending ids
        self.scores: torch.Tensor | None = None

    def add(self, first_item: int, scores: torch.Tensor) -> None:
        """``scores`` [B, C] of items first_item .. first_item + C - 1 (all above the items seen so far)."""
        ids = torch.arange(first_item, first_item + scores.shape[1], device=scores.device).expand_as(scores)
        if self.items is not None:
            scores, ids = torch.cat([self.scores, scores], 1), torch.cat([self.items, ids], 1)
        keep = top_columns(scores, self.n)
        self.scores, self.items = scores.gather(1, keep), ids.gather(1, keep)

    def ranked(self) -> torch.Tensor:
        """[B, n] item ids, score descending, ties broken by the smaller id."""
        order = self.scores.sort(dim=1, descending=True, stable=True).indices
        return self.items.gather(1, order)


def top_items(scores: torch.Tensor, n: int) -> torch.Tensor:
    """[B, N+1] scores (column 0 = padding, never recommended) -> [B, n] item ids, score descending,
    ties broken by the smaller id."""
    best = RunningTop(n, scores.shape[1] - 1)
    best.add(1, scores[:, 1:])
    return best.ranked()


def ranking_metrics(ranked: torch.Tensor, targets: torch.Tensor, topk) -> dict[str, torch.Tensor]:
    """Per-user metrics from ranked item ids [B, n] and 0-padded targets [B, T] (duplicates count once)."""
    hits = (ranked[:, :, None] == targets[:, None, :]).any(2).double()  # ranked ids are distinct and never 0
    sorted_targets = targets.sort(dim=1).values
    previous = torch.nn.functional.pad(sorted_targets[:, :-1], (1, 0))
    n_targets = ((sorted_targets > 0) & (sorted_targets != previous)).sum(1).double()
    discounts = 1.0 / torch.log2(torch.arange(2, hits.shape[1] + 2, device=ranked.device, dtype=torch.float64))
    ideal_cumulative = torch.cat([discounts.new_zeros(1), discounts.cumsum(0)])  # IDCG over 0..n positions
    out = {}
    for n in topk:
        n_hits = hits[:, :n].sum(1)
        dcg = (hits[:, :n] * discounts[:n]).sum(1)
        idcg_hits = ideal_cumulative[n_hits.long()]
        idcg_std = ideal_cumulative[torch.clamp(n_targets, max=min(n, hits.shape[1])).long()]
        out[f"recall@{n}"] = n_hits / n_targets
        out[f"ndcg@{n}"] = torch.where(n_hits > 0, dcg / idcg_hits.clamp(min=1e-12), torch.zeros_like(dcg))
        out[f"ndcg_std@{n}"] = dcg / idcg_std
        out[f"hitrate@{n}"] = (n_hits > 0).double()
    return out


def paired_significance(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired per-user values ``a`` and ``b``.

    Identical inputs (all differences zero) give p = 1.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_significance needs two 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if not np.any(a != b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
