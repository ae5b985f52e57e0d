"""Snakefile and dvc.yaml must describe the same pipeline: same stages, commands, outputs, params, code."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bivrec.stages import STAGE_CODE, stage_keys

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
        if not rule or not command or command.group(1) == "None":
            continue
        field = lambda name: [p for p in (re.search(rf"^\s+{name}: (.+)$", block, re.M) or [None, ""])[1].split(", ") if p]  # noqa: E731
        wildcards = dict(kv.split("=", 1) for kv in field("wildcards"))
        cmd = re.sub(r"--params \S+", "--params params.yaml", command.group(1))
        jobs[cmd] = {"rule": rule.group(1), "inputs": set(field("input")), "outputs": set(field("output")), "wildcards": wildcards}
    return jobs


def dvc_stages() -> dict[str, dict]:
    os.environ["DVC_NO_ANALYTICS"] = "1"
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            params = [key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params]
            deps = {dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)}
            stages[stage.cmd] = {"name": stage.name, "outputs": {o.def_path for o in stage.outs}, "deps": deps, "params": params}
    return stages


@pytest.fixture(scope="module")
def both():
    return snakemake_jobs(), dvc_stages()


def test_same_commands(both):
    jobs, stages = both
    assert len(jobs) >= 7
    assert set(jobs) == set(stages)


def test_same_stage_names_and_outputs(both):
    jobs, stages = both
    for cmd, job in jobs.items():
        stage = stages[cmd]
        assert stage["name"].split("@")[0] == job["rule"], cmd
        assert stage["outputs"] == job["outputs"], cmd


def test_same_params_keys(both):
    jobs, stages = both
    for cmd, job in jobs.items():
        assert stages[cmd]["params"] == stage_keys(job["rule"], **job["wildcards"]), cmd


def test_same_data_and_code_deps(both):
    jobs, stages = both
    for cmd, job in jobs.items():
        stage, code = stages[cmd], set(STAGE_CODE[job["rule"]])
        assert code <= stage["deps"], f"{cmd}: dvc.yaml must list the stage's code {sorted(code)}"
        data_deps = stage["deps"] - code
        covered = lambda path: any(path == d or path.startswith(d + "/") for d in data_deps)  # noqa: E731
        assert all(covered(p) for p in job["inputs"]), f"{cmd}: a Snakemake input is not a DVC dep"
        assert all(
            any(p == d or p.startswith(d + "/") for p in job["inputs"]) for d in data_deps
        ), f"{cmd}: a DVC dep is not a Snakemake input"
