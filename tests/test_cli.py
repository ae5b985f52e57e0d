import subprocess
import sys
from pathlib import Path

import yaml

from bivrec.cli import build_parser, main
from bivrec.stages import STAGE_ALIASES, STAGE_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_a_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands - {"params"} == set(STAGE_PARAMS) - set(STAGE_ALIASES)  # params writes a job's params file
    assert set(STAGE_ALIASES.values()) <= commands  # an alias runs an existing command


def test_bad_params_give_one_clear_error(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["learning_rat"] = 0.1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code = main(["train", "--params", str(path), "--run", "bivrec", "--data", "d", "--features", "f", "--out", "o"])
    err = capsys.readouterr().err
    assert code == 2
    assert "params.yaml: unknown key train.learning_rat" in err
    assert "Traceback" not in err


def test_missing_input_names_the_file(tmp_path, capsys):
    out = tmp_path / "models" / "run"
    code = main(["train", "--params", str(ROOT / "params.yaml"), "--run", "sasrec", "--data", str(tmp_path / "nodata"),
                 "--features", str(tmp_path / "nofeatures"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "nodata/stats.json: file not found" in err
    assert not out.exists() and not any(tmp_path.rglob("*.tmp"))


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "bivrec", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout


def test_features_stage_passes_on_features_the_dataset_ships(tmp_path):
    import numpy as np
    import pandas as pd

    data = tmp_path / "data"
    (data / "imported_features").mkdir(parents=True)
    pd.DataFrame({"item": [1, 2, 3], "original_id": list("abc"), "title": list("xyz"), "description": [""] * 3,
                  "categories": [""] * 3, "image": [""] * 3}).to_parquet(data / "items.parquet")
    shipped = np.array([[0, 0], [1, 2], [0, 0], [3, 4]], dtype=np.float32)  # item 2 has no feature
    np.save(data / "imported_features" / "image.npy", shipped)
    out = tmp_path / "features" / "image"
    assert main(["extract_image_features", "--params", str(ROOT / "params.yaml"), "--data", str(data),
                 "--raw", str(tmp_path), "--out", str(out)]) == 0
    assert np.array_equal(np.load(out / "features.npy"), shipped)
    assert np.load(out / "mask.npy").tolist() == [False, True, False, True]

    np.save(data / "imported_features" / "image.npy", np.full((4, 2), np.nan, dtype=np.float32))
    assert main(["extract_image_features", "--params", str(ROOT / "params.yaml"), "--data", str(data),
                 "--raw", str(tmp_path), "--out", str(out)]) == 2
    assert np.array_equal(np.load(out / "features.npy"), shipped), "a failed run leaves the old output intact"


def test_resume_state_never_lands_on_the_output_itself(tmp_path, monkeypatch):
    from bivrec import runs

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "models" / "run"  # absolute: must still map inside the resume root
    assert runs.resume_dir_for(out) == Path(".bivrec/resume") / str(out).lstrip("/")
    assert runs.resume_dir_for(Path("models/run")) == Path(".bivrec/resume/models/run")


def test_a_job_params_file_holds_its_keys_and_serves_only_its_job(tmp_path, capsys):
    from bivrec.stages import read_stage_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = tmp_path / "sasrec.yaml"
    assert main(["params", "--params", str(ROOT / "params.yaml"), "--stage", "train", "--dataset", "synthetic",
                 "--run", "sasrec", "--out", str(out)]) == 0
    selected = read_stage_params(out, "train", run="sasrec")
    assert selected["model"]["sasrec"] == params["model"]["sasrec"] and "bivrec" not in selected["model"]
    assert selected["train"] == params["train"] and "variants" not in selected
    assert read_stage_params(ROOT / "params.yaml", "train", run="sasrec") == selected
    first = out.read_bytes()
    main(["params", "--params", str(ROOT / "params.yaml"), "--stage", "train", "--dataset", "synthetic", "--run", "sasrec", "--out", str(out)])
    assert out.read_bytes() == first  # the same values, the same bytes: nothing downstream reruns
    code = main(["train", "--params", str(out), "--run", "bivrec", "--data", "d", "--features", "f", "--out", str(tmp_path / "o")])
    assert code == 2 and "not for {'run': 'bivrec'}" in capsys.readouterr().err
    code = main(["evaluate", "--params", str(out), "--model", "m", "--data", "d", "--features", "f", "--out", "o.json", "--per-user", "p"])
    assert code == 2 and "holds the params of the train stage, not of evaluate" in capsys.readouterr().err
