"""Training throughput of BiVRec at Amazon Baby scale on the current device.

Setting (issue 4): 7,050 items, batch 2048 (``--batch``), sequence 20, K = 4, d = 64, both views, random 4096-d image
and 384-d text features, ~19k training users with Baby-like lengths; the model's other options come
from params.yaml. Each step is what ``bivrec.train.fit`` does: ComiRec sampling on the device, the
full loss (two full-softmax recommendation losses + cross-view losses), backward, Adam.

Prints one line: samples/s over the timed steps (wall clock), samples per CPU-second of this process
(on a CPU shared with other jobs, with --threads 1 this approximates the uncontended single-core
rate), and peak memory (process RSS; CUDA peak allocation on a GPU). Reference: the official code reaches ~1,450 samples/s with 6.4 GB peak RSS on 2 cores.

    python benchmarks/train_throughput.py [--steps 20] [--batch 2048] [--device auto] [--threads N] [--cpu-amp] [--default-malloc]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
import yaml

from bivrec.data.dataset import EvalSplit, SequenceData
from bivrec.features.store import ItemFeatures
from bivrec.models import build_model
from bivrec.device import keep_freed_memory_in_the_heap, pick_device
from bivrec.train import SequenceSampler, amp_context, check_cpu_amp, make_optimizer

N_ITEMS, N_USERS, MAX_LEN, N_INTERESTS, DIM = 7050, 19444, 20, 4, 64
IMAGE_DIM, TEXT_DIM = 4096, 384
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def baby_scale_data(device: torch.device, gen: torch.Generator) -> tuple[SequenceData, ItemFeatures]:
    lengths = torch.randint(5, 30, (N_USERS,), generator=gen)  # Baby: 5-core, ~8 on average, long tail
    lengths = torch.where(torch.rand(N_USERS, generator=gen) < 0.8, lengths.clamp(max=9), lengths)
    items = torch.randint(1, N_ITEMS + 1, (N_USERS, int(lengths.max())), generator=gen)
    items = items * (torch.arange(items.shape[1]) < lengths[:, None])
    empty = EvalSplit(torch.zeros(0, dtype=torch.long), torch.zeros(0, MAX_LEN, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long))
    counts = torch.bincount(items.flatten(), minlength=N_ITEMS + 1)
    data = SequenceData(N_ITEMS, items, lengths, empty, empty, counts).to(device)
    mask = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    mask[0] = False
    image, text = torch.rand(N_ITEMS + 1, IMAGE_DIM, generator=gen), torch.randn(N_ITEMS + 1, TEXT_DIM, generator=gen)
    image[0], text[0] = 0, 0
    return data, ItemFeatures(image, text, mask, mask.clone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=2048, help="samples per step (the issue's setting: 2048; paper.yaml: 256)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument("--no-amp", action="store_true", help="full fp32 on CUDA (default: mixed precision)")
    parser.add_argument("--cpu-amp", action="store_true", help="bf16 autocast on CPU (train.cpu_amp; needs native bf16)")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc malloc's mmap use as it is")
    args = parser.parse_args()
    heap_malloc = not args.default_malloc and keep_freed_memory_in_the_heap()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    check_cpu_amp(device, args.cpu_amp)
    torch.manual_seed(0)
    data, features = baby_scale_data(device, torch.Generator().manual_seed(0))

    model_params = yaml.safe_load(PARAMS.read_text())["model"]
    cfg = {k: v for k, v in model_params.items() if not isinstance(v, dict)} | model_params["bivrec"]
    cfg |= {"dim": DIM, "max_len": MAX_LEN, "n_interests": N_INTERESTS, "views": "both", "modalities": ["image", "text"]}
    model = build_model("bivrec", N_ITEMS, features, cfg).to(device)
    del features  # the model holds the tables as buffers
    optimizer = make_optimizer(model, {"learning_rate": 1e-3}, device)
    sampler = SequenceSampler(data, MAX_LEN, 1, seed=0)

    def step() -> None:
        history, target = sampler.sample(args.batch)
        with amp_context(device, not args.no_amp, args.cpu_amp):
            loss, _ = model.loss(history, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f" peak_cuda_alloc_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}" if device.type == "cuda" else ""
    print(
        f"train_throughput device={device.type} threads={torch.get_num_threads()} heap_malloc={heap_malloc} "
        f"batch={args.batch} items={N_ITEMS} amp={device.type == 'cuda' and not args.no_amp} cpu_amp={device.type == 'cpu' and args.cpu_amp} "
        f"steps={args.steps} samples_per_s={args.steps * args.batch / elapsed:.0f} "
        f"samples_per_cpu_s={args.steps * args.batch / cpu_seconds:.0f} peak_rss_mb={peak_rss_mb:.0f}{gpu}"
    )


if __name__ == "__main__":
    main()
