# The paper's experiments beyond the main table. They reuse trained runs and the evaluator.


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
