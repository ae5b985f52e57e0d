"""Efficiency: what each main-table run cost, from what training and evaluation recorded.

Per run (means over its training seeds): trainable parameters, training samples per second (validation
time excluded), wall seconds from the start of training to the best validation, peak memory (CUDA:
largest allocation of tensors; CPU: the training process's peak resident set, libraries and data
included) and the seconds the test evaluation took (loading the run and ranking every test user).
Timings depend on the machine and its load; the JSON records the device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bivrec.atomic import write_json
from bivrec.data.dataset import DataError
from bivrec.runs import replicate_dirs

TRAINING_FIELDS = ("parameters", "samples_per_second", "seconds_to_best", "peak_memory_mb", "train_seconds", "best_step", "steps")


def _read(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path}: file not found (run the train and evaluate stages first)")
    return json.loads(path.read_text())


def _mean(values) -> float:
    numbers = [float(v) for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else float("nan")


def run_costs(model_dir: Path, metrics_json: Path) -> dict:
    configs = [_read(folder / "config.json") for folder in replicate_dirs(model_dir)]
    costs = {field: _mean(c.get(field) for c in configs) for field in TRAINING_FIELDS}
    costs["peak_memory_kind"] = configs[0].get("peak_memory_kind")
    costs["device"] = configs[0].get("device")
    costs["seeds"] = len(configs)
    costs["eval_seconds"] = float(_read(metrics_json)["eval_seconds"])
    return costs


def efficiency(params: dict, models_root: Path, metrics_root: Path, out: Path) -> dict:
    runs = {run: run_costs(models_root / run, metrics_root / f"{run}.json") for run in params["runs"]}
    results = {"runs": runs}
    write_json(out, results)
    return results
