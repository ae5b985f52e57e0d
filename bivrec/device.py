"""Where computation runs: the one place that turns a params `device` value into a torch device."""

from __future__ import annotations

import ctypes

import torch

from bivrec.config import ParamsError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device 'cuda' was requested in params.yaml but no CUDA device is available "
                          "(torch.cuda.is_available() is False); use device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
