"""Intra-view interest decomposition (paper module 2): K interest vectors per user and view.

K learnable interest tokens query the multi-scale tokens of one view through two mechanisms:

- Gaussian attention (INFERRED, no equation recovered): each interest k has a Gaussian over the
  normalised token position with centre μ_k and width σ_k; its log-density is added to the content
  logits, ``a_kj = q_k·k_j/√d − (pos_j − μ_k)² / (2σ_k²)``, softmax over tokens j.
- Cluster attention (official code's GroupViT-style grouping block): logits ``S = (W_q Q)(W_k X)ᵀ/√d``,
  Gumbel-softmax over the interest axis while training, straight-through one-hot so every token belongs
  to exactly one interest in the forward pass, ``A ← A / (Σ_j A_kj + 1)``, ``Z = LN(Q + W_o A W_v X)``.
  The ablation ``cluster: false`` replaces it by plain soft attention (softmax over tokens).

Where the Gaussian acts is a reconstruction choice (``gaussian_mode``): ``stacked`` runs Gaussian
attention first (it refines the interest tokens, in the place of the official block's optional
cross-attention pre-step) and cluster attention on the refined tokens; ``prior`` adds the Gaussian
log-prior to the cluster logits instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bivrec.models.layers import Dropout, autocast_dtype, cpu_autocast, masked_softmax

GAUSSIAN_MODES = ("stacked", "prior")
GAUSSIAN_CENTRES = ("free", "token")
_MIN_SIGMA = 1e-2


def gaussian_log_prior(positions: torch.Tensor, centre: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``−(pos_j − μ_k)² / (2σ_k²)`` for positions [n] and μ, σ [B, K] (or [1, K]) -> [B, K, n]."""
    return -((positions - centre.unsqueeze(-1)) ** 2) / (2 * sigma.unsqueeze(-1) ** 2)


class GaussianCentres(nn.Module):
    """μ_k, σ_k of each interest's positional Gaussian.

    ``free``: learned per interest, centres initialised evenly over the sequence (0 = most recent item,
    1 = ``max_len`` items back), σ = 0.5. ``token``: predicted from the (normalised) interest token by
    a linear layer, μ = sigmoid(·), σ = softplus(·).
    """

    def __init__(self, dim: int, n_interests: int, parameterisation: str):
        super().__init__()
        if parameterisation not in GAUSSIAN_CENTRES:
            raise ValueError(f"model.bivrec.gaussian_centre must be one of {GAUSSIAN_CENTRES}, got {parameterisation!r}")
        self.parameterisation = parameterisation
        if parameterisation == "free":
            self.centre = nn.Parameter((torch.arange(n_interests) + 0.5) / n_interests)
            self.raw_sigma = nn.Parameter(torch.full((n_interests,), math.log(math.expm1(0.5 - _MIN_SIGMA))))
        else:
            self.head = nn.Linear(dim, 2)

    def forward(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised interest tokens [B, K, d] -> (μ, σ), each [B, K] or [1, K]."""
        if self.parameterisation == "free":
            return self.centre.unsqueeze(0), F.softplus(self.raw_sigma).unsqueeze(0) + _MIN_SIGMA
        centre, raw_sigma = self.head(queries).float().unbind(-1)
        return torch.sigmoid(centre), F.softplus(raw_sigma) + _MIN_SIGMA


class TokenProducts:
    """One view's tokens [B, n, d] as the decomposition multiplies them: with projected queries
    (attention logits) and with attention weights (pooling).

    With ``merge`` (the CPU autocast path) no product computes its own gradient with respect to the
    tokens: each leaves its two factors, and the first product of the forward pass, whose backward
    runs last (every later product depends on it), sums them in one batched product, a
    [B, n, 4K] x [B, 4K, d] instead of four with K inner terms and three additions of bf16
    [B, n, d] gradients. Without it, plain autograd products (the fp32 path, unchanged).
    """

    def __init__(self, tokens: torch.Tensor, merge: bool = False):
        self.tokens, self.merge = tokens, merge
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (a, b) pairs: the tokens' gradient is Σ aᵀ b
        self.collector_made = False

    def logits(self, projected: torch.Tensor) -> torch.Tensor:
        """``projected`` queries [B, K, d] (or [1, K, d], shared by all users) · tokens -> [B, K, n]."""
        if self.merge:
            return _MergedTokenProduct.apply(projected.to(self.tokens.dtype), self.tokens, self, False)
        if projected.shape[0] == 1:  # the same queries for every user: one [B·n, d] x [d, K] product
            return (self.tokens @ projected[0].T).transpose(1, 2).contiguous()
        return (self.tokens @ projected.transpose(1, 2)).transpose(1, 2).contiguous()

    def pool(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights [B, K, n] · tokens -> [B, K, d]."""
        weights = weights.to(self.tokens.dtype)
        return _MergedTokenProduct.apply(weights, self.tokens, self, True) if self.merge else weights @ self.tokens


class _MergedTokenProduct(torch.autograd.Function):
    """``left @ tokensᵀ`` (logits) or ``left @ tokens`` (pooling), with the tokens' gradient left to
    ``TokenProducts``. Logits are taken as ``q Xᵀ`` here: their gradients ``G X`` and ``Gᵀ q`` then
    come out in the fast layouts of the batched products."""

    @staticmethod
    def forward(ctx, left: torch.Tensor, tokens: torch.Tensor, products: TokenProducts, pooling: bool) -> torch.Tensor:
        ctx.products, ctx.pooling, ctx.collects = products, pooling, not products.collector_made
        products.collector_made = True
        ctx.save_for_backward(left, tokens)
        return left @ tokens if pooling else left @ tokens.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        left, tokens = ctx.saved_tensors
        products = ctx.products
        if ctx.pooling:  # A X: dA = G Xᵀ, dX = Aᵀ G
            grad_left = grad @ tokens.transpose(1, 2)
            products.pending.append((left, grad))
        else:  # q Xᵀ: dq = G X, dX = Gᵀ q
            grad_left = grad @ tokens
            if left.shape[0] == 1:  # shared queries
                grad_left = grad_left.sum(0, keepdim=True)
            products.pending.append((grad, left.expand(grad.shape[0], -1, -1)))
        grad_tokens = None
        if ctx.collects:
            lefts, rights = zip(*products.pending)
            products.pending.clear()
            grad_tokens = torch.cat(lefts, 1).transpose(1, 2) @ torch.cat(rights, 1)
        return grad_left, grad_tokens, None, None


def as_products(tokens: torch.Tensor | TokenProducts) -> TokenProducts:
    """Plain tensors as unmerged ``TokenProducts``."""
    return tokens if isinstance(tokens, TokenProducts) else TokenProducts(tokens)


def attention_logits(queries: torch.Tensor, key: nn.Linear, tokens: torch.Tensor | TokenProducts) -> torch.Tensor:
    """``q_k · (W_k x_j + b_k) / √d`` for projected queries [B, K, d] (or [1, K, d], shared by all
    users) and tokens [B, n, d] -> [B, K, n].

    Computed as ``(q_k W_k) · x_j + q_k · b_k``: the K queries are mapped into token space instead of
    projecting all n tokens (K ≪ n), the same numbers for a fraction of the work. With plain tokens the
    product is taken as ``tokens @ (q W_k)ᵀ`` so the tokens' gradient comes out in their own layout
    (through ``tokensᵀ`` it comes out transposed, and adding it to their other gradients is ~3x
    slower); merged ``TokenProducts`` compute that gradient themselves.
    """
    tokens = as_products(tokens)
    logits = tokens.logits(queries @ key.weight)
    if key.bias is not None:
        logits = logits + (queries @ key.bias).unsqueeze(-1)
    return logits / math.sqrt(tokens.tokens.shape[-1])


def attend_values(weights: torch.Tensor, value: nn.Linear, tokens: torch.Tensor | TokenProducts) -> torch.Tensor:
    """``Σ_j A_kj (W_v x_j + b_v)`` for weights [B, K, n] and tokens [B, n, d] -> [B, K, d].

    Computed as ``W_v (Σ_j A_kj x_j) + (Σ_j A_kj) b_v``: the values are projected after pooling.
    """
    tokens = as_products(tokens)
    weights = weights.to(tokens.tokens.dtype)
    return F.linear(tokens.pool(weights), value.weight) + weights.sum(-1, keepdim=True) * value.bias


class GaussianAttention(nn.Module):
    """Interest tokens attend to the sequence tokens with a learnable positional Gaussian prior.

    The tokens arrive layer-normalised from the multi-scale embedding, so only queries are normalised.
    """

    def __init__(self, dim: int, n_interests: int, centre_parameterisation: str, dropout: float):
        super().__init__()
        self.norm_queries = nn.LayerNorm(dim, eps=1e-12)
        # softmax over tokens: a key bias adds the same logit to all of an interest's tokens and cancels
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.centres = GaussianCentres(dim, n_interests, centre_parameterisation)
        self.norm_out = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = Dropout(dropout)

    def attention(self, queries: torch.Tensor, tokens: TokenProducts, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B, K, n] weights: each row sums to 1 over the real tokens."""
        normed = self.norm_queries(queries)
        logits = attention_logits(self.query(normed), self.key, tokens) + gaussian_log_prior(positions, *self.centres(normed))
        return masked_softmax(logits, mask.unsqueeze(1), dim=-1)

    def forward(self, queries, tokens, mask, positions) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.attention(queries, tokens, mask, positions)
        gathered = attend_values(weights, self.value, tokens)
        return self.norm_out(queries + self.dropout(self.out(gathered))), weights


def competitive_assignment(logits: torch.Tensor, mask: torch.Tensor, tau: float, gumbel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign every real token to one interest. ``logits`` [B, K, n], ``mask`` [B, 1, n].

    Returns (soft, hard): ``soft`` is the softmax over the interest axis (with Gumbel noise when
    ``gumbel``), ``hard`` its straight-through one-hot: one-hot values, the gradient of ``soft``.
    Padding tokens get all-zero columns in both.
    """
    if gumbel:  # + Gumbel(0, 1) noise = −log(−log U); uniform draws are far cheaper than exponential_ on CPU
        uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
        logits = logits - uniform.log_().neg_().log_()
    soft = masked_softmax(logits / tau, mask, dim=1)
    # argmax over a contiguous last axis: over the strided interest axis it is several times slower
    choice = soft.transpose(1, 2).contiguous().argmax(-1)
    one_hot = F.one_hot(choice, soft.shape[1]).transpose(1, 2).to(soft.dtype) * mask
    return soft, one_hot - soft.detach() + soft


class ClusterAttention(nn.Module):
    """Grouping of sequence tokens into interests; ``hard=False`` gives the plain soft-attention ablation.

    ``forward`` returns the interests [B, K, d] and the allocation [B, K, n]: each real token's
    distribution over interests (``allocation_hard``: its straight-through one-hot), which the
    fine-grained cross-view loss compares between views.
    """

    def __init__(self, dim: int, dropout: float, hard: bool, gumbel: bool, tau: float, resoftmax: bool, allocation_hard: bool):
        super().__init__()
        self.hard, self.gumbel, self.tau, self.resoftmax = hard, gumbel, tau, resoftmax
        self.allocation_hard = allocation_hard
        # A bias that adds the same logit along the softmax axis cancels, so it is left out: the query
        # side's (query bias, LayerNorm shift) for the competitive softmax over interests, the key
        # bias for the soft attention over tokens.
        self.norm_queries = nn.LayerNorm(dim, eps=1e-12, bias=not hard)
        self.query, self.key = nn.Linear(dim, dim, bias=not hard), nn.Linear(dim, dim, bias=hard)
        self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_dropout = Dropout(dropout)
        self.norm_out = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, queries, tokens, mask, log_prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = attention_logits(self.query(self.norm_queries(queries)), self.key, tokens)
        if log_prior is not None:
            logits = logits + log_prior
        token_mask = mask.unsqueeze(1)
        if self.hard:
            soft, hard = competitive_assignment(logits, token_mask, self.tau, self.gumbel and self.training)
            weights = hard / (hard.sum(-1, keepdim=True) + 1.0)  # assign_eps = 1 (official code)
            if self.resoftmax:  # official code: a second softmax over tokens of the normalised weights
                weights = masked_softmax(weights, token_mask, dim=-1)
        else:
            weights = masked_softmax(logits, token_mask, dim=-1)
            soft, hard = competitive_assignment(logits, token_mask, 1.0, gumbel=False)
        gathered = attend_values(self.attn_dropout(weights), self.value, tokens)
        interests = self.norm_out(queries + self.out(gathered))
        return interests, hard if self.allocation_hard else soft


class InterestDecomposition(nn.Module):
    """K interest vectors [B, K, d] and the token allocation [B, K, n] of one view."""

    def __init__(
        self,
        dim: int,
        n_interests: int,
        dropout: float,
        gaussian: bool,
        gaussian_mode: str,
        gaussian_centre: str,
        cluster: bool,
        gumbel: bool,
        gumbel_tau: float,
        cluster_resoftmax: bool,
        allocation_hard: bool,
    ):
        super().__init__()
        if gaussian_mode not in GAUSSIAN_MODES:
            raise ValueError(f"model.bivrec.gaussian_mode must be one of {GAUSSIAN_MODES}, got {gaussian_mode!r}")
        self.interest_tokens = nn.Parameter(nn.init.trunc_normal_(torch.empty(n_interests, dim), std=0.02))
        self.gaussian_attention = (
            GaussianAttention(dim, n_interests, gaussian_centre, dropout) if gaussian and gaussian_mode == "stacked" else None
        )
        self.prior_centres = GaussianCentres(dim, n_interests, gaussian_centre) if gaussian and gaussian_mode == "prior" else None
        # the token parameterisation reads normalised interest tokens; free centres read nothing
        self.prior_norm = nn.LayerNorm(dim, eps=1e-12) if gaussian_centre == "token" else nn.Identity()
        self.cluster = ClusterAttention(dim, dropout, cluster, gumbel, gumbel_tau, cluster_resoftmax, allocation_hard)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        on_cpu_autocast = cpu_autocast(tokens)
        queries = self.interest_tokens.unsqueeze(0)
        if not on_cpu_autocast:  # the CPU autocast path broadcasts the shared queries instead
            queries = queries.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        low_precision = autocast_dtype(tokens.device)
        if low_precision is not None:  # the tokens only feed matrix products: cast once, not once per product
            tokens = tokens.to(low_precision)
        tokens = TokenProducts(tokens, merge=on_cpu_autocast)
        log_prior = None
        if self.gaussian_attention is not None:
            queries, _ = self.gaussian_attention(queries, tokens, mask, positions)
        elif self.prior_centres is not None:
            log_prior = gaussian_log_prior(positions, *self.prior_centres(self.prior_norm(queries)))
        return self.cluster(queries, tokens, mask, log_prior)
