# The transfer experiment's target dataset (experiments.transfer.target, never one of `datasets`) goes
# through the same data stages under their own rule names (<stage>_target), so that dvc.yaml, which can
# only loop over `datasets`, lists the same jobs (bivrec.stages.STAGE_ALIASES).

import re

TARGET_DATASET = re.escape(config["experiments"]["transfer"]["target"])


use rule download as download_target with:
    output:
        directory(f"raw/{{dataset,{TARGET_DATASET}}}"),
    params:
        stage=stage_params("download_target"),


use rule preprocess as preprocess_target with:
    output:
        directory(f"data/{{dataset,{TARGET_DATASET}}}"),
    params:
        stage=stage_params("preprocess_target"),


use rule extract_image_features as extract_image_features_target with:
    output:
        directory(f"features/{{dataset,{TARGET_DATASET}}}/image"),
    params:
        stage=stage_params("extract_image_features_target"),


use rule extract_text_features as extract_text_features_target with:
    output:
        directory(f"features/{{dataset,{TARGET_DATASET}}}/text"),
    params:
        stage=stage_params("extract_text_features_target"),


ruleorder: download_target > download
ruleorder: preprocess_target > preprocess
ruleorder: extract_image_features_target > extract_image_features
ruleorder: extract_text_features_target > extract_text_features
