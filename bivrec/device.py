"""Where computation runs: the one place that turns a params `device` value into a torch device."""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bivrec.config import ParamsError

#: lock files of the GPUs claimed by this process, held open (and so locked) until it exits
_LOCKS: list = []
#: the GPUs this process claimed for itself (``claim_visible_gpus``)
_CLAIMED: list[str] = []


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; asking for CUDA without one is an error.

    On CUDA the process gets a GPU of its own: under torchrun the one of its local rank, otherwise
    one it claims (``claim_visible_gpus``), so parallel jobs do not all land on ``cuda:0``."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device 'cuda' was requested in params.yaml but no CUDA device is available "
                          "(torch.cuda.is_available() is False); use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    if "LOCAL_RANK" in os.environ:  # a torchrun process: its launcher claimed the GPUs it sees
        index = int(os.environ["LOCAL_RANK"])
    else:
        index = _visible_gpus().index(claim_visible_gpus(1)[0])
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (a scheduler's choice), else 0..n-1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_lock_dir() -> Path:
    """Where GPU claims are made: ``$BIVREC_GPU_LOCKS``, else a per-user folder in the temp directory
    (every job of the user on this machine sees it)."""
    return Path(os.environ.get("BIVREC_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"bivrec-gpu-locks-{os.getuid()}")


def claim_visible_gpus(count: int) -> list[str]:
    """``claim_gpus`` among the GPUs this process may use; a process asks once and keeps its claim."""
    if len(_CLAIMED) < count:
        _CLAIMED.extend(claim_gpus(count - len(_CLAIMED), [g for g in _visible_gpus() if g not in _CLAIMED], gpu_lock_dir()))
    return _CLAIMED[:count]


def claim_gpus(count: int, gpus: list[str], lock_dir: Path, poll_s: float = 1.0) -> list[str]:
    """Claim ``count`` of ``gpus`` (names such as ``"0"`` or a UUID) for the rest of this process's life.

    A claim is an exclusive ``flock`` on ``lock_dir/gpu-<name>.lock``; the kernel drops it when the
    process ends in any way (``kill -9`` included), so a crashed job never keeps a GPU. When fewer than
    ``count`` are free the process waits for them (all at once: a partial claim is released again)."""
    if count > len(gpus):
        raise ParamsError(f"{count} GPU(s) asked for, but this machine shows {len(gpus)} ({','.join(gpus) or 'none'})")
    lock_dir.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        held = {}
        for gpu in gpus:
            handle = open(lock_dir / f"gpu-{gpu}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held[gpu] = handle
            if len(held) == count:
                _LOCKS.extend(held.values())
                return list(held)
        for handle in held.values():
            handle.close()  # closing the file drops its lock
        if not announced:
            print(f"waiting for {count} free GPU(s) of {','.join(gpus)} (claims in {lock_dir})", file=sys.stderr)
            announced = True
        time.sleep(poll_s)


def keep_freed_memory_in_the_heap() -> bool:
    """Tell glibc malloc to serve every block from the heap (no mmap) and never trim it.

    A step allocates several [batch, n_items] buffers (58 MB each at Baby scale); by default each is
    a fresh mmap whose pages the kernel faults in and zeroes again every step (~40 ms per buffer on
    this machine). Kept in the heap they are reused. Same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (CUDA only: a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak memory in MiB, what was measured): on CUDA the tensors allocated since the last
    ``reset_peak_memory``; on CPU the process's peak resident set size (data and libraries included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"
