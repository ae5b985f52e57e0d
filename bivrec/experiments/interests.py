"""Learned interests (``experiments.interests``): what a trained BiVRec run does with a history.

- For ``users`` test users drawn by ``seed`` (among those with at least half a window of history), each
  view's allocation of the history items to the K interests: the token->interest distribution of the
  finest patch scale (the items themselves when patch size 1 is used).
- A 2-D PCA of the interest vectors of up to ``pca_users`` test users per view, each point labelled with
  its interest index, to show whether the K interests are distinct directions.

Uses the run's first training seed, in evaluation mode (no Gumbel noise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bivrec.atomic import write_json
from bivrec.data.dataset import DataError
from bivrec.runs import load_trained


def finest_scale(patch_sizes: list[int], length: int) -> tuple[int, int, int]:
    """(patch size, first token, token count) of the finest scale among the concatenated tokens."""
    start = 0
    finest = min(patch_sizes)
    for size in patch_sizes:
        count = math.ceil(length / size)
        if size == finest:
            return size, start, count
        start += count
    raise AssertionError("unreachable")


def pick_users(history: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Row indices of ``count`` users drawn by ``seed`` among those with at least half a window of items."""
    lengths = (history > 0).sum(1)
    eligible = torch.nonzero(lengths >= max(1, history.shape[1] // 2)).flatten()
    if eligible.numel() == 0:
        eligible = torch.arange(history.shape[0])
    order = torch.randperm(eligible.numel(), generator=torch.Generator().manual_seed(int(seed)))
    return eligible[order[:count]].sort().values


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Rows projected on their first two principal components and the variance share of each."""
    centred = vectors - vectors.mean(0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    share = (variance / variance.sum()).tolist() if variance.sum() > 0 else [0.0] * len(variance)
    return centred @ components[:2].T, share[:2]


def interests(params: dict, model_dir: Path, data_dir: Path, features_dir: Path, out: Path) -> dict:
    cfg = params["experiments"]["interests"]
    models, data, configs = load_trained(model_dir, data_dir, features_dir)
    model = models[0].eval()
    if not hasattr(model, "view_interests"):
        raise DataError(f"{model_dir}: experiments.interests needs a BiVRec run; {configs[0]['model']} has no interest views")
    history = data.test.history
    users = pick_users(history.cpu(), cfg["users"], cfg["seed"])
    pca_rows = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(int(cfg["seed"])))[: cfg["pca_users"]]
    size, first, count = finest_scale(list(model.cfg["patch_sizes"]), history.shape[1])
    views = {}
    with torch.no_grad():
        for view in model.views:
            table = model.view_table(view)
            _, allocation, mask = model.view_interests(view, history[users.to(history.device)], table)
            allocations = []
            for row, user in enumerate(users.tolist()):
                tokens = slice(first, first + count)
                real = mask[row, tokens].cpu().numpy()
                allocations.append(
                    {
                        "user": int(data.test.users[user]),
                        "history": [int(i) for i in history[user].cpu().numpy() if i > 0],
                        "allocation": allocation[row, :, tokens].float().cpu().numpy()[:, real].round(5).tolist(),
                    }
                )
            vectors = model.view_interests(view, history[pca_rows.to(history.device)], table)[0].float().cpu().numpy()
            coords, share = pca_2d(vectors.reshape(-1, vectors.shape[-1]))
            views[view] = {
                "users": allocations,
                "pca": {
                    "x": coords[:, 0].round(5).tolist(),
                    "y": coords[:, 1].round(5).tolist(),
                    "interest": np.tile(np.arange(vectors.shape[1]), vectors.shape[0]).tolist(),
                    "explained_variance": share,
                },
            }
    results = {"settings": cfg, "run": configs[0]["run"], "patch_size": size, "n_interests": int(model.cfg["n_interests"]), "views": views}
    write_json(out, results)
    return results
