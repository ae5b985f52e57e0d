"""Train and evaluate one run (a model or a variant) from files to files."""

from __future__ import annotations

import json
import pickle
import platform
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bivrec.atomic import atomic_path, write_json
from bivrec.checksums import files_sha256
from bivrec.config import resolve_run
from bivrec.data.dataset import DataError, load_dataset
from bivrec.evaluate import eval_options, evaluate
from bivrec.features.store import ItemFeatures, load_features
from bivrec.models import build_model
from bivrec.distributed import processes
from bivrec.device import keep_freed_memory_in_the_heap, peak_memory_mb, pick_device, reset_peak_memory
from bivrec.train import clear_resume_state, fit, run_fingerprint

RESUME_ROOT = Path(".bivrec") / "resume"


def resume_dir_for(out_dir: Path) -> Path:
    """Where a run keeps its resume state: under RESUME_ROOT, even for an absolute ``out_dir``."""
    return RESUME_ROOT / out_dir.as_posix().lstrip("/")


def _inputs_digest(data_dir: Path, features_dir: Path) -> str:
    files = list((data_dir / "split").glob("*.parquet")) + list(features_dir.glob("*/features.json"))
    return files_sha256(f for f in files if f.is_file())[:16]


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def shuffle_features(features: ItemFeatures, seed: int) -> ItemFeatures:
    """The items' features permuted across the real items (row 0, padding, stays): every item gets
    another item's image and text (with their masks), drawn by ``seed``. A control: a model that does
    as well on these learns nothing from what the features say about the items."""
    generator = torch.Generator().manual_seed(int(seed))
    n_rows = next(t for t in (features.image, features.text) if t is not None).shape[0]
    order = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n_rows - 1, generator=generator)])
    pick = lambda t: None if t is None else t[order]  # noqa: E731
    return ItemFeatures(pick(features.image), pick(features.text), pick(features.image_mask), pick(features.text_mask))


def _load_inputs(data_dir: Path, features_dir: Path, model_cfg: dict):
    data = load_dataset(data_dir, model_cfg["max_len"])
    folders = {m: features_dir / m for m in ("image", "text")}
    features = load_features(
        folders["image"] if folders["image"].exists() else None,
        folders["text"] if folders["text"].exists() else None,
        data.n_items,
    )
    if features is not None and model_cfg.get("feature_shuffle_seed") is not None:
        features = shuffle_features(features, model_cfg["feature_shuffle_seed"])
    if features is not None and model_cfg.get("center_features", False):
        features = features.centred()
    return data, features


def _build(model_name: str, model_cfg: dict, data, features, seed: int, device: torch.device):
    torch.manual_seed(seed)
    return build_model(model_name, data.n_items, features, model_cfg).to(device)


def replicate_seeds(seed: int, train_cfg: dict) -> list[int]:
    """Training seeds of a run: ``seed`` and, with ``train.replicates`` > 1, the ones after it."""
    return [seed + r for r in range(int(train_cfg.get("replicates", 1)))]


def replicate_dirs(model_dir: Path) -> list[Path]:
    """A trained run's folder (its first seed) followed by its other seeds' folders (``seeds/<seed>``)."""
    extra = model_dir / "seeds"
    others = sorted((p for p in extra.iterdir() if p.is_dir()), key=lambda p: int(p.name)) if extra.is_dir() else []
    return [model_dir, *others]


def train_run(
    params: dict,
    run: str,
    data_dir: Path,
    features_dir: Path,
    out_dir: Path,
    progress: bool = True,
    init_from: Path | None = None,
) -> dict:
    """Train ``run`` once per training seed and write ``out_dir`` atomically: best.pt, last.pt,
    history.csv and config.json of the first seed at the top, those of every further seed (``train.replicates``)
    under ``seeds/<seed>/``. An interrupted run resumes each seed from its own resume state.

    ``init_from``: a trained run (of another dataset, for transfer) whose seed folders start each seed's
    model instead of a random initialisation; see ``transferable_state`` for what is carried over."""
    train_cfg = params["train"]
    device = pick_device(train_cfg.get("device", "auto"))
    if device.type == "cpu":
        keep_freed_memory_in_the_heap()
    with processes(device) as where:
        return _train_seeds(params, run, data_dir, features_dir, out_dir, progress, init_from, device, where)


def _train_seeds(params: dict, run: str, data_dir: Path, features_dir: Path, out_dir: Path, progress: bool,
                 init_from: Path | None, device: torch.device, where) -> dict:
    """``train_run`` in one of its processes (rank 0 writes the outputs)."""
    model_name, model_cfg = resolve_run(params, run)
    train_cfg, eval_cfg = params["train"], params["eval"]
    data, features = _load_inputs(data_dir, features_dir, model_cfg)
    inputs_digest = _inputs_digest(data_dir, features_dir)
    seeds = replicate_seeds(params["seed"], train_cfg)
    resume_dirs = [resume_dir_for(out_dir if i == 0 else out_dir / "seeds" / str(seed)) for i, seed in enumerate(seeds)]
    init_sources = replicate_dirs(Path(init_from)) if init_from is not None else []
    data = data.to(device)
    configs = []
    with atomic_path(out_dir) if where.main else nullcontext() as tmp:
        for i, (seed, resume_dir) in enumerate(zip(seeds, resume_dirs)):
            model = _build(model_name, model_cfg, data, features, seed, device)
            identity = [model_name, model_cfg, train_cfg, eval_cfg, seed, inputs_digest]
            init = init_sources[min(i, len(init_sources) - 1)] if init_sources else None  # seed i starts from source seed i
            if init is not None:
                model.load_state_dict(transferable_state(_read_seed(init)[0], model), strict=False)
                identity.append(files_sha256([init / "best.pt"]))
            if where.world_size > 1:  # another number of processes draws other samples: never resume across
                identity.append(f"processes={where.world_size}")
            fingerprint = run_fingerprint(*identity)
            reset_peak_memory(device)
            started = time.perf_counter()
            result = fit(model, data, train_cfg, eval_cfg, seed, resume_dir, fingerprint, progress, where)
            wall = time.perf_counter() - started
            if not where.main:
                continue
            folder = tmp if i == 0 else tmp / "seeds" / str(seed)
            peak_mb, peak_kind = peak_memory_mb(device)
            best_row = next((row for row in result.history if row["step"] == result.best_step), {})
            config = {
                "run": run,
                "model": model_name,
                "model_cfg": model_cfg,
                "n_items": data.n_items,
                "train": train_cfg,
                "seed": seed,
                "fingerprint": fingerprint,
                "device": str(device),
                "processes": where.world_size,
                "best_step": result.best_step,
                "best_valid": {eval_cfg.get("select_metric", "recall@20"): result.best_metric},
                "train_seconds": wall,
                "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "steps": result.steps,
                "samples_per_second": result.samples_per_second,
                "seconds_to_best": best_row.get("seconds", 0.0),  # training wall time up to the best validation
                "peak_memory_mb": peak_mb,
                "peak_memory_kind": peak_kind,
                "init_from": None if init is None else str(init),
            }
            folder.mkdir(parents=True)
            # weights only; what they belong to (model, its config, item count) is config.json beside them
            torch.save(result.best_state, folder / "best.pt")
            torch.save(model.state_dict(), folder / "last.pt")
            pd.DataFrame(result.history).to_csv(folder / "history.csv", index=False)
            (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
            configs.append(config)
            print(f"{run} (seed {seed}): best {config['best_valid']} at step {result.best_step} ({wall:.1f}s)", file=sys.stderr)
    if not where.main:
        return {}
    for resume_dir in resume_dirs:
        clear_resume_state(resume_dir)
    return configs[0]


def _read_seed(folder: Path) -> tuple[dict, dict]:
    """(best weights, training config) of one trained seed folder; the weights load with
    ``weights_only=True`` (tensors only: a checkpoint cannot run code)."""
    best, config_path = folder / "best.pt", folder / "config.json"
    for path in (best, config_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run the train stage first)")
    try:
        config = json.loads(config_path.read_text())
        state = torch.load(best, map_location="cpu", weights_only=True)
        if isinstance(state.get("state"), dict) and "cfg" in state:  # written before config moved to JSON
            state = state["state"]
    except (ValueError, RuntimeError, pickle.UnpicklingError) as error:
        raise DataError(f"{folder}: unreadable checkpoint or config ({error}); retrain the run") from error
    return state, config


def load_trained(model_dir: Path, data_dir: Path, features_dir: Path, overrides: dict | None = None) -> tuple[list, object, list[dict]]:
    """Rebuild every training seed's best model of a run on its dataset, whose inputs are loaded once:
    (models, data, training configs), first seed first.

    ``overrides`` (zero-shot transfer): rebuild the run with these model-config changes, e.g. only its
    multimodal view, on another dataset, and load what ``transferable_state`` carries over; every
    parameter of the rebuilt model must come from the checkpoint."""
    saved = [_read_seed(folder) for folder in replicate_dirs(model_dir)]
    first_config = saved[0][1]
    device = pick_device(first_config["train"].get("device", "auto"))
    model_cfg = {**first_config["model_cfg"], **(overrides or {})}
    data, features = _load_inputs(data_dir, features_dir, model_cfg)  # the same for every seed
    if overrides is None and first_config.get("n_items", data.n_items) != data.n_items:
        raise DataError(f"{model_dir}: trained on {first_config['n_items']} items, but {data_dir} has {data.n_items}")
    data = data.to(device)
    models = []
    for state, config in saved:
        model = _build(config["model"], model_cfg, data, features, config["seed"], device)
        if overrides is None:
            model.load_state_dict(state)
        else:
            carried = transferable_state(state, model)
            missing = sorted(set(model.state_dict()) - set(carried))
            if missing:
                raise DataError(f"{model_dir}: cannot rebuild the run with {overrides} on {data_dir}: no trained values for {missing[:5]}")
            model.load_state_dict(carried)
        if hasattr(model, "fit_counts"):  # statistics of the training interactions (fused readout)
            model.fit_counts(data.item_counts)
        models.append(model)
    return models, data, [config for _, config in saved]


def mean_metrics(per_seed: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and population standard deviation of each metric over a run's seeds."""
    names = per_seed[0].keys()
    mean = {k: float(np.mean([m[k] for m in per_seed])) for k in names}
    std = {k: float(np.std([m[k] for m in per_seed])) for k in names}
    return mean, std


def transferable_state(source: dict, model) -> dict:
    """The entries of a trained state dict that mean the same in ``model`` on another item catalogue:
    those with the same name and shape, except item-indexed tables (ID embeddings such as ``id_items``
    or ``item_embedding``, and any tensor with one row per item of ``model``): their rows are the source's
    items, not the target's."""
    target = model.state_dict()
    per_item = model.n_items + 1
    return {
        name: value
        for name, value in source.items()
        if name in target
        and target[name].shape == value.shape
        and not any(part in ("id_items", "item_embedding") for part in name.split("."))
        and not (value.dim() and value.shape[0] == per_item)
    }


def score_run(params: dict, model_dir: Path, data_dir: Path, features_dir: Path) -> tuple[dict, pd.DataFrame]:
    """Test metrics of a trained run, averaged over its training seeds (mean, std and every seed's), and
    the per-user values (averaged over seeds) for significance tests. Reads the test split once."""
    eval_cfg = params["eval"]
    started = time.perf_counter()
    models, data, configs = load_trained(model_dir, data_dir, features_dir)
    results = [evaluate(model, data.test, **eval_options(eval_cfg)) for model in models]
    metrics, metrics_std = mean_metrics([r.metrics for r in results])
    config = configs[0]
    summary = {
        "run": config["run"],
        "model": config["model"],
        "metrics": metrics,
        "metrics_std": metrics_std,
        "seeds": {str(c["seed"]): r.metrics for c, r in zip(configs, results)},
        "best_valid": config["best_valid"],
        "best_step": config["best_step"],
        "test_users": len(data.test),
        "seed": config["seed"],
        "fingerprint": config["fingerprint"],
        "train_seconds": sum(c["train_seconds"] for c in configs),
        "eval_seconds": time.perf_counter() - started,
        "parameters": config["parameters"],
        "git_revision": _git_revision(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    per_user = {k: np.mean([r.per_user[k] for r in results], axis=0) for k in results[0].per_user if k != "users"}
    return summary, pd.DataFrame({"users": results[0].per_user["users"], **per_user})


def evaluate_run(params: dict, model_dir: Path, data_dir: Path, features_dir: Path, out_json: Path, out_per_user: Path) -> dict:
    """``score_run`` written out: a metrics JSON and a per-user parquet."""
    summary, per_user = score_run(params, model_dir, data_dir, features_dir)
    with atomic_path(out_per_user) as tmp:
        per_user.to_parquet(tmp, index=False)
    write_json(out_json, summary)
    return summary
