# The transfer experiment's target dataset (experiments.transfer.target, never one of `datasets`) goes
# through the same data stages under their own rule names (<stage>_target), so that dvc.yaml, which can
# only loop over `datasets`, lists the same jobs (bivrec.stages.STAGE_ALIASES).

TARGET_DATASET = re.escape(TRANSFER_TARGET)


use rule download as download_target with:
    output:
        directory(f"raw/{{dataset,{TARGET_DATASET}}}"),
    input:
        params=job_params("download_target"),
    log:
        log_file("download_target"),
    benchmark:
        benchmark_file("download_target")
    params:
        code=CODE_DIGESTS["download_target"],


use rule preprocess as preprocess_target with:
    output:
        directory(f"data/{{dataset,{TARGET_DATASET}}}"),
    input:
        params=job_params("preprocess_target"),
        raw="raw/{dataset}",
    log:
        log_file("preprocess_target"),
    benchmark:
        benchmark_file("preprocess_target")
    params:
        code=CODE_DIGESTS["preprocess_target"],


use rule extract_image_features as extract_image_features_target with:
    output:
        directory(f"features/{{dataset,{TARGET_DATASET}}}/image"),
    input:
        params=job_params("extract_image_features_target"),
        data="data/{dataset}",
        raw="raw/{dataset}",
    log:
        log_file("extract_image_features_target"),
    benchmark:
        benchmark_file("extract_image_features_target")
    params:
        code=CODE_DIGESTS["extract_image_features_target"],


use rule extract_text_features as extract_text_features_target with:
    output:
        directory(f"features/{{dataset,{TARGET_DATASET}}}/text"),
    input:
        params=job_params("extract_text_features_target"),
        data="data/{dataset}",
    log:
        log_file("extract_text_features_target"),
    benchmark:
        benchmark_file("extract_text_features_target")
    params:
        code=CODE_DIGESTS["extract_text_features_target"],


ruleorder: download_target > download
ruleorder: preprocess_target > preprocess
ruleorder: extract_image_features_target > extract_image_features
ruleorder: extract_text_features_target > extract_text_features
