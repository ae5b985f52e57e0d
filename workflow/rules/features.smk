rule extract_image_features:
    input:
        params=job_params("extract_image_features"),
        data="data/{dataset}",
        raw="raw/{dataset}",
    output:
        directory("features/{dataset}/image"),
    log:
        log_file("extract_image_features"),
    benchmark:
        benchmark_file("extract_image_features")
    params:
        code=CODE_DIGESTS["extract_image_features"],
    threads: feature_threads(config["features"]["image"], reserved=config["features"]["image"].get("num_workers", 2))
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=gpus(config["features"]["image"]["device"]),
    shell:
        "python -m bivrec extract_image_features --params {input.params} --data {input.data} --raw {input.raw} --out {output} > {log} 2>&1"


rule extract_text_features:
    input:
        params=job_params("extract_text_features"),
        data="data/{dataset}",
    output:
        directory("features/{dataset}/text"),
    log:
        log_file("extract_text_features"),
    benchmark:
        benchmark_file("extract_text_features")
    params:
        code=CODE_DIGESTS["extract_text_features"],
    threads: feature_threads(config["features"]["text"])
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=gpus(config["features"]["text"]["device"]),
    shell:
        "python -m bivrec extract_text_features --params {input.params} --data {input.data} --out {output} > {log} 2>&1"
