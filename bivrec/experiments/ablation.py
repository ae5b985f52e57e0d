"""Ablation: the full model against each of its pieces removed (``experiments.ablation``).

Rows are settings of the base run's model (``variants``: name -> overrides), each trained with the
same training config and seeds as the base run (settings equal to a main-table run reuse it, so the
full model is the trained main run). Every row gets its test metrics (mean and std over seeds) and a
paired two-sided Wilcoxon test over test users against the full model. The shuffled-features control
(a setting with ``feature_shuffle_seed``) should lose to the full model; the result says whether it does.
"""

from __future__ import annotations

from pathlib import Path

from bivrec.atomic import write_json
from bivrec.experiments.plan import plan
from bivrec.experiments.settings import read_metrics, row, score_settings


def ablation(params: dict, data_dir: Path, features_dir: Path, metrics_dir: Path, models_dir: Path, out: Path, progress: bool = True) -> dict:
    cfg = params["experiments"]["ablation"]
    base, variants, metric = cfg["run"], cfg["variants"], params["eval"].get("select_metric", "recall@20")
    full_summary, full_per_user = read_metrics(metrics_dir, base)
    scored = score_settings(params, base, variants, data_dir, features_dir, metrics_dir, models_dir, progress)
    reused = plan(params, base, variants)
    rows = {"full": row(full_summary, full_per_user, None, {}, base)}
    for name, (summary, per_user) in scored.items():
        rows[name] = row(summary, per_user, full_per_user, variants[name], reused[name])
    controls = {}
    for name, overrides in variants.items():
        if overrides.get("feature_shuffle_seed") is not None:
            full, shuffled = rows["full"]["metrics"][metric], rows[name]["metrics"][metric]
            controls[name] = {
                "metric": metric,
                "full": full,
                "shuffled": shuffled,
                "loses_to_full": shuffled < full,
                "p_value": rows[name]["p_value"][metric],
            }
    results = {"settings": cfg, "base_run": base, "select_metric": metric, "rows": rows, "shuffled_controls": controls}
    write_json(out, results)
    return results
