"""Blocks shared by BiVRec and the baselines: full-softmax loss, ComiRec hard readout, masking, init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def full_softmax_loss(user_vec: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``target`` [B] against every item: ``user_vec`` [B, d] · ``item_table`` [N+1, d]ᵀ.

    Row 0 of the table is padding: its logit is masked so it is never a candidate.
    """
    logits = user_vec @ item_table.T
    logits[:, 0] = torch.finfo(logits.dtype).min
    return F.cross_entropy(logits.float(), target)


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
        nn.init.zeros_(module.bias)
