"""benchmarks/scale.py at a small user count: every stage runs through the pipeline's own code (a
signature change in download, preprocess, training or evaluation breaks it here, not at 25M scale)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scale_benchmark_runs_every_stage_and_tabulates_it(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--work", str(tmp_path / "work"),
                          "--users", "2000", "--steps", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"generate", "preprocess", "train", "evaluate"} <= set(rows)
    assert "| preprocess |" in rows["preprocess"] and "2000 users" in rows["preprocess"]
    assert "samples/s" in rows["train"]
    assert "200 users x" in rows["evaluate"]  # the split's test share of 2,000 users, ranked over every item
