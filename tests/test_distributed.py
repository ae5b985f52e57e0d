"""Data-parallel training with torchrun on CPU (gloo, 2 processes), through the real CLI on tiny data:
it trains, its metrics stay within seed noise of one process, and a 2-process run killed with
``kill -9`` resumes and ends exactly where an uninterrupted 2-process run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO, write_params

from bivrec.config import ParamsError
from bivrec.distributed import Processes

ENV = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
TINY = {
    "data": {"synthetic": {"n_users": 400, "n_items": 80, "n_categories": 4, "image_size": 16}},
    "model": {"dim": 16, "max_len": 8},
    "train": {"batch_size": 64, "max_steps": 60, "eval_every": 20, "patience": 100, "device": "cpu"},
    "eval": {"topk": [5, 10], "select_metric": "recall@10"},
}
TRAIN = ["train", "--run", "bivrec", "--data", "data", "--features", "features", "--quiet", "--threads", "1"]


def bivrec(workdir: Path, params: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bivrec", *args, "--params", params]
    out = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tiny synthetic data, random features, and params files for 1 and 2 processes."""
    from bivrec.features.store import import_precomputed

    workdir = tmp_path_factory.mktemp("ddp")
    write_params(workdir, TINY)
    bivrec(workdir, "params.yaml", "download", "--dataset", "synthetic", "--out", "raw")
    bivrec(workdir, "params.yaml", "preprocess", "--dataset", "synthetic", "--raw", "raw", "--out", "data")
    n_items = len(pd.read_parquet(workdir / "data" / "items.parquet"))
    for modality, dim in (("image", 6), ("text", 4)):
        array = workdir / f"{modality}.npy"
        np.save(array, np.random.default_rng(0).normal(size=(n_items, dim)).astype(np.float32))
        import_precomputed(array, n_items, workdir / "features" / modality, row_offset=1)
    for name, gpus, replicates, steps in (("one", 1, 3, 60), ("two", 2, 3, 60), ("two_long", 2, 1, 120)):
        folder = workdir / name
        folder.mkdir()
        write_params(folder, {**TINY, "train": {**TINY["train"], "gpus": gpus, "replicates": replicates, "max_steps": steps}})
    return workdir


def test_each_process_draws_an_equal_share_with_its_own_seed():
    assert Processes(0, 1).seed(3407) == 3407 and Processes(0, 1).share(64) == 64, "one process: the run's own seed and batch"
    ranks = [Processes(rank, 2) for rank in range(2)]
    assert [r.share(64) for r in ranks] == [32, 32]
    assert ranks[0].seed(3407) == 3407 and ranks[1].seed(3407) not in (3407, 3408, 3409), "not another replicate's seed"
    with pytest.raises(ParamsError, match="divisible"):
        ranks[0].share(63)


def test_two_processes_train_within_seed_noise_of_one(workdir):
    metrics = {}
    for name in ("one", "two"):
        out = bivrec(workdir, f"{name}/params.yaml", *TRAIN, "--out", f"models/{name}")
        config = json.loads((workdir / "models" / name / "config.json").read_text())
        assert config["processes"] == (2 if name == "two" else 1)
        if name == "two":
            assert out.stderr.count("best {") == 3, "rank 0 alone reports (and writes) each seed"
        bivrec(workdir, f"{name}/params.yaml", "evaluate", "--model", f"models/{name}", "--data", "data", "--features",
               "features", "--out", f"metrics/{name}.json", "--per-user", f"metrics/{name}.parquet")
        metrics[name] = json.loads((workdir / "metrics" / f"{name}.json").read_text())
    histories = [pd.read_csv(workdir / "models" / name / "history.csv") for name in ("one", "two")]
    assert not histories[0]["loss"].equals(histories[1]["loss"]), "two processes draw other samples than one"
    for key in ("recall@10", "ndcg@10"):
        one, two = (metrics[name]["metrics"][key] for name in ("one", "two"))
        # standard error of the difference of two means over 3 seeds each; 3 of them is seed noise
        noise = np.sqrt((metrics["one"]["metrics_std"][key] ** 2 + metrics["two"]["metrics_std"][key] ** 2) / 3)
        assert abs(one - two) <= 3 * noise + 0.01, (key, one, two, noise)
        assert two > 0.1, "the 2-process runs learned something"


def test_killed_two_process_run_resumes(workdir):
    params = "two_long/params.yaml"
    bivrec(workdir, params, *TRAIN, "--out", "models/reference")
    record = workdir / ".bivrec" / "resume" / "models" / "killed" / "last.json"
    cmd = [sys.executable, "-m", "bivrec", *TRAIN, "--out", "models/killed", "--params", params]
    proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (record.exists() and json.loads(record.read_text())["step"] >= 40):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no resume state written"
            time.sleep(0.005)
    finally:
        proc.kill()  # kill -9 of the launcher: its workers die with it (they keep no output and no lock)
        proc.wait()
    killed_at = json.loads(record.read_text())["step"]
    time.sleep(2)  # orphaned workers, had they been left running, would validate again (or finish) by now
    assert json.loads(record.read_text())["step"] == killed_at and not (workdir / "models" / "killed").exists()

    out = bivrec(workdir, params, *TRAIN, "--out", "models/killed")
    assert "resuming from" in out.stderr and not record.parent.exists(), "resumed, then the resume state is cleared"
    reference, resumed = workdir / "models" / "reference", workdir / "models" / "killed"
    for name in ("best.pt", "last.pt"):
        expected, actual = torch.load(reference / name, weights_only=True), torch.load(resumed / name, weights_only=True)
        assert all(torch.equal(expected[k], actual[k]) for k in expected), f"{name}: every rank resumed its own draws"
    history = [pd.read_csv(folder / "history.csv").drop(columns="seconds") for folder in (reference, resumed)]
    pd.testing.assert_frame_equal(*history)


def test_indivisible_batch_is_one_user_error(workdir):
    folder = workdir / "odd"
    folder.mkdir()
    write_params(folder, {**TINY, "train": {**TINY["train"], "gpus": 2, "batch_size": 63}})
    cmd = [sys.executable, "-m", "bivrec", *TRAIN, "--out", "models/odd", "--params", "odd/params.yaml"]
    out = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "must be divisible by the 2 training processes" in out.stderr
    assert not (workdir / "models" / "odd").exists()
