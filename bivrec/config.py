"""Load and validate params.yaml, the single source of every parameter."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the file and the offending key."""


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        prefix = "" if where == "<top level>" else where + "."
        return f"unknown key {', '.join(prefix + k for k in unknown)} (allowed: {', '.join(sorted(allowed))})"
    return f"{where}: {error.message}"


def validate_params(params: dict, source: str = "params.yaml") -> dict:
    """Check ``params`` against the schema and the cross-key rules; return it unchanged."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        raise ParamsError(f"{source}: {_describe(errors[0])}")
    for name in params["datasets"]:
        if name not in params["data"]:
            raise ParamsError(f"{source}: datasets lists {name!r} but data.{name} is not defined")
    for run in params["runs"]:
        model_name = params["variants"].get(run, {}).get("model", run)
        if not isinstance(params["model"].get(model_name), dict):
            raise ParamsError(
                f"{source}: runs lists {run!r} but there is no model.{model_name} section "
                f"(a run is a model name or a key of variants)"
            )
    for run, variant in params["variants"].items():
        section = params["model"].get(variant["model"])
        unknown = sorted(set(variant.get("overrides", {})) - set(section or {}))
        if unknown:
            raise ParamsError(f"{source}: variants.{run}.overrides has keys not in model.{variant['model']}: {unknown}")
    _validate_experiments(params, source)
    for pool, members in params["report"].get("pools", {}).items():
        missing = [name for name in members if name not in params["data"]]  # not run now: the pool is skipped
        if missing:
            raise ParamsError(f"{source}: report.pools.{pool} lists {missing}, which are not defined under data:")
    tune = params["tune"]
    # tune.runs / tune.datasets may name runs and datasets left out of this invocation (--config runs=...);
    # only names that are no run at all are errors
    unknown = [run for run in tune["runs"] if not isinstance(params["model"].get(params["variants"].get(run, {}).get("model", run)), dict)]
    if unknown:
        raise ParamsError(f"{source}: tune.runs lists {unknown}, which are neither a model nor a variant")
    for dotted in tune["grid"]:
        try:
            get_key(params, dotted)
        except ParamsError:
            raise ParamsError(f"{source}: tune.grid key {dotted!r} is not a params key") from None
    from bivrec.stages import stage_keys  # no cycle: stages imports config only inside functions

    for run in [] if unknown else tune["runs"]:  # a grid point only holds the keys its run reads
        read = stage_keys("tune_point", params, run=run, dataset="", point="0")
        unread = [dotted for dotted in tune["grid"] if not any(dotted == key or dotted.startswith(key + ".") for key in read)]
        if unread:
            raise ParamsError(f"{source}: tune.grid keys {unread} are not read by tuned run {run!r}; tune it separately")
    metric_k = int(params["eval"].get("select_metric", "recall@20").split("@")[1])
    if metric_k not in params["eval"]["topk"]:
        raise ParamsError(f"{source}: eval.select_metric uses @{metric_k} but eval.topk is {params['eval']['topk']}")
    split = params["split"]
    if split["valid_ratio"] + split["test_ratio"] >= 1:
        raise ParamsError(f"{source}: split.valid_ratio + split.test_ratio must be below 1")
    return params


def _validate_experiments(params: dict, source: str) -> None:
    """Experiments name trained main runs, model keys of their run and a target dataset under data:."""
    experiments = params["experiments"]
    enabled = experiments["enabled"]
    if "sensitivity" in enabled and "ablation" not in enabled:
        raise ParamsError(f"{source}: experiments.enabled lists sensitivity, which reuses the ablation's rows: enable ablation too")
    for name in ("ablation", "sensitivity", "transfer", "interests"):
        if name in enabled and experiments[name]["run"] not in params["runs"]:
            raise ParamsError(f"{source}: experiments.{name}.run {experiments[name]['run']!r} is not in runs (it must be a trained main run)")
    for name, keys in [
        *((f"ablation.variants.{row}", overrides) for row, overrides in experiments["ablation"]["variants"].items()),
        ("sensitivity.grid", experiments["sensitivity"]["grid"]),
    ]:
        run = experiments[name.split(".")[0]]["run"]
        model_name, model_cfg = resolve_run(params, run)
        unknown = sorted(set(keys) - set(model_cfg))
        if unknown:
            raise ParamsError(f"{source}: experiments.{name} has keys {unknown} that are not parameters of model.{model_name}")
    target = experiments["transfer"]["target"]
    if "transfer" not in enabled:
        return
    if target not in params["data"]:
        raise ParamsError(f"{source}: experiments.transfer.target {target!r} is not defined under data:")
    if target in params["datasets"]:
        raise ParamsError(
            f"{source}: experiments.transfer.target {target!r} is also in datasets; the target must be another "
            "dataset (its data stages are the *_target rules), pick one outside datasets"
        )


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    if overrides:
        params = {**params, **overrides}
    return validate_params(params, str(path))


def get_key(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing key {dotted}")
        node = node[part]
    return node


def select(params: dict, keys: list[str]) -> dict:
    """The nested sub-dict of ``params`` holding only ``keys`` (dotted paths)."""
    out: dict = {}
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(get_key(params, dotted))
    return out


def resolve_run(params: dict, run: str) -> tuple[str, dict]:
    """Model name and flat model config (shared ``model`` keys + the model's section + overrides)."""
    variant = params.get("variants", {}).get(run, {"model": run})  # a job's params hold only its own variants
    model_name = variant["model"]
    shared = {k: v for k, v in params["model"].items() if not isinstance(v, dict)}
    own = copy.deepcopy(params["model"].get(model_name, {}))
    own.update(copy.deepcopy(variant.get("overrides", {})))
    return model_name, {**shared, **own}
