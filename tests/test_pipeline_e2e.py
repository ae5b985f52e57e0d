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

from helpers import deep_update

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
# what a change of model.sasrec reruns: the SASRec run and what reads every main run
AFTER_SASREC = {"train", "evaluate", "cold_start", "noise", "efficiency", "report"}

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def planned_rules(workdir: Path) -> set[str]:
    """The rules of the jobs a dry run plans, less the params files' (stage_params) and the target."""
    log = run([BIN / "snakemake", "--cores", "1", "--dry-run", "--quiet", "rules"], workdir)
    return set(re.findall(r"^(\w+)\s+\d+$", log, re.M)) - {"total", "all", "stage_params"}


def planned_outputs(workdir: Path) -> set[str]:
    log = run([BIN / "snakemake", "--cores", "1", "--dry-run"], workdir)
    return {path for line in re.findall(r"^\s+output: (.+)$", log, re.M) for path in line.split(", ")}


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


def test_editing_one_model_reruns_only_its_runs(workdir):
    write_params(workdir, {"model": {"sasrec": {"n_layers": 1}}})
    try:
        assert planned_rules(workdir) == AFTER_SASREC
        planned = planned_outputs(workdir)
        assert {p for p in planned if p.startswith(("models/", ".bivrec/params/"))} == {
            "models/synthetic/sasrec", ".bivrec/params/train/synthetic/sasrec.yaml"}
        assert {p for p in planned if p.startswith("results/metrics/")} == {
            "results/metrics/synthetic/sasrec.json", "results/metrics/synthetic/sasrec.per_user.parquet"}
    finally:
        write_params(workdir, {})


def test_every_job_leaves_a_log_and_a_benchmark(workdir):
    assert (workdir / "logs/stage_params/train/synthetic/bivrec.log").exists()
    assert "stage: train" in (workdir / ".bivrec/params/train/synthetic/bivrec.yaml").read_text()
    assert (workdir / "logs/train/synthetic/bivrec.log").stat().st_size > 0
    benchmark = pd.read_csv(workdir / "logs/train/synthetic/bivrec.benchmark.tsv", sep="\t")
    assert {"s", "max_rss"} <= set(benchmark.columns) and benchmark.loc[0, "s"] > 0
    for rule in AFTER_TRAINING | {"download", "preprocess", "extract_image_features", "extract_text_features"}:
        assert list((workdir / "logs" / rule).rglob("*.benchmark.tsv")), rule


def test_text_encoder_change_reruns_text_features_and_after(workdir):
    write_params(workdir, {"features": {"text": {"template": "{title}"}}})
    try:
        assert planned_rules(workdir) == {"extract_text_features", "extract_text_features_target", *AFTER_TRAINING}
    finally:
        write_params(workdir, {})


#: BiVRec's test metrics as Snakemake wrote them, before DVC reruns anything
SNAKEMAKE_METRICS: dict = {}


@pytest.fixture(scope="module")
def dvc_workdir(workdir):
    """The Snakemake outputs adopted by DVC."""
    SNAKEMAKE_METRICS.update(json.loads((workdir / "results/metrics/synthetic/bivrec.json").read_text()))
    run([BIN / "dvc", "init", "--no-scm", "-q"], workdir)
    run([BIN / "dvc", "commit", "--force", "-q"], workdir)
    return workdir


def test_dvc_adopts_the_outputs_and_snakemake_still_plans_nothing(dvc_workdir):
    assert "up to date" in run([BIN / "dvc", "status"], dvc_workdir).lower()
    # DVC rewrote the outputs (new mtimes): Snakemake must still see nothing to do
    assert planned_rules(dvc_workdir) == set()


def test_dvc_reruns_only_the_runs_of_an_edited_model(dvc_workdir):
    write_params(dvc_workdir, {"model": {"sasrec": {"n_layers": 1}}})
    try:
        status = json.loads(run([BIN / "dvc", "status", "--json"], dvc_workdir))
        # only the params files' stages see a change: DVC cannot list one run's model keys itself
        assert {name.split("@")[0] for name in status} == {"params_train", "params_ablation", "params_sensitivity", "params_transfer"}, status
        log = run([BIN / "dvc", "repro"], dvc_workdir)
        ran = set(re.findall(r"Running stage '([\w@-]+)'", log))
        # ablation and sensitivity read the metrics folder in dvc.yaml (which main runs they reuse is computed,
        # DVC cannot list it), so they rerun too
        assert {name for name in ran if not name.startswith("params_")} == {
            "train@synthetic-sasrec", "evaluate@synthetic-sasrec", "cold_start@synthetic", "noise@synthetic",
            "efficiency@synthetic", "ablation@synthetic", "sensitivity@synthetic", "report"}, log
    finally:
        write_params(dvc_workdir, {})
        run([BIN / "dvc", "repro"], dvc_workdir)  # back to the fixture's state


def test_dvc_tracks_the_same_params(dvc_workdir):
    workdir = dvc_workdir
    write_params(workdir, {"model": {"dim": 24}})
    try:
        status = json.loads(run([BIN / "dvc", "status", "--json"], workdir))
        changed = {name.split("@")[0] for name in status}
        # the stages that read model: list it through their params files
        assert changed == {"params_train", "params_ablation", "params_sensitivity", "params_transfer"}, status
        log = run([BIN / "dvc", "repro"], workdir)
        ran = set(re.findall(r"Running stage '([a-z_]+)", log))
        assert ran == AFTER_TRAINING | {"params_train", "params_ablation", "params_sensitivity", "params_transfer"}, log
        assert "up to date" in run([BIN / "dvc", "status"], workdir).lower()
    finally:
        write_params(workdir, {})


def test_dvc_gives_the_numbers_snakemake_gave(dvc_workdir):
    """train.threads holds under both tools, whatever the environment says (Snakemake sets
    OMP_NUM_THREADS to a job's threads, DVC passes on the caller's): the same weights, the same metrics."""
    metrics = dvc_workdir / "results/metrics/synthetic/bivrec.json"
    by_snakemake = SNAKEMAKE_METRICS
    env = {k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    stages = ["params_train@synthetic-bivrec", "train@synthetic-bivrec", "evaluate@synthetic-bivrec"]
    out = subprocess.run([BIN / "dvc", "repro", "--force", "--single-item", *stages],
                         cwd=dvc_workdir, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Running stage 'train@synthetic-bivrec'" in out.stdout + out.stderr
    by_dvc = json.loads(metrics.read_text())
    assert by_dvc["metrics"] == by_snakemake["metrics"]
    assert by_dvc["fingerprint"] == by_snakemake["fingerprint"]


def test_ctrl_c_in_training_leaves_no_output_and_rerun_resumes(workdir):
    import signal
    import time

    write_params(workdir, {"train": {"max_steps": 2000, "eval_every": 20, "patience": 3}})
    cmd = [sys.executable, "-m", "bivrec", "train", "--params", "params.yaml", "--run", "bivrec", "--data", "data/synthetic",
           "--features", "features/synthetic", "--out", "models/synthetic/interrupted", "--quiet"]
    checkpoint = workdir / ".bivrec/resume/models/synthetic/interrupted/last.json"
    try:
        # a pytest started in the background (nohup ... &) ignores SIGINT and its children inherit that;
        # SIG_DFL at exec lets Python install its KeyboardInterrupt handler again
        proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be interrupted (checkpoint seen: {checkpoint.exists()})"
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
