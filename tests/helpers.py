"""Small data and model builders shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from bivrec.data.sources import data_root
from bivrec.data.dataset import EvalSplit, SequenceData, last_window, pad_right
from bivrec.features.store import ItemFeatures

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
#: Real data (never committed): params.yaml's data_root, relative to the repo, or $BIVREC_DATA_ROOT.
SHARED_DATA = REPO / data_root(yaml.safe_load(PARAMS.read_text())["data_root"])


def bivrec_cfg(**overrides) -> dict:
    """params.yaml's BiVRec config (shared ``model`` keys + ``model.bivrec``) with ``overrides``."""
    model = yaml.safe_load(PARAMS.read_text())["model"]
    return {k: v for k, v in model.items() if not isinstance(v, dict)} | model["bivrec"] | overrides


def random_features(n_items: int, seed: int = 0) -> ItemFeatures:
    """Random 12-d image and 8-d text features; about a fifth of the items lack an image."""
    gen = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n_items + 1, 12, generator=gen), torch.randn(n_items + 1, 8, generator=gen)
    image_mask = torch.rand(n_items + 1, generator=gen) > 0.2
    text_mask = torch.ones(n_items + 1, dtype=torch.bool)
    image_mask[0] = text_mask[0] = False
    image[~image_mask], text[0] = 0, 0
    return ItemFeatures(image, text, image_mask, text_mask)


def cyclic_data(n_users=60, n_items=24, length=12, max_len=6, n_held=10, seed=0) -> SequenceData:
    """Users walk through the items in order, so the next item is predictable from the last one; the
    last ``n_held`` users (first 9 items as history, the rest as targets) are both valid and test."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(1, n_items + 1, (n_users,), generator=g)
    seqs = [((s - 1 + torch.arange(length)) % n_items + 1).tolist() for s in starts]
    train, held = seqs[: n_users - n_held], seqs[n_users - n_held :]
    split = EvalSplit(torch.arange(n_held), last_window([s[:9] for s in held], max_len), pad_right([s[9:] for s in held]))
    items = pad_right(train)
    counts = torch.bincount(items.flatten(), minlength=n_items + 1)
    counts[0] = 0
    return SequenceData(n_items, items, (items > 0).sum(1), split, split, counts)


class InterruptAfter:
    """Raise KeyboardInterrupt from the model's loss at a given call, like Ctrl-C mid-training."""

    def __init__(self, model, calls: int):
        self.model, self.calls, self.original = model, calls, model.loss

    def __call__(self, *args):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.original(*args)


def deep_update(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, nested dicts key by key."""
    for key, value in update.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def write_params(folder: Path, update: dict) -> Path:
    """params.yaml with ``update`` merged in, written to ``folder``; returns its path."""
    params = deep_update(yaml.safe_load(PARAMS.read_text()), update)
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> contents), to compare outputs byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def tiny_pipeline(root: Path, replicates: int = 1, runs=("popularity", "bivrec_id", "bivrec_mm", "bivrec"), base_run: str = "bivrec") -> dict:
    """The pipeline's data and main runs on tiny synthetic data with random features, through the CLI:
    ``root``/{raw,data,features}, the transfer target in {raw,data,features}_b, trained runs in
    models/<run>, test metrics in metrics/<run>.json. Experiments run on small grids around ``base_run``.
    Returns the params."""
    import numpy as np
    import pandas as pd

    from bivrec.cli import main
    from bivrec.config import load_params
    from bivrec.features.store import import_precomputed

    params = load_params(PARAMS)
    params["data"]["synthetic"].update(n_users=300, n_items=80, n_categories=4, image_size=16)
    params["data"]["synthetic_b"].update(n_users=200, n_items=60, n_categories=4, image_size=16)
    params["model"].update(dim=16, max_len=8)
    params["train"].update(max_steps=20, eval_every=10, replicates=replicates)
    params["runs"] = list(runs)
    params["report"]["proposed_run"] = base_run
    params["experiments"].update(
        workers=1,
        ablation={"run": base_run, "variants": {"id_only": {"views": "id"}, "no_fine": {"fine_weight": 0.0}, "shuffled_features": {"feature_shuffle_seed": 0}}},
        sensitivity={"run": base_run, "grid": {"n_interests": [2], "fine_weight": [0.0]}},  # fine_weight 0 = ablation's no_fine
        noise={"shares": [0.0, 0.5], "seed": 0, "runs": ["bivrec", "bivrec_id"], "strongest_baselines": 1},
        transfer={"target": "synthetic_b", "run": base_run, "train": {"max_steps": 10, "eval_every": 5}},
        interests={"run": base_run, "users": 2, "seed": 0, "pca_users": 10},
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", str(root / "params.yaml"), "--threads", "1"]
    for dataset, suffix in (("synthetic", ""), ("synthetic_b", "_b")):
        raw, data, features = root / f"raw{suffix}", root / f"data{suffix}", root / f"features{suffix}"
        assert main(["download", *common, "--dataset", dataset, "--out", str(raw)]) == 0
        assert main(["preprocess", *common, "--dataset", dataset, "--raw", str(raw), "--out", str(data)]) == 0
        n_items = len(pd.read_parquet(data / "items.parquet"))
        for modality, dim in (("image", 6), ("text", 4)):  # random features, the same dims in both catalogues
            array = root / f"{modality}{suffix}.npy"
            np.save(array, np.random.default_rng(len(suffix)).normal(size=(n_items, dim)).astype(np.float32))
            import_precomputed(array, n_items, features / modality, row_offset=1)
    data, features, models = root / "data", root / "features", root / "models"
    for run in params["runs"]:
        assert main(["train", *common, "--run", run, "--data", str(data), "--features", str(features), "--out", str(models / run), "--quiet"]) == 0
        out = root / "metrics" / f"{run}.json"
        assert main(["evaluate", *common, "--model", str(models / run), "--data", str(data), "--features", str(features),
                     "--out", str(out), "--per-user", str(out.with_suffix(".per_user.parquet"))]) == 0
    return params


def run_experiments(root: Path, params: dict) -> None:
    """Every experiment stage of ``tiny_pipeline``'s outputs, into ``root``/experiments/synthetic/."""
    from bivrec.cli import main

    common = ["--params", str(root / "params.yaml"), "--threads", "1"]
    data, features, models, out = str(root / "data"), str(root / "features"), root / "models", root / "experiments" / "synthetic"
    extra = root / "models_extra"
    shared = ["--data", data, "--features", features]
    stages = [
        ["cold_start", "--models", str(models), *shared, "--out", str(out / "cold_start.json")],
        *[
            [name, *shared, "--metrics", str(root / "metrics"), "--models-out", str(extra / name), "--out", str(out / f"{name}.json"), "--quiet"]
            + (["--ablation", str(out / "ablation.json")] if name == "sensitivity" else [])
            for name in ("ablation", "sensitivity")
        ],
        ["transfer", "--source", "synthetic", "--models", str(models), "--data", str(root / "data_b"), "--features", str(root / "features_b"),
         "--models-out", str(extra / "transfer"), "--out", str(out / "transfer.json"), "--quiet"],
        ["noise", "--models", str(models), *shared, "--out", str(out / "noise.json")],
        ["efficiency", "--models", str(models), "--metrics", str(root / "metrics"), "--out", str(out / "efficiency.json")],
        ["interests", "--model", str(models / params["experiments"]["interests"]["run"]), *shared, "--out", str(out / "interests.json")],
    ]
    for argv in stages:
        assert main([argv[0], *common, *argv[1:]]) == 0, argv
