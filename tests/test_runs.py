"""Runs trained with several seeds (``train.replicates``): one output folder, metrics averaged over seeds."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bivrec.cli import main
from bivrec.config import load_params
from bivrec.features.store import import_precomputed
from bivrec.report.build import build_report
from bivrec.runs import replicate_dirs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicates")
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    params["data"]["synthetic"].update(n_users=300, n_items=80, n_categories=4, image_size=16)
    params["train"].update(max_steps=20, eval_every=10, replicates=3)
    params["runs"] = ["popularity", "bivrec_id"]
    params["report"]["proposed_run"] = "bivrec_id"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", str(root / "params.yaml"), "--threads", "1"]
    data, features, models = root / "data", root / "features", root / "models"
    assert main(["download", *common, "--dataset", "synthetic", "--out", str(root / "raw")]) == 0
    assert main(["preprocess", *common, "--dataset", "synthetic", "--raw", str(root / "raw"), "--out", str(data)]) == 0
    n_items = len(pd.read_parquet(data / "items.parquet"))
    for modality, dim in (("image", 6), ("text", 4)):  # random features: this test is about seeds, not content
        np.save(root / f"{modality}.npy", np.random.default_rng(0).normal(size=(n_items, dim)).astype(np.float32))
        import_precomputed(root / f"{modality}.npy", n_items, features / modality, row_offset=1)
    for run in params["runs"]:
        assert main(["train", *common, "--run", run, "--data", str(data), "--features", str(features), "--out", str(models / run), "--quiet"]) == 0
        out = root / "metrics" / f"{run}.json"
        assert main(["evaluate", *common, "--model", str(models / run), "--data", str(data), "--features", str(features),
                     "--out", str(out), "--per-user", str(out.with_suffix(".per_user.parquet"))]) == 0
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
    common = ["--params", str(root / "params.yaml"), "--threads", "1"]
    experiments = tmp_path / "experiments" / "synthetic"
    assert main(["cold_start", *common, "--models", str(root / "models"), "--data", str(root / "data"),
                 "--features", str(root / "features"), "--out", str(experiments / "cold_start.json")]) == 0
    cold = json.loads((experiments / "cold_start.json").read_text())["runs"]["bivrec_id"]["all"]
    summary = json.loads((root / "metrics" / "bivrec_id.json").read_text())
    assert cold["recall@20"] == pytest.approx(summary["metrics"]["recall@20"])
    metrics_root = tmp_path / "metrics"
    (metrics_root / "synthetic").mkdir(parents=True)
    for file in (root / "metrics").iterdir():
        (metrics_root / "synthetic" / file.name).write_bytes(file.read_bytes())
    models_root, data_root, features_root = (tmp_path / name for name in ("models", "data", "features"))
    for link, target in ((models_root, root / "models"), (data_root, root / "data"), (features_root, root / "features")):
        link.mkdir()
        (link / "synthetic").symlink_to(target)
    build_report(params, metrics_root, tmp_path / "experiments", models_root, data_root, features_root, tmp_path / "results")
    main_md = (tmp_path / "results" / "tables" / "main.md").read_text()
    assert "Means over 3 training seeds" in main_md
    spread = pd.read_csv(tmp_path / "results" / "tables" / "main_std.csv", index_col="model")
    assert spread.loc["bivrec_id", "recall@20"] == pytest.approx(summary["metrics_std"]["recall@20"])
    assert spread.loc["popularity", "recall@20"] == 0.0  # not trained: every seed ranks alike
