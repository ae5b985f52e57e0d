"""Blocks shared by BiVRec and the baselines: full-softmax loss, ComiRec hard readout and retrieval
scores, masking, init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The low precision autocast runs matrix products in on ``device``, or None outside autocast."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def full_softmax_loss(user_vec: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``target`` [B] against every item: ``user_vec`` [B, d] · ``item_table`` [N+1, d]ᵀ.

    Row 0 of the table is padding and never a candidate: the softmax runs over rows 1..N only
    (cheaper than masking a padding column in place, whose backward copies the whole logit matrix).
    Under CPU autocast (``train.cpu_amp``) the same numbers come from ``LowPrecisionSoftmaxCrossEntropy``.
    """
    low_precision = autocast_dtype(user_vec.device) if user_vec.device.type == "cpu" else None
    if low_precision is not None:
        return LowPrecisionSoftmaxCrossEntropy.apply(user_vec, item_table[1:], target - 1, low_precision)
    logits = user_vec @ item_table[1:].T
    return SoftmaxCrossEntropy.apply(logits.float(), target - 1)


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits [B, N] against class indices [B]; equals ``F.cross_entropy``.

    Fused for a wide N (every item is a class): the forward keeps the softmax and the backward turns
    it into ``softmax − one_hot`` in place, where the generic path zero-fills a [B, N] one-hot
    gradient, runs the general log-softmax backward over it, and exponentiates again.
    The loss value is ``−log softmax[target]``, read off the kept softmax; where the target's
    probability underflows (a logit gap beyond ~87 in fp32) a sample's value is capped at ~87, while
    the gradient stays exact.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, 1)
        ctx.save_for_backward(probs, target)
        target_prob = probs.gather(1, target.unsqueeze(1))
        return -target_prob.clamp_min(torch.finfo(probs.dtype).tiny).log().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probs, target = ctx.saved_tensors  # reused as the gradient buffer: nothing else needs it
        probs[torch.arange(target.shape[0], device=target.device), target] -= 1
        return probs.mul_(grad / target.shape[0]), None


class LowPrecisionSoftmaxCrossEntropy(torch.autograd.Function):
    """What autocast computes for ``SoftmaxCrossEntropy.apply((user @ items.T).float(), target)``, in
    blocks of rows: low-precision logits, an fp32 softmax, a low-precision gradient ``softmax − one_hot``.

    Autocast runs each step over the whole [B, N] matrix in memory (logits, their fp32 copy, the
    softmax, its scaled copy, its low-precision cast: ~0.3 GB of traffic per view at Baby scale). Here
    one product writes the low-precision logits, and a block of rows goes from them through the fp32
    softmax to the stored gradient (in the logits' place) while it sits in the core's cache; the loss
    scale is applied to the small [B, d] / [N, d] products instead of the [B, N] matrix (exact for a
    power-of-two batch, as the mean's 1/B is).
    """

    BLOCK_LOGITS = 2**19  # fp32 logits per block (2 MB): they stay in a core's L2 cache

    @staticmethod
    def forward(ctx, user: torch.Tensor, items: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        with torch.autocast(user.device.type, enabled=False):
            user_low, items_low = user.to(dtype), items.to(dtype)
            # one product for all rows (blocks of ~74 rows ran it ~3x slower), into the buffer that the
            # blocks' gradients then overwrite; items transposed once so the product reads them contiguously
            grad_logits = user_low @ items_low.T.contiguous()
            log_probs = torch.empty(user.shape[0], device=user.device)
            rows = max(1, LowPrecisionSoftmaxCrossEntropy.BLOCK_LOGITS // items.shape[0])
            for start in range(0, user.shape[0], rows):
                block = slice(start, start + rows)
                probs = torch.softmax(grad_logits[block].float(), 1)
                block_target = target[block].unsqueeze(1)
                log_probs[block] = probs.gather(1, block_target).clamp_min_(torch.finfo(probs.dtype).tiny).log_().squeeze(1)
                probs.scatter_add_(1, block_target, torch.full(block_target.shape, -1.0, device=user.device))
                grad_logits[block] = probs
        ctx.save_for_backward(user_low, items_low, grad_logits)
        ctx.dtypes = user.dtype, items.dtype
        return -log_probs.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        user_low, items_low, grad_logits = ctx.saved_tensors
        scale = grad / grad_logits.shape[0]
        grad_user = (grad_logits @ items_low).to(ctx.dtypes[0]).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_items = (grad_logits.T @ user_low).to(ctx.dtypes[1]).mul_(scale) if ctx.needs_input_grad[1] else None
        return grad_user, grad_items, None, None


def project_constant(table: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear(table)`` for an input that takes no gradient (a feature table); under CPU autocast by
    ``ConstantInputLinear``, elsewhere plain ``linear``."""
    return ConstantInputLinear.apply(table, linear.weight, linear.bias) if cpu_autocast(table) else linear(table)


class ConstantInputLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` with no gradient for ``x``. The weight gradient ``gᵀ x`` takes ``gᵀ``
    made contiguous first: read through the transposed view, oneDNN's bf16 product with the
    7,051 x 4,096 image table took ~1.5x as long (~10 vs ~6.6 ms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_weight = (grad.T.contiguous() @ x.to(grad.dtype)).to(ctx.dtypes[0]) if ctx.needs_input_grad[1] else None
        grad_bias = grad.float().sum(0).to(ctx.dtypes[1]) if ctx.dtypes[1] is not None and ctx.needs_input_grad[2] else None
        return None, grad_weight, grad_bias


def hard_readout(interests: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """ComiRec/MIND training readout: the interest [B, K, d] closest (inner product) to the target [B, d].

    The choice is not differentiated; the chosen interest is, and it alone scores all items.
    """
    with torch.no_grad():
        best = torch.einsum("bkd,bd->bk", interests, target_emb).argmax(1)
    return interests[torch.arange(interests.shape[0], device=interests.device), best]


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` ignoring positions where ``mask`` is False; fully masked slices give zeros."""
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(filled, dim=dim) * mask


def cpu_autocast(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the CPU inside CPU autocast (``train.cpu_amp``): the opt-in path, which may
    draw and round differently from fp32 training, so its cheaper formulations never change the default."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def low_precision_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout for the CPU autocast path, the mask cut from 16-bit random integers.

    The CPU generator gives 64 random bits per integer draw ~5x faster than ``rand_like`` gives one
    float (both run serially, so on 2 threads the draws were a larger share still), and 16 bits per
    element are enough: the drop rate is ``p`` rounded to a multiple of 2⁻¹⁶ (0.2 -> 0.199997), and
    the kept values are scaled by the rounded rate, so the mean is kept (to the precision of ``x``'s
    dtype: in bf16 the scale itself rounds, 0.2's to exactly 1.25).
    """
    dropped = round(p * 2**16)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= dropped - 2**15
    # through uint8: bool -> float conversion is ~2x slower on CPU
    return x * keep.view(torch.uint8).to(x.dtype).mul_(2**16 / (2**16 - dropped))


class Dropout(nn.Dropout):
    """``nn.Dropout``, with ``low_precision_dropout``'s cheaper mask under CPU autocast (fp32 and CUDA
    draw exactly as ``nn.Dropout``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0 and cpu_autocast(x):
            return low_precision_dropout(x, self.p)
        return super().forward(x)


class FastDropout(nn.Module):
    """Inverted dropout like ``nn.Dropout``, with the CPU mask drawn by ``torch.rand_like``
    (``low_precision_dropout``'s under CPU autocast).

    On CPU ``nn.Dropout``'s ``bernoulli_`` costs ~2.5x a uniform draw, which made the dropout of
    the [B, n, d] token tensors one of the largest items of a training step; on CUDA it is fused,
    so that path is kept.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.is_cuda:
            return F.dropout(x, self.p, training=True)
        if cpu_autocast(x):
            return low_precision_dropout(x, self.p)
        return x * torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))  # mask built in place


def init_weights(module: nn.Module) -> None:
    """Initialisation of the official code (BERT style): N(0, 0.02) weights, zero biases, LayerNorm (1, 0).

    Use as ``model.apply(init_weights)``; an embedding's padding row stays zero.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def max_interest_scores(
    interests: torch.Tensor, item_rows: torch.Tensor, out: torch.Tensor | None = None, work: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, K, d] x [C, d] -> [B, C]: each item's best-interest score (``item_rows`` any rows of a table).

    ``out`` and ``work`` are optional contiguous [B, C] buffers; one interest is scored at a time so
    memory does not grow with K.
    """
    shape = (interests.shape[0], item_rows.shape[0])
    out = torch.empty(shape, device=interests.device) if out is None else out
    work = torch.empty(shape, device=interests.device) if work is None and interests.shape[1] > 1 else work
    torch.mm(interests[:, 0], item_rows.T, out=out)
    for k in range(1, interests.shape[1]):
        torch.mm(interests[:, k], item_rows.T, out=work)
        torch.maximum(out, work, out=out)
    return out


def item_chunks(n_items: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering the real items 1..n_items, ``chunk_size`` at a time (None = all)."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"eval.item_chunk_size must be a positive integer or null, got {chunk_size}")
    step = n_items if chunk_size is None else chunk_size
    return [(start, min(start + step, n_items + 1)) for start in range(1, n_items + 1, max(step, 1))]


def buffer_view(buffer: torch.Tensor | None, rows: int, cols: int) -> torch.Tensor | None:
    """A contiguous [rows, cols] view of the start of ``buffer`` (which holds at least rows * cols values)."""
    return None if buffer is None else buffer.view(-1)[: rows * cols].view(rows, cols)
