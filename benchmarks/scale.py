"""Time and peak memory of each pipeline stage at MovieLens-25M scale (params.yaml ``data.synthetic_ml25m``:
~160k users, 60k items, ~25M interactions, no images).

Stages, each in its own process so its peak memory (RSS) is its own:

- ``generate``: the synthetic generator writes the raw files (not a target; done once, reused with --keep-raw),
- ``preprocess``: raw -> data/ (parse, k-core, remap ids, user split, parquet); target <= 5 min, < 8 GB,
- ``train``: load the processed data, then BiVRec (both views; the MM view on random 384-d text features,
  as the text encoder would give) training steps at ``train.batch_size``: samples/s,
- ``evaluate``: full ranking of the test users (16k) over all items, item-chunked with a running top-N
  (``eval.item_chunk_size``), BiVRec's fused readout; target <= 60 s, < 4 GB.

    python benchmarks/scale.py --work scale_work [--threads 2] [--users 160000] [--keep-raw] [--steps 20]

``--users`` scales the user count down (items stay 60k) for a quick run. Prints one line per stage and a
Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DATASET = "synthetic_ml25m"
STAGES = ("generate", "preprocess", "train", "evaluate")


def _params(users: int) -> dict:
    params = yaml.safe_load(PARAMS.read_text())
    params["data"][DATASET]["n_users"] = users
    return params


def _text_features(work: Path, n_items: int):
    """Random L2-normalised 384-d text features (all-MiniLM-L6-v2's width) for every item, row 0 = padding."""
    import torch

    from bivrec.features.store import ItemFeatures

    generator = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(n_items + 1, 384, generator=generator), dim=1)
    text[0] = 0
    mask = torch.ones(n_items + 1, dtype=torch.bool)
    mask[0] = False
    return ItemFeatures(None, text, None, mask)


def _model(params: dict, n_items: int, work: Path):
    import torch

    from bivrec.config import resolve_run
    from bivrec.models import build_model

    _, cfg = resolve_run(params, "bivrec")
    cfg = {**cfg, "modalities": ["text"]}
    torch.manual_seed(params["seed"])
    return build_model("bivrec", n_items, _text_features(work, n_items), cfg)


def run_stage(stage: str, work: Path, users: int, threads: int, steps: int) -> dict:
    """One stage in this process: {"seconds": ..., plus what it measured}."""
    import torch

    torch.set_num_threads(threads)
    params = _params(users)
    raw, data = work / "raw", work / "data"
    if stage == "generate":
        from bivrec.data.download import download

        started, cpu_started = time.perf_counter(), time.process_time()
        download(DATASET, params["data"][DATASET], raw)  # the pipeline's download stage: generated, with the entry's generator seed
        return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    if stage == "preprocess":
        from bivrec.data.preprocess import preprocess

        started, cpu_started = time.perf_counter(), time.process_time()
        stats = preprocess(DATASET, params["data"][DATASET], params["split"], raw, data)
        return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started, "stats": stats}

    from bivrec.data.dataset import load_dataset
    from bivrec.device import keep_freed_memory_in_the_heap

    keep_freed_memory_in_the_heap()
    started, cpu_started = time.perf_counter(), time.process_time()
    dataset = load_dataset(data, params["model"]["max_len"])
    loaded = time.perf_counter() - started
    model = _model(params, dataset.n_items, work)
    model.fit_counts(dataset.item_counts)
    if stage == "train":
        from bivrec.train import SequenceSampler, make_optimizer

        batch = params["train"]["batch_size"]
        sampler = SequenceSampler(dataset, params["model"]["max_len"], params["train"].get("min_cut", 1), params["seed"])
        optimizer = make_optimizer(model, params["train"], torch.device("cpu"))

        def step() -> None:
            loss, _ = model.loss(*sampler.sample(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()  # warm-up
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu_started, "load_seconds": loaded, "steps": steps, "batch": batch,
                "samples_per_s": steps * batch / seconds, "train_users": int(dataset.train_lengths.numel())}
    from bivrec.evaluate import eval_options, evaluate

    started, cpu_started = time.perf_counter(), time.process_time()
    result = evaluate(model, dataset.test, **eval_options(params["eval"]))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started, "load_seconds": loaded, "users": len(dataset.test),
            "items": dataset.n_items, "item_chunk_size": params["eval"].get("item_chunk_size"),
            "recall@20": result.metrics["recall@20"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, type=Path, help="folder for raw/ and data/ (tens of GB free not needed: ~1.5 GB)")
    parser.add_argument("--users", type=int, default=yaml.safe_load(PARAMS.read_text())["data"][DATASET]["n_users"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--keep-raw", action="store_true", help="reuse work/raw if it exists (skip generate)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one stage, print JSON
    args = parser.parse_args()
    if args.stage:
        out = run_stage(args.stage, args.work, args.users, args.threads, args.steps)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
        out["cpu_seconds_process"] = usage.ru_utime + usage.ru_stime  # on a shared machine: what the stage itself used
        print(json.dumps(out, default=str))
        return

    rows = []
    for stage in STAGES:
        if stage == "generate" and args.keep_raw and (args.work / "raw" / "interactions.csv").exists():
            continue
        if stage == "preprocess":
            import shutil

            shutil.rmtree(args.work / "data", ignore_errors=True)  # preprocess writes it afresh
        child = [sys.executable, __file__, "--stage", stage, "--work", str(args.work), "--users", str(args.users),
                 "--threads", str(args.threads), "--steps", str(args.steps)]
        finished = subprocess.run(child, capture_output=True, text=True)
        if finished.returncode != 0:
            sys.exit(f"scale.py: stage {stage} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
        out = json.loads(finished.stdout.strip().splitlines()[-1])
        print(stage, json.dumps(out), flush=True)
        rows.append((stage, out))
    print(f"\n| stage | wall s | CPU s | peak RSS (GB) | notes |  ({args.threads} threads, {args.users} users; CPU s = the stage's own CPU time, all threads)\n|---|---|---|---|---|")
    for stage, out in rows:
        notes = {
            "preprocess": lambda o: f"{o['stats']['users']} users, {o['stats']['items']} items, {o['stats']['interactions']} interactions",
            "train": lambda o: f"{o['samples_per_s']:.0f} samples/s (batch {o['batch']}, {o['steps']} steps); data load {o['load_seconds']:.1f} s",
            "evaluate": lambda o: f"{o['users']} users x {o['items']} items (chunks of {o['item_chunk_size']}); data load {o['load_seconds']:.1f} s",
        }.get(stage, lambda o: "")(out)
        print(f"| {stage} | {out['seconds']:.1f} | {out['cpu_seconds']:.1f} | {out['peak_rss_gb']:.2f} | {notes} |")


if __name__ == "__main__":
    main()
