"""One command line for every pipeline stage: ``python -m bivrec <stage> --params params.yaml ...``.

Snakemake rules and dvc.yaml stages both call these commands. Each stage receives only the
params.yaml keys listed for it in ``bivrec.stages`` and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bivrec.atomic import DISK_ERRNOS, OutputError
from bivrec.config import ParamsError, load_params, select
from bivrec.errors import DataError
from bivrec.stages import STAGE_ALIASES, STAGE_PARAMS, STAGE_WILDCARDS, read_stage_params, stage_keys, write_stage_params


def _stage_params(args, stage: str, **wildcards) -> dict:
    return read_stage_params(args.params, stage, **wildcards)


def _set_threads(args, p: dict) -> None:
    """torch's CPU threads: ``train.threads`` of the params (``--threads`` overrides it), the same count
    under Snakemake and DVC, so both give the same numbers."""
    import torch

    torch.set_num_threads(args.threads or p["train"]["threads"])


def _feature_cfg(args, p: dict, modality: str) -> dict:
    return {**p["features"][modality], **({"threads": args.threads} if args.threads else {})}


def cmd_params(args) -> None:
    wildcards = {name: getattr(args, name) for name in STAGE_WILDCARDS[args.for_stage]}
    missing = [f"--{name}" for name, value in wildcards.items() if value is None]
    if missing:
        raise ParamsError(f"the {args.for_stage} stage's params need {' '.join(missing)}")
    if args.values is not None:  # the Snakefile's: the values of the config in effect, already selected
        selected = json.loads(args.values)
    else:
        params = load_params(args.params)
        selected = select(params, stage_keys(args.for_stage, params, **wildcards))
    write_stage_params(selected, args.for_stage, Path(args.out), **wildcards)


def cmd_download(args) -> None:
    from bivrec.data.download import download
    from bivrec.data.sources import data_root, expand_data_root

    p = _stage_params(args, "download", dataset=args.dataset)
    dataset_cfg = expand_data_root(p["data"][args.dataset], data_root(p["data_root"]))
    download(args.dataset, dataset_cfg, Path(args.out))


def cmd_preprocess(args) -> None:
    from bivrec.data.preprocess import preprocess

    p = _stage_params(args, "preprocess", dataset=args.dataset)
    stats = preprocess(args.dataset, p["data"][args.dataset], p["split"], Path(args.raw), Path(args.out))
    print(f"{args.dataset}: {stats}", file=sys.stderr)


def _items(data_dir: str):
    import pandas as pd

    path = Path(data_dir) / "items.parquet"
    if not path.exists():
        raise DataError(f"{path}: file not found (run the preprocess stage first)")
    return pd.read_parquet(path)


def _import_shipped_features(data_dir: str, modality: str, n_items: int, out: str) -> bool:
    """Pass on features the dataset ships (e.g. MMRec's image_feat.npy), validated, instead of encoding."""
    from bivrec.features.store import import_precomputed

    shipped = Path(data_dir) / "imported_features" / f"{modality}.npy"
    if not shipped.exists():
        return False
    print(f"using the dataset's own {modality} features from {shipped}", file=sys.stderr)
    import_precomputed(shipped, n_items, Path(out), row_offset=0)
    return True


def cmd_extract_image_features(args) -> None:
    from bivrec.features.image import extract_image_features

    p = _stage_params(args, "extract_image_features")
    items = _items(args.data)
    if not _import_shipped_features(args.data, "image", len(items), args.out):
        image_cfg = _feature_cfg(args, p, "image")
        extract_image_features(items, Path(args.raw), image_cfg, image_cfg["seed"], Path(args.out))


def cmd_extract_text_features(args) -> None:
    from bivrec.features.text import extract_text_features

    p = _stage_params(args, "extract_text_features")
    items = _items(args.data)
    if not _import_shipped_features(args.data, "text", len(items), args.out):
        extract_text_features(items, _feature_cfg(args, p, "text"), Path(args.out))


def cmd_train(args) -> int | None:
    from bivrec.distributed import Processes, launch, launched
    from bivrec.runs import train_run

    p = _stage_params(args, "train", run=args.run)
    if args.settings:
        from bivrec.tune import apply_settings, read_choice

        p = apply_settings(p, read_choice(Path(args.settings)))
    gpus = int(p["train"].get("gpus", 1))
    if gpus > 1 and not launched():  # data-parallel: this same command once per GPU, under torchrun
        Processes(0, gpus).share(p["train"]["batch_size"])  # a bad batch size fails here, once
        return launch(args.argv, gpus)
    _set_threads(args, p)
    train_run(p, args.run, Path(args.data), Path(args.features), Path(args.out), progress=not args.quiet)
    return None


def cmd_tune_point(args) -> None:
    from bivrec.runs import train_run
    from bivrec.tune import point_params

    p = point_params(_stage_params(args, "tune_point", run=args.run, point=str(args.point)), args.point)
    _set_threads(args, p)
    train_run(p, args.run, Path(args.data), Path(args.features), Path(args.out), progress=not args.quiet)


def cmd_tune_select(args) -> None:
    from bivrec.tune import select

    p = _stage_params(args, "tune_select", run=args.run)
    result = select(p, [Path(folder) for folder in args.points], Path(args.out))
    print(f"tune: point {result['winner']} wins on validation {result['metric']}: {result['settings']}", file=sys.stderr)


def cmd_evaluate(args) -> None:
    from bivrec.runs import evaluate_run

    p = _stage_params(args, "evaluate")
    _set_threads(args, p)
    evaluate_run(p, Path(args.model), Path(args.data), Path(args.features), Path(args.out), Path(args.per_user))


def cmd_cold_start(args) -> None:
    from bivrec.experiments.cold_start import cold_start

    p = _stage_params(args, "cold_start")
    _set_threads(args, p)
    cold_start(p, Path(args.models), Path(args.data), Path(args.features), Path(args.out))


def cmd_settings_experiment(args) -> None:
    """``ablation`` or ``sensitivity``: settings of a base run, trained (or reused) and scored."""
    from bivrec.experiments.ablation import ablation
    from bivrec.experiments.sensitivity import sensitivity

    p = _stage_params(args, args.stage)
    _set_threads(args, p)
    inputs = (p, Path(args.data), Path(args.features), Path(args.metrics), Path(args.models_out), Path(args.out))
    if args.stage == "sensitivity":
        sensitivity(*inputs, ablation_json=Path(args.ablation), progress=not args.quiet)
    else:
        ablation(*inputs, progress=not args.quiet)


def cmd_transfer(args) -> None:
    from bivrec.experiments.transfer import transfer

    p = _stage_params(args, "transfer")
    _set_threads(args, p)
    transfer(p, args.source, Path(args.models), Path(args.data), Path(args.features), Path(args.models_out), Path(args.out), progress=not args.quiet)


def cmd_noise(args) -> None:
    from bivrec.experiments.noise import noise

    p = _stage_params(args, "noise")
    _set_threads(args, p)
    noise(p, Path(args.models), Path(args.data), Path(args.features), Path(args.out))


def cmd_efficiency(args) -> None:
    from bivrec.experiments.efficiency import efficiency

    p = _stage_params(args, "efficiency")
    efficiency(p, Path(args.models), Path(args.metrics), Path(args.out))


def cmd_interests(args) -> None:
    from bivrec.experiments.interests import interests

    p = _stage_params(args, "interests")
    _set_threads(args, p)
    interests(p, Path(args.model), Path(args.data), Path(args.features), Path(args.out))


def cmd_report(args) -> None:
    from bivrec.report.build import build_report

    p = _stage_params(args, "report")
    build_report(p, Path(args.metrics), Path(args.experiments), Path(args.models), Path(args.data), Path(args.features), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bivrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")

    def stage(name: str, func, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        sp.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the params' train.threads, or features.<modality>.threads)")
        sp.set_defaults(func=func)
        return sp

    sp = stage("params", cmd_params, "write one job's params file: the values of --params its stage reads")
    sp.add_argument("--stage", dest="for_stage", required=True, choices=sorted(STAGE_PARAMS))
    sp.add_argument("--dataset")
    sp.add_argument("--run")
    sp.add_argument("--point")
    sp.add_argument("--values", help="the stage's values as JSON, instead of selecting them from --params")
    sp.add_argument("--out", required=True, help="e.g. .bivrec/params/train/<dataset>/<run>.yaml")

    sp = stage("download", cmd_download, "fetch (or generate) a dataset's raw files")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--out", required=True, help="raw folder, e.g. raw/<dataset>")

    sp = stage("preprocess", cmd_preprocess, "filter, remap ids and split users (ComiRec protocol)")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--raw", required=True)
    sp.add_argument("--out", required=True, help="processed folder, e.g. data/<dataset>")

    sp = stage("extract_image_features", cmd_extract_image_features, "encode item images")
    sp.add_argument("--data", required=True)
    sp.add_argument("--raw", required=True, help="folder the items' image paths are relative to")
    sp.add_argument("--out", required=True, help="e.g. features/<dataset>/image")

    sp = stage("extract_text_features", cmd_extract_text_features, "encode item texts")
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True, help="e.g. features/<dataset>/text")

    sp = stage("train", cmd_train, "train one run (a model or a variant) with early stopping")
    sp.add_argument("--run", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True, help="features/<dataset> (with image/ and text/)")
    sp.add_argument("--out", required=True, help="e.g. models/<dataset>/<run>")
    sp.add_argument("--settings", help="a tuning result (results/experiments/<dataset>/tune/<run>.json) whose winning settings apply")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = stage("tune_point", cmd_tune_point, "train one grid point of tune.grid (first training seed, validation only)")
    sp.add_argument("--run", required=True)
    sp.add_argument("--point", required=True, type=int, help="index into the grid's combinations")
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True, help="features/<dataset> (with image/ and text/)")
    sp.add_argument("--out", required=True, help="e.g. models/tune/<dataset>/<run>/p<point>")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = stage("tune_select", cmd_tune_select, "pick the grid point with the best validation score")
    sp.add_argument("--run", required=True)
    sp.add_argument("--points", required=True, nargs="+", help="the trained points' folders, in grid order")
    sp.add_argument("--out", required=True, help="e.g. results/experiments/<dataset>/tune/<run>.json")

    sp = stage("evaluate", cmd_evaluate, "full-ranking test metrics of a trained run")
    sp.add_argument("--model", required=True, help="trained run folder")
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True)
    sp.add_argument("--out", required=True, help="metrics JSON")
    sp.add_argument("--per-user", required=True, help="per-user metrics parquet")

    sp = stage("cold_start", cmd_cold_start, "metrics of every run on cold items and short histories")
    sp.add_argument("--models", required=True, help="models/<dataset> (one folder per run)")
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True)
    sp.add_argument("--out", required=True, help="results JSON")

    for name, func, what in (
        ("ablation", cmd_settings_experiment, "the base run against each of its pieces removed (experiments.ablation)"),
        ("sensitivity", cmd_settings_experiment, "one model parameter varied at a time (experiments.sensitivity)"),
    ):
        sp = stage(name, func, what)
        sp.add_argument("--data", required=True)
        sp.add_argument("--features", required=True)
        sp.add_argument("--metrics", required=True, help="results/metrics/<dataset> (the main runs' test metrics, reused)")
        sp.add_argument("--models-out", required=True, help="folder for the runs this experiment trains")
        sp.add_argument("--out", required=True, help="results JSON")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--ablation", required=True, help="the ablation's results JSON (points equal to an ablation row reuse it)")

    sp = stage("transfer", cmd_transfer, "a source dataset's run on a target dataset: zero-shot, fine-tuned, from scratch")
    sp.add_argument("--source", required=True, help="source dataset name")
    sp.add_argument("--models", required=True, help="models/<source> (holds the trained run)")
    sp.add_argument("--data", required=True, help="data/<target>")
    sp.add_argument("--features", required=True, help="features/<target>")
    sp.add_argument("--models-out", required=True, help="folder for the fine-tuned and from-scratch runs")
    sp.add_argument("--out", required=True, help="results JSON")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = stage("noise", cmd_noise, "runs scored on test histories with a share of random items")
    sp.add_argument("--models", required=True, help="models/<dataset> (one folder per run)")
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True)
    sp.add_argument("--out", required=True, help="results JSON")

    sp = stage("efficiency", cmd_efficiency, "parameters, throughput, time to best, peak memory, evaluation time per run")
    sp.add_argument("--models", required=True, help="models/<dataset> (one folder per run)")
    sp.add_argument("--metrics", required=True, help="results/metrics/<dataset>")
    sp.add_argument("--out", required=True, help="results JSON")

    sp = stage("interests", cmd_interests, "interest allocations and interest vectors of a trained BiVRec run")
    sp.add_argument("--model", required=True, help="trained run folder")
    sp.add_argument("--data", required=True)
    sp.add_argument("--features", required=True)
    sp.add_argument("--out", required=True, help="results JSON")

    sp = stage("report", cmd_report, "tables and figures from all metrics")
    sp.add_argument("--metrics", required=True, help="metrics root, e.g. results/metrics")
    sp.add_argument("--experiments", required=True, help="experiments root, e.g. results/experiments")
    sp.add_argument("--models", required=True, help="models root (training histories)")
    sp.add_argument("--data", required=True, help="processed data root (dataset statistics)")
    sp.add_argument("--features", required=True, help="features root (encoder sidecars)")
    sp.add_argument("--out", required=True, help="results folder")
    assert set(sub.choices) - {"params"} == set(STAGE_PARAMS) - set(STAGE_ALIASES), "every stage in bivrec.stages needs a command"
    return parser


#: errors the user can cause and fix (bad params or data, a missing or unwritable file, a full disk,
#: no CUDA, a diverging training): one line and exit code 2, never a traceback
USER_ERRORS = (ParamsError, DataError, OutputError, FileNotFoundError, PermissionError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a torchrun launch repeats in each process
    try:
        code = args.func(args)
    except USER_ERRORS as exc:
        print(f"bivrec {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"bivrec {args.stage}: error: {os.strerror(exc.errno).lower()}{where}; free some space and rerun",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bivrec {args.stage}: interrupted; no output was written (rerun to resume)", file=sys.stderr)
        return 130
    return code or 0
