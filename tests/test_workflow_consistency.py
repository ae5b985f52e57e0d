"""Snakefile and dvc.yaml must describe the same pipeline: same stages, commands, outputs, params, code."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bivrec.stages import STAGE_CODE, stage_keys

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS_FILE = ".bivrec/params/"


def snakemake_jobs() -> dict[str, dict]:
    """Every job of a forced dry run, keyed by its shell command (with the params path normalised)."""
    out = subprocess.run(
        [BIN / "snakemake", "--cores", "1", "--dry-run", "--forceall", "--printshellcmds"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", out.stdout):
        rule = re.search(r"^rule (\w+):", block, re.M)
        command = re.search(r"^Shell command: (.+)$", block, re.M)
        field = lambda name: [p for p in (re.search(rf"^\s+{name}: (.+)$", block, re.M) or [None, ""])[1].split(", ") if p]  # noqa: E731
        if rule and rule.group(1) == "stage_params":  # matched by output: its command carries the values
            jobs[f"stage_params {field('output')[0]}"] = {"rule": "stage_params", "outputs": set(field("output"))}
            continue
        if not rule or not command or command.group(1) == "None":
            continue
        wildcards = dict(kv.split("=", 1) for kv in field("wildcards"))
        jobs[normalised(command.group(1))] = {"rule": rule.group(1), "inputs": set(field("input")), "outputs": set(field("output")), "wildcards": wildcards}
    return jobs


def normalised(cmd: str) -> str:
    """The command without what differs on purpose: the params file a job reads (the Snakefile's hold
    only the job's keys) and the Snakefile's log redirection."""
    cmd = re.sub(r"--params \S+", "--params params.yaml", cmd)
    return re.sub(r" > \S+ 2>&1$", "", cmd)


def dvc_stages() -> dict[str, dict]:
    os.environ["DVC_NO_ANALYTICS"] = "1"
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            params = [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]
            deps = {dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)}
            outputs = {o.def_path for o in stage.outs}
            key = f"stage_params {next(iter(outputs))}" if stage.name.startswith("params_") else normalised(stage.cmd)
            stages[key] = {"name": stage.name, "outputs": outputs, "deps": deps, "params": params}
    return stages


@pytest.fixture(scope="module")
def both():
    return snakemake_jobs(), dvc_stages()


def test_same_commands(both):
    jobs, stages = both
    assert len(jobs) >= 7
    assert set(jobs) - set(stages) == {key for key in jobs if key.startswith("stage_params")} - set(stages)
    assert set(stages) <= set(jobs)
    for cmd, job in jobs.items():
        if job["rule"] != "stage_params":
            assert any(p.startswith(PARAMS_FILE) for p in job["inputs"]), f"{cmd}: its params file is no input"


def test_same_stage_names_and_outputs(both):
    jobs, stages = both
    for cmd, stage in stages.items():
        job = jobs[cmd]
        name = "stage_params" if stage["name"].startswith("params_") else stage["name"].split("@")[0]
        assert name == job["rule"], cmd
        assert stage["outputs"] == job["outputs"], cmd


def test_same_params_keys(both):
    """DVC lists a stage's keys, or (where they depend on the params) reads the job's params file, whose
    own stage lists the sections holding those keys."""
    jobs, stages = both
    by_output = {next(iter(stage["outputs"])): stage for stage in stages.values() if stage["name"].startswith("params_")}
    for cmd, job in jobs.items():
        if job["rule"] == "stage_params" or cmd not in stages:
            continue
        keys = stage_keys(job["rule"], PARAMS, **job["wildcards"])
        params_file = next(p for p in job["inputs"] if p.startswith(PARAMS_FILE))
        if params_file in stages[cmd]["deps"]:
            tracked = by_output[params_file]["params"]
            assert all(any(k == t or k.startswith(t + ".") for t in tracked) for k in keys), cmd
            assert not stages[cmd]["params"], f"{cmd}: reads its params file, lists no keys"
        else:
            assert stages[cmd]["params"] == keys, cmd


def test_training_reads_only_its_own_model():
    keys = stage_keys("train", PARAMS, dataset="synthetic", run="bivrec_id")
    assert "model.bivrec" in keys and "variants.bivrec_id" in keys and "model.dim" in keys
    assert not any(k in ("model", "variants") or k.startswith(("model.sasrec", "variants.bivrec_mm")) for k in keys)
    assert "model.bivrec" not in stage_keys("train", PARAMS, dataset="synthetic", run="sasrec")


def test_same_data_and_code_deps(both):
    jobs, stages = both
    for cmd, job in jobs.items():
        if job["rule"] == "stage_params" or cmd not in stages:
            continue
        stage, code = stages[cmd], set(STAGE_CODE[job["rule"]])
        assert code <= stage["deps"], f"{cmd}: dvc.yaml must list the stage's code {sorted(code)}"
        data_deps = stage["deps"] - code
        covered = lambda path: any(path == d or path.startswith(d + "/") for d in data_deps)  # noqa: E731
        # a params file DVC does not read stands for the keys it lists (test_same_params_keys)
        inputs = {p for p in job["inputs"] if not (p.startswith(PARAMS_FILE) and stage["params"])}
        assert all(covered(p) for p in inputs), f"{cmd}: a Snakemake input is not a DVC dep"
        assert all(
            any(p == d or p.startswith(d + "/") for p in job["inputs"]) for d in data_deps
        ), f"{cmd}: a DVC dep is not a Snakemake input"
