"""The paper's experiments (ablation, sensitivity, noise, transfer, efficiency, interests) on tiny data."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bivrec.cli import main
from bivrec.config import ParamsError, load_params
from bivrec.data.dataset import EvalSplit
from bivrec.experiments.interests import finest_scale, pca_2d, pick_users
from bivrec.experiments.noise import corrupt_histories
from bivrec.experiments.plan import plan, point_name, points, setting_params
from bivrec.experiments.settings import run_jobs
from bivrec.report.build import build_report
from bivrec.report.figures import palette
from bivrec.report.tables import escape_tex, write_table
from bivrec.runs import load_trained, shuffle_features, transferable_state
from helpers import random_features, run_experiments, tiny_pipeline

PARAMS = Path(__file__).parents[1] / "params.yaml"


# --- noise ------------------------------------------------------------------------------------------


def noisy_split() -> EvalSplit:
    history = torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [0] * 9 + [3]])
    return EvalSplit(torch.tensor([7, 8, 9]), history, torch.tensor([[1, 0], [2, 3], [4, 0]]))


def test_noise_replaces_exactly_the_share_of_each_history_with_other_items():
    split = noisy_split()
    noisy = corrupt_histories(split, 0.5, n_items=30, seed=0)
    changed = noisy.history != split.history
    assert changed.sum(1).tolist() == [3, 5, 0]  # round(0.5 * 6), round(0.5 * 10), round(0.5 * 1) = 0 (half to even)
    assert torch.equal(noisy.history[split.history == 0], split.history[split.history == 0])  # padding stays
    assert bool(((noisy.history[changed] >= 1) & (noisy.history[changed] <= 30)).all())
    assert torch.equal(noisy.targets, split.targets) and torch.equal(noisy.users, split.users)
    assert torch.equal(corrupt_histories(split, 0.0, 30, seed=0).history, split.history)
    assert bool((corrupt_histories(split, 1.0, 30, seed=0).history != split.history).sum(1).eq(torch.tensor([6, 10, 1])).all())


def test_noise_is_reproducible_nested_and_seeded():
    split = noisy_split()
    assert torch.equal(corrupt_histories(split, 0.3, 30, seed=4).history, corrupt_histories(split, 0.3, 30, seed=4).history)
    assert not torch.equal(corrupt_histories(split, 0.3, 30, seed=4).history, corrupt_histories(split, 0.3, 30, seed=5).history)
    small, large = corrupt_histories(split, 0.2, 30, seed=4).history, corrupt_histories(split, 0.6, 30, seed=4).history
    replaced_small = small != split.history
    assert bool((large[replaced_small] == small[replaced_small]).all())  # a larger share extends a smaller one
    with pytest.raises(ValueError, match="share"):
        corrupt_histories(split, 1.5, 30, seed=0)


def test_noise_replacements_are_uniform_over_the_other_items():
    history = torch.full((4000, 1), 3)
    noisy = corrupt_histories(EvalSplit(torch.arange(4000), history, torch.ones(4000, 1, dtype=torch.long)), 1.0, n_items=4, seed=1)
    counts = torch.bincount(noisy.history.flatten(), minlength=5)
    assert counts[0] == 0 and counts[3] == 0  # never padding, never the replaced item itself
    assert counts[[1, 2, 4]].min() > 1200  # about 4000 / 3 each


# --- shuffled-features control ------------------------------------------------------------------------


def test_shuffled_features_permute_whole_items_across_items():
    features = random_features(50)
    shuffled = shuffle_features(features, seed=0)
    assert torch.equal(shuffled.image[0], features.image[0]) and not shuffled.image_mask[0]
    # every real item now holds another item's whole row (image, text and masks moved together)
    match = (shuffled.text[1:, None, :] == features.text[None, 1:, :]).all(-1)  # every text row is distinct
    assert bool((match.sum(1) == 1).all())
    source = match.float().argmax(1)
    assert torch.equal(shuffled.image[1:], features.image[1:][source]) and torch.equal(shuffled.image_mask[1:], features.image_mask[1:][source])
    assert sorted(source.tolist()) == list(range(50))
    assert (source != torch.arange(50)).float().mean() > 0.9
    assert torch.equal(shuffle_features(features, seed=0).image, shuffled.image)
    assert not torch.equal(shuffle_features(features, seed=1).image, shuffled.image)


# --- settings, sensitivity points --------------------------------------------------------------------


def test_a_setting_equal_to_a_main_run_reuses_it_and_others_are_trained():
    params = load_params(PARAMS)
    reused = plan(params, "bivrec", {"id_only": {"views": "id"}, "no_fine": {"fine_weight": 0.0}, "same": {}})
    assert reused == {"id_only": "bivrec_id", "no_fine": None, "same": "bivrec"}
    with pytest.raises(ParamsError, match="not keys of model.bivrec"):
        setting_params(params, "bivrec", "bad", {"no_such_key": 1})


def test_sensitivity_points_leave_out_the_centre_and_have_plain_names():
    params = load_params(PARAMS)
    params["experiments"]["sensitivity"]["grid"] = {"n_interests": [2, 4, 8], "coarse_weight": [0.5], "patch_sizes": [[1, 2]]}
    assert points(params) == {
        "n_interests_2": {"n_interests": 2},
        "n_interests_8": {"n_interests": 8},
        "coarse_weight_0p5": {"coarse_weight": 0.5},
        "patch_sizes_1_2": {"patch_sizes": [1, 2]},
    }
    assert point_name("temperature", 0.07) == "temperature_0p07"


def test_experiment_params_are_checked_on_load(tmp_path):
    params = yaml.safe_load(PARAMS.read_text())
    params["experiments"]["transfer"]["target"] = "synthetic"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="also in datasets"):
        load_params(tmp_path / "p.yaml")
    params = yaml.safe_load(PARAMS.read_text())
    params["experiments"]["ablation"]["variants"]["typo"] = {"gausian": False}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="gausian"):
        load_params(tmp_path / "p.yaml")


def test_parallel_jobs_return_results_in_order():
    assert run_jobs([(math.sqrt, 4.0), (math.sqrt, 9.0), (math.sqrt, 16.0)], workers=2, threads=1) == [2.0, 3.0, 4.0]


# --- interests helpers --------------------------------------------------------------------------------


def test_interest_helpers():
    assert finest_scale([1, 2, 4], 20) == (1, 0, 20)
    assert finest_scale([4, 2], 20) == (2, 5, 10)  # after the 5 tokens of scale 4
    history = torch.tensor([[0, 0, 0, 1], [1, 2, 3, 4], [0, 0, 5, 6], [7, 8, 9, 1]])
    picked = pick_users(history, 2, seed=0)
    assert set(picked.tolist()) <= {1, 2, 3} and len(picked) == 2 and torch.equal(picked, pick_users(history, 2, seed=0))
    coords, share = pca_2d(np.array([[0.0, 0, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0]]))
    assert coords.shape == (4, 2) and share == pytest.approx([0.8, 0.2])


# --- report helpers --------------------------------------------------------------------------------


def test_tex_escapes_every_special_character_once(tmp_path):
    assert escape_tex("a_b & 50% #1 $x$ {y} ~ ^ \\") == (
        "a\\_b \\& 50\\% \\#1 \\$x\\$ \\{y\\} \\textasciitilde{} \\textasciicircum{} \\textbackslash{}"
    )
    table = pd.DataFrame({"recall@20": [0.25], "note": ["main run bivrec_id"]}, index=pd.Index(["no_fine"], name="setting"))
    spread = pd.DataFrame({"recall@20": [0.01], "note": [float("nan")]}, index=table.index)
    write_table(table, tmp_path / "t", "50% of x_y", spread=spread, note="p < 0.05 & `code`, mean ± std")
    tex = (tmp_path / "t.tex").read_text()
    assert "no\\_fine" in tex and "main run bivrec\\_id" in tex and "50\\% of x\\_y" in tex and "0.2500 $\\pm$ 0.0100" in tex
    assert "\\& code" in tex and "\\textless{} 0.05" in tex and "mean $\\pm$ std" in tex and "±" not in tex
    assert "0.2500 ± 0.0100" in (tmp_path / "t.md").read_text()
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == ["setting", "recall@20", "note", "recall@20 std", "note std"]


def test_palette_gives_each_name_one_colour():
    colours = palette(["bivrec", "sasrec", "bivrec", "no_fine"])
    assert list(colours) == ["bivrec", "sasrec", "no_fine"] and len(set(colours.values())) == 3
    assert palette(["bivrec", "x"])["bivrec"] == colours["bivrec"]


# --- every experiment end to end on tiny data -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    params = tiny_pipeline(root, replicates=2)
    run_experiments(root, params)
    return root, params


def read(root, name):
    return json.loads((root / "experiments" / "synthetic" / f"{name}.json").read_text())


def test_ablation_rows_reuse_main_runs_test_against_full_and_check_the_control(tiny):
    root, params = tiny
    result = read(root, "ablation")
    rows = result["rows"]
    assert set(rows) == {"full", *params["experiments"]["ablation"]["variants"]}
    assert rows["full"]["reused_run"] == "bivrec" and rows["id_only"]["reused_run"] == "bivrec_id"
    assert rows["no_fine"]["reused_run"] is None and (root / "models_extra" / "ablation" / "no_fine" / "seeds").is_dir()
    main_metrics = json.loads((root / "metrics" / "bivrec_id.json").read_text())["metrics"]
    assert rows["id_only"]["metrics"] == main_metrics and rows["full"]["seeds"] == 2
    assert 0 <= rows["no_fine"]["p_value"]["recall@20"] <= 1 and "p_value" not in rows["full"]
    control = result["shuffled_controls"]["shuffled_features"]
    assert control["loses_to_full"] == (control["shuffled"] < control["full"])


def test_the_shuffled_run_really_sees_other_items_features(tiny):
    root, _ = tiny
    [full, *_], _, _ = load_trained(root / "models" / "bivrec", root / "data", root / "features")
    [shuffled, *_], _, _ = load_trained(root / "models_extra" / "ablation" / "shuffled_features", root / "data", root / "features")
    assert full.image_features.shape == shuffled.image_features.shape
    moved = ~(full.text_features[1:] == shuffled.text_features[1:]).all(1)
    assert moved.float().mean() > 0.9
    # the same rows, in another order
    assert torch.allclose(full.text_features.sum(0), shuffled.text_features.sum(0), atol=1e-4)


def test_sensitivity_lines_hold_the_centre_and_each_point(tiny):
    root, params = tiny
    result = read(root, "sensitivity")
    line = result["lines"]["n_interests"]
    assert [p["value"] for p in line] == [2, params["model"]["n_interests"]]
    assert [p["centre"] for p in line] == [False, True] and line[1]["reused_run"] == "bivrec"
    assert (root / "models_extra" / "sensitivity" / "n_interests_2").is_dir()
    # fine_weight 0 is the ablation's no_fine: its numbers, not another training
    zero = result["lines"]["fine_weight"][0]
    assert zero["value"] == 0.0 and zero["ablation_row"] == "no_fine"
    assert zero["metrics"] == read(root, "ablation")["rows"]["no_fine"]["metrics"]
    assert not (root / "models_extra" / "sensitivity" / "fine_weight_0p0").exists()


def test_noise_scores_the_same_runs_on_the_same_corruption(tiny):
    root, params = tiny
    result = read(root, "noise")
    assert list(result["runs"])[:2] == ["bivrec", "bivrec_id"] and len(result["runs"]) == 3  # + the strongest other run
    clean = json.loads((root / "metrics" / "bivrec.json").read_text())["metrics"]["recall@20"]
    assert result["runs"]["bivrec"]["0.0"]["metrics"]["recall@20"] == pytest.approx(clean)
    assert result["replaced_items"]["0.0"] == 0 and result["replaced_items"]["0.5"] > 0


def test_transfer_scores_on_the_target_catalogue(tiny):
    root, _ = tiny
    result = read(root, "transfer")
    target_items = len(pd.read_parquet(root / "data_b" / "items.parquet"))
    target_test = len(pd.read_parquet(root / "data_b" / "split" / "test.parquet"))
    source_items = len(pd.read_parquet(root / "data" / "items.parquet"))
    assert target_items != source_items
    zero = result["rows"]["zero_shot"]
    assert zero["n_items"] == target_items and zero["test_users"] == target_test
    for name in ("fine_tuned", "scratch"):
        assert result["rows"][name]["test_users"] == target_test
        config = json.loads((root / "models_extra" / "transfer" / name / "config.json").read_text())
        assert config["steps"] <= 10
    fine_tuned = json.loads((root / "models_extra" / "transfer" / "fine_tuned" / "config.json").read_text())
    assert fine_tuned["init_from"] and json.loads((root / "models_extra" / "transfer" / "scratch" / "config.json").read_text())["init_from"] is None


def test_transferable_state_leaves_out_item_tables(tiny):
    root, _ = tiny
    [source, *_], _, _ = load_trained(root / "models" / "bivrec", root / "data", root / "features")
    [target, *_], _, _ = load_trained(root / "models_extra" / "transfer" / "scratch", root / "data_b", root / "features_b")
    carried = transferable_state(source.state_dict(), target)
    assert "id_items.weight" not in carried and "embed.mm.position.weight" in carried
    assert all(value.shape[0] != target.n_items + 1 for value in carried.values() if value.dim())


def test_efficiency_and_interests(tiny):
    root, params = tiny
    costs = read(root, "efficiency")["runs"]
    assert set(costs) == set(params["runs"])
    bivrec = costs["bivrec"]
    assert bivrec["parameters"] > 0 and bivrec["samples_per_second"] > 0 and bivrec["peak_memory_mb"] > 10 and bivrec["eval_seconds"] > 0
    assert 0 < bivrec["seconds_to_best"] <= bivrec["train_seconds"] and bivrec["seeds"] == 2
    assert math.isnan(costs["popularity"]["samples_per_second"])
    result = read(root, "interests")
    assert set(result["views"]) == {"id", "mm"}
    for view in result["views"].values():
        assert len(view["users"]) == 2
        for user in view["users"]:
            allocation = np.array(user["allocation"])
            assert allocation.shape == (params["model"]["n_interests"], len(user["history"]))
            assert np.allclose(allocation.sum(0), 1, atol=1e-4)  # each item's allocation over the interests
        assert len(view["pca"]["x"]) == 10 * params["model"]["n_interests"]


def test_report_has_every_table_and_figure(tiny, tmp_path):
    root, params = tiny
    metrics_root, models_root, data_root, features_root = (tmp_path / name for name in ("metrics", "models", "data", "features"))
    for link, target in ((metrics_root, root / "metrics"), (models_root, root / "models"), (data_root, root / "data"), (features_root, root / "features")):
        link.mkdir()
        (link / "synthetic").symlink_to(target)
    build_report(params, metrics_root, root / "experiments", models_root, data_root, features_root, tmp_path / "results")
    for table in ("main", "datasets", "cold_start", "ablation", "transfer", "efficiency"):
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / "results" / "tables" / f"{table}.{ext}").stat().st_size > 0
    for figure in ("training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"):
        assert (tmp_path / "results" / "figures" / f"{figure}.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "results" / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
    ablation = pd.read_csv(tmp_path / "results" / "tables" / "ablation.csv", index_col="setting")
    assert "full (bivrec)" in ablation.index and "recall@20 std" in ablation.columns
    report = (tmp_path / "results" / "report.md").read_text()
    assert "## Ablation" in report and "shuffled-features control" in report and "figures/interests.png" in report
    assert "±" in (tmp_path / "results" / "tables" / "ablation.md").read_text()
    # what dvc.yaml's metrics: and plots: read: the main table's numbers per run, flat, and long-format plot data
    main = pd.read_csv(tmp_path / "results" / "tables" / "main.csv", index_col="model")
    for run in params["runs"]:
        summary = json.loads((tmp_path / "results" / "summary" / "synthetic" / f"{run}.json").read_text())
        assert summary == pytest.approx(main.loc[run].to_dict())
    plots = tmp_path / "results" / "plots"
    curves = pd.read_csv(plots / "training_curves.csv")
    assert set(curves["run"]) == set(params["runs"]) and list(curves.columns) == ["dataset", "run", "metric", "step", "value"]
    assert len(pd.read_csv(plots / "metric_comparison.csv")) == len(params["runs"]) * len(params["report"]["table_metrics"])
    noise = pd.read_csv(plots / "noise.csv")
    assert set(noise["share"]) == {0.0, 0.5} and set(noise["run"]) == set(read(root, "noise")["runs"])
    sensitivity = pd.read_csv(plots / "sensitivity.csv")
    assert set(sensitivity["parameter"]) == {"n_interests", "fine_weight"} and sensitivity["centre"].any()
