"""Extra runs that an experiment compares: settings of one run's model that the main table lacks.

An experiment (ablation, sensitivity) names settings as overrides of a base run's model config
(``experiments.plan``). A setting equal to a main-table run reuses that trained run and its test metrics
(``results/metrics``); any other is trained here with the one training loop (``runs.train_run``) into
``<models_dir>/<name>/`` and scored once on the test users (``runs.score_run``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bivrec.data.dataset import DataError
from bivrec.evaluate import paired_significance
from bivrec.experiments.plan import plan, setting_params
from bivrec.runs import score_run, train_run


def read_metrics(metrics_dir: Path, run: str) -> tuple[dict, pd.DataFrame]:
    """A main run's test metrics (``evaluate`` stage output): summary and per-user values."""
    summary_path, per_user_path = metrics_dir / f"{run}.json", metrics_dir / f"{run}.per_user.parquet"
    for path in (summary_path, per_user_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run the evaluate stage first)")
    return json.loads(summary_path.read_text()), pd.read_parquet(per_user_path)


def train_and_score(params: dict, name: str, data_dir: Path, features_dir: Path, out_dir: Path, progress: bool, init_from: Path | None = None) -> tuple[dict, pd.DataFrame]:
    """Train one extra run (``name`` resolves through ``params``) and score it once on the test users."""
    train_run(params, name, data_dir, features_dir, out_dir, progress=progress, init_from=init_from)
    return score_run(params, out_dir, data_dir, features_dir)


def _with_threads(threads: int, job: tuple):
    import torch

    torch.set_num_threads(threads)  # like a main run's train job: the same numbers as the main runs
    return job[0](*job[1:])


def run_jobs(jobs: list[tuple], workers: int, threads: int) -> list:
    """Call each ``(function, *args)`` job with ``threads`` CPU threads (``train.threads``), up to
    ``workers`` at once in separate processes (``workers`` = 1: one after the other in this process).
    Results in the jobs' order."""
    if workers <= 1 or len(jobs) <= 1:
        return [_with_threads(threads, job) for job in jobs]
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked copy of a process that already ran torch can deadlock in its thread pool
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(functools.partial(_with_threads, threads), jobs))


def score_settings(
    params: dict,
    base_run: str,
    settings: dict[str, dict],
    data_dir: Path,
    features_dir: Path,
    metrics_dir: Path,
    models_dir: Path,
    progress: bool = True,
) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Test summary and per-user values of every setting: reused from the main runs or trained here
    (``experiments.workers`` at a time)."""
    reused = plan(params, base_run, settings)
    out = {name: read_metrics(metrics_dir, run) for name, run in reused.items() if run is not None}
    to_train = [name for name, run in reused.items() if run is None]
    workers = int(params["experiments"].get("workers", 1))
    jobs = [
        (train_and_score, setting_params(params, base_run, name, settings[name]), name, data_dir, features_dir, models_dir / name, progress and workers <= 1)
        for name in to_train
    ]
    out.update(zip(to_train, run_jobs(jobs, workers, params["train"]["threads"])))
    return {name: out[name] for name in settings}


def row(summary: dict, per_user: pd.DataFrame, reference: pd.DataFrame | None, overrides: dict, reused: str | None) -> dict:
    """One setting's JSON row: its metrics (mean and std over seeds), where it comes from and, given
    the reference run's per-user values, a two-sided Wilcoxon p-value per metric against it."""
    entry = {
        "overrides": overrides,
        "reused_run": reused,
        "metrics": summary["metrics"],
        "metrics_std": summary.get("metrics_std", {k: 0.0 for k in summary["metrics"]}),
        "seeds": len(summary.get("seeds", {})) or 1,
        "test_users": int(len(per_user)),
    }
    if reference is not None:
        if not np.array_equal(reference["users"].to_numpy(), per_user["users"].to_numpy()):
            raise DataError("per-user metrics of two runs cover different test users; retrain both on the same data")
        entry["p_value"] = {
            metric: paired_significance(per_user[metric].to_numpy(), reference[metric].to_numpy())
            for metric in summary["metrics"]
            if metric in per_user and metric in reference
        }
    return entry
