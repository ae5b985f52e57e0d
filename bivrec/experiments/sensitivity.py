"""Sensitivity: one model parameter varied at a time around the base run (``experiments.sensitivity``).

``grid`` maps a key of the base run's model config to the values tried; the base run's own value is
the centre point of every line (the trained main run, not retrained). Every other point is a setting
trained and scored once (``experiments.settings``).
"""

from __future__ import annotations

from pathlib import Path

from bivrec.atomic import write_json
from bivrec.config import resolve_run
from bivrec.experiments.plan import plan, point_name, points
from bivrec.experiments.settings import row, score_settings


def sensitivity(params: dict, data_dir: Path, features_dir: Path, metrics_dir: Path, models_dir: Path, out: Path, progress: bool = True) -> dict:
    cfg = params["experiments"]["sensitivity"]
    base = cfg["run"]
    _, model_cfg = resolve_run(params, base)
    settings = points(params)
    centre = {key: {"value": model_cfg[key]} for key in cfg["grid"]}
    scored = score_settings(params, base, {**settings, "centre": {}}, data_dir, features_dir, metrics_dir, models_dir, progress)
    reused = plan(params, base, settings)
    lines = {}
    for key, values in cfg["grid"].items():
        line = []
        for value in sorted({*map(_hashable, values), _hashable(model_cfg[key])}, key=_order):
            value = list(value) if isinstance(value, tuple) else value
            name = "centre" if value == model_cfg[key] else point_name(key, value)
            entry = row(*scored[name], None, {key: value}, base if name == "centre" else reused[name])
            line.append({"value": value, "name": name, "centre": name == "centre", **entry})
        lines[key] = line
    results = {"settings": cfg, "base_run": base, "centre": centre, "lines": lines}
    write_json(out, results)
    return results


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _order(value):
    """Numbers by size; patch-size sets by length, then lexicographically."""
    return (len(value), value) if isinstance(value, tuple) else (0, (value,))
