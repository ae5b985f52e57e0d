"""Parallel GPU jobs each get a GPU of their own: claims are file locks per GPU, held by real processes
(no GPU needed: the claim names GPUs, it does not touch them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers import REPO

from bivrec.config import ParamsError
from bivrec.device import _visible_gpus, claim_gpus

CLAIMER = """
import sys, time
from pathlib import Path
from bivrec.device import claim_gpus
print(",".join(claim_gpus(int(sys.argv[1]), ["0", "1", "2"], Path(sys.argv[2]), poll_s=0.05)), flush=True)
time.sleep(600)
"""


def claimer(count: int, lock_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(count), str(lock_dir)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_parallel_jobs_get_distinct_gpus_and_a_killed_job_frees_its_own(tmp_path):
    jobs = []
    try:
        jobs = [claimer(1, tmp_path), claimer(2, tmp_path)]
        claims = [job.stdout.readline().strip().split(",") for job in jobs]
        assert sorted(sum(claims, [])) == ["0", "1", "2"], "three GPUs, three different claims"
        waiting = claimer(1, tmp_path)
        jobs.append(waiting)
        time.sleep(1.0)
        assert waiting.poll() is None and "waiting for 1 free GPU" in waiting.stderr.readline()
        jobs[0].kill()  # kill -9: the kernel drops the dead job's lock
        jobs[0].wait()
        assert waiting.stdout.readline().strip().split(",") == claims[0], "the waiting job took the freed GPU"
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_a_process_keeps_its_claim_and_cannot_ask_for_more_than_there_are(tmp_path):
    first = claim_gpus(1, ["0", "1"], tmp_path)
    second = claim_gpus(1, ["0", "1"], tmp_path)  # another lock file handle: a claim of its own
    assert first != second
    with pytest.raises(ParamsError, match="3 GPU.*shows 2"):
        claim_gpus(3, ["0", "1"], tmp_path)


def test_claims_are_among_the_gpus_a_scheduler_made_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-5e1a")
    assert _visible_gpus() == ["3", "GPU-5e1a"]  # lock names are these ids: jobs of two schedulers never collide
