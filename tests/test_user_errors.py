"""Every error a user can cause ends with one clear message and exit code 2, never a traceback, and
leaves nothing half-written: no output, no temporary, an older output untouched."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tree_bytes, write_params

from bivrec.cli import main

SMALL = {
    "data": {"synthetic": {"n_users": 120, "n_items": 40, "n_categories": 4, "image_size": 32}},
    "features": {"image": {"image_size": 32, "batch_size": 8, "num_workers": 0, "pretrained": None,
                           "arch": "mobilenet_v3_small"}},
    "model": {"dim": 8, "max_len": 6},
    "train": {"batch_size": 16, "max_steps": 10, "eval_every": 10},
    "eval": {"topk": [5], "select_metric": "recall@5"},
}


def fails_cleanly(capsys, argv: list[str], message: str, *absent: Path) -> str:
    """Run the CLI: exit code 2, one line naming the problem, no traceback, none of ``absent`` written."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1 and errors[0].startswith(f"bivrec {argv[0]}: error: "), err
    for path in absent:
        assert not path.exists(), f"{path} was written"
        assert not list(path.parent.glob(f".{path.name}.*")), f"a temporary of {path} remains"
    return err


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small synthetic dataset, downloaded and preprocessed."""
    workdir = tmp_path_factory.mktemp("errors")
    params = str(write_params(workdir, SMALL))
    assert main(["download", "--params", params, "--dataset", "synthetic", "--out", str(workdir / "raw")]) == 0
    assert main(["preprocess", "--params", params, "--dataset", "synthetic", "--raw", str(workdir / "raw"),
                 "--out", str(workdir / "data")]) == 0
    (workdir / "no_features").mkdir()
    return workdir


def _train(workdir: Path, params: Path, out: Path, features: str = "no_features") -> list[str]:
    return ["train", "--params", str(params), "--run", "sasrec", "--data", str(workdir / "data"),
            "--features", str(workdir / features), "--out", str(out), "--quiet"]


def test_truncated_gz_fails_download_and_preprocessing(tmp_path, capsys):
    reviews = "\n".join(json.dumps({"reviewerID": f"U{u}", "asin": f"A{i}", "overall": 5.0, "unixReviewTime": i})
                        for u in range(30) for i in range(6)).encode()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    whole = gzip.compress(reviews)
    (mirror / "reviews.json.gz").write_bytes(whole[: len(whole) // 2])  # a download cut short
    (mirror / "meta.json.gz").write_bytes(gzip.compress(b"{'asin': 'A1', 'title': 'ok'}\n"))
    toy = {"kind": "amazon2014", "mirror": str(mirror), "images": False,
           "sources": {"reviews": {"url": "http://x/reviews.json.gz", "sha256": None},
                       "meta": {"url": "http://x/meta.json.gz", "sha256": None}}}
    params = str(write_params(tmp_path, {"data": {"toy": toy}}))
    raw = tmp_path / "raw" / "toy"
    fails_cleanly(capsys, ["download", "--params", params, "--dataset", "toy", "--out", str(raw)],
                  "reviews.json.gz: truncated or corrupt (EOFError", raw)
    assert not (tmp_path / "raw" / "toy.partial" / "reviews.json.gz").exists(), "the corrupt file is not kept"

    shutil.copytree(mirror, tmp_path / "copied")  # the same file put into a raw folder by hand
    fails_cleanly(capsys, ["preprocess", "--params", params, "--dataset", "toy", "--raw", str(tmp_path / "copied"),
                           "--out", str(tmp_path / "data")], "reviews.json.gz: truncated or corrupt", tmp_path / "data")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_zip_fails_preprocessing(tmp_path, capsys, damage):
    ratings = "\n".join(f"{u}::{m}::4::{978300000 + m}" for u in range(1, 20) for m in range(1, 8))
    with zipfile.ZipFile(tmp_path / "ml-1m.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ml-1m/ratings.dat", ratings)
        archive.writestr("ml-1m/movies.dat", "\n".join(f"{m}::Movie {m} (1999)::Drama" for m in range(1, 8)))
    data = bytearray((tmp_path / "ml-1m.zip").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # bytes flipped inside the first member's compressed data: its CRC no longer matches
        data[60:64] = bytes(b ^ 0xFF for b in data[60:64])
    (tmp_path / "ml-1m.zip").write_bytes(bytes(data))
    params = str(write_params(tmp_path, {"data": {"ml1m": {"kind": "movielens1m"}}}))
    fails_cleanly(capsys, ["preprocess", "--params", params, "--dataset", "ml1m", "--raw", str(tmp_path),
                           "--out", str(tmp_path / "data")], "ml-1m.zip: truncated or corrupt", tmp_path / "data")


def test_images_that_are_not_images_fail_feature_extraction(prepared, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(prepared / "raw", raw)
    for image in (raw / "images").iterdir():
        image.write_text("<html>404 not found</html>")
    params = str(write_params(tmp_path, SMALL))
    out = tmp_path / "features" / "image"
    fails_cleanly(capsys, ["extract_image_features", "--params", params, "--data", str(prepared / "data"),
                           "--raw", str(raw), "--out", str(out)],
                  "none of the 40 item image(s) is a readable image, e.g. images/I00000.jpg (UnidentifiedImageError", out)
    assert not (tmp_path / "features" / "image.partial").exists()


@pytest.mark.parametrize("fault, message", [
    ("rows", "expected shape [41, dim], got [40, 4]"),
    ("nan", "features.npy: contains NaN or inf"),
    ("garbage", "are not readable .npy arrays"),
])
def test_bad_features_file_fails_training(prepared, tmp_path, monkeypatch, capsys, fault, message):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "features" / "image"
    folder.mkdir(parents=True)
    table, mask = np.ones((41, 4), np.float32), np.ones(41, bool)
    table[0], mask[0] = 0, False
    if fault == "rows":
        table = table[1:]
    elif fault == "nan":
        table[3, 1] = np.nan
    np.save(folder / "features.npy", table)
    np.save(folder / "mask.npy", mask)
    if fault == "garbage":
        (folder / "features.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "models" / "run"
    fails_cleanly(capsys, _train(prepared, write_params(tmp_path, SMALL), out, features=str(tmp_path / "features")),
                  message, out)
    assert not (tmp_path / ".bivrec").exists()


def test_cuda_requested_without_cuda(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "models" / "run"
    params = write_params(tmp_path, {**SMALL, "train": {**SMALL["train"], "device": "cuda"}})
    fails_cleanly(capsys, _train(prepared, params, out), "device 'cuda' was requested in params.yaml but no CUDA device", out)


def test_sampler_without_eligible_user(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "models" / "run"
    params = write_params(tmp_path, {**SMALL, "train": {**SMALL["train"], "min_cut": 1000}})
    fails_cleanly(capsys, _train(prepared, params, out), "no training user to sample from: none of the 96 training "
                  "users has more than train.min_cut=1000 interactions", out)
    assert not (tmp_path / ".bivrec").exists()


def _disk_fills_up(monkeypatch, module, name: str) -> None:
    """``module.name`` writes half its file, then the disk is full (ENOSPC), as a real full disk would."""
    def write_then_fail(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, name, write_then_fail)


def test_disk_full_while_preprocessing_keeps_the_old_output(prepared, tmp_path, monkeypatch, capsys):
    import pyarrow.parquet

    out = tmp_path / "data"
    shutil.copytree(prepared / "data", out)
    before = tree_bytes(out)
    _disk_fills_up(monkeypatch, pyarrow.parquet, "write_table")
    params = str(write_params(tmp_path, SMALL))
    err = fails_cleanly(capsys, ["preprocess", "--params", params, "--dataset", "synthetic", "--raw", str(prepared / "raw"),
                                 "--out", str(out)], "no space left on device; nothing was written")
    assert str(out) in err
    assert tree_bytes(out) == before, "the previous output is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml"]


def test_disk_full_while_saving_the_model(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _disk_fills_up(monkeypatch, torch, "save")
    out = tmp_path / "models" / "run"
    fails_cleanly(capsys, _train(prepared, write_params(tmp_path, SMALL), out), "no space left on device", out)
