"""How much a run's test metrics move with the training seed alone (same data, split and features).

Trains every run with ``train.replicates`` seeds (params ``seed``, ``seed + 1``, ...) through the
pipeline's own code, evaluates every seed on the test users and on cold targets ranked among cold
items, and prints one line per run and seed plus mean ± standard deviation, without touching the
pipeline's outputs. Use it before reading a difference in a single-seed main table.

    .venv/bin/python benchmarks/seed_variance.py --runs bivrec bivrec_id --replicates 4 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from bivrec.config import load_params
from bivrec.evaluate import evaluate
from bivrec.experiments.cold_start import cold_item_split, cold_items
from bivrec.runs import load_trained, mean_metrics, train_run


def seed_metrics(model, dataset, cold_threshold: int) -> dict[str, float]:
    """Test metrics of one trained seed, and its Recall@20 on cold targets ranked among cold items."""
    test = evaluate(model, dataset.test, [20]).metrics
    cold_split = cold_item_split(dataset.test, dataset.item_counts, cold_threshold)
    among_cold = evaluate(model, cold_split, [20], candidates=cold_items(dataset.item_counts, cold_threshold)).metrics
    return {"recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"], "cold_among_cold recall@20": among_cold["recall@20"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="synthetic", help="reads data/<dataset> and features/<dataset>")
    parser.add_argument("--runs", nargs="+", default=["bivrec", "bivrec_id"])
    parser.add_argument("--replicates", type=int, default=4, help="training seeds per run")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = copy.deepcopy(load_params(Path(args.params)))
    params["train"]["replicates"] = args.replicates
    threshold = params["experiments"]["cold_start"]["max_item_interactions"]
    data, features = Path("data") / args.dataset, Path("features") / args.dataset
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            train_run(params, run, data, features, Path(tmp) / run, progress=False)
            models, dataset, configs = load_trained(Path(tmp) / run, data, features)
            rows = []
            for model, config in zip(models, configs):
                rows.append(seed_metrics(model, dataset, threshold))
                print(f"{run} seed={config['seed']} " + " ".join(f"{k}={v:.4f}" for k, v in rows[-1].items()), flush=True)
            mean, std = mean_metrics(rows)
            print(f"{run} over {len(rows)} seeds " + " ".join(f"{k}={mean[k]:.4f}±{std[k]:.4f}" for k in mean), flush=True)


if __name__ == "__main__":
    main()
