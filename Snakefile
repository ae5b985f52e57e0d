# BiVRec pipeline: `snakemake --cores all` reproduces every table and figure for `datasets` in params.yaml.
# Rules are thin: each calls one `python -m bivrec <stage>` command, the same command dvc.yaml runs.
# Reruns are driven by content, not mtimes (see workflow/profiles/default): each rule records the
# params.yaml keys it reads and a digest of its code, so DVC checkouts never make everything stale.

import hashlib
from pathlib import Path

import yaml
from snakemake.utils import min_version, validate

from bivrec.config import select, validate_params
from bivrec.stages import STAGE_CODE, code_digest, stage_keys

min_version("8.0")

report: "workflow/report/workflow.rst"

configfile: "params.yaml"
validate(config, "workflow/schemas/params.schema.yaml")
validate_params(config, "params.yaml (with --config/--configfile overrides)")

wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    run="[A-Za-z0-9_]+",


def _effective_params_file():
    """The config in effect (params.yaml plus command-line overrides) as a file the CLI can read.

    Content-addressed, so it never changes for the same config and never triggers a rerun itself.
    """
    text = yaml.safe_dump(config, sort_keys=True)
    path = Path(".bivrec") / "config" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


PARAMS = _effective_params_file()


CODE_DIGESTS = {stage: code_digest(stage) for stage in STAGE_CODE}  # hashed once, not once per job


def stage_params(stage):
    """Rule params: the exact params.yaml values and code the stage reads (its rerun triggers)."""
    return lambda wildcards: {
        "params": select(config, stage_keys(stage, **dict(wildcards.items()))),
        "code": CODE_DIGESTS[stage],
    }


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/transfer_target.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
