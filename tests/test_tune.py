"""Hyper-parameter selection on validation (tune_point / tune_select), and pooled paired tests over folds."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from bivrec.cli import main
from bivrec.config import ParamsError, load_params, validate_params
from bivrec.evaluate import paired_significance
from bivrec.features.store import import_precomputed
from bivrec.report.build import pooled_tables, tune_table
from bivrec.report.tables import write_table
from bivrec.tune import apply_settings, grid_points, point_params, select
from helpers import PARAMS, REPO, write_params

GRID = {"train.learning_rate": [0.01, 0.001], "model.dropout": [0.1, 0.3, 0.5]}  # points: keys sorted, model.dropout first


def test_grid_points_are_every_combination_last_key_fastest():
    points = grid_points({"grid": GRID})
    assert len(points) == 6
    assert points[0] == {"model.dropout": 0.1, "train.learning_rate": 0.01}
    assert points[1] == {"model.dropout": 0.1, "train.learning_rate": 0.001}
    assert points[5] == {"model.dropout": 0.5, "train.learning_rate": 0.001}
    assert grid_points({"grid": dict(reversed(GRID.items()))}) == points
    assert grid_points({"grid": {}}) == [{}]


def test_settings_apply_to_existing_keys_only():
    params = load_params(PARAMS)
    tuned = apply_settings(params, {"model.bivrec.coarse_weight": 0.5, "train.learning_rate": 1e-4})
    assert tuned["model"]["bivrec"]["coarse_weight"] == 0.5 and tuned["train"]["learning_rate"] == 1e-4
    assert params["model"]["bivrec"]["coarse_weight"] != 0.5  # a copy: the caller's params are untouched
    with pytest.raises(ParamsError, match="missing key train.learning_rat"):
        apply_settings(params, {"train.learning_rat": 1e-4})
    params["tune"]["grid"] = GRID
    point = point_params({**params, "train": {**params["train"], "replicates": 3}}, 4)
    assert point["train"]["replicates"] == 1 and point["model"]["dropout"] == 0.5 and point["train"]["learning_rate"] == 0.01
    with pytest.raises(ParamsError, match="not in the grid"):
        point_params(params, 6)


def test_params_check_the_tuning_section():
    params = load_params(PARAMS)
    validate_params({**params, "tune": {"runs": ["sasrec"], "datasets": ["synthetic"], "grid": GRID}})
    with pytest.raises(ParamsError, match="tune.runs lists"):
        validate_params({**params, "tune": {"runs": ["nope"], "datasets": [], "grid": GRID}})
    validate_params({**params, "runs": ["popularity", "bivrec"], "tune": {"runs": ["sasrec"], "datasets": [], "grid": GRID}})
    with pytest.raises(ParamsError, match="not a params key"):
        validate_params({**params, "tune": {"runs": [], "datasets": [], "grid": {"model.dropuot": [0.1]}}})
    with pytest.raises(ParamsError, match=r"\['model.bivrec.coarse_weight'\] are not read by tuned run 'sasrec'"):
        validate_params({**params, "tune": {"runs": ["bivrec", "sasrec"], "datasets": [], "grid": {"model.bivrec.coarse_weight": [0.1]}}})


def _trained_point(folder, valid, step):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"best_valid": {"recall@20": valid}, "best_step": step}))
    return folder


def test_select_takes_the_best_validation_score_earliest_on_ties(tmp_path):
    params = load_params(PARAMS)
    params["tune"]["grid"] = {"model.dropout": [0.1, 0.3, 0.5]}
    folders = [_trained_point(tmp_path / f"p{i}", v, 10 * i) for i, v in enumerate([0.2, 0.3, 0.3])]
    result = select(params, folders, tmp_path / "choice.json")
    assert result["winner"] == 1 and result["settings"] == {"model.dropout": 0.3}
    assert json.loads((tmp_path / "choice.json").read_text()) == result
    assert [p["valid"] for p in result["points"]] == [0.2, 0.3, 0.3]


def test_tune_stages_train_points_and_the_winner_through_the_cli(tmp_path):
    params = load_params(PARAMS)
    params["data"]["synthetic"].update(n_users=200, n_items=60, n_categories=4, image_size=16)
    params["model"].update(dim=16, max_len=8)
    params["train"].update(max_steps=10, eval_every=5, replicates=2)
    params["tune"] = {"runs": ["bivrec_id"], "datasets": ["synthetic"], "grid": {"train.learning_rate": [1e-6, 3e-3]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", str(tmp_path / "params.yaml"), "--threads", "1"]
    raw, data, features = tmp_path / "raw", tmp_path / "data", tmp_path / "features"
    assert main(["download", *common, "--dataset", "synthetic", "--out", str(raw)]) == 0
    assert main(["preprocess", *common, "--dataset", "synthetic", "--raw", str(raw), "--out", str(data)]) == 0
    n_items = len(pd.read_parquet(data / "items.parquet"))
    for modality in ("image", "text"):
        np.save(tmp_path / f"{modality}.npy", np.random.default_rng(0).normal(size=(n_items, 4)).astype(np.float32))
        import_precomputed(tmp_path / f"{modality}.npy", n_items, features / modality, row_offset=1)
    shared = ["--data", str(data), "--features", str(features), "--quiet"]
    points = [tmp_path / "tune" / f"p{i}" for i in range(2)]
    for i, folder in enumerate(points):
        assert main(["tune_point", *common, "--run", "bivrec_id", "--point", str(i), *shared, "--out", str(folder)]) == 0
        config = json.loads((folder / "config.json").read_text())
        assert config["train"]["learning_rate"] == [1e-6, 3e-3][i] and config["train"]["replicates"] == 1
        assert not (folder / "seeds").exists()  # one training seed per point
    choice = tmp_path / "choice.json"
    assert main(["tune_select", *common, "--run", "bivrec_id", "--points", *map(str, points), "--out", str(choice)]) == 0
    result = json.loads(choice.read_text())
    scores = [json.loads((f / "config.json").read_text())["best_valid"]["recall@20"] for f in points]
    assert result["winner"] == int(np.argmax(scores)) and result["split"] == "valid"
    model = tmp_path / "model"
    assert main(["train", *common, "--run", "bivrec_id", *shared, "--out", str(model), "--settings", str(choice)]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["train"]["learning_rate"] == result["settings"]["train.learning_rate"]
    assert config["train"]["replicates"] == 2  # the main run keeps every training seed


def test_snakemake_plans_grid_points_then_the_main_run_with_the_choice(tmp_path):
    overrides = tmp_path / "tune.yaml"
    overrides.write_text(yaml.safe_dump({"tune": {"runs": ["sasrec"], "datasets": ["synthetic"], "grid": GRID}}))
    out = subprocess.run(
        [f"{sys.executable}", "-m", "snakemake", "--cores", "1", "--dry-run", "--forceall", "--printshellcmds",
         "--configfile", str(overrides), "--", "results/metrics/synthetic/sasrec.json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    commands = re.findall(r"python -m bivrec (\w+) .*", out.stdout)
    assert commands.count("tune_point") == 6 and commands.count("tune_select") == 1
    train = next(line for line in out.stdout.splitlines() if "bivrec train " in line)
    assert "--settings results/experiments/synthetic/tune/sasrec.json" in train
    assert "test" not in " ".join(line for line in out.stdout.splitlines() if "tune_point" in line)


@pytest.mark.slow
def test_snakemake_trains_the_grid_then_the_winner_for_real(tmp_path):
    for name in ("Snakefile", "workflow", "bivrec"):
        (tmp_path / name).symlink_to(REPO / name)
    write_params(tmp_path, {
        "data": {"synthetic": {"n_users": 240, "n_items": 90, "n_categories": 4}},
        "features": {"image": {"image_size": 64, "batch_size": 32, "num_workers": 0}},
        "model": {"dim": 16, "max_len": 8},
        "train": {"batch_size": 64, "max_steps": 40, "eval_every": 20, "patience": 5},
        "runs": ["popularity", "sasrec"],
        "experiments": {"enabled": []},
        "tune": {"runs": ["sasrec"], "datasets": ["synthetic"], "grid": {"train.learning_rate": [1e-4, 3e-3]}},
    })
    out = subprocess.run([f"{sys.executable}", "-m", "snakemake", "--cores", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    choice = json.loads((tmp_path / "results/experiments/synthetic/tune/sasrec.json").read_text())
    points = [json.loads((tmp_path / f"models/tune/synthetic/sasrec/p{i}/config.json").read_text()) for i in range(2)]
    assert [p["train"]["learning_rate"] for p in points] == [1e-4, 3e-3]
    assert choice["winner"] == int(np.argmax([p["best_valid"]["recall@20"] for p in points]))
    main_run = json.loads((tmp_path / "models/synthetic/sasrec/config.json").read_text())
    assert main_run["train"]["learning_rate"] == choice["settings"]["train.learning_rate"]
    assert not (tmp_path / "results/metrics/tune").exists()  # grid points are never scored on test
    table = (tmp_path / "results/tables/tune.md").read_text()
    assert "| synthetic sasrec p0 " in table and "| synthetic sasrec p1 " in table


def test_pooled_tables_pair_users_over_every_fold(tmp_path):
    rng = np.random.default_rng(0)
    params = load_params(PARAMS)
    params["runs"], params["report"]["proposed_run"], params["datasets"] = ["a", "b"], "a", ["f0", "f1"]
    params["report"]["table_metrics"] = ["recall@20"]
    params["report"]["pools"] = {"toy": ["f0", "f1"]}
    pooled = {"a": [], "b": []}
    for fold, users in (("f0", 30), ("f1", 25)):
        (tmp_path / fold).mkdir()
        base = rng.random(users)
        for run, shift in (("a", 0.05), ("b", 0.0)):
            values = np.clip(base + shift + rng.normal(0, 0.02, users), 0, 1)
            pooled[run].append(values)
            pd.DataFrame({"users": np.arange(users), "recall@20": values}).to_parquet(tmp_path / fold / f"{run}.per_user.parquet")
    means, tests = pooled_tables(params, tmp_path)
    a, b = np.concatenate(pooled["a"]), np.concatenate(pooled["b"])
    assert means.loc["a", "recall@20"] == pytest.approx(a.mean()) and means.loc["b", "recall@20"] == pytest.approx(b.mean())
    row = tests.loc["toy: a vs. b, recall@20"]
    assert row["users"] == 55 and row["datasets"] == 2
    assert float(row["p"]) == pytest.approx(paired_significance(a, b), rel=0.05) and float(row["p"]) < 0.05
    assert row["relative %"] == pytest.approx(100 * (a.mean() - b.mean()) / b.mean())
    write_table(tests, tmp_path / "tests", "pooled tests")  # one row per comparison: every cell a number
    assert "| toy: a vs. b, recall@20 | 0." in (tmp_path / "tests.md").read_text()
    params["datasets"] = ["f0"]  # a pool whose members did not all run is skipped
    assert pooled_tables(params, tmp_path)[0].empty


def test_tune_table_lists_every_point_and_marks_the_choice(tmp_path):
    params = load_params(PARAMS)
    params["tune"] = {"runs": ["sasrec"], "datasets": ["synthetic"], "grid": {"model.dropout": [0.1, 0.3, 0.5]}}
    folders = [_trained_point(tmp_path / f"p{i}", v, 10 * i) for i, v in enumerate([0.2, 0.4, 0.3])]
    select(params, folders, tmp_path / "experiments" / "synthetic" / "tune" / "sasrec.json")
    table = tune_table(params, tmp_path / "experiments")
    assert list(table.index) == ["synthetic sasrec p0", "synthetic sasrec p1", "synthetic sasrec p2"]
    assert list(table["chosen"]) == ["", "yes", ""] and list(table["model.dropout"]) == ["0.1", "0.3", "0.5"]
    write_table(table, tmp_path / "tune", "tuning")
    assert "| synthetic sasrec p1 " in (tmp_path / "tune.md").read_text()
