"""Which params.yaml keys and which package code each pipeline stage reads.

The one list both orchestrators agree on: the CLI hands a stage only these keys, the Snakefile writes
exactly these values into the job's params file (so changing them reruns the job), and dvc.yaml lists
the same keys per stage (checked by tests/test_workflow_consistency.py).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bivrec.atomic import write_text
from bivrec.checksums import files_sha256

#: ``{dataset}``/``{run}`` stand for the job's wildcards. Two entries depend on the params themselves:
#: ``<run model>`` is what one run's model reads (the shared ``model`` keys, its model's section and,
#: for a variant, its ``variants`` entry), so editing ``model.sasrec`` retrains only the SASRec runs;
#: ``<family of experiments.X>`` is that for the run named by ``experiments.X.run`` plus every variant of
#: the same model (an experiment compares its settings with those main runs to reuse them).
RUN_MODEL = "<run model>"
FAMILY = "<family of experiments.{}>"

STAGE_PARAMS: dict[str, list[str]] = {
    # seeds by role: `seed` trains, `split.seed` splits users, a synthetic entry's `generator_seed`
    # generates it and `features.image.seed` initialises an unpretrained encoder, so a new training
    # seed never re-splits the data or re-extracts features
    "download": ["data_root", "data.{dataset}"],
    "preprocess": ["data.{dataset}", "split"],
    "extract_image_features": ["features.image"],
    "extract_text_features": ["features.text"],
    "train": ["seed", RUN_MODEL, "train", "eval"],
    # a grid point reads the grid only: naming other tuned runs or datasets does not retrain it
    "tune_point": ["seed", RUN_MODEL, "train", "eval", "tune.grid"],
    "tune_select": ["eval.select_metric", "tune.grid"],
    "evaluate": ["train.threads", "eval"],
    "cold_start": ["runs", "train.threads", "eval", "experiments.cold_start"],
    # experiments that train extra runs read everything training reads
    **{
        name: ["seed", FAMILY.format(name), "runs", "train", "eval", "experiments.workers", f"experiments.{name}"]
        for name in ("ablation", "sensitivity", "transfer")
    },
    "noise": ["runs", "train.threads", "eval", "experiments.noise"],
    "efficiency": ["runs"],
    "interests": ["train.threads", "experiments.interests"],
    "report": ["datasets", "runs", "eval.select_metric", "experiments.enabled", "tune", "report"],
}

#: Stages that run another stage's command for the transfer experiment's target dataset (which need not
#: be in ``datasets``): same keys, same code, their own name so that dvc.yaml can list them.
STAGE_ALIASES: dict[str, str] = {
    f"{stage}_target": stage for stage in ("download", "preprocess", "extract_image_features", "extract_text_features")
}
STAGE_PARAMS.update({alias: STAGE_PARAMS[stage] for alias, stage in STAGE_ALIASES.items()})

#: The wildcards of a stage's jobs, in the order they name the job's params file.
STAGE_WILDCARDS: dict[str, list[str]] = {
    stage: (["dataset", "run"] if stage in ("train", "evaluate", "tune_select") else ["dataset", "run", "point"]
            if stage == "tune_point" else [] if stage == "report" else ["dataset"])
    for stage in STAGE_PARAMS
}

#: What every command runs before its stage's own code (the CLI, params loading, atomic outputs).
_COMMON = ["bivrec/__init__.py", "bivrec/__main__.py", "bivrec/cli.py", "bivrec/config.py", "bivrec/stages.py",
           "bivrec/atomic.py", "bivrec/checksums.py", "bivrec/errors.py"]
_TRAINING = ["bivrec/models", "bivrec/train.py", "bivrec/runs.py", "bivrec/evaluate.py", "bivrec/device.py",
             "bivrec/distributed.py", "bivrec/data/__init__.py", "bivrec/data/dataset.py",
             "bivrec/features/__init__.py", "bivrec/features/store.py"]

#: Package code each stage runs (every module it imports: tests/test_config.py checks the import
#: closure): DVC hashes these as deps, the Snakefile records their digest as a rule param, so editing a
#: stage's code reruns that stage (and what follows) under both tools.
STAGE_CODE: dict[str, list[str]] = {
    "download": [*_COMMON, "bivrec/data"],
    "preprocess": [*_COMMON, "bivrec/data"],
    "extract_image_features": [*_COMMON, "bivrec/features", "bivrec/device.py", "bivrec/data/__init__.py", "bivrec/data/dataset.py"],
    "extract_text_features": [*_COMMON, "bivrec/features", "bivrec/device.py", "bivrec/data/__init__.py", "bivrec/data/dataset.py"],
    "train": [*_COMMON, *_TRAINING, "bivrec/tune.py"],
    "tune_point": [*_COMMON, *_TRAINING, "bivrec/tune.py"],
    "tune_select": [*_COMMON, "bivrec/tune.py"],
    "evaluate": [*_COMMON, *_TRAINING],
    **{stage: [*_COMMON, *_TRAINING, "bivrec/experiments"]
       for stage in ("cold_start", "ablation", "sensitivity", "transfer", "noise", "interests")},
    "efficiency": [*_COMMON, *_TRAINING, "bivrec/experiments"],
    "report": [*_COMMON, *_TRAINING, "bivrec/report", "bivrec/tune.py"],
}
STAGE_CODE.update({alias: STAGE_CODE[stage] for alias, stage in STAGE_ALIASES.items()})
# a file inside a listed folder is covered by the folder (DVC hashes each path once)
STAGE_CODE = {
    stage: [e for e in entries if not any(e != d and e.startswith(d + "/") for d in entries)]
    for stage, entries in STAGE_CODE.items()
}


def run_model_keys(params: dict, run: str, family: bool = False) -> list[str]:
    """The ``model``/``variants`` keys one run's model config is made of (``config.resolve_run``);
    ``family``: also every variant of the same model."""
    variants = params.get("variants", {})
    model_name = variants.get(run, {}).get("model", run)
    shared = [f"model.{key}" for key, value in params["model"].items() if not isinstance(value, dict)]
    own = [f"model.{model_name}"] if isinstance(params["model"].get(model_name), dict) else []
    related = [name for name, variant in variants.items() if (variant["model"] == model_name if family else name == run)]
    return [*shared, *own, *(f"variants.{name}" for name in related)]


def stage_keys(stage: str, params: dict | None = None, **wildcards: str) -> list[str]:
    """The dotted params keys a job of ``stage`` reads; ``params`` is needed by stages that train."""
    keys = []
    for key in STAGE_PARAMS[stage]:
        if key == RUN_MODEL or key.startswith(FAMILY.split("{")[0]):
            if params is None:
                raise ValueError(f"stage {stage}: its keys depend on the params; pass them")
            name = key[len(FAMILY.split("{")[0]):-1] if key != RUN_MODEL else None
            run = wildcards["run"] if name is None else params["experiments"][name]["run"]
            keys += run_model_keys(params, run, family=name is not None)
        else:
            keys.append(key.format(**wildcards))
    return keys


def params_file(stage: str, **wildcards: str) -> str:
    """Where a job's params file lies: ``.bivrec/params/<stage>[/<dataset>[/<run>]].yaml``."""
    parts = [stage, *(wildcards[name] for name in STAGE_WILDCARDS[stage])]
    return ".bivrec/params/" + "/".join(parts) + ".yaml"


def write_stage_params(selected: dict, stage: str, out: str | Path, **wildcards: str) -> None:
    """A job's params file: its stage, wildcards and the values its stage reads (``stage_keys``), nothing
    else (atomic, the same bytes for the same values)."""
    text = yaml.safe_dump({"stage": stage, "job": wildcards, "params": selected}, sort_keys=True)
    write_text(out, f"# the params.yaml values the {stage} stage reads (bivrec/stages.py)\n{text}")


def code_digest(stage: str, root: str | Path = ".") -> str:
    """Content hash of the stage's code (Python sources only, names and contents)."""
    root = Path(root)
    files = []
    for entry in STAGE_CODE[stage]:
        path = root / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files_sha256(files, root=root)[:16]


def read_stage_params(path: str | Path, stage: str, **wildcards: str) -> dict:
    """What a command of ``stage`` reads: the job's params file (already sliced, written by
    ``write_stage_params``) or a whole params.yaml (validated, then sliced)."""
    from bivrec.config import ParamsError, load_params, select

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        loaded = None  # load_params below reports it
    if isinstance(loaded, dict) and set(loaded) == {"stage", "job", "params"}:
        if STAGE_ALIASES.get(loaded["stage"], loaded["stage"]) != stage:
            raise ParamsError(f"{path}: holds the params of the {loaded['stage']} stage, not of {stage}")
        wrong = {k: v for k, v in wildcards.items() if k in loaded["job"] and loaded["job"][k] != v}
        if wrong:
            raise ParamsError(f"{path}: written for {loaded['job']}, not for {wrong}")
        return loaded["params"]
    params = load_params(path)
    return select(params, stage_keys(stage, params, **wildcards))
