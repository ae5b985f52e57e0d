"""MIND."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import MultiInterestRecommender, dynamic_routing
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


@register("mind")
class MIND(MultiInterestRecommender):
    """MIND (Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
    CIKM 2019): a capsule layer routes the history's item embeddings to K interest capsules through a
    single shared bilinear map (behaviour-to-interest dynamic routing, routing logits initialised
    from a Gaussian), followed by a ReLU layer; training reads out the interest closest to the
    target (label-aware attention with power -> infinity), as in the ComiRec reimplementation.
    The Gaussian routing initialisation is drawn once and stored, so a user's interests are
    deterministic; the per-user adaptive number of interests of the paper is not used (K fixed).
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "mind")
        super().__init__(n_items, features, cfg, dim)
        self.n_interests = model_option(cfg, "n_interests", "mind")
        self.iterations = model_option(cfg, "routing_iterations", "mind")
        self.apply(init_weights)  # the item embeddings
        # the capsule layers keep PyTorch's default (Kaiming-uniform) init: squash is quadratic for
        # short vectors, so with N(0, 0.02) weights the capsules start near zero and learning stalls
        self.bilinear = nn.Linear(dim, dim, bias=False)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        # squashed capsules have norm < 1, which caps the logits and makes training crawl; scaling
        # them to the norm of a LayerNorm output (as SASRec's) acts as a softmax temperature
        self.capsule_scale = dim**0.5
        self.register_buffer("routing_init", torch.randn(self.n_interests, model_option(cfg, "max_len", "mind")))

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        votes = self.bilinear(self.item_embedding(history))[:, None].expand(-1, self.n_interests, -1, -1)
        logits = self.routing_init[:, -history.shape[1] :].expand(history.shape[0], -1, -1)
        return self.head(dynamic_routing(votes, (history > 0).float(), logits, self.iterations) * self.capsule_scale)
