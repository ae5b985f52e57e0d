import ast
import copy
import shutil
from pathlib import Path

import pytest

from bivrec.config import ParamsError, load_params, resolve_run, select, validate_params
from bivrec.stages import STAGE_CODE, STAGE_PARAMS, code_digest, stage_keys


@pytest.fixture(scope="module")
def params():
    return load_params("params.yaml")


def _error(params, mutate) -> str:
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(ParamsError) as info:
        validate_params(bad)
    return str(info.value)


def test_default_params_are_valid(params):
    assert params["datasets"] == ["synthetic"]


def test_unknown_key_is_named(params):
    message = _error(params, lambda p: p["train"].update(batchsize=3))
    assert "unknown key train.batchsize" in message and "batch_size" in message


def test_wrong_type_is_named(params):
    message = _error(params, lambda p: p["train"].update(learning_rate="fast"))
    assert "train.learning_rate" in message and "number" in message


def test_missing_dataset_definition(params):
    assert "data.nowhere" in _error(params, lambda p: p.update(datasets=["nowhere"]))


def test_run_without_model_section(params):
    assert "'mystery'" in _error(params, lambda p: p.update(runs=["mystery"]))


def test_variant_override_must_exist(params):
    message = _error(params, lambda p: p["variants"]["bivrec_id"]["overrides"].update(no_such_option=1))
    assert "variants.bivrec_id.overrides" in message and "no_such_option" in message


def test_select_metric_needs_its_cutoff(params):
    assert "eval.select_metric" in _error(params, lambda p: p["eval"].update(select_metric="recall@7"))


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: [unclosed\n")
    with pytest.raises(ParamsError, match="broken.yaml: not valid YAML"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def test_resolve_run_merges_shared_model_and_overrides(params):
    name, cfg = resolve_run(params, "bivrec_id")
    assert name == "bivrec"
    assert cfg["views"] == "id" and cfg["dim"] == params["model"]["dim"]
    assert resolve_run(params, "bivrec")[1]["views"] == params["model"]["bivrec"]["views"]


def test_stage_slices_hold_only_listed_keys(params):
    sliced = select(params, stage_keys("preprocess", dataset="synthetic"))
    assert set(sliced) == {"data", "split"}
    assert set(sliced["data"]) == {"synthetic"}
    assert set(STAGE_PARAMS) >= {"download", "preprocess", "train", "evaluate", "report"}


def test_seeds_by_role_only_training_reads_the_training_seed():
    readers = {stage for stage, keys in STAGE_PARAMS.items() if "seed" in keys}
    assert readers == {"train", "tune_point", "ablation", "sensitivity", "transfer"}
    assert "split" in STAGE_PARAMS["preprocess"] and "features.image" in STAGE_PARAMS["extract_image_features"]


def test_experiments_enabled_limits_the_run_checks(params):
    params = {**params, "runs": ["popularity", "sasrec"]}
    with pytest.raises(ParamsError, match="experiments.ablation.run 'bivrec' is not in runs"):
        validate_params(params)
    validate_params({**params, "experiments": {**params["experiments"], "enabled": ["cold_start", "efficiency"]}})
    with pytest.raises(ParamsError, match="reuses the ablation"):
        validate_params({**params, "experiments": {**params["experiments"], "enabled": ["sensitivity"]}})


def test_code_digest_follows_content(tmp_path):
    for entry in STAGE_CODE["report"]:  # a copy of the files the report's digest covers
        target = tmp_path / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(entry).is_dir() else shutil.copy)(entry, target)
    source = tmp_path / "bivrec" / "report" / "tables.py"
    source.write_text("A = 1\n")
    first = code_digest("report", tmp_path)
    assert code_digest("report", tmp_path) == first
    source.write_text("A = 2\n")
    assert code_digest("report", tmp_path) != first



def bivrec_imports(tree, root: Path) -> set[Path]:
    """The bivrec module files a syntax tree imports anywhere in it (packages' __init__ included)."""

    found = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for parts in (name.split(".") for name in names if name.split(".")[0] == "bivrec"):
            for end in range(1, len(parts) + 1):  # a package's __init__ runs before its modules
                base = root.joinpath(*parts[:end])
                found |= {c for c in (base / "__init__.py", base.with_suffix(".py")) if c.is_file()}
    return found


def test_code_deps_cover_every_module_a_stage_imports():
    """Each stage's code list (what both tools hash) holds the import closure of its CLI command: the
    CLI's module-level imports, those of its command function and the CLI helpers it calls, and so on."""

    from bivrec.stages import STAGE_ALIASES

    root = Path(__file__).resolve().parents[1]
    cli_tree = ast.parse((root / "bivrec" / "cli.py").read_text())
    functions = {node.name: node for node in cli_tree.body if isinstance(node, ast.FunctionDef)}
    module_level = ast.Module(body=[n for n in cli_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    for stage in set(STAGE_CODE) - set(STAGE_ALIASES):
        command = functions["cmd_settings_experiment" if stage in ("ablation", "sensitivity") else f"cmd_{stage}"]
        called = {n.func.id for n in ast.walk(command) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        closure = {root / "bivrec" / "__main__.py", root / "bivrec" / "cli.py"}
        todo = bivrec_imports(module_level, root) | bivrec_imports(command, root)
        todo |= {m for name in called & set(functions) for m in bivrec_imports(functions[name], root)}
        while todo:
            module = todo.pop()
            closure.add(module)
            todo |= bivrec_imports(ast.parse(module.read_text()), root) - closure
        paths = sorted(str(m.relative_to(root)) for m in closure)
        uncovered = [p for p in paths if not any(p == e or p.startswith(e + "/") for e in STAGE_CODE[stage])]
        assert not uncovered, f"{stage} imports {uncovered}, which STAGE_CODE in bivrec/stages.py does not list"
