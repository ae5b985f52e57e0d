"""Cross-view interest learning (paper module 3): the two views regularise each other.

- Coarse-grained overall semantic similarity: InfoNCE between the ID-view and MM-view user vectors
  of the same user, in-batch negatives, cosine similarity over temperature τ (official code).
- Fine-grained interest allocation similarity (INFERRED, no equation recovered): both views group
  the same multi-scale tokens into K interests; the loss compares which tokens each view puts
  together, via the co-allocation matrix ``C = Aᵀ A`` [n, n], which does not depend on the order
  of the interests (interest k of one view need not match interest k of the other).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COARSE_FORMS = ("infonce", "official")
FINE_FORMS = ("mse", "cosine")


def _nce_direction(logits: torch.Tensor, form: str, dim: int) -> torch.Tensor:
    """Mean of −log(exp(s_aa) / Σ_b exp(s_ab)) along ``dim`` (1: rows MM→ID, 0: columns ID→MM).

    ``infonce`` keeps the positive b = a in the denominator (standard), ``official`` (the code)
    sums over the negatives b ≠ a only. Both directions read the same contiguous matrix.
    """
    positives = logits.diagonal()
    if form == "official":
        eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
    return (torch.logsumexp(logits, dim) - positives).mean()


def coarse_loss(
    id_user: torch.Tensor, mm_user: torch.Tensor, temperature: float, form: str = "infonce", symmetric: bool = True, fused: bool = False
) -> torch.Tensor:
    """InfoNCE between user vectors [B, d] of the two views; row a's positive is column a.

    ``s_ab = cos(u_a^MM, u_b^ID) / τ``; ``symmetric`` averages the MM→ID and ID→MM directions (the
    official code has MM→ID only and ``form="official"``). ``fused``: the same loss from ``FusedInfoNCE``
    where it applies (``infonce`` form, τ ≥ ``FusedInfoNCE.MIN_TEMPERATURE``); the CPU autocast path's.
    """
    if form not in COARSE_FORMS:
        raise ValueError(f"model.bivrec.coarse_form must be one of {COARSE_FORMS}, got {form!r}")
    if id_user.shape[0] < 2:
        raise ValueError("the coarse cross-view loss needs at least 2 users per batch (in-batch negatives)")
    mm_unit, id_unit = F.normalize(mm_user.float(), dim=-1), F.normalize(id_user.float(), dim=-1)
    if fused and form == "infonce" and temperature >= FusedInfoNCE.MIN_TEMPERATURE:
        return FusedInfoNCE.apply(mm_unit, id_unit, temperature, symmetric)
    logits = mm_unit @ id_unit.T / temperature
    loss = _nce_direction(logits, form, dim=1)
    if symmetric:
        loss = (loss + _nce_direction(logits, form, dim=0)) / 2
    return loss


class FusedInfoNCE(torch.autograd.Function):
    """``coarse_loss`` (``infonce`` form) of unit vectors [B, d] (rows: MM, columns: ID) in a few passes
    over the [B, B] logits (forward: shift and exponential, row and column sums; backward: one scaling)
    instead of the ~15 of autograd's logsumexp over both axes.

    Cosines are at most 1, so no logit exceeds 1/τ: ``exp(s − 1/τ)`` needs no max pass and is shared by
    both directions, and its smallest value, ``exp(−2/τ)``, stays a normal fp32 number for
    τ ≥ ``MIN_TEMPERATURE`` (no row or column sum can vanish). The backward turns the kept exponentials
    into the gradient ``(softmax_rows + softmax_columns)/2 − I`` in place.
    """

    MIN_TEMPERATURE = 0.025  # 2/τ ≤ 80 < 87, fp32's smallest normal exponent

    @staticmethod
    def forward(ctx, rows: torch.Tensor, cols: torch.Tensor, temperature: float, symmetric: bool) -> torch.Tensor:
        scaled = rows / temperature
        positives = (scaled * cols).sum(1)
        exps = (scaled @ cols.T).sub_(1 / temperature).exp_()
        row_sums = exps.sum(1)
        loss = (row_sums.log() + 1 / temperature - positives).mean()
        col_sums = exps.sum(0) if symmetric else None
        if symmetric:
            loss = (loss + (col_sums.log() + 1 / temperature - positives).mean()) / 2
        ctx.save_for_backward(rows, cols, exps, row_sums, col_sums)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, cols, exps, row_sums, col_sums = ctx.saved_tensors  # exps becomes the gradient: nothing else needs it
        scale = grad / (rows.shape[0] * ctx.temperature)  # d mean / d s, and d s / d (rows · cols) = 1/τ
        if col_sums is None:
            weights = (scale / row_sums).unsqueeze(1)
        else:  # each direction's softmax at half weight
            weights = (scale / 2 / row_sums).unsqueeze(1) + (scale / 2 / col_sums).unsqueeze(0)
        grad_logits = exps.mul_(weights)
        grad_logits.diagonal().sub_(scale)  # the positives: −1/B per direction
        grad_rows = grad_logits @ cols if ctx.needs_input_grad[0] else None
        grad_cols = grad_logits.T @ rows if ctx.needs_input_grad[1] else None
        return grad_rows, grad_cols, None, None


def co_allocation(allocation: torch.Tensor) -> torch.Tensor:
    """[B, K, n] token-to-interest allocation -> [B, n, n]: C_ij = Σ_k A_ki A_kj (same-interest weight)."""
    return allocation.transpose(1, 2) @ allocation


def fine_loss(
    id_allocation: torch.Tensor, mm_allocation: torch.Tensor, mask: torch.Tensor, form: str = "mse", fused: bool = False
) -> torch.Tensor:
    """Distance between the two views' co-allocation matrices, averaged over users.

    ``mse``: ||C^ID − C^MM||_F² / n², n = the user's number of real tokens (padding columns of the
    allocations are zero, so padding never counts). ``cosine``: 1 − cos(C^ID, C^MM) (flattened).
    Both are 0 for identical allocations and invariant to permuting either view's interests.
    ``fused`` (``mse`` only; the CPU autocast path's): the same distance from [K, K] Gram matrices,
    ``||AᵀA − MᵀM||² = ||AAᵀ||² − 2||AMᵀ||² + ||MMᵀ||²``, instead of [n, n] co-allocations; in
    float64, as the three terms nearly cancel where the views agree.
    """
    if form not in FINE_FORMS:
        raise ValueError(f"model.bivrec.fine_form must be one of {FINE_FORMS}, got {form!r}")
    n_tokens = mask.sum(1).clamp(min=1).float()
    if fused and form == "mse":
        k = id_allocation.shape[1]
        both = torch.cat([id_allocation, mm_allocation], 1).double()
        squared = (both @ both.transpose(1, 2)).square()  # [B, 2K, 2K]: blocks AAᵀ, AMᵀ / MAᵀ, MMᵀ
        distance = squared[:, :k, :k].sum((1, 2)) - 2 * squared[:, :k, k:].sum((1, 2)) + squared[:, k:, k:].sum((1, 2))
        return (distance.float() / n_tokens**2).mean()
    c_id, c_mm = co_allocation(id_allocation.float()), co_allocation(mm_allocation.float())
    if form == "mse":
        return (((c_id - c_mm) ** 2).sum((1, 2)) / n_tokens**2).mean()
    return (1 - F.cosine_similarity(c_id.flatten(1), c_mm.flatten(1), dim=1, eps=1e-8)).mean()
