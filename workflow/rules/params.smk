# Each job reads its params from .bivrec/params/<stage>[/<dataset>[/<run>]].yaml, written here from the
# config in effect (params.yaml and --config overrides) with only the keys its stage reads
# (bivrec/stages.py). The file is rewritten only when those values change, and only then do the jobs
# that read it rerun. The values travel on the command line (JSON), so the job reads no hidden file; a
# local job: cheaper than a cluster job, and its output goes to storage like any other.

localrules: stage_params


rule stage_params:
    output:
        ".bivrec/params/{job}.yaml",
    log:
        "logs/stage_params/{job}.log",
    benchmark:
        "logs/stage_params/{job}.benchmark.tsv"
    params:
        values=lambda wildcards: job_values(wildcards.job),
        wildcards=lambda wildcards: job_arguments(wildcards.job),
        stage=lambda wildcards: job_stage(wildcards.job),
    wildcard_constraints:
        job="[A-Za-z0-9_/]+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "python -m bivrec params --stage {params.stage} {params.wildcards} --values {params.values} --out {output} > {log} 2>&1"
