rule train:
    input:
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        directory("models/{dataset}/{run}"),
    params:
        stage=stage_params("train"),
    # train.gpus > 1: the command starts itself once per GPU under torchrun (DDP), each process with one
    # thread and its own GPU; `--resources gpu=N` caps the GPUs the jobs running at once ask for
    threads: config["train"].get("gpus", 1)
    resources:
        gpu=lambda wildcards: config["train"].get("gpus", 1) if config["train"]["device"] != "cpu" else 0,
    shell:
        "python -m bivrec train --params {PARAMS} --run {wildcards.run} --data {input.data}"
        " --features features/{wildcards.dataset} --out {output}"


rule evaluate:
    input:
        model="models/{dataset}/{run}",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        metrics="results/metrics/{dataset}/{run}.json",
        per_user="results/metrics/{dataset}/{run}.per_user.parquet",
    params:
        stage=stage_params("evaluate"),
    threads: 1
    shell:
        "python -m bivrec evaluate --params {PARAMS} --model {input.model} --data {input.data}"
        " --features features/{wildcards.dataset} --out {output.metrics} --per-user {output.per_user}"
