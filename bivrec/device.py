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
