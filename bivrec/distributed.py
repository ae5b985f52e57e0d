"""Data-parallel training over several processes: ``torchrun`` + ``DistributedDataParallel``.

``train.gpus: N`` (N > 1) makes ``python -m bivrec train`` start itself N times under torchrun
(``launch``), one process per GPU (on CPU: N gloo processes, which is how the tests run it). Inside
``bivrec.train.fit`` every process draws its own ``batch_size / N`` samples with its own seed, DDP
averages the gradients, and only rank 0 validates, writes the resume state and the outputs. The
global batch, and with it the optimisation, stays that of one process with ``batch_size``.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bivrec.config import ParamsError

#: added per rank to a process's seeds (rank 0 keeps the run's seed); far above replicate seed steps
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed: ranks draw different samples and dropout masks; rank 0 draws those of one process."""
        return seed + self.rank * RANK_SEED_STRIDE

    def share(self, batch_size: int) -> int:
        """Samples each process draws per step: an equal share of the global batch (equal shares keep
        DDP's gradient average equal to the gradient of the global batch's mean loss)."""
        if batch_size % self.world_size:
            raise ParamsError(f"train.batch_size={batch_size} must be divisible by the {self.world_size} training processes (train.gpus)")
        return batch_size // self.world_size

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (decisions only rank 0 can make, e.g. early stopping)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


#: the launcher's pid, passed to the processes it starts
LAUNCHER_PID = "BIVREC_LAUNCHER_PID"


def _die_with_launcher() -> None:
    """SIGKILL this process when its parent (the torchrun launcher) dies: torchrun starts its workers in
    sessions of their own, so a ``kill -9`` of the launcher would otherwise leave them training on."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return  # not Linux: no parent-death signal
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.environ.get(LAUNCHER_PID) and os.getppid() != int(os.environ[LAUNCHER_PID]):
        os._exit(1)  # the launcher died before the signal was armed


@contextmanager
def processes(device: torch.device):
    """The process group of a torchrun launch (gloo on CPU, NCCL on CUDA) for the duration of the
    block; a single ``Processes()`` without torchrun."""
    if not launched():
        yield Processes()
        return
    _die_with_launcher()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    try:
        yield Processes(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


class _Loss(torch.nn.Module):
    """``model.loss`` as a forward, so DDP sees the call it synchronises the gradients of."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, target: torch.Tensor):
        return self.model.loss(history, target)


def loss_function(model: torch.nn.Module, where: Processes):
    """``model.loss``, or with several processes the same wrapped in DDP (gradients averaged over ranks).

    ``static_graph``: a model uses the same parameters in every step, but some configurations leave a
    few out of the loss (e.g. ``gaussian_centre: token``); a static graph lets DDP find them in the first
    step instead of walking the graph every step (``find_unused_parameters``)."""
    if where.world_size == 1:
        return model.loss
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(
        _Loss(model), device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
    )


def launch(argv: list[str], n_processes: int) -> int:
    """Run ``python -m bivrec <argv>`` as ``n_processes`` torchrun processes on this machine; the exit
    code of the first failed process (a user error stays 2), else 0.

    On CUDA each process gets one of ``n_processes`` GPUs this launcher claims (``bivrec.device``)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from bivrec.device import claim_visible_gpus

    gpus = claim_visible_gpus(n_processes) if torch.cuda.is_available() else None
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # the children's cuda:0..N-1
    os.environ[LAUNCHER_PID] = str(os.getpid())
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; --threads overrides it
    options = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={n_processes}", "--module", "bivrec"])
    options.training_script_args = list(argv)  # set, not parsed: torchrun would take --run for its --run-path
    try:
        run(options)
    except ChildFailedError as failed:
        # the first process that exited by itself (the others were then stopped by torchrun with a signal)
        rank, failure = min(failed.failures.items(), key=lambda item: (item[1].exitcode <= 0, item[0]))
        print(f"bivrec: training process {rank} of {n_processes} failed with exit code {failure.exitcode}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
