"""One training loop for every model: ComiRec sampling, Adam, early stopping, checkpoints, AMP.

Resumable: every validation writes ``last.pt`` (model, optimiser, RNG states, history) to a resume
folder; a killed run restarted with the same config continues from it and ends with the same result
as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from bivrec.atomic import atomic_path
from bivrec.data.dataset import SequenceData
from bivrec.evaluate import eval_options, evaluate
from bivrec.models.base import Recommender


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per validation
    best_metric: float = float("-inf")
    best_step: int = 0
    best_state: dict | None = None  # model state_dict at the best validation


class SequenceSampler:
    """ComiRec-style training samples, drawn with tensors on the data's device.

    A sample is a random training user and a random cut ``k`` in [min_cut, length): the target is the
    item at ``k``, the history the (up to ``max_len``) items before it, right-aligned, 0-padded.
    """

    def __init__(self, data: SequenceData, max_len: int, min_cut: int, seed: int):
        eligible = torch.nonzero(data.train_lengths > min_cut).flatten()
        if eligible.numel() == 0:
            raise ValueError(f"no training user has more than train.min_cut={min_cut} interactions")
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


def amp_context(device: torch.device, enabled: bool):
    """Mixed precision on CUDA when ``enabled`` (bf16 where supported, else fp16); a no-op elsewhere."""
    if device.type != "cuda" or not enabled:
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


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
) -> TrainResult:
    """Train ``model`` on ``data`` (both already on the same device) with early stopping on validation."""
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
    torch.manual_seed(seed)
    sampler = SequenceSampler(data, model.cfg["max_len"], train_cfg.get("min_cut", 1), seed)
    optimizer = make_optimizer(model, train_cfg, device)
    scaler_needed = device.type == "cuda" and train_cfg.get("amp", True) and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=scaler_needed)
    step, bad_validations = 0, 0
    resume_file = Path(resume_dir) / "last.pt" if resume_dir else None
    if resume_file and resume_file.exists():
        saved = torch.load(resume_file, map_location=device, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])
            _restore_rng(saved["rng"], sampler)
            step, bad_validations = saved["step"], saved["bad_validations"]
            result = saved["result"]
            print(f"resuming from {resume_file} at step {step}", file=sys.stderr)
        else:
            print(f"ignoring {resume_file}: it belongs to another configuration", file=sys.stderr)

    max_steps, eval_every, patience = train_cfg["max_steps"], train_cfg["eval_every"], train_cfg["patience"]
    bar = tqdm(total=max_steps, initial=step, desc="train", disable=not progress, mininterval=1.0, file=sys.stderr)
    started = time.perf_counter()
    running: dict[str, float] = {}
    while step < max_steps and bad_validations < patience:
        model.train()
        history, target = sampler.sample(train_cfg["batch_size"])
        with amp_context(device, train_cfg.get("amp", True)):
            loss, parts = model.loss(history, target)
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
        if step % eval_every == 0 or step == max_steps:
            scores = evaluate(model, data.valid, **eval_options(eval_cfg)).metrics
            row = {"step": step, **{k: v / eval_every for k, v in running.items()}}
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
            if resume_file:
                with atomic_path(resume_file) as tmp:
                    torch.save(
                        {
                            "fingerprint": fingerprint,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict(),
                            "rng": _rng_states(sampler),
                            "step": step,
                            "bad_validations": bad_validations,
                            "result": result,
                        },
                        tmp,
                    )
    bar.close()
    return result


def clear_resume_state(resume_dir: str | Path) -> None:
    shutil.rmtree(resume_dir, ignore_errors=True)
