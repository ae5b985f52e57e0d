"""Noise robustness: test histories with a share of their items replaced by random items (``experiments.noise``).

For each share s, every test user gets exactly round(s · L) of its L history items replaced, at
positions drawn uniformly without replacement, each by a uniformly drawn *other* item. The corruption
is drawn once from ``experiments.noise.seed`` (nested: a larger share replaces a superset of the
positions) and the same corrupted histories are scored by every model. Models: the listed runs that are main-table runs, plus the ``strongest_baselines`` other main-table runs with the
best *validation* score (recorded by training; the test split does not choose them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bivrec.atomic import write_json
from bivrec.data.dataset import DataError, EvalSplit
from bivrec.evaluate import eval_options, evaluate
from bivrec.runs import load_trained, mean_metrics


def corrupt_histories(split: EvalSplit, share: float, n_items: int, seed: int) -> EvalSplit:
    """``split`` with round(share · L) real items of every history (L items long) replaced by random other
    items; padding stays padding, targets and users are untouched. Every share draws from the same
    ``seed``, so the positions and items replaced at a smaller share are also replaced at a larger one."""
    if not 0 <= share <= 1:
        raise ValueError(f"noise share must be in [0, 1], got {share}")
    if n_items < 2:
        raise ValueError("noise needs at least 2 items to replace one by another")
    generator = torch.Generator().manual_seed(int(seed))
    history = split.history.cpu()
    real = history > 0
    n_replaced = torch.round(real.sum(1).double() * share).long()
    keys = torch.rand(history.shape, generator=generator, dtype=torch.float64).masked_fill(~real, 2.0)
    rank = keys.argsort(1).argsort(1)  # a random order of each user's real positions (padding last)
    replace = rank < n_replaced[:, None]
    # uniform over the n_items - 1 items other than the one replaced
    drawn = torch.randint(1, n_items, history.shape, generator=generator)
    drawn = drawn + (drawn >= history).long()
    noisy = torch.where(replace, drawn, history)
    return EvalSplit(split.users, noisy.to(split.history.device), split.targets)


def noise_runs(params: dict, models_root: Path) -> list[str]:
    """The listed runs plus the strongest other main-table runs by best validation score."""
    cfg, metric = params["experiments"]["noise"], params["eval"].get("select_metric", "recall@20")
    listed = [run for run in cfg["runs"] if run in params["runs"]]  # only trained main runs can be scored
    scores = {}
    for run in params["runs"]:
        if run in listed:
            continue
        path = models_root / run / "config.json"
        if not path.exists():
            raise DataError(f"{path}: file not found (run the train stage first)")
        scores[run] = json.loads(path.read_text())["best_valid"][metric]
    strongest = sorted(scores, key=lambda run: -scores[run])[: cfg["strongest_baselines"]]
    return listed + strongest


def noise(params: dict, models_root: Path, data_dir: Path, features_dir: Path, out: Path) -> dict:
    cfg, eval_cfg = params["experiments"]["noise"], params["eval"]
    runs = noise_runs(params, models_root)
    results: dict = {"settings": cfg, "runs": {}}
    splits = None
    for run in runs:
        models, data, _ = load_trained(models_root / run, data_dir, features_dir)
        if splits is None:  # drawn once, the same for every model
            splits = {share: corrupt_histories(data.test, share, data.n_items, seed=cfg["seed"]) for share in cfg["shares"]}
            results["test_users"] = len(data.test)
            results["replaced_items"] = {str(s): int((split.history != data.test.history).sum()) for s, split in splits.items()}
        results["runs"][run] = {}
        for share, split in splits.items():
            per_seed = [evaluate(m, split, **eval_options(eval_cfg)).metrics for m in models]
            mean, std = mean_metrics(per_seed)
            results["runs"][run][str(share)] = {"metrics": mean, "metrics_std": std}
    write_json(out, results)
    return results
