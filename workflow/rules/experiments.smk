# The paper's experiments beyond the main table. They reuse trained runs, their test metrics and the
# evaluator; the runs an experiment adds (ablation settings, sensitivity points, transfer) are trained
# with the one training loop into models/experiments/<dataset>/<experiment>/, experiments.workers at a
# time with train.threads CPU threads each.

EXPERIMENT_THREADS = EXPERIMENTS["workers"] * TRAIN_THREADS
EXPERIMENT_GPUS = gpus(config["train"]["device"])


rule cold_start:
    input:
        params=job_params("cold_start"),
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/cold_start.json",
    log:
        log_file("cold_start"),
    benchmark:
        benchmark_file("cold_start")
    params:
        code=CODE_DIGESTS["cold_start"],
        models=parent("models"),
        features=parent("image"),
    threads: TRAIN_THREADS
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec cold_start --params {input.params} --models {params.models} --data {input.data}"
        " --features {params.features} --out {output} > {log} 2>&1"


rule ablation:
    input:
        params=job_params("ablation"),
        metrics=main_metrics(reused_runs("ablation", EXPERIMENTS["ablation"]["variants"])),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        result="results/experiments/{dataset}/ablation.json",
        models=directory("models/experiments/{dataset}/ablation"),
    log:
        log_file("ablation"),
    benchmark:
        benchmark_file("ablation")
    params:
        code=CODE_DIGESTS["ablation"],
        features=parent("image"),
        metrics=parent("metrics"),
    threads: EXPERIMENT_THREADS
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec ablation --params {input.params} --data {input.data} --features {params.features}"
        " --metrics {params.metrics} --models-out {output.models} --out {output.result} > {log} 2>&1"


rule sensitivity:
    input:
        params=job_params("sensitivity"),
        metrics=main_metrics(reused_runs("sensitivity", sensitivity_points(config))),
        ablation="results/experiments/{dataset}/ablation.json",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        result="results/experiments/{dataset}/sensitivity.json",
        models=directory("models/experiments/{dataset}/sensitivity"),
    log:
        log_file("sensitivity"),
    benchmark:
        benchmark_file("sensitivity")
    params:
        code=CODE_DIGESTS["sensitivity"],
        features=parent("image"),
        metrics=parent("metrics"),
    threads: EXPERIMENT_THREADS
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec sensitivity --params {input.params} --data {input.data} --features {params.features}"
        " --metrics {params.metrics} --models-out {output.models} --out {output.result} --ablation {input.ablation} > {log} 2>&1"


rule transfer:
    input:
        params=job_params("transfer"),
        source=f"models/{{dataset}}/{EXPERIMENTS['transfer']['run']}",
        data=f"data/{TRANSFER_TARGET}",
        image=f"features/{TRANSFER_TARGET}/image",
        text=f"features/{TRANSFER_TARGET}/text",
    output:
        result="results/experiments/{dataset}/transfer.json",
        models=directory("models/experiments/{dataset}/transfer"),
    log:
        log_file("transfer"),
    benchmark:
        benchmark_file("transfer")
    params:
        code=CODE_DIGESTS["transfer"],
        models=parent("source"),
        features=parent("image"),
    threads: EXPERIMENT_THREADS
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec transfer --params {input.params} --source {wildcards.dataset} --models {params.models}"
        " --data {input.data} --features {params.features} --models-out {output.models} --out {output.result} > {log} 2>&1"


rule noise:
    input:
        params=job_params("noise"),
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/noise.json",
    log:
        log_file("noise"),
    benchmark:
        benchmark_file("noise")
    params:
        code=CODE_DIGESTS["noise"],
        models=parent("models"),
        features=parent("image"),
    threads: TRAIN_THREADS
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec noise --params {input.params} --models {params.models} --data {input.data}"
        " --features {params.features} --out {output} > {log} 2>&1"


rule efficiency:
    input:
        params=job_params("efficiency"),
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        metrics=expand("results/metrics/{{dataset}}/{run}.json", run=config["runs"]),
    output:
        "results/experiments/{dataset}/efficiency.json",
    log:
        log_file("efficiency"),
    benchmark:
        benchmark_file("efficiency")
    params:
        code=CODE_DIGESTS["efficiency"],
        models=parent("models"),
        metrics=parent("metrics"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "python -m bivrec efficiency --params {input.params} --models {params.models}"
        " --metrics {params.metrics} --out {output} > {log} 2>&1"


rule interests:
    input:
        params=job_params("interests"),
        model=f"models/{{dataset}}/{EXPERIMENTS['interests']['run']}",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/interests.json",
    log:
        log_file("interests"),
    benchmark:
        benchmark_file("interests")
    params:
        code=CODE_DIGESTS["interests"],
        features=parent("image"),
    threads: TRAIN_THREADS
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=EXPERIMENT_GPUS,
    shell:
        "python -m bivrec interests --params {input.params} --model {input.model} --data {input.data}"
        " --features {params.features} --out {output} > {log} 2>&1"
