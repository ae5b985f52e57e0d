rule download:
    output:
        directory("raw/{dataset}"),
    params:
        stage=stage_params("download"),
    shell:
        "python -m bivrec download --params {PARAMS} --dataset {wildcards.dataset} --out {output}"


rule preprocess:
    input:
        "raw/{dataset}",
    output:
        directory("data/{dataset}"),
    params:
        stage=stage_params("preprocess"),
    shell:
        "python -m bivrec preprocess --params {PARAMS} --dataset {wildcards.dataset} --raw {input} --out {output}"
