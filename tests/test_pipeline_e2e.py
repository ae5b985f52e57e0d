"""The whole pipeline, for real: Snakemake on a tiny synthetic config, then DVC on the same outputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

TINY = {
    "data": {"synthetic": {"n_users": 240, "n_items": 90, "n_categories": 4}},
    "features": {"image": {"image_size": 64, "batch_size": 32, "num_workers": 0}},
    "model": {"dim": 16, "max_len": 8},
    "train": {"batch_size": 64, "max_steps": 40, "eval_every": 20, "patience": 5},
    # one model of each family keeps the test short: ID, multi-interest, side information, BiVRec
    "runs": ["popularity", "sasrec", "comirec_sa", "fdsa", "bivrec_id", "bivrec_mm", "bivrec"],
    "experiments": {
        "workers": 1,  # tiny runs: a worker process would cost more to start than its training
        "noise": {"shares": [0.0, 0.3]},
        "transfer": {"train": {"max_steps": 20, "eval_every": 10}},
        "interests": {"pca_users": 20},
    },
}
TINY["data"]["synthetic_b"] = {"n_users": 160, "n_items": 60, "n_categories": 4}
#: small experiment grids, replacing (not merged into) params.yaml's
TINY_GRIDS = {
    "ablation": {"no_fine": {"fine_weight": 0.0}, "id_only": {"views": "id"}, "shuffled_features": {"feature_shuffle_seed": 0}},
    "sensitivity": {"n_interests": [2, 4]},
}
# what a change of the model section reruns: training, everything that reads trained runs, and the report
AFTER_TRAINING = {"train", "evaluate", "cold_start", "ablation", "sensitivity", "transfer", "noise", "efficiency", "interests", "report"}

pytestmark = pytest.mark.slow


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def planned_rules(workdir: Path) -> set[str]:
    log = run([BIN / "snakemake", "--cores", "1", "--dry-run", "--quiet", "rules"], workdir)
    return set(re.findall(r"^(\w+)\s+\d+$", log, re.M)) - {"total", "all"}


def write_params(workdir: Path, update: dict) -> None:
    params = deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["experiments"]["ablation"]["variants"] = TINY_GRIDS["ablation"]
    params["experiments"]["sensitivity"]["grid"] = TINY_GRIDS["sensitivity"]
    (workdir / "params.yaml").write_text(yaml.safe_dump(deep_update(params, update), sort_keys=False))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    for name in ("Snakefile", "workflow", "bivrec", "dvc.yaml"):
        (workdir / name).symlink_to(ROOT / name)
    write_params(workdir, {})
    run([BIN / "snakemake", "--cores", "2"], workdir, timeout=900)
    return workdir


def test_main_table_has_every_run_with_sane_metrics(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    table = pd.read_csv(workdir / "results/tables/main.csv").set_index("model")
    assert list(table.index) == params["runs"]
    assert list(table.columns) == params["report"]["table_metrics"]
    assert ((table >= 0) & (table <= 1)).all().all()
    assert table["recall@50"].ge(table["recall@20"]).all()
    assert table["recall@20"].nunique() > 1, "all runs scoring the same means nothing was learned"
    markdown = (workdir / "results/tables/main.md").read_text()
    assert markdown.count("**") >= 2 and "<u>" in markdown
    assert "\\textbf{" in (workdir / "results/tables/main.tex").read_text()


def test_metrics_json_records_provenance(workdir):
    summary = json.loads((workdir / "results/metrics/synthetic/bivrec.json").read_text())
    assert {"recall@20", "ndcg@20", "ndcg_std@20", "hitrate@50"} <= set(summary["metrics"])
    assert summary["test_users"] > 0 and summary["fingerprint"] and summary["seed"] == 3407
    per_user = pd.read_parquet(workdir / "results/metrics/synthetic/bivrec.per_user.parquet")
    assert len(per_user) == summary["test_users"]
    assert per_user["recall@20"].mean() == pytest.approx(summary["metrics"]["recall@20"])


def test_figures_and_report_are_written(workdir):
    for name in ("training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"):
        png = (workdir / f"results/figures/{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert (workdir / f"results/figures/{name}.pdf").read_bytes().startswith(b"%PDF")
    history = pd.read_csv(workdir / "models/synthetic/bivrec/history.csv")
    assert list(history["step"]) == [20, 40] and {"loss", "valid_recall@20"} <= set(history.columns)
    stats = pd.read_csv(workdir / "results/tables/datasets.csv")
    assert int(stats.loc[0, "items"]) <= 90 and int(stats.loc[0, "users"]) <= 240
    report = (workdir / "results/report.md").read_text()
    assert "synthetic image:" in report and "synthetic text:" in report


def test_rerun_with_unchanged_params_does_nothing(workdir):
    assert planned_rules(workdir) == set()


def test_model_param_change_reruns_only_training_and_after(workdir):
    write_params(workdir, {"model": {"dim": 24}})
    try:
        assert planned_rules(workdir) == AFTER_TRAINING
    finally:
        write_params(workdir, {})


def test_text_encoder_change_reruns_text_features_and_after(workdir):
    write_params(workdir, {"features": {"text": {"template": "{title}"}}})
    try:
        assert planned_rules(workdir) == {"extract_text_features", "extract_text_features_target", *AFTER_TRAINING}
    finally:
        write_params(workdir, {})


def test_dvc_adopts_the_outputs_and_tracks_the_same_params(workdir):
    run([BIN / "dvc", "init", "--no-scm", "-q"], workdir)
    run([BIN / "dvc", "commit", "--force", "-q"], workdir)
    assert "up to date" in run([BIN / "dvc", "status"], workdir).lower()
    # DVC rewrote the outputs (new mtimes): Snakemake must still see nothing to do
    assert planned_rules(workdir) == set()

    write_params(workdir, {"model": {"dim": 24}})
    try:
        status = json.loads(run([BIN / "dvc", "status", "--json"], workdir))
        changed = {name.split("@")[0] for name in status}
        assert changed == {"train", "ablation", "sensitivity", "transfer"}, status  # the stages that read model:
        log = run([BIN / "dvc", "repro"], workdir)
        ran = set(re.findall(r"Running stage '(\w+)", log))
        assert ran == AFTER_TRAINING, log
        assert "up to date" in run([BIN / "dvc", "status"], workdir).lower()
    finally:
        write_params(workdir, {})


def test_ctrl_c_in_training_leaves_no_output_and_rerun_resumes(workdir):
    import signal
    import time

    write_params(workdir, {"train": {"max_steps": 2000, "eval_every": 20, "patience": 3}})
    cmd = [sys.executable, "-m", "bivrec", "train", "--params", "params.yaml", "--run", "bivrec", "--data", "data/synthetic",
           "--features", "features/synthetic", "--out", "models/synthetic/interrupted", "--quiet"]
    checkpoint = workdir / ".bivrec/resume/models/synthetic/interrupted/last.json"
    try:
        proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted; no output was written" in err
        assert not (workdir / "models/synthetic/interrupted").exists()
        assert not list((workdir / "models/synthetic").glob(".interrupted*"))

        log = run(cmd, workdir)
        assert "resuming from" in log
        assert (workdir / "models/synthetic/interrupted/best.pt").exists()
        assert not checkpoint.exists(), "resume state is cleared once the run is complete"
    finally:
        write_params(workdir, {})
