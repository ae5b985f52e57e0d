"""The cluster profiles in workflow/profiles are accepted by the installed executor plugins and ask
for what the rules declare (threads, memory, run time, GPUs) through resources."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def dry_run(tmp_path: Path, profile: str) -> dict[str, list[dict]]:
    """Every job of a forced dry run with the profile: rule -> [{'resources': {...}, 'threads': n}]."""
    for name in ("Snakefile", "workflow", "bivrec", "params.yaml"):
        (tmp_path / name).symlink_to(ROOT / name)
    # a dry run caps threads at --cores (1 by default), a cluster run does not
    out = subprocess.run([BIN / "snakemake", "--workflow-profile", f"workflow/profiles/{profile}", "--dry-run", "--forceall", "--cores", "64"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs: dict[str, list[dict]] = {}
    for block in re.split(r"\n(?=rule |localrule )", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.+)$", block, re.M)
        if not rule or not resources or rule.group(1) == "all":  # the target runs nothing
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.setdefault(rule.group(1), []).append({
            "resources": dict(kv.split("=", 1) for kv in resources.group(1).split(", ")),
            "threads": int(threads.group(1)) if threads else 1,
            "text": block,
        })
    return jobs


def test_slurm_profile_asks_for_gpus_and_threads_through_resources(tmp_path):
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    text = (ROOT / "workflow/profiles/slurm/config.yaml").read_text()
    assert "slurm_extra" not in text and "cpus_per_task" not in text  # threads give --cpus-per-task
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    jobs = dry_run(tmp_path, "slurm")
    train = jobs["train"][0]
    assert train["resources"]["gpu"] == ("0" if params["train"]["device"] == "cpu" else "1")
    assert train["threads"] == params["train"]["threads"]
    assert jobs["ablation"][0]["threads"] == params["experiments"]["workers"] * params["train"]["threads"]
    image = params["features"]["image"]
    assert jobs["extract_image_features"][0]["threads"] == image["threads"] + image["num_workers"]
    for rule, rule_jobs in jobs.items():
        for key in ("mem_mb", "runtime", "gpu"):
            assert key in rule_jobs[0]["resources"], f"{rule} declares no {key}"

    class Job:  # what the plugin reads of a job: its resources
        resources = type("Resources", (dict,), {"__getattr__": dict.__getitem__})(gpu=int(train["resources"]["gpu"]))
    assert set_gres_string(Job()) == (" --gpus=1" if train["resources"]["gpu"] == "1" else "")


def test_kubernetes_profile_moves_every_file_through_storage(tmp_path):
    profile = yaml.safe_load((ROOT / "workflow/profiles/kubernetes/config.yaml").read_text())
    assert profile["executor"] == "kubernetes" and profile["default-storage-provider"] == "fs"
    jobs = dry_run(tmp_path, "kubernetes")
    prefix = profile["default-storage-prefix"]
    for rule, rule_jobs in jobs.items():
        job = rule_jobs[0]
        assert job["resources"].get("gpu_manufacturer") == "nvidia", rule
        command = re.search(r"^Shell command: (.+)$", job["text"], re.M)
        if command and command.group(1) != "None":  # every path a command names is a local copy of a storage object
            paths = re.findall(r"(?:--\S+|>) (\S+/\S+)", command.group(1))
            assert paths and all(p.startswith(".snakemake/storage/fs/") for p in paths), (rule, command.group(1))
        assert f"{prefix}/" in job["text"], rule


@pytest.mark.parametrize("profile", ["slurm", "kubernetes"])
def test_profile_uses_the_default_rerun_triggers(profile):
    default = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert yaml.safe_load((ROOT / f"workflow/profiles/{profile}/config.yaml").read_text())["rerun-triggers"] == default["rerun-triggers"]
