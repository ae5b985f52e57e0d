"""Runs trained with several seeds (``train.replicates``): one output folder, metrics averaged over seeds."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bivrec.report.build import build_report
from bivrec.runs import replicate_dirs
from helpers import run_experiments, tiny_pipeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicates")
    # random features: this test is about seeds, not content
    params = tiny_pipeline(root, replicates=3, runs=("popularity", "bivrec_id"), base_run="bivrec_id")
    return root, params


def test_every_seed_is_trained_into_one_run_folder(trained):
    root, params = trained
    folders = replicate_dirs(root / "models" / "bivrec_id")
    seeds = [json.loads((f / "config.json").read_text())["seed"] for f in folders]
    assert seeds == [params["seed"], params["seed"] + 1, params["seed"] + 2]
    assert folders[1] == root / "models" / "bivrec_id" / "seeds" / str(params["seed"] + 1)
    histories = [pd.read_csv(f / "history.csv")["loss"].tolist() for f in folders]
    assert histories[0] != histories[1] != histories[2]  # different seeds, different training
    assert not list((root / "models").glob(".*.tmp"))  # nothing half-written left beside the outputs


def test_metrics_are_the_mean_over_seeds_and_per_user_values_too(trained):
    root, _ = trained
    summary = json.loads((root / "metrics" / "bivrec_id.json").read_text())
    per_seed = list(summary["seeds"].values())
    assert len(per_seed) == 3
    for name, value in summary["metrics"].items():
        values = [m[name] for m in per_seed]
        assert value == pytest.approx(np.mean(values))
        assert summary["metrics_std"][name] == pytest.approx(np.std(values))
    per_user = pd.read_parquet(root / "metrics" / "bivrec_id.per_user.parquet")
    assert per_user["recall@20"].mean() == pytest.approx(summary["metrics"]["recall@20"])
    assert summary["metrics_std"]["recall@20"] > 0  # the seeds really differ


def test_report_and_cold_start_average_over_seeds(trained, tmp_path):
    root, params = trained
    run_experiments(root, params)
    cold = json.loads((root / "experiments" / "synthetic" / "cold_start.json").read_text())["runs"]["bivrec_id"]["all"]
    summary = json.loads((root / "metrics" / "bivrec_id.json").read_text())
    assert cold["recall@20"] == pytest.approx(summary["metrics"]["recall@20"])
    models_root, metrics_root, data_root, features_root = (tmp_path / name for name in ("models", "metrics", "data", "features"))
    for link, target in ((models_root, root / "models"), (metrics_root, root / "metrics"), (data_root, root / "data"), (features_root, root / "features")):
        link.mkdir()
        (link / "synthetic").symlink_to(target)
    build_report(params, metrics_root, root / "experiments", models_root, data_root, features_root, tmp_path / "results")
    main_md = (tmp_path / "results" / "tables" / "main.md").read_text()
    assert "Means over 3 training seeds" in main_md
    spread = pd.read_csv(tmp_path / "results" / "tables" / "main_std.csv", index_col="model")
    assert spread.loc["bivrec_id", "recall@20"] == pytest.approx(summary["metrics_std"]["recall@20"])
    assert spread.loc["popularity", "recall@20"] == 0.0  # not trained: every seed ranks alike
    ablation = pd.read_csv(tmp_path / "results" / "tables" / "ablation.csv", index_col="setting")
    assert ablation.loc["no_fine", "recall@20 std"] > 0  # the experiments' runs train every seed too

    # experiments left out of experiments.enabled are never read; their tables and figures say so
    only = {**params, "experiments": {**params["experiments"], "enabled": ["cold_start"]}}
    (tmp_path / "cold_only" / "synthetic").mkdir(parents=True)
    shutil.copy(root / "experiments" / "synthetic" / "cold_start.json", tmp_path / "cold_only" / "synthetic")
    build_report(only, metrics_root, tmp_path / "cold_only", models_root, data_root, features_root, tmp_path / "partial")
    assert "Not run: ablation is not in experiments.enabled" in (tmp_path / "partial" / "tables" / "ablation.md").read_text()
    assert (tmp_path / "partial" / "figures" / "noise.png").stat().st_size > 0
    assert "bivrec_id" in (tmp_path / "partial" / "tables" / "main.md").read_text()
