rule extract_image_features:
    input:
        data="data/{dataset}",
        raw="raw/{dataset}",
    output:
        directory("features/{dataset}/image"),
    params:
        stage=stage_params("extract_image_features"),
    threads: 2
    shell:
        "python -m bivrec extract_image_features --params {PARAMS} --data {input.data} --raw {input.raw} --out {output}"


rule extract_text_features:
    input:
        data="data/{dataset}",
    output:
        directory("features/{dataset}/text"),
    params:
        stage=stage_params("extract_text_features"),
    threads: 2
    shell:
        "python -m bivrec extract_text_features --params {PARAMS} --data {input.data} --out {output}"
