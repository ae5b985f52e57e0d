"""Hyper-parameter selection on validation users only (the ``tune_point`` / ``tune_select`` stages).

``tune.grid`` maps dotted params keys (``train.learning_rate``, ``model.dropout``,
``model.bivrec.coarse_weight``, ...) to candidate values; every combination is a point. Each point
of each tuned run (``tune.runs`` on ``tune.datasets``) is trained once (the first training seed) with
early stopping on validation; the point with the best validation score wins (ties: the earlier
point). The main runs are then trained with the winner's settings for every training seed, and
only they ever see the test split.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

from bivrec.atomic import write_json
from bivrec.config import ParamsError, get_key
from bivrec.errors import DataError


def grid_points(tune_cfg: dict) -> list[dict]:
    """Every combination of the grid's values, keys in sorted order (the last key varies fastest), so
    point numbers do not depend on how a params file orders the grid."""
    grid = tune_cfg.get("grid") or {}
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def is_tuned(params: dict, dataset: str, run: str) -> bool:
    tune = params["tune"]
    return bool(tune["grid"]) and run in tune["runs"] and dataset in tune["datasets"]


def apply_settings(params: dict, settings: dict) -> dict:
    """A copy of ``params`` with each dotted key of ``settings`` set (the key must already exist)."""
    out = copy.deepcopy(params)
    for dotted, value in settings.items():
        get_key(out, dotted)  # a typo in the grid is an error, not a silently new key
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return out


def point_params(params: dict, point: int) -> dict:
    """Params of grid point ``point``: its settings applied, one training seed."""
    points = grid_points(params["tune"])  # the stage reads tune.grid only
    if not 0 <= point < len(points):
        raise ParamsError(f"tune: point {point} is not in the grid ({len(points)} points)")
    tuned = apply_settings(params, points[point])
    tuned["train"]["replicates"] = 1
    return tuned


def select(params: dict, point_dirs: list[Path], out_json: Path) -> dict:
    """Pick the point with the best validation score from its trained run's ``config.json``; write
    ``results/experiments/<dataset>/tune/<run>.json`` (every point's score and the winner)."""
    metric = params["eval"]["select_metric"]
    points = grid_points(params["tune"])
    if len(point_dirs) != len(points):
        raise ParamsError(f"tune: {len(point_dirs)} trained point(s) for a grid of {len(points)}")
    scored = []
    for index, (settings, folder) in enumerate(zip(points, point_dirs)):
        path = Path(folder) / "config.json"
        if not path.exists():
            raise DataError(f"{path}: file not found (run tune_point first)")
        config = json.loads(path.read_text())
        scored.append({"point": index, "settings": settings, "valid": config["best_valid"][metric],
                       "best_step": config["best_step"], "seconds": config.get("train_seconds")})
    winner = max(scored, key=lambda row: (row["valid"], -row["point"]))
    result = {"metric": metric, "split": "valid", "winner": winner["point"], "settings": winner["settings"], "points": scored}
    write_json(out_json, result)
    return result


def read_choice(path: Path) -> dict:
    """The winning settings written by :func:`select`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run tune_select first)")
    try:
        return json.loads(path.read_text())["settings"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise DataError(f"{path}: not a tuning result ({exc})") from exc
