"""Sensitivity: one model parameter varied at a time around the base run (``experiments.sensitivity``).

``grid`` maps a key of the base run's model config to the values tried; the base run's own value is
the centre point of every line (the trained main run, not retrained). A point equal to a row of the
ablation (``results/experiments/<dataset>/ablation.json``, e.g. ``coarse_weight: 0``) takes that row's
numbers; every other point is a setting trained and scored once (``experiments.settings``).
"""

from __future__ import annotations

import json
from pathlib import Path

from bivrec.atomic import write_json
from bivrec.config import resolve_run
from bivrec.data.dataset import DataError
from bivrec.experiments.plan import plan, point_name, points, setting_params
from bivrec.experiments.settings import row, score_settings


def ablation_matches(params: dict, settings: dict[str, dict], ablation_json: Path) -> dict[str, tuple[str, dict]]:
    """The settings whose model config equals a trained ablation row's: name -> (row name, row)."""
    if not ablation_json.exists():
        raise DataError(f"{ablation_json}: file not found (run the ablation stage first)")
    ablation = json.loads(ablation_json.read_text())
    base = ablation["base_run"]
    rows = {
        json.dumps(resolve_run(setting_params(params, base, name, row["overrides"]), name)[1], sort_keys=True): (name, row)
        for name, row in ablation["rows"].items()
        if name != "full" and row["reused_run"] is None
    }
    sens_base = params["experiments"]["sensitivity"]["run"]
    matches = {}
    for name, overrides in settings.items():
        wanted = json.dumps(resolve_run(setting_params(params, sens_base, name, overrides), name)[1], sort_keys=True)
        if wanted in rows:
            matches[name] = rows[wanted]
    return matches


def sensitivity(
    params: dict,
    data_dir: Path,
    features_dir: Path,
    metrics_dir: Path,
    models_dir: Path,
    out: Path,
    ablation_json: Path,
    progress: bool = True,
) -> dict:
    cfg = params["experiments"]["sensitivity"]
    base = cfg["run"]
    _, model_cfg = resolve_run(params, base)
    settings = points(params)
    centre = {key: {"value": model_cfg[key]} for key in cfg["grid"]}
    reused = plan(params, base, settings)
    from_ablation = ablation_matches(params, {n: o for n, o in settings.items() if reused[n] is None}, ablation_json)
    to_score = {name: overrides for name, overrides in settings.items() if name not in from_ablation}
    scored = score_settings(params, base, {**to_score, "centre": {}}, data_dir, features_dir, metrics_dir, models_dir, progress)
    lines = {}
    for key, values in cfg["grid"].items():
        line = []
        for value in sorted({*map(_hashable, values), _hashable(model_cfg[key])}, key=_order):
            value = list(value) if isinstance(value, tuple) else value
            name = "centre" if value == model_cfg[key] else point_name(key, value)
            if name in from_ablation:
                row_name, ablation_row = from_ablation[name]
                entry = {**{k: ablation_row[k] for k in ("metrics", "metrics_std", "seeds", "test_users")}, "overrides": {key: value}, "reused_run": None}
                entry["ablation_row"] = row_name
            else:
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
