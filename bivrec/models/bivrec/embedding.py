"""Multi-scale interest embedding (paper module 1): the sequence cut into patches at several scales.

For a view's item vectors ``E = [e_1 .. e_L]`` (right-aligned, padding masked) and each patch size p:

    h_{p,j} = Σ_{t in patch j} e_t + PE_pos[j] + PE_scale[p]          (additive aggregation)

Patches are non-overlapping and aligned on the most recent item (the sequence is left-padded to a
multiple of p), and patch indices j count from the most recent patch, so extra left padding changes
nothing. Tokens of all scales are concatenated (20 + 10 + 5 = 35 tokens for L = 20, P = {1, 2, 4}),
then LayerNorm and dropout (official code). A patch made only of padding is masked.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bivrec.models.layers import FastDropout, cpu_autocast


class MultiScaleEmbedding(nn.Module):
    def __init__(self, dim: int, max_len: int, patch_sizes: list[int], dropout: float):
        super().__init__()
        if not patch_sizes or any(p < 1 or p > max_len for p in patch_sizes) or len(set(patch_sizes)) != len(patch_sizes):
            raise ValueError(f"model.bivrec.patch_sizes must be distinct sizes in 1..max_len={max_len}, got {patch_sizes}")
        self.max_len = max_len
        self.patch_sizes = list(patch_sizes)
        self.position = nn.Embedding(max_len, dim)  # patch index counted from the most recent patch
        self.scale = nn.Embedding(len(patch_sizes), dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = FastDropout(dropout)  # the largest tensor of the model: the cheaper CPU mask pays

    def forward(self, item_vecs: torch.Tensor, item_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``item_vecs`` [B, L, d], ``item_mask`` [B, L] (True = real item) ->

        tokens [B, n, d], token mask [B, n], token positions [n]: the patch centre's distance from
        the most recent item divided by ``max_len`` (0 = most recent), used by Gaussian attention.
        """
        length = item_vecs.shape[1]
        if length > self.max_len:
            raise ValueError(f"history has {length} positions, more than model.max_len={self.max_len}")
        item_vecs = item_vecs * item_mask.unsqueeze(-1).to(item_vecs.dtype)  # padding contributes 0
        # CPU autocast path: every patch sum from one product with an [n, L] 0/1 matrix (fp32, exact
        # sums) instead of per-scale views, sums, additions and a concatenation, forward and backward
        by_product = cpu_autocast(item_vecs)
        tokens, masks, positions, offsets, summing = [], [], [], [], []
        for scale_index, size in enumerate(self.patch_sizes):
            n_patches = math.ceil(length / size)
            pad = n_patches * size - length
            from_recent = torch.arange(n_patches - 1, -1, -1, device=item_vecs.device)
            offsets.append(self.position(from_recent) + self.scale.weight[scale_index])
            if size == 1:  # the items themselves
                patches, patch_mask = item_vecs, item_mask
            else:
                padded_mask = F.pad(item_mask, (pad, 0)) if pad else item_mask
                patch_mask = padded_mask.view(item_mask.shape[0], n_patches, size).any(2)
                if not by_product:
                    # F.pad copies even when it adds nothing (pad 0: the length is a multiple of the size)
                    padded_vecs = F.pad(item_vecs, (0, 0, pad, 0)) if pad else item_vecs
                    patches = padded_vecs.view(item_vecs.shape[0], n_patches, size, -1).sum(2)
            if by_product:
                patch_of_item = (torch.arange(length, device=item_vecs.device) + pad) // size
                summing.append(patch_of_item == torch.arange(n_patches, device=item_vecs.device).unsqueeze(1))
            else:
                tokens.append(patches + offsets[-1])  # one pass over [B, n, d]
            masks.append(patch_mask)
            positions.append((from_recent * size + (size - 1) / 2) / self.max_len)
        if by_product:
            with torch.autocast("cpu", enabled=False):
                tokens = torch.matmul(torch.cat(summing).to(item_vecs.dtype), item_vecs) + torch.cat(offsets)
        else:
            tokens = torch.cat(tokens, 1)
        tokens = self.norm(tokens)
        positions = torch.cat(positions).to(tokens.dtype)
        if cpu_autocast(tokens):  # they only feed the decomposition's low-precision products: cast before
            tokens = tokens.to(torch.get_autocast_dtype("cpu"))  # the dropout, whose mask is cheaper there
        return self.dropout(tokens), torch.cat(masks, 1), positions
