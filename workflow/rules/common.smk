# Helpers of the rules: each job's params file, code digests, logs, benchmarks, threads and resources.

import json
import os
import re
import shlex
from pathlib import Path

from bivrec.config import select
from bivrec.experiments.plan import plan as settings_plan, points as sensitivity_points
from bivrec.stages import STAGE_CODE, STAGE_WILDCARDS, code_digest, params_file, stage_keys

CODE_DIGESTS = {stage: code_digest(stage) for stage in STAGE_CODE}  # hashed once, not once per job
EXPERIMENTS = config["experiments"]
TRANSFER_TARGET = EXPERIMENTS["transfer"]["target"]
TRAIN_THREADS = config["train"]["threads"]


def job_params(stage):
    """The job's params file, an input written by the stage_params job from the config in effect."""
    return lambda wildcards: params_file(stage, **dict(wildcards.items()))


def job_path(folder, rule_name, suffix):
    """logs/<rule>/<wildcard values>.<suffix>: one log and one benchmark file per job."""
    names = STAGE_WILDCARDS.get(rule_name, ["dataset"])
    parts = [f"{{{name}}}" for name in names] or ["all"]  # a job without wildcards: the report
    return os.path.join(folder, rule_name, *parts) + suffix


def log_file(rule_name):
    return job_path("logs", rule_name, ".log")


def benchmark_file(rule_name):
    return job_path("logs", rule_name, ".benchmark.tsv")


def parent(name, levels=1):
    """A folder argument derived from a declared input or output (under a storage plugin the local copy
    lies elsewhere, so commands never name folders themselves)."""
    def folder(wildcards, input, output):
        files = {**dict(output.items()), **dict(input.items())}[name]
        path = Path(files if isinstance(files, str) else files[0])
        return str(path.parents[levels - 1])
    return folder


def gpus(device):
    """One GPU for a job whose params ask for CUDA or allow it (device auto), none for cpu."""
    return 1 if device != "cpu" else 0


def feature_threads(cfg, reserved=0):
    """CPU threads of a feature extraction: its params' thread count (auto: all cores given to Snakemake)."""
    return (workflow.cores if cfg.get("threads", "auto") == "auto" else int(cfg["threads"])) + reserved


def main_metrics(runs):
    """The test metrics files (summary and per-user values) of main runs, for every dataset wildcard."""
    files = [f"results/metrics/{{dataset}}/{run}{ext}" for run in dict.fromkeys(runs) for ext in (".json", ".per_user.parquet")]
    return lambda wildcards: [f.format(dataset=wildcards.dataset) for f in files]


def reused_runs(name, settings):
    """The experiment's base run and the main runs whose config equals one of its settings."""
    if name not in EXPERIMENTS["enabled"]:  # never scheduled; its base run need not be a main run
        return []
    base = EXPERIMENTS[name]["run"]
    return [base, *(run for run in settings_plan(config, base, settings).values() if run is not None)]


def job_stage(job):
    """The stage of the job whose params file is .bivrec/params/<job>.yaml (bivrec.stages.params_file)."""
    return job.split("/")[0]


def job_wildcards(job):
    stage, *values = job.split("/")
    return dict(zip(STAGE_WILDCARDS[stage], values))


def job_values(job):
    """The values (of the config in effect) the job reads, as one shell word of JSON."""
    stage = job_stage(job)
    return shlex.quote(json.dumps(select(config, stage_keys(stage, config, **job_wildcards(job))), sort_keys=True))


def job_arguments(job):
    return " ".join(f"--{name} {value}" for name, value in job_wildcards(job).items())
