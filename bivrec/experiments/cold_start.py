"""Cold start: how each run does on rarely seen target items and on users with short histories.

Groups of test users, each evaluated with full ranking unless said otherwise:

- ``all``: every test user;
- ``cold_items``: users with a target seen at most ``max_item_interactions`` times in training, scored
  on those targets only, ranked among all items;
- ``cold_among_cold``: the same targets ranked among the cold items only, the item cold-start protocol
  (new items compete with new items, so the metric shows whether a model orders them by relevance
  rather than how far its popularity prior buries them);
- ``short_history``: users with at most ``max_history_length`` history items.

A run trained with several seeds (``train.replicates``) reports each group's mean over its seeds.
"""

from __future__ import annotations

from pathlib import Path

from bivrec.atomic import write_json
from bivrec.data.dataset import EvalSplit
from bivrec.evaluate import eval_options, evaluate
from bivrec.runs import load_trained, mean_metrics


def cold_item_split(split: EvalSplit, item_counts, max_interactions: int) -> EvalSplit:
    """Keep only targets with at most ``max_interactions`` training interactions, and users left with one."""
    cold = cold_items(item_counts, max_interactions)
    targets = split.targets * cold[split.targets]
    kept = EvalSplit(split.users, split.history, targets)
    return kept.subset(targets.ne(0).any(1))


def short_history_split(split: EvalSplit, max_length: int) -> EvalSplit:
    return split.subset(split.history.ne(0).sum(1) <= max_length)


def cold_items(item_counts, max_interactions: int):
    """Bool mask [N+1] of the real items with at most ``max_interactions`` training interactions."""
    cold = item_counts <= max_interactions
    cold[0] = False
    return cold


def _metrics(models, split: EvalSplit, eval_cfg: dict, candidates=None) -> dict[str, float]:
    """Metrics of ``split`` averaged over the models (one per training seed)."""
    per_seed = [evaluate(m, split, candidates=candidates, **eval_options(eval_cfg)).metrics for m in models]
    return mean_metrics(per_seed)[0]


def cold_start(params: dict, models_root: Path, data_dir: Path, features_dir: Path, out: Path) -> dict:
    cfg, eval_cfg = params["experiments"]["cold_start"], params["eval"]
    results: dict = {"settings": cfg, "runs": {}}
    for run in params["runs"]:
        models, data, _ = load_trained(models_root / run, data_dir, features_dir)
        cold = cold_items(data.item_counts, cfg["max_item_interactions"])
        cold_split = cold_item_split(data.test, data.item_counts, cfg["max_item_interactions"])
        groups = {  # name: (split, candidates)
            "all": (data.test, None),
            "cold_items": (cold_split, None),
            "cold_among_cold": (cold_split, cold),
            "short_history": (short_history_split(data.test, cfg["max_history_length"]), None),
        }
        results["runs"][run] = {
            name: {
                "users": len(split),
                **({} if candidates is None else {"candidates": int(candidates.sum())}),
                **(_metrics(models, split, eval_cfg, candidates) if len(split) else {}),
            }
            for name, (split, candidates) in groups.items()
        }
    write_json(out, results)
    return results
