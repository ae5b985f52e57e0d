"""One training loop for every model: ComiRec sampling, Adam, early stopping, checkpoints, AMP.

Resumable: every validation writes the training state to a resume folder, tensors (model, optimiser,
RNG states, best weights) in ``last-<step>.pt`` and everything else (fingerprint, step, history) in
``last.json``; a run killed at any moment (Ctrl-C or ``kill -9``) and restarted with the same config
continues from the last validation and ends with the same result as an uninterrupted run. Tensors
load with ``torch.load(weights_only=True)``: a resume file cannot run code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from bivrec.atomic import atomic_path, write_text
from bivrec.config import ParamsError
from bivrec.data.dataset import DataError, SequenceData
from bivrec.distributed import Processes, loss_function
from bivrec.evaluate import eval_options, evaluate
from bivrec.models.base import Recommender


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per validation
    best_metric: float = float("-inf")
    best_step: int = 0
    best_state: dict | None = None  # model state_dict at the best validation
    steps: int = 0  # optimiser steps taken (also those before a resume)
    samples_per_second: float = float("nan")  # training samples per second of optimisation, validations excluded


class SequenceSampler:
    """ComiRec-style training samples, drawn with tensors on the data's device.

    A sample is a random training user and a random cut ``k`` in [min_cut, length): the target is the
    item at ``k``, the history the (up to ``max_len``) items before it, right-aligned, 0-padded.
    """

    def __init__(self, data: SequenceData, max_len: int, min_cut: int, seed: int):
        eligible = torch.nonzero(data.train_lengths > min_cut).flatten()
        if eligible.numel() == 0:
            longest = int(data.train_lengths.max()) if data.train_lengths.numel() else 0
            raise DataError(f"no training user to sample from: none of the {data.train_lengths.numel()} training users "
                            f"has more than train.min_cut={min_cut} interactions (the longest has {longest})")
        self.items, self.lengths = data.train_items, data.train_lengths
        self.eligible, self.max_len, self.min_cut = eligible, max_len, min_cut
        self.offsets = torch.arange(max_len, device=self.items.device) - max_len
        self.generator = torch.Generator(device=self.items.device).manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.items.device
        pick = torch.randint(self.eligible.numel(), (batch_size,), generator=self.generator, device=device)
        users = self.eligible[pick]
        span = (self.lengths[users] - self.min_cut).float()
        cut = self.min_cut + (torch.rand(batch_size, generator=self.generator, device=device) * span).long()
        positions = cut[:, None] + self.offsets  # the max_len positions before the cut
        history = self.items[users[:, None], positions.clamp(min=0)] * (positions >= 0)
        return history, self.items[users, cut]


def run_fingerprint(*parts) -> str:
    """Hash of everything that determines a run, so a resume never mixes two configurations."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_optimizer(model: torch.nn.Module, train_cfg: dict, device: torch.device) -> torch.optim.Adam:
    """Adam from the train config; on CUDA the fused kernel (one launch per step instead of several per
    parameter: at BiVRec's size the GPU waits on launches, not arithmetic)."""
    return torch.optim.Adam(
        model.parameters(),
        lr=train_cfg["learning_rate"],
        weight_decay=train_cfg.get("weight_decay", 0.0),
        fused=device.type == "cuda",
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates it,
    slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def check_cpu_amp(device: torch.device, cpu_amp: bool) -> None:
    """One clear error for ``train.cpu_amp: true`` on a CPU without native bf16 (no silent fp32: the
    setting changes the numbers, so a run must not mean bf16 on one machine and fp32 on another)."""
    if device.type == "cpu" and cpu_amp and not cpu_has_bf16():
        raise ParamsError("train.cpu_amp: true needs a CPU with native bf16 (AVX512-BF16 or AMX, see lscpu); "
                          "this one has neither: set train.cpu_amp: false")


def amp_context(device: torch.device, enabled: bool, cpu_amp: bool = False):
    """Mixed precision: on CUDA when ``enabled`` (bf16 where supported, else fp16), on CPU when
    ``cpu_amp`` (bf16; ``check_cpu_amp`` first); otherwise a no-op."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if device.type == "cpu" and cpu_amp:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def _rng_states(sampler: SequenceSampler) -> dict:
    states = {"torch": torch.get_rng_state(), "sampler": sampler.generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict, sampler: SequenceSampler) -> None:
    # RNG states must be CPU byte tensors; loading the resume file onto a GPU moves them there
    torch.set_rng_state(states["torch"].cpu())
    sampler.generator.set_state(states["sampler"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def fit(
    model: Recommender,
    data: SequenceData,
    train_cfg: dict,
    eval_cfg: dict,
    seed: int,
    resume_dir: str | Path | None = None,
    fingerprint: str = "",
    progress: bool = True,
    where: Processes = Processes(),
) -> TrainResult:
    """Train ``model`` on ``data`` (both already on the same device) with early stopping on validation.

    ``where``: with several processes (torchrun) each draws its share of the batch with its own seed
    and DDP averages the gradients; rank 0 validates and keeps the resume state, the others follow its
    early-stopping decision. Only rank 0's result holds the history and best weights."""
    metric = eval_cfg.get("select_metric", "recall@20")
    result = TrainResult()
    if hasattr(model, "fit_counts"):  # statistics of the training interactions (popularity, fused readout)
        model.fit_counts(data.item_counts)
    if not model.trainable:
        scores = evaluate(model, data.valid, **eval_options(eval_cfg)).metrics
        result.history.append({"step": 0, **{f"valid_{k}": v for k, v in scores.items()}})
        result.best_metric, result.best_state = scores[metric], copy.deepcopy(model.state_dict())
        return result

    device = next(model.parameters()).device
    torch.manual_seed(where.seed(seed))
    sampler = SequenceSampler(data, model.cfg["max_len"], train_cfg.get("min_cut", 1), where.seed(seed))
    batch_size, loss_of = where.share(train_cfg["batch_size"]), loss_function(model, where)
    optimizer = make_optimizer(model, train_cfg, device)
    cuda_amp, cpu_amp = train_cfg.get("amp", True), train_cfg.get("cpu_amp", False)
    check_cpu_amp(device, cpu_amp)
    scaler_needed = device.type == "cuda" and cuda_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=scaler_needed)
    step, bad_validations = 0, 0
    saved = load_resume_state(resume_dir, fingerprint, device) if resume_dir else None
    if saved is not None:
        model.load_state_dict(saved["tensors"]["model"])
        optimizer.load_state_dict(saved["tensors"]["optimizer"])
        scaler.load_state_dict(saved["tensors"]["scaler"])
        _restore_rng(saved["tensors"].get("rng_by_rank", [saved["tensors"]["rng"]])[where.rank], sampler)
        step, bad_validations = saved["step"], saved["bad_validations"]
        result = TrainResult(saved["history"], saved["best_metric"], saved["best_step"], saved["tensors"]["best_state"])
        print(f"resuming from {Path(resume_dir) / RESUME_RECORD} at step {step}", file=sys.stderr)

    max_steps, eval_every, patience = train_cfg["max_steps"], train_cfg["eval_every"], train_cfg["patience"]
    bar = tqdm(total=max_steps, initial=step, desc="train", disable=not (progress and where.main), mininterval=1.0, file=sys.stderr)
    started = time.perf_counter()
    first_step, validation_seconds = step, 0.0  # throughput counts this process's steps only
    running: dict[str, float] = {}
    while step < max_steps and bad_validations < patience:
        model.train()
        history, target = sampler.sample(batch_size)
        with amp_context(device, cuda_amp, cpu_amp):
            loss, parts = loss_of(history, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower train.learning_rate")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        for name, value in {"loss": loss.item(), **parts}.items():
            running[name] = running.get(name, 0.0) + float(value)
        bar.update(1)
        if (step % eval_every == 0 or step == max_steps) and where.main:
            validation_started = time.perf_counter()
            scores = evaluate(model, data.valid, **eval_options(eval_cfg)).metrics
            validation_seconds += time.perf_counter() - validation_started
            row = {"step": step, **{k: v / eval_every for k, v in running.items()}}  # rank 0's samples
            row.update({f"valid_{k}": v for k, v in scores.items()})
            row["seconds"] = time.perf_counter() - started
            result.history.append(row)
            running = {}
            if scores[metric] > result.best_metric:
                result.best_metric, result.best_step, bad_validations = scores[metric], step, 0
                result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_validations += 1
            bar.set_postfix(loss=f"{row['loss']:.3f}", **{metric: f"{scores[metric]:.4f}"})
        if step % eval_every == 0 or step == max_steps:
            bad_validations = where.from_main(bad_validations)
            if resume_dir:
                rng_by_rank = where.gather(_rng_states(sampler))  # a resume continues every rank's draws
            if resume_dir and where.main:
                save_resume_state(resume_dir, fingerprint, step, bad_validations, result, {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_by_rank[0],
                    **({"rng_by_rank": rng_by_rank} if where.world_size > 1 else {}),
                })
    bar.close()
    optimising = time.perf_counter() - started - validation_seconds
    result.steps = step
    if step > first_step and optimising > 0:
        result.samples_per_second = (step - first_step) * train_cfg["batch_size"] / optimising
    return result


RESUME_RECORD = "last.json"


def save_resume_state(resume_dir: str | Path, fingerprint: str, step: int, bad_validations: int,
                      result: TrainResult, tensors: dict) -> None:
    """Write ``last-<step>.pt`` (tensors), then commit it by replacing ``last.json``, then drop older tensors.

    ``last.json`` always names a complete tensor file, whenever the process is killed.
    """
    resume_dir = Path(resume_dir)
    tensor_file = f"last-{step:09d}.pt"
    with atomic_path(resume_dir / tensor_file) as tmp:
        torch.save({**tensors, "best_state": result.best_state}, tmp)
    record = {
        "fingerprint": fingerprint,
        "tensors": tensor_file,
        "step": step,
        "bad_validations": bad_validations,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "history": result.history,
    }
    write_text(resume_dir / RESUME_RECORD, json.dumps(record, indent=1) + "\n")  # unsorted: history keeps its column order
    for old in resume_dir.glob("last-*.pt"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


def load_resume_state(resume_dir: str | Path, fingerprint: str, device: torch.device) -> dict | None:
    """The saved state of this configuration (``last.json`` fields + ``tensors``), or None to start afresh."""
    record_path = Path(resume_dir) / RESUME_RECORD
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") != fingerprint:
            print(f"ignoring {record_path}: it belongs to another configuration", file=sys.stderr)
            return None
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        record["tensors"] = torch.load(Path(resume_dir) / record["tensors"], map_location=device, weights_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
        print(f"ignoring unreadable resume state {record_path}: {error}", file=sys.stderr)
        return None
    return record


def clear_resume_state(resume_dir: str | Path) -> None:
    shutil.rmtree(resume_dir, ignore_errors=True)
