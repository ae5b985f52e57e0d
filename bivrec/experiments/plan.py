"""Which runs an experiment compares, without training anything (light: the Snakefile reads it too).

A *setting* is a set of overrides of a base run's model config. A setting whose resolved model config
equals that of a main-table run (``runs:``) reuses that trained run and its test metrics; any other is
trained by the experiment (``experiments.settings``).
"""

from __future__ import annotations

import copy

from bivrec.config import ParamsError, resolve_run


def setting_params(params: dict, base_run: str, name: str, overrides: dict) -> dict:
    """``params`` with one more variant, ``name``: ``base_run``'s model with ``overrides`` on top of its own."""
    if base_run not in params["runs"]:
        raise ParamsError(f"params.yaml: the experiments' base run {base_run!r} is not in runs {params['runs']}")
    model_name, model_cfg = resolve_run(params, base_run)
    unknown = sorted(set(overrides) - set(model_cfg))
    if unknown:
        raise ParamsError(f"params.yaml: setting {name!r} overrides {unknown}, which are not keys of model.{model_name}")
    variants = params.get("variants", {})  # a job's params hold only the variants of the base run's model
    base = variants.get(base_run, {"model": base_run})
    merged = {**copy.deepcopy(base.get("overrides", {})), **copy.deepcopy(overrides)}
    out = copy.deepcopy(params)
    out["variants"] = {**variants, name: {"model": model_name, "overrides": merged}}
    return out


def reused_run(params: dict, base_run: str, name: str, overrides: dict) -> str | None:
    """The main-table run with exactly this setting's model config, if there is one."""
    wanted = resolve_run(setting_params(params, base_run, name, overrides), name)
    return next((run for run in params["runs"] if resolve_run(params, run) == wanted), None)


def plan(params: dict, base_run: str, settings: dict[str, dict]) -> dict[str, str | None]:
    """For each setting: the main run it reuses, or None when the experiment trains it."""
    return {name: reused_run(params, base_run, name, overrides) for name, overrides in settings.items()}


def point_name(key: str, value) -> str:
    """A run name for ``key = value`` made of ``[A-Za-z0-9_]`` only: ``patch_sizes_1_2``, ``coarse_weight_0p5``."""
    text = "_".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return f"{key}_" + text.replace(".", "p").replace("-", "m")


def points(params: dict) -> dict[str, dict]:
    """Every off-centre point of the grid as a setting: name -> {key: value}."""
    cfg = params["experiments"]["sensitivity"]
    _, model_cfg = resolve_run(params, cfg["run"])
    out = {}
    for key, values in cfg["grid"].items():
        if key not in model_cfg:
            raise ParamsError(f"params.yaml: experiments.sensitivity.grid.{key} is not a model parameter of run {cfg['run']!r}")
        for value in values:
            if value != model_cfg[key]:
                out[point_name(key, value)] = {key: value}
    return out
