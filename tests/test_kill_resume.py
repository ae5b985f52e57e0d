"""``kill -9`` in the middle of each stage, then the same command again: it resumes (or redoes) the work
and ends with the outputs of an uninterrupted run, byte for byte (training: equal weights and metrics),
with no temporary left behind. Each stage runs as the real CLI in a subprocess on tiny data; the kill
lands when the stage's own progress shows on disk (a temporary output, a resume chunk, a checkpoint)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO, tree_bytes, write_params

ENV = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
TINY = {
    # many users make preprocessing long enough to be caught while it writes its output
    "data": {"synthetic": {"n_users": 12000, "n_items": 96, "n_categories": 4, "image_size": 32}},
    "features": {"image": {"image_size": 32, "batch_size": 8, "chunk_size": 16, "num_workers": 0,
                           "pretrained": None, "arch": "mobilenet_v3_small"}},
    "model": {"dim": 16, "max_len": 8},
    "train": {"batch_size": 32, "max_steps": 120, "eval_every": 10, "patience": 1000},
    "eval": {"topk": [5, 10], "select_metric": "recall@10"},
}


def bivrec(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bivrec", *args, "--params", "params.yaml", "--threads", "1"]
    out = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stderr[-3000:]}"
    return out


def kill_when(workdir: Path, args: list[str], ready, timeout: float = 120) -> None:
    """Start ``bivrec <args>``, SIGKILL it as soon as ``ready()`` sees its progress on disk."""
    cmd = [sys.executable, "-m", "bivrec", *args, "--params", "params.yaml", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{args[0]} ended (code {proc.returncode}) before it could be killed mid-work: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"{args[0]} showed no progress"
            time.sleep(0.001)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kill")
    write_params(workdir, TINY)
    return workdir


def test_kill_during_synthetic_download_then_rerun(workdir):
    bivrec(workdir, "download", "--dataset", "synthetic", "--out", "raw/reference")
    killed = workdir / "raw" / "synthetic"
    kill_when(workdir, ["download", "--dataset", "synthetic", "--out", "raw/synthetic"],
              lambda: any((workdir / "raw").glob(".synthetic.*.tmp/images/*.jpg")))
    assert not killed.exists() and temporaries(workdir / "raw"), "killed mid-write: only a temporary exists"
    bivrec(workdir, "download", "--dataset", "synthetic", "--out", "raw/synthetic")
    assert tree_bytes(killed) == tree_bytes(workdir / "raw" / "reference")
    assert temporaries(workdir / "raw") == [], "the rerun deleted the killed run's temporary"


def test_kill_during_preprocessing_then_rerun(workdir):
    if not (workdir / "raw" / "synthetic").exists():
        bivrec(workdir, "download", "--dataset", "synthetic", "--out", "raw/synthetic")
    bivrec(workdir, "preprocess", "--dataset", "synthetic", "--raw", "raw/synthetic", "--out", "data/reference")
    kill_when(workdir, ["preprocess", "--dataset", "synthetic", "--raw", "raw/synthetic", "--out", "data/synthetic"],
              lambda: any((workdir / "data").glob(".synthetic.*.tmp")))
    assert not (workdir / "data" / "synthetic").exists() and temporaries(workdir / "data")
    bivrec(workdir, "preprocess", "--dataset", "synthetic", "--raw", "raw/synthetic", "--out", "data/synthetic")
    assert tree_bytes(workdir / "data" / "synthetic") == tree_bytes(workdir / "data" / "reference")
    assert temporaries(workdir / "data") == []


def _image_features(workdir: Path, out: str) -> list[str]:
    return ["extract_image_features", "--data", "data/synthetic", "--raw", "raw/synthetic", "--out", out]


def test_kill_during_feature_extraction_then_resume(workdir):
    if not (workdir / "data" / "synthetic").exists():
        test_kill_during_preprocessing_then_rerun(workdir)
    bivrec(workdir, *_image_features(workdir, "features/reference/image"))
    partial = workdir / "features" / "synthetic" / "image.partial"
    kill_when(workdir, _image_features(workdir, "features/synthetic/image"), lambda: any(partial.glob("*.npz")))
    done_before = {p.name for p in partial.glob("*.npz")}
    assert not (workdir / "features" / "synthetic" / "image").exists() and done_before
    out = bivrec(workdir, *_image_features(workdir, "features/synthetic/image"))
    assert tree_bytes(workdir / "features" / "synthetic" / "image") == tree_bytes(workdir / "features" / "reference" / "image")
    assert not partial.exists() and temporaries(workdir / "features") == []
    # the finished chunks were reused, not encoded again: the bar started from them
    assert f"{16 * len(done_before)}/96" in out.stderr


def test_kill_during_training_then_resume(workdir):
    if not (workdir / "features" / "synthetic" / "image").exists():
        test_kill_during_feature_extraction_then_resume(workdir)
    train = ["train", "--run", "sasrec", "--data", "data/synthetic", "--features", "features/synthetic", "--quiet"]
    bivrec(workdir, *train, "--out", "models/reference")
    record = workdir / ".bivrec" / "resume" / "models" / "killed" / "last.json"
    kill_when(workdir, [*train, "--out", "models/killed"],
              lambda: record.exists() and json.loads(record.read_text())["step"] >= 40)
    assert not (workdir / "models" / "killed").exists()
    out = bivrec(workdir, *train, "--out", "models/killed")
    assert "resuming from" in out.stderr and not record.parent.exists(), "resumed, then the resume state is cleared"

    reference, resumed = workdir / "models" / "reference", workdir / "models" / "killed"
    for name in ("best.pt", "last.pt"):
        expected, actual = torch.load(reference / name, weights_only=True), torch.load(resumed / name, weights_only=True)
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected), name
    history = [pd.read_csv(folder / "history.csv").drop(columns="seconds") for folder in (reference, resumed)]
    pd.testing.assert_frame_equal(*history)
    metrics = []
    for run in ("reference", "killed"):
        bivrec(workdir, "evaluate", "--model", f"models/{run}", "--data", "data/synthetic", "--features",
               "features/synthetic", "--out", f"metrics/{run}.json", "--per-user", f"metrics/{run}.parquet")
        metrics.append(json.loads((workdir / "metrics" / f"{run}.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]
    assert temporaries(workdir / "models") == [] and temporaries(workdir / ".bivrec") == []


class SlowServer:
    """Serves one file in small timed pieces (so a download can be killed mid-stream); honours Range."""

    def __init__(self, body: bytes):
        self.body, self.delay, self.ranges = body, 0.02, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                server.ranges.append(start)
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                try:
                    for offset in range(start, len(server.body), 64 << 10):
                        self.wfile.write(server.body[offset:offset + (64 << 10)])
                        time.sleep(server.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/toy.inter"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


def test_kill_during_http_download_then_resume_with_range(tmp_path):
    rows = np.random.default_rng(0).integers(0, 1000, size=(120_000, 4))
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=["userID", "itemID", "rating", "timestamp"]).to_csv(buffer, sep="\t", index=False)
    server = SlowServer(buffer.getvalue().encode())
    try:
        write_params(tmp_path, {"data": {"toy": {"kind": "mmrec", "sources": {"inter": {"url": server.url, "sha256": None}}}}})
        part = tmp_path / "raw" / "toy.partial" / "toy.inter.part"
        kill_when(tmp_path, ["download", "--dataset", "toy", "--out", "raw/toy"],
                  lambda: part.exists() and part.stat().st_size > 0)
        assert not (tmp_path / "raw" / "toy").exists() and part.stat().st_size < len(server.body)
        server.delay = 0.0
        bivrec(tmp_path, "download", "--dataset", "toy", "--out", "raw/toy")
        assert server.ranges[0] == 0 and server.ranges[1] > 0, "the rerun asked only for the missing bytes"
        bivrec(tmp_path, "download", "--dataset", "toy", "--out", "raw/reference")
        assert tree_bytes(tmp_path / "raw" / "toy") == tree_bytes(tmp_path / "raw" / "reference")
        assert (tmp_path / "raw" / "toy" / "toy.inter").read_bytes() == server.body
        assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["reference", "toy"]
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
