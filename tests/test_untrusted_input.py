"""Untrusted input: URLs and file names from downloaded metadata, checkpoint and resume files, archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import torch
from helpers import write_params
from PIL import Image

from bivrec.cli import main
from bivrec.data.download import download, fetch_images
from bivrec.data.preprocess import preprocess
from bivrec.train import load_resume_state

SETTINGS = {"timeout_s": 2.0, "retries": 0, "backoff_s": 0.0, "image_workers": 2}


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "JPEG")
    return buffer.getvalue()


def test_metadata_urls_are_fetched_only_over_http_and_names_stay_in_the_folder(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg())  # a readable local file the metadata points at
    jobs = pd.DataFrame({
        "name": ["file.jpg", "bare.jpg", "ftp.jpg", "../escape.jpg", "sub/dir.jpg", "..", "ok.jpg"],
        "url": [secret.as_uri(), str(secret), "ftp://example.invalid/a.jpg", "http://127.0.0.1:9/a.jpg",
                "http://127.0.0.1:9/b.jpg", "http://127.0.0.1:9/c.jpg", "http://127.0.0.1:9/ok.jpg"],
    })
    failures = fetch_images(jobs, tmp_path / "images", SETTINGS, progress=False).set_index("name")
    for name in ("file.jpg", "bare.jpg", "ftp.jpg"):
        assert "only http(s) URLs are fetched from downloaded metadata" in failures.loc[name, "error"]
    for name in ("../escape.jpg", "sub/dir.jpg", ".."):
        assert "is not a plain file name" in failures.loc[name, "error"]
    assert not failures.loc["ok.jpg", "error"].startswith("refused:")  # allowed, merely unreachable (port 9)
    assert list((tmp_path / "images").iterdir()) == [] and not (tmp_path / "escape.jpg").exists()


def test_local_image_urls_are_allowed_only_inside_a_configured_local_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "pictures").mkdir(parents=True)
    (mirror / "pictures" / "A1.jpg").write_bytes(_jpeg())
    (tmp_path / "outside.jpg").write_bytes(_jpeg())
    reviews = [{"reviewerID": f"U{u}", "asin": f"A{i}", "overall": 5.0, "unixReviewTime": i} for u in range(4) for i in (1, 2)]
    meta = [{"asin": "A1", "title": "in", "imUrl": (mirror / "pictures" / "A1.jpg").as_uri()},
            {"asin": "A2", "title": "out", "imUrl": str(mirror / "pictures" / ".." / ".." / "outside.jpg")}]
    (mirror / "reviews.json.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, reviews)).encode()))
    (mirror / "meta.json.gz").write_bytes(gzip.compress("\n".join(map(repr, meta)).encode()))
    cfg = {"kind": "amazon2014", "mirror": str(mirror), "images": True, "download": SETTINGS,
           "sources": {"reviews": {"url": "http://x/reviews.json.gz"}, "meta": {"url": "http://x/meta.json.gz"}}}
    raw = tmp_path / "raw"
    download("toy", cfg, raw)
    assert [p.name for p in (raw / "images").iterdir()] == ["A1.jpg"]
    failed = pd.read_csv(raw / "images_failed.csv")
    assert failed["name"].tolist() == ["A2.jpg"] and "is outside the local mirror" in failed["error"][0]

    cfg["mirror"] = "http://127.0.0.1:9/"  # no local mirror: local URLs are refused outright
    failures = fetch_images(pd.DataFrame({"name": ["A1.jpg"], "url": [meta[0]["imUrl"]]}), tmp_path / "other",
                            SETTINGS, progress=False)
    assert "only http(s)" in failures["error"][0]


class _RunsCode:
    """Pickles into a call of os.mkdir(marker): what a hostile checkpoint would do on a full unpickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_checkpoints_load_weights_only_so_a_hostile_one_cannot_run_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    small = {"data": {"synthetic": {"n_users": 60, "n_items": 20, "n_categories": 4, "image_size": 16}},
             "model": {"dim": 8, "max_len": 4}, "train": {"batch_size": 8, "max_steps": 2, "eval_every": 2},
             "eval": {"topk": [5], "select_metric": "recall@5"}}
    params = str(write_params(tmp_path, small))
    (tmp_path / "features").mkdir()
    for argv in (["download", "--dataset", "synthetic", "--out", "raw"],
                 ["preprocess", "--dataset", "synthetic", "--raw", "raw", "--out", "data"],
                 ["train", "--run", "sasrec", "--data", "data", "--features", "features", "--out", "model", "--quiet"]):
        assert main([argv[0], "--params", params, *argv[1:]]) == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"] == "sasrec" and config["n_items"] == 20  # what the weights belong to, as JSON beside them
    assert all(isinstance(v, torch.Tensor) for v in torch.load(tmp_path / "model" / "best.pt", weights_only=True).values())

    marker = tmp_path / "code_ran"
    torch.save({"state": _RunsCode(marker)}, tmp_path / "model" / "best.pt")
    torch.load(tmp_path / "model" / "best.pt", weights_only=False)
    assert marker.exists(), "the same file does run code when fully unpickled"
    marker.rmdir()
    evaluate = ["evaluate", "--params", params, "--model", "model", "--data", "data", "--features", "features",
                "--out", "metrics.json", "--per-user", "per_user.parquet"]
    assert main(evaluate) == 2
    assert "model: unreadable checkpoint or config" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "metrics.json").exists()


def test_resume_state_loads_weights_only(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    torch.save({"model": _RunsCode(marker)}, tmp_path / "last-000000010.pt")
    (tmp_path / "last.json").write_text(json.dumps({"fingerprint": "f", "tensors": "last-000000010.pt", "step": 10}))
    assert load_resume_state(tmp_path, "f", torch.device("cpu")) is None
    assert "ignoring unreadable resume state" in capsys.readouterr().err
    assert not marker.exists()


def test_archive_members_never_reach_the_file_system(tmp_path):
    """MovieLens zips are read member by member in memory (nothing is extracted), so hostile member paths
    (``../``, absolute) cannot write anywhere; only the expected members are read."""
    raw = tmp_path / "raw"
    raw.mkdir()
    ratings = "\n".join(f"{u}::{m}::4::{978300000 + m}" for u in range(1, 12) for m in range(1, 7))
    with zipfile.ZipFile(raw / "ml-1m.zip", "w") as archive:
        archive.writestr("ml-1m/ratings.dat", ratings)
        archive.writestr("ml-1m/movies.dat", "\n".join(f"{m}::Movie {m} (1999)::Drama" for m in range(1, 7)))
        archive.writestr("../escaped.txt", "outside the folder")
        archive.writestr(str(tmp_path / "absolute.txt"), "absolute path")
    split = {"valid_ratio": 0.2, "test_ratio": 0.2, "history_ratio": 0.8, "min_sequence_length": 3, "seed": 0}
    stats = preprocess("ml", {"kind": "movielens1m", "sources": {"archive": {"url": "https://x/ml-1m.zip"}}}, split,
                       raw, tmp_path / "data")
    assert stats["interactions"] == 66
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]
    assert sorted(p.name for p in raw.iterdir()) == ["ml-1m.zip"]
    assert not Path(tmp_path / "absolute.txt").exists()
