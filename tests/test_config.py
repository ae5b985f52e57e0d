import copy

import pytest

from bivrec.config import ParamsError, load_params, resolve_run, select, validate_params
from bivrec.stages import STAGE_PARAMS, code_digest, stage_keys


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
    assert set(sliced) == {"seed", "data", "split"}
    assert set(sliced["data"]) == {"synthetic"}
    assert set(STAGE_PARAMS) >= {"download", "preprocess", "train", "evaluate", "report"}


def test_code_digest_follows_content(tmp_path):
    (tmp_path / "bivrec" / "report").mkdir(parents=True)
    source = tmp_path / "bivrec" / "report" / "tables.py"
    source.write_text("A = 1\n")
    first = code_digest("report", tmp_path)
    assert code_digest("report", tmp_path) == first
    source.write_text("A = 2\n")
    assert code_digest("report", tmp_path) != first
