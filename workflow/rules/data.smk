rule download:
    input:
        params=job_params("download"),
    output:
        directory("raw/{dataset}"),
    log:
        log_file("download"),
    benchmark:
        benchmark_file("download")
    params:
        code=CODE_DIGESTS["download"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=0,
    shell:
        "python -m bivrec download --params {input.params} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule preprocess:
    input:
        params=job_params("preprocess"),
        raw="raw/{dataset}",
    output:
        directory("data/{dataset}"),
    log:
        log_file("preprocess"),
    benchmark:
        benchmark_file("preprocess")
    params:
        code=CODE_DIGESTS["preprocess"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=0,
    shell:
        "python -m bivrec preprocess --params {input.params} --dataset {wildcards.dataset} --raw {input.raw} --out {output} > {log} 2>&1"
