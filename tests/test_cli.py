import subprocess
import sys
from pathlib import Path

import yaml

from bivrec.cli import build_parser, main
from bivrec.stages import STAGE_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_a_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands == set(STAGE_PARAMS)


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
