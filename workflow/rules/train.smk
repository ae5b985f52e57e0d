from bivrec.tune import grid_points, is_tuned

N_TUNE_POINTS = len(grid_points(config["tune"]))


def tuning_choice(wildcards):
    """A tuned run trains with the settings its grid search picked on validation."""
    return [f"results/experiments/{wildcards.dataset}/tune/{wildcards.run}.json"] if is_tuned(config, wildcards.dataset, wildcards.run) else []


rule tune_point:
    input:
        params=job_params("tune_point"),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        directory("models/tune/{dataset}/{run}/p{point}"),
    log:
        log_file("tune_point"),
    benchmark:
        benchmark_file("tune_point")
    params:
        code=CODE_DIGESTS["tune_point"],
        features=parent("image"),
    wildcard_constraints:
        point="[0-9]+",
    threads: TRAIN_THREADS
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=gpus(config["train"]["device"]),
    shell:
        "python -m bivrec tune_point --params {input.params} --run {wildcards.run} --point {wildcards.point}"
        " --data {input.data} --features {params.features} --out {output} > {log} 2>&1"


rule tune_select:
    input:
        params=job_params("tune_select"),
        points=expand("models/tune/{{dataset}}/{{run}}/p{point}", point=range(N_TUNE_POINTS)),
    output:
        "results/experiments/{dataset}/tune/{run}.json",
    log:
        log_file("tune_select"),
    benchmark:
        benchmark_file("tune_select")
    params:
        code=CODE_DIGESTS["tune_select"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "python -m bivrec tune_select --params {input.params} --run {wildcards.run} --points {input.points}"
        " --out {output} > {log} 2>&1"


rule train:
    input:
        params=job_params("train"),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
        settings=tuning_choice,
    output:
        directory("models/{dataset}/{run}"),
    log:
        log_file("train"),
    benchmark:
        benchmark_file("train")
    params:
        code=CODE_DIGESTS["train"],
        features=parent("image"),
        settings=lambda wildcards, input: f" --settings {input.settings}" if input.settings else "",
    # train.gpus > 1: the command starts itself once per GPU under torchrun (DDP), each process with
    # train.threads threads and its own GPU; `--resources gpu=N` caps the GPUs the jobs running at once ask for
    threads: TRAIN_THREADS * config["train"].get("gpus", 1)
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=gpus(config["train"]["device"]) * config["train"].get("gpus", 1),
    shell:
        "python -m bivrec train --params {input.params} --run {wildcards.run} --data {input.data}"
        " --features {params.features} --out {output}{params.settings} > {log} 2>&1"


rule evaluate:
    input:
        params=job_params("evaluate"),
        model="models/{dataset}/{run}",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        metrics="results/metrics/{dataset}/{run}.json",
        per_user="results/metrics/{dataset}/{run}.per_user.parquet",
    log:
        log_file("evaluate"),
    benchmark:
        benchmark_file("evaluate")
    params:
        code=CODE_DIGESTS["evaluate"],
        features=parent("image"),
    threads: TRAIN_THREADS
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=gpus(config["train"]["device"]),
    shell:
        "python -m bivrec evaluate --params {input.params} --model {input.model} --data {input.data}"
        " --features {params.features} --out {output.metrics} --per-user {output.per_user} > {log} 2>&1"
