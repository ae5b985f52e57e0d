"""What image and text extraction share: device and precision, offline model files, the chunked
resumable encoding loop, and the assembly of the final feature table."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bivrec.checksums import files_sha256
from bivrec.data.dataset import DataError
from bivrec.features.store import ResumeChunks

PACKAGE_PREFIX = "package:"
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_package_path(spec: str) -> Path:
    """``package:<module>/<path inside it>`` -> that file or folder of the installed package.

    The package is located with importlib without importing it, so weight-only packages that pin
    old dependencies (installed with ``--no-deps``) are never executed.
    """
    module, _, inner = spec[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(module) if module else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"{spec}: Python package {module!r} is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise FileNotFoundError(f"{spec}: {path} does not exist in the installed package")
    return path


def local_path(spec: str | None) -> Path | None:
    """The local file/folder a weights spec names (``package:...`` or an existing path), else None."""
    if not spec:
        return None
    if spec.startswith(PACKAGE_PREFIX):
        return resolve_package_path(spec)
    path = Path(spec).expanduser()
    return path if path.exists() else None


def folder_sha256(folder: Path) -> str:
    """One checksum over every file of a model folder (names and contents)."""
    return files_sha256((p for p in folder.rglob("*") if p.is_file()), root=folder)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def cpu_threads(device: torch.device, setting: int | str, reserved: int = 0):
    """Intra-op threads for a CPU forward, restored afterwards (torch's setting is process-wide).

    ``auto`` takes the cores this process may run on (the same under Snakemake and DVC, whatever
    OMP_NUM_THREADS says) minus ``reserved`` for our own DataLoader workers: a forward whose threads get
    preempted stalls at every parallel region, which on 2 busy cores made it several times slower.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cores() - reserved) if setting == "auto" else int(setting))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def effective_precision(device: torch.device, precision: str) -> str:
    """Reduced precision is autocast on CUDA only; on CPU it would be slower, so fp32 is used."""
    return precision if device.type == "cuda" else "fp32"


def autocast(device: torch.device, precision: str):
    if effective_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def check_items(items: pd.DataFrame, columns: list[str]) -> int:
    """The item table must hold items 1..N in order; returns N."""
    missing = [c for c in ["item", *columns] if c not in items.columns]
    if missing:
        raise DataError(f"items table (items.parquet): missing column(s) {missing}; found {list(items.columns)}")
    ids = items["item"].to_numpy()
    if not np.array_equal(ids, np.arange(1, len(items) + 1)):
        raise DataError("items table (items.parquet): column 'item' must be 1..N in order")
    return len(items)


def stable_key(description: dict) -> str:
    return json.dumps(description, sort_keys=True, default=str)


@dataclass
class EncodedBatch:
    items: np.ndarray  # [B] item ids, in the order they were requested
    features: np.ndarray  # [B, D] float32, zero where not ok
    ok: np.ndarray  # [B] bool: the input was readable
    errors: list[str]  # [B] "" where ok


@dataclass
class Encoded:
    """Every requested item's raw (un-normalised) encoder output."""

    items: np.ndarray
    features: np.ndarray
    ok: np.ndarray
    errors: np.ndarray  # str


def encode_resumable(
    items: np.ndarray,
    digests: list[str],
    encoder_key: str,
    dim: int,
    chunk_size: int,
    out_dir: Path,
    encode: Callable[[np.ndarray], Iterable[EncodedBatch]],
    unit: str,
) -> Encoded:
    """Encode ``items`` in fixed chunks, saving each finished chunk in the resume folder.

    Chunks whose key (encoder + item ids + input digests) is already saved are loaded instead of
    recomputed, so an interrupted run continues where it stopped. ``encode`` receives the ids that
    still need encoding and must yield their batches in that order.
    """
    store = ResumeChunks(out_dir)
    chunks = [items[start:start + chunk_size] for start in range(0, len(items), chunk_size)]
    keys = [
        ResumeChunks.key(encoder_key, chunk, digests[start:start + chunk_size])
        for chunk, start in zip(chunks, range(0, len(items), chunk_size))
    ]
    store.prune(set(keys))
    finished = [_load_chunk(store, key, chunk, dim) for key, chunk in zip(keys, chunks)]
    pending = [index for index, chunk in enumerate(finished) if chunk is None]
    pending_items = np.concatenate([chunks[i] for i in pending]) if pending else np.zeros(0, np.int64)

    with tqdm(total=len(items), initial=len(items) - len(pending_items), unit=unit,
              desc=f"encoding ({unit}s)", smoothing=0.1) as bar:
        buffer: list[EncodedBatch] = []
        buffered = 0
        waiting = iter(pending)
        current = next(waiting, None)
        for batch in (encode(pending_items) if len(pending_items) else ()):
            buffer.append(batch)
            buffered += len(batch.items)
            bar.update(len(batch.items))
            while current is not None and buffered >= len(chunks[current]):
                merged = _concat(buffer)
                size = len(chunks[current])
                done = Encoded(*(np.asarray(field[:size]) for field in
                                 (merged.items, merged.features, merged.ok, merged.errors)))
                if not np.array_equal(done.items, chunks[current]):
                    raise RuntimeError("encoder yielded items out of the requested order")
                store.save(keys[current], items=done.items, features=done.features, ok=done.ok,
                           errors=np.asarray(done.errors, dtype=str))
                finished[current] = done
                rest = EncodedBatch(merged.items[size:], merged.features[size:], merged.ok[size:],
                                    list(merged.errors[size:]))
                buffer, buffered = [rest], len(rest.items)
                current = next(waiting, None)
    if current is not None:
        raise RuntimeError(f"encoder stopped early: {len(pending_items) - buffered} item(s) never came back")
    return Encoded(
        np.concatenate([c.items for c in finished]) if finished else np.zeros(0, np.int64),
        np.concatenate([c.features for c in finished]) if finished else np.zeros((0, dim), np.float32),
        np.concatenate([c.ok for c in finished]) if finished else np.zeros(0, bool),
        np.concatenate([np.asarray(c.errors, dtype=str) for c in finished]) if finished else np.zeros(0, str),
    )


def _load_chunk(store: ResumeChunks, key: str, chunk: np.ndarray, dim: int) -> Encoded | None:
    try:
        saved = store.load(key)
    except (OSError, ValueError, zipfile.BadZipFile):  # unreadable leftovers are recomputed
        return None
    if saved is None or not np.array_equal(saved["items"], chunk) or saved["features"].shape[1:] != (dim,):
        return None
    return Encoded(saved["items"], saved["features"], saved["ok"], saved["errors"])


def _concat(batches: list[EncodedBatch]) -> EncodedBatch:
    return EncodedBatch(
        np.concatenate([b.items for b in batches]),
        np.concatenate([b.features for b in batches]),
        np.concatenate([b.ok for b in batches]),
        [error for b in batches for error in b.errors],
    )


def feature_table(n_items: int, encoded: Encoded, dim: int, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scatter encoded rows into the [n_items + 1, dim] table (row 0 and failed items stay zero)."""
    table = np.zeros((n_items + 1, dim), dtype=np.float32)
    mask = np.zeros(n_items + 1, dtype=bool)
    good = encoded.items[encoded.ok]
    rows = encoded.features[encoded.ok].astype(np.float32)
    if normalize:
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    table[good] = rows
    mask[good] = True
    return table, mask


def runtime_record(device: torch.device, precision: str, **versions: str) -> dict:
    return {
        "device": device.type,
        "precision": effective_precision(device, precision),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, **versions},
    }
