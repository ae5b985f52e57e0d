# The paper's experiments beyond the main table. They reuse trained runs, their test metrics and the
# evaluator; the runs an experiment adds (ablation settings, sensitivity points, transfer) are trained
# with the one training loop into models/experiments/<dataset>/<experiment>/.

from bivrec.experiments.plan import plan as settings_plan, points as sensitivity_points

EXPERIMENTS = config["experiments"]
TRANSFER_TARGET = EXPERIMENTS["transfer"]["target"]


def main_metrics(runs):
    """The test metrics files (summary and per-user values) of main runs, for every dataset wildcard."""
    files = [f"results/metrics/{{dataset}}/{run}{ext}" for run in dict.fromkeys(runs) for ext in (".json", ".per_user.parquet")]
    return lambda wildcards: [f.format(dataset=wildcards.dataset) for f in files]


def reused_runs(name, settings):
    """The experiment's base run and the main runs whose config equals one of its settings."""
    base = EXPERIMENTS[name]["run"]
    return [base, *(run for run in settings_plan(config, base, settings).values() if run is not None)]


rule cold_start:
    input:
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/cold_start.json",
    params:
        stage=stage_params("cold_start"),
    shell:
        "python -m bivrec cold_start --params {PARAMS} --models models/{wildcards.dataset} --data {input.data}"
        " --features features/{wildcards.dataset} --out {output}"


rule ablation:
    input:
        metrics=main_metrics(reused_runs("ablation", EXPERIMENTS["ablation"]["variants"])),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        result="results/experiments/{dataset}/ablation.json",
        models=directory("models/experiments/{dataset}/ablation"),
    params:
        stage=stage_params("ablation"),
    threads: EXPERIMENTS["workers"]
    shell:
        "python -m bivrec ablation --params {PARAMS} --data {input.data} --features features/{wildcards.dataset}"
        " --metrics results/metrics/{wildcards.dataset} --models-out {output.models} --out {output.result}"


rule sensitivity:
    input:
        metrics=main_metrics(reused_runs("sensitivity", sensitivity_points(config))),
        ablation="results/experiments/{dataset}/ablation.json",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        result="results/experiments/{dataset}/sensitivity.json",
        models=directory("models/experiments/{dataset}/sensitivity"),
    params:
        stage=stage_params("sensitivity"),
    threads: EXPERIMENTS["workers"]
    shell:
        "python -m bivrec sensitivity --params {PARAMS} --data {input.data} --features features/{wildcards.dataset}"
        " --metrics results/metrics/{wildcards.dataset} --models-out {output.models} --out {output.result} --ablation {input.ablation}"


rule transfer:
    input:
        source=f"models/{{dataset}}/{EXPERIMENTS['transfer']['run']}",
        data=f"data/{TRANSFER_TARGET}",
        image=f"features/{TRANSFER_TARGET}/image",
        text=f"features/{TRANSFER_TARGET}/text",
    output:
        result="results/experiments/{dataset}/transfer.json",
        models=directory("models/experiments/{dataset}/transfer"),
    params:
        stage=stage_params("transfer"),
    threads: EXPERIMENTS["workers"]
    shell:
        "python -m bivrec transfer --params {PARAMS} --source {wildcards.dataset} --models models/{wildcards.dataset}"
        " --data {input.data} --features features/{TRANSFER_TARGET} --models-out {output.models} --out {output.result}"


rule noise:
    input:
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/noise.json",
    params:
        stage=stage_params("noise"),
    shell:
        "python -m bivrec noise --params {PARAMS} --models models/{wildcards.dataset} --data {input.data}"
        " --features features/{wildcards.dataset} --out {output}"


rule efficiency:
    input:
        models=expand("models/{{dataset}}/{run}", run=config["runs"]),
        metrics=expand("results/metrics/{{dataset}}/{run}.json", run=config["runs"]),
    output:
        "results/experiments/{dataset}/efficiency.json",
    params:
        stage=stage_params("efficiency"),
    shell:
        "python -m bivrec efficiency --params {PARAMS} --models models/{wildcards.dataset}"
        " --metrics results/metrics/{wildcards.dataset} --out {output}"


rule interests:
    input:
        model=f"models/{{dataset}}/{EXPERIMENTS['interests']['run']}",
        data="data/{dataset}",
        image="features/{dataset}/image",
        text="features/{dataset}/text",
    output:
        "results/experiments/{dataset}/interests.json",
    params:
        stage=stage_params("interests"),
    shell:
        "python -m bivrec interests --params {PARAMS} --model {input.model} --data {input.data}"
        " --features features/{wildcards.dataset} --out {output}"
