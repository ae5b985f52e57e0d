"""Cross-dataset transfer (``experiments.transfer``): a run trained on a source dataset, scored on the
test users of a target dataset whose item catalogue is different.

- ``zero_shot``: the source run's multimodal view as it is (``views: mm``, items are their features, so
  the new catalogue needs no training); left out for a run without a multimodal view;
- ``fine_tuned``: the run's model on the target, started from the source weights (all but the item ID
  embeddings, which belong to the source's items) and trained for the budget ``experiments.transfer.train``;
- ``scratch``: the same model and budget from a random initialisation.

Fine-tuning and training from scratch go through ``runs.train_run`` (early stopping on the target's
validation users); each model is scored once on the target's test users.
"""

from __future__ import annotations

import copy
from pathlib import Path

from bivrec.atomic import write_json
from bivrec.config import ParamsError, resolve_run
from bivrec.evaluate import eval_options, evaluate
from bivrec.experiments.settings import run_jobs, train_and_score
from bivrec.runs import load_trained, mean_metrics

ZERO_SHOT = {"views": "mm", "readout": "mm"}


def budget_params(params: dict) -> dict:
    """``params`` with ``train`` replaced by the transfer budget (``experiments.transfer.train`` over ``train``)."""
    out = copy.deepcopy(params)
    out["train"] = {**params["train"], **params["experiments"]["transfer"]["train"]}
    return out


def zero_shot(params: dict, source_run_dir: Path, target_data: Path, target_features: Path) -> dict:
    """Test metrics on the target of the source run's multimodal view (mean and std over its seeds)."""
    eval_cfg = params["eval"]
    models, data, _ = load_trained(source_run_dir, target_data, target_features, overrides=ZERO_SHOT)
    per_seed = [evaluate(m, data.test, **eval_options(eval_cfg)).metrics for m in models]
    mean, std = mean_metrics(per_seed)
    return {"metrics": mean, "metrics_std": std, "test_users": len(data.test), "n_items": data.n_items}


def transfer(params: dict, source: str, source_models: Path, target_data: Path, target_features: Path, models_dir: Path, out: Path, progress: bool = True) -> dict:
    cfg = params["experiments"]["transfer"]
    run, target = cfg["run"], cfg["target"]
    if run not in params["runs"]:
        raise ParamsError(f"params.yaml: experiments.transfer.run {run!r} is not in runs (the source run is a trained main run)")
    if target == source:
        raise ParamsError(f"params.yaml: experiments.transfer.target {target!r} is the source dataset itself")
    source_run = source_models / run
    _, model_cfg = resolve_run(params, run)
    rows = {}
    if model_cfg.get("views") in ("mm", "both"):  # only a multimodal view scores items it was not trained on
        rows["zero_shot"] = zero_shot(params, source_run, target_data, target_features)
    budget = budget_params(params)
    workers = int(params["experiments"].get("workers", 1))
    starts = {"fine_tuned": source_run, "scratch": None}
    jobs = [
        (train_and_score, budget, run, target_data, target_features, models_dir / name, progress and workers <= 1, init)
        for name, init in starts.items()
    ]
    for name, (summary, _) in zip(starts, run_jobs(jobs, workers, params["train"]["threads"])):
        rows[name] = {key: summary[key] for key in ("metrics", "metrics_std", "test_users", "best_step")}
    results = {"settings": cfg, "source": source, "target": target, "run": run, "train": budget["train"], "rows": rows}
    write_json(out, results)
    return results
