"""Which params.yaml keys each pipeline stage reads.

The one list both orchestrators agree on: the CLI hands a stage only these keys, the Snakefile
records exactly these values as the rule's params (so changing them reruns the rule), and dvc.yaml
lists the same keys per stage (checked by tests/test_workflow_consistency.py).
"""

from __future__ import annotations

from pathlib import Path

from bivrec.checksums import files_sha256

STAGE_PARAMS: dict[str, list[str]] = {
    "download": ["seed", "data_root", "data.{dataset}"],
    "preprocess": ["seed", "data.{dataset}", "split"],
    "extract_image_features": ["seed", "features.image"],
    "extract_text_features": ["features.text"],
    "train": ["seed", "model", "variants", "train", "eval"],
    "evaluate": ["eval"],
    "cold_start": ["runs", "eval", "experiments.cold_start"],
    # experiments that train extra runs read everything training reads
    "ablation": ["seed", "model", "variants", "runs", "train", "eval", "experiments.workers", "experiments.ablation"],
    "sensitivity": ["seed", "model", "variants", "runs", "train", "eval", "experiments.workers", "experiments.sensitivity"],
    "transfer": ["seed", "model", "variants", "runs", "train", "eval", "experiments.workers", "experiments.transfer"],
    "noise": ["runs", "eval", "experiments.noise"],
    "efficiency": ["runs"],
    "interests": ["experiments.interests"],
    "report": ["datasets", "runs", "eval.select_metric", "report"],
}

#: Stages that run another stage's command for the transfer experiment's target dataset (which need not
#: be in ``datasets``): same keys, same code, their own name so that dvc.yaml can list them.
STAGE_ALIASES: dict[str, str] = {
    f"{stage}_target": stage for stage in ("download", "preprocess", "extract_image_features", "extract_text_features")
}
STAGE_PARAMS.update({alias: STAGE_PARAMS[stage] for alias, stage in STAGE_ALIASES.items()})


#: Package code each stage runs: DVC hashes these as deps, the Snakefile records their digest as a
#: rule param, so editing a stage's code reruns that stage (and what follows) under both tools.
STAGE_CODE: dict[str, list[str]] = {
    "download": ["bivrec/data"],
    "preprocess": ["bivrec/data"],
    "extract_image_features": ["bivrec/features"],
    "extract_text_features": ["bivrec/features"],
    "train": ["bivrec/models", "bivrec/train.py", "bivrec/runs.py", "bivrec/evaluate.py"],
    "evaluate": ["bivrec/models", "bivrec/runs.py", "bivrec/evaluate.py"],
    "cold_start": ["bivrec/experiments", "bivrec/models", "bivrec/runs.py", "bivrec/evaluate.py"],
    **{
        stage: ["bivrec/experiments", "bivrec/models", "bivrec/train.py", "bivrec/runs.py", "bivrec/evaluate.py"]
        for stage in ("ablation", "sensitivity", "transfer")
    },
    "noise": ["bivrec/experiments", "bivrec/models", "bivrec/runs.py", "bivrec/evaluate.py"],
    "efficiency": ["bivrec/experiments"],
    "interests": ["bivrec/experiments", "bivrec/models", "bivrec/runs.py"],
    "report": ["bivrec/report"],
}
STAGE_CODE.update({alias: STAGE_CODE[stage] for alias, stage in STAGE_ALIASES.items()})


def stage_keys(stage: str, **wildcards: str) -> list[str]:
    return [key.format(**wildcards) for key in STAGE_PARAMS[stage]]


def code_digest(stage: str, root: str | Path = ".") -> str:
    """Content hash of the stage's code (Python sources only, names and contents)."""
    root = Path(root)
    files = []
    for entry in STAGE_CODE[stage]:
        path = root / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files_sha256(files, root=root)[:16]
