"""How much a run's test metrics move with the training seed alone (same data, split and features).

Trains every run once per seed with the pipeline's own code (``bivrec.runs.train_run``), evaluates
it on the test users and on cold targets ranked among cold items, and prints one line per run and
seed plus mean ± standard deviation. Use it before reading a difference in the main table: on the
default synthetic data single-seed differences of ~0.02 Recall@20 are within this noise.

    .venv/bin/python benchmarks/seed_variance.py --runs bivrec bivrec_id --seeds 3407 1 2 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from bivrec.config import load_params
from bivrec.evaluate import evaluate
from bivrec.experiments.cold_start import cold_item_split, cold_items
from bivrec.runs import load_trained, train_run


def seed_metrics(params: dict, run: str, seed: int, data: Path, features: Path, out: Path) -> dict[str, float]:
    params = copy.deepcopy(params)
    params["seed"] = seed
    train_run(params, run, data, features, out, progress=False)
    model, dataset, _ = load_trained(out, data, features)
    threshold = params["experiments"]["cold_start"]["max_item_interactions"]
    test = evaluate(model, dataset.test, [20]).metrics
    cold_split = cold_item_split(dataset.test, dataset.item_counts, threshold)
    among_cold = evaluate(model, cold_split, [20], candidates=cold_items(dataset.item_counts, threshold)).metrics
    return {"recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"], "cold_among_cold recall@20": among_cold["recall@20"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="synthetic", help="reads data/<dataset> and features/<dataset>")
    parser.add_argument("--runs", nargs="+", default=["bivrec", "bivrec_id"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[3407, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(Path(args.params))
    data, features = Path("data") / args.dataset, Path("features") / args.dataset
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            rows = []
            for seed in args.seeds:
                metrics = seed_metrics(params, run, seed, data, features, Path(tmp) / run / str(seed))
                rows.append(metrics)
                print(f"{run} seed={seed} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
            summary = {k: (statistics.mean(r[k] for r in rows), statistics.pstdev(r[k] for r in rows)) for k in rows[0]}
            print(f"{run} over {len(rows)} seeds " + " ".join(f"{k}={m:.4f}±{s:.4f}" for k, (m, s) in summary.items()), flush=True)


if __name__ == "__main__":
    main()
