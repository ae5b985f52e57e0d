"""DVC the way its users expect: metrics, plots that render offline, and results shared through a remote.

A copy of the project becomes a git repository whose outputs come from the tiny pipeline (the same CLI
stages as the rules, run in-process for speed); DVC adopts them, `dvc repro` runs the report stage,
the results go to a local-directory remote and come back into a fresh clone with `dvc pull`.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_experiments, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
OFFLINE_TEMPLATE = ROOT / "workflow" / "plots" / "offline.html"


def run(cmd: list, cwd: Path) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def planned_rules(workdir: Path) -> set[str]:
    log = run([BIN / "snakemake", "--cores", "1", "--dry-run", "--quiet", "rules"], workdir)
    return set(re.findall(r"^(\w+)\s+\d+$", log, re.M)) - {"total", "all"}


def test_offline_template_inlines_the_pinned_scripts():
    """The committed page is what workflow/plots/build_offline_template.py builds: each pinned script
    inlined byte for byte, no CDN, and the placeholder DVC fills with the plots."""
    spec = importlib.util.spec_from_file_location("build_offline_template", OFFLINE_TEMPLATE.parent / "build_offline_template.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    page = OFFLINE_TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # {scripts} would bring back DVC's CDN tags
    assert not re.search(r"<script[^>]+src=", page)
    for package, (version, sha256) in builder.PACKAGES.items():
        script = re.search(rf"<script>/\* {re.escape(package)}@{re.escape(version)} \*/\n(.*?)\n    </script>", page, re.S)
        assert script, package
        assert hashlib.sha256(script.group(1).encode("utf-8")).hexdigest() == sha256, package


def _tiny_outputs(repo: Path, scratch: Path) -> None:
    """The tiny pipeline's outputs under the paths the pipeline's stages write (dvc.yaml, Snakefile)."""
    scratch.mkdir()
    params = tiny_pipeline(scratch, runs=("popularity", "bivrec_id", "bivrec"))
    run_experiments(scratch, params)
    shutil.copy(scratch / "params.yaml", repo / "params.yaml")
    for suffix, dataset in (("", "synthetic"), ("_b", "synthetic_b")):
        for kind in ("raw", "data", "features"):
            shutil.move(scratch / f"{kind}{suffix}", repo / kind / dataset)
    shutil.move(scratch / "models", repo / "models" / "synthetic")
    shutil.move(scratch / "models_extra", repo / "models" / "experiments" / "synthetic")
    shutil.move(scratch / "metrics", repo / "results" / "metrics" / "synthetic")
    shutil.move(scratch / "experiments", repo / "results" / "experiments")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """(repo, clone): the clone has nothing but git's files and `dvc pull`."""
    base = tmp_path_factory.mktemp("dvc")
    repo, remote, clone = base / "repo", base / "remote", base / "clone"
    repo.mkdir()
    for name in ("Snakefile", "dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("bivrec", "workflow", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "config.local", "cache", "tmp"))
    for kind in ("raw", "data", "features", "models", "results"):
        (repo / kind).mkdir()
    (repo / "models" / "experiments").mkdir()
    _tiny_outputs(repo, base / "scratch")

    run(["git", "init", "-q"], repo)
    stages = run(["dvc", "stage", "list", "--name-only"], repo).split()
    params_stages = [s for s in stages if s.startswith("params_")]
    run(["dvc", "repro", "-q", *params_stages], repo)  # the params files the training stages read
    run(["dvc", "commit", "--force", "-q", *(s for s in stages if s != "report" and s not in params_stages)], repo)  # adopt what the CLI wrote
    log = run(["dvc", "repro"], repo)
    assert re.findall(r"Running stage '(\w+)", log) == ["report"], log
    run(["dvc", "remote", "add", "--default", "storage", remote], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], repo)
    run(["dvc", "push", "-q"], repo)

    run(["git", "clone", "-q", repo, clone], base)
    assert not (clone / "results").exists()
    run(["dvc", "pull", "-q"], clone)
    return repo, clone


def test_metrics_show_one_row_per_run(shared):
    repo, _ = shared
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    runs = {Path(path).stem: entry["data"] for path, entry in shown[""]["data"].items()}  # "": the workspace
    assert set(runs) == {"popularity", "bivrec_id", "bivrec"}
    main = (repo / "results" / "tables" / "main.csv").read_text().splitlines()
    assert set(runs["bivrec"]) == set(main[0].split(",")[1:])  # the main table's metrics, flat
    table = run(["dvc", "metrics", "show"], repo)
    assert "results/summary/synthetic/bivrec.json" in table and "recall@20" in table


def test_plots_render_without_network(shared):
    repo, _ = shared
    run(["dvc", "plots", "show", "-o", "plots_page"], repo)
    page = (repo / "plots_page" / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in page and not re.search(r"<script[^>]+src=", page)  # .dvc/config: plots.html_template
    assert page.count("vegaEmbed('#") == 4  # training curves, metric comparison, noise, sensitivity
    assert "static/" in page  # the cold start and interests figures as images
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo))["data"]
    curves = plots["results/plots/training_curves.csv"][0]["content"]  # the template filled with the data
    assert curves["facet"]["column"]["field"] == "metric" and curves["spec"]["encoding"]["color"]["field"] == "run"
    assert {row["run"] for row in curves["data"]["values"]} == {"popularity", "bivrec_id", "bivrec"}


def test_pulled_clone_is_up_to_date_for_both_tools(shared):
    repo, clone = shared
    assert "up to date" in run(["dvc", "status"], clone).lower()
    for path in ("results/tables/main.csv", "results/summary/synthetic/bivrec.json", "models/synthetic/bivrec/best.pt"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    # DVC restores files in no particular order and Snakemake reruns a job whose input is newer than its
    # output, and a fresh clone has no Snakemake records: one --touch (README) records them for what DVC verified
    assert planned_rules(clone) != set()
    run([BIN / "snakemake", "--cores", "1", "--touch", "--forceall", "--quiet"], clone)
    assert planned_rules(clone) == set()
    params = (clone / "params.yaml").read_text()
    try:  # the records are real: a model change reruns training again
        (clone / "params.yaml").write_text(params.replace("\n  dim: 16\n", "\n  dim: 24\n", 1))
        assert "train" in planned_rules(clone)
    finally:
        (clone / "params.yaml").write_text(params)


def test_snakemake_report_carries_every_table_and_figure_with_its_caption(shared):
    _, clone = shared
    run([BIN / "snakemake", "--cores", "1", "--report", "report.html"], clone)
    page = (clone / "report.html").read_text(encoding="utf-8")
    for name in ("main", "datasets", "cold_start", "ablation", "transfer", "efficiency"):
        assert f"{name}.csv" in page, name
    for name in ("training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"):
        assert f"{name}.png" in page, name
    for caption in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        opening = re.split(r"``|\{\{", caption.read_text())[0].strip()  # the caption's words before any markup
        assert opening in page, caption.name
