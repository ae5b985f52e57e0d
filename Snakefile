# BiVRec pipeline: `snakemake --cores all` reproduces every table and figure for `datasets` in params.yaml.
# Rules are thin: each calls one `python -m bivrec <stage>` command, the same command dvc.yaml runs.
# Reruns are driven by content, not mtimes (see workflow/profiles/default): each job reads its params
# from a file holding only the params.yaml values its stage reads (rule stage_params), and records a
# digest of its code, so DVC checkouts never make everything stale.
# Every job writes logs/<rule>/<job>.log (its output) and logs/<rule>/<job>.benchmark.tsv (run time,
# max RSS); every path a command reads or writes is a declared input or output (storage plugins work).

from snakemake.utils import min_version, validate

from bivrec.config import validate_params

min_version("8.0")

report: "workflow/report/workflow.rst"

configfile: "params.yaml"
validate(config, "workflow/schemas/params.schema.yaml")
validate_params(config, "params.yaml (with --config/--configfile overrides)")

wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    run="[A-Za-z0-9_]+",
    point="[0-9]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/params.smk"
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
