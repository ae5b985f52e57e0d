"""Cold start: how each run does on rarely seen target items and on users with short histories."""

from __future__ import annotations

from pathlib import Path

from bivrec.atomic import write_json
from bivrec.data.dataset import EvalSplit
from bivrec.evaluate import evaluate
from bivrec.runs import load_trained


def cold_item_split(split: EvalSplit, item_counts, max_interactions: int) -> EvalSplit:
    """Keep only targets with at most ``max_interactions`` training interactions, and users left with one."""
    cold = item_counts <= max_interactions
    cold[0] = False
    targets = split.targets * cold[split.targets]
    kept = EvalSplit(split.users, split.history, targets)
    return kept.subset(targets.ne(0).any(1))


def short_history_split(split: EvalSplit, max_length: int) -> EvalSplit:
    return split.subset(split.history.ne(0).sum(1) <= max_length)


def _metrics(model, split: EvalSplit, eval_cfg: dict) -> dict[str, float]:
    return evaluate(model, split, eval_cfg["topk"], eval_cfg.get("user_batch_size", 1024)).metrics


def cold_start(params: dict, models_root: Path, data_dir: Path, features_dir: Path, out: Path) -> dict:
    cfg, eval_cfg = params["experiments"]["cold_start"], params["eval"]
    results: dict = {"settings": cfg, "runs": {}}
    for run in params["runs"]:
        model, data, _ = load_trained(models_root / run, data_dir, features_dir)
        groups = {
            "all": data.test,
            "cold_items": cold_item_split(data.test, data.item_counts, cfg["max_item_interactions"]),
            "short_history": short_history_split(data.test, cfg["max_history_length"]),
        }
        results["runs"][run] = {
            name: {"users": len(split), **(_metrics(model, split, eval_cfg) if len(split) else {})}
            for name, split in groups.items()
        }
    write_json(out, results)
    return results
