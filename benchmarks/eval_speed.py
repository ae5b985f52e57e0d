"""Wall time and peak memory of full-ranking evaluation at Baby and Electronics scale.

Random item tables and random interests stand in for a trained model (evaluation cost does not
depend on the values). Each scale runs in its own process so its peak memory is its own.

    .venv/bin/python benchmarks/eval_speed.py              # both scales, one line each
    .venv/bin/python benchmarks/eval_speed.py --scale baby --threads 2
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from bivrec.data.dataset import EvalSplit, pad_right
from bivrec.evaluate import evaluate
from bivrec.models.base import Recommender

SCALES = {  # name: (items, test users) as in the issue: Amazon Baby and Electronics
    "baby": (7_050, 2_000),
    "electronics": (63_000, 20_000),
}


class RandomInterestModel(Recommender):
    """Interests = embeddings of the last K history items: cheap, and shaped like a real model."""

    def __init__(self, n_items: int, dim: int, n_interests: int, seed: int):
        super().__init__(n_items, None, {})
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(n_items + 1, dim, generator=generator))
        self.n_interests = n_interests

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        return self.table[history[:, -self.n_interests :]]

    def item_table(self) -> torch.Tensor:
        return self.table


def run_scale(name: str, dim: int, n_interests: int, max_len: int, batch_size: int, device: str) -> str:
    n_items, n_users = SCALES[name]
    generator = torch.Generator().manual_seed(0)
    history = torch.randint(1, n_items + 1, (n_users, max_len), generator=generator)
    target_lengths = torch.randint(1, 6, (n_users,), generator=generator)
    targets = pad_right([torch.randint(1, n_items + 1, (int(n),), generator=generator).tolist() for n in target_lengths])
    split = EvalSplit(torch.arange(n_users), history, targets)
    model = RandomInterestModel(n_items, dim, n_interests, seed=1).to(device)
    evaluate(model, split.subset(torch.arange(min(64, n_users))), user_batch_size=batch_size)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = evaluate(model, split, topk=(20, 50), user_batch_size=batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    gpu = f" peak_gpu_mem={torch.cuda.max_memory_allocated() / 2**30:.2f}GB" if device == "cuda" else ""
    return (
        f"{name}: items={n_items} users={n_users} K={n_interests} d={dim} device={device} "
        f"threads={torch.get_num_threads()} wall={seconds:.3f}s peak_rss={peak_rss_gb:.2f}GB{gpu} "
        f"(recall@20={result.metrics['recall@20']:.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), help="run one scale in this process")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--interests", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--user-batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.scale:
        torch.set_num_threads(args.threads)
        print(run_scale(args.scale, args.dim, args.interests, args.max_len, args.user_batch_size, args.device))
        return
    for name in SCALES:  # a fresh process per scale keeps the peak-memory figures separate
        child = [sys.executable, __file__, "--scale", name] + [
            f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key != "scale"
        ]
        subprocess.run(child, check=True)


if __name__ == "__main__":
    main()
