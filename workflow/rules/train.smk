rule train:
    input:
        params=job_params("train"),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        directory("models/{dataset}/{run}"),
    log:
        log_file("train"),
    benchmark:
        benchmark_file("train")
    params:
        code=CODE_DIGESTS["train"],
        features=parent("image"),
    # train.gpus > 1: the command starts itself once per GPU under torchrun (DDP), each process with
    # train.threads threads and its own GPU; `--resources gpu=N` caps the GPUs the jobs running at once ask for
    threads: TRAIN_THREADS * config["train"].get("gpus", 1)
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=gpus(config["train"]["device"]) * config["train"].get("gpus", 1),
    shell:
        "python -m bivrec train --params {input.params} --run {wildcards.run} --data {input.data}"
        " --features {params.features} --out {output} > {log} 2>&1"


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
