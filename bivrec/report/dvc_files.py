"""Flat files for DVC's own views of the results (the `metrics:` and `plots:` of dvc.yaml).

``summary/<dataset>/<run>.json`` holds one run's main-table numbers as flat ``{metric: value}``, so
`dvc metrics show` prints one readable row per run and `dvc metrics diff` one line per changed number.
``plots/*.csv`` hold the figures' data in long format (one value per row, with the dataset, run and
metric it belongs to), drawn by the Vega-Lite templates in .dvc/plots/ (`dvc plots show` / `diff`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bivrec.atomic import atomic_path, write_text
from bivrec.report.figures import value_label

def write_summaries(values: dict[tuple[str, str], dict[str, float]], out_dir: Path) -> None:
    """``values``: (dataset, run) -> {metric: value}; one JSON per run, the folder replaced as a whole
    so that a run dropped from ``runs`` leaves no stale row behind."""
    with atomic_path(out_dir) as tmp:
        for (dataset, run), metrics in values.items():
            path = tmp / dataset / f"{run}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({metric: float(value) for metric, value in metrics.items()}, indent=2) + "\n")


def _write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    write_text(path, pd.DataFrame(rows, columns=columns).to_csv(index=False))


def training_curves_data(histories: dict[str, dict[str, pd.DataFrame]], metric: str, path: Path) -> None:
    """Validation ``metric`` per training step, per dataset and run."""
    column = f"valid_{metric}"
    rows = [
        {"dataset": dataset, "run": run, "metric": metric, "step": int(step), "value": float(value)}
        for dataset, runs in histories.items()
        for run, history in runs.items()
        if column in history
        for step, value in zip(history["step"], history[column])
    ]
    _write_csv(rows, ["dataset", "run", "metric", "step", "value"], path)


def metric_comparison_data(values: dict[tuple[str, str], dict[str, float]], path: Path) -> None:
    rows = [
        {"dataset": dataset, "run": run, "metric": metric, "value": value}
        for (dataset, run), metrics in values.items()
        for metric, value in metrics.items()
    ]
    _write_csv(rows, ["dataset", "run", "metric", "value"], path)


def noise_data(results: dict[str, dict], metrics: list[str], path: Path) -> None:
    """Test metrics against the share of history items replaced (``results``: dataset -> noise.json)."""
    rows = [
        {"dataset": dataset, "run": run, "metric": metric, "share": float(share),
         "value": entry["metrics"][metric], "std": entry["metrics_std"][metric]}
        for dataset, result in results.items()
        for run, by_share in result["runs"].items()
        for share, entry in sorted(by_share.items(), key=lambda item: float(item[0]))
        for metric in metrics
    ]
    _write_csv(rows, ["dataset", "run", "metric", "share", "value", "std"], path)


def sensitivity_data(results: dict[str, dict], metrics: list[str], path: Path) -> None:
    """Test metrics at each value of each varied parameter, in grid order (``results``: dataset ->
    sensitivity.json); ``centre`` marks params.yaml's own value."""
    rows = [
        {"dataset": dataset, "run": result["base_run"], "parameter": parameter, "setting": value_label(point["value"]),
         "centre": bool(point["centre"]), "metric": metric, "value": point["metrics"][metric]}
        for dataset, result in results.items()
        for parameter, line in result["lines"].items()
        for point in line
        for metric in metrics
    ]
    _write_csv(rows, ["dataset", "run", "parameter", "setting", "centre", "metric", "value"], path)
