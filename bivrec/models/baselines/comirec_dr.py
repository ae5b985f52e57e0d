"""ComiRec-DR."""

from __future__ import annotations

import torch
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.baselines.encoders import MultiInterestRecommender, dynamic_routing
from bivrec.models.base import model_option
from bivrec.models.layers import init_weights


@register("comirec_dr")
class ComiRecDR(MultiInterestRecommender):
    """ComiRec-DR (Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020):
    the multi-interest extractor is a capsule network with dynamic routing in which each history
    position and each interest has its own bilinear map (as in the official code), routing logits
    start at zero, and no layer follows the capsules. Training uses the hard readout (the interest
    closest to the target) and full ranking merges the interests' top-N lists.
    """

    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        dim = model_option(cfg, "dim", "comirec_dr")
        super().__init__(n_items, features, cfg, dim)
        self.n_interests = model_option(cfg, "n_interests", "comirec_dr")
        self.iterations = model_option(cfg, "routing_iterations", "comirec_dr")
        max_len = model_option(cfg, "max_len", "comirec_dr")
        self.bilinear = nn.Parameter(torch.empty(max_len, self.n_interests, dim, dim))
        self.apply(init_weights)
        # the scale of a default nn.Linear, not N(0, 0.02): squash is quadratic for short vectors,
        # so tiny votes give near-zero capsules and learning stalls (as for MIND)
        nn.init.uniform_(self.bilinear, -dim**-0.5, dim**-0.5)
        # squashed capsules have norm < 1, which caps the softmax logits and makes training crawl;
        # a constant factor (the norm of a LayerNorm output, as in SASRec) is a softmax temperature
        # and leaves every user's ranking unchanged
        self.logit_scale = dim**0.5

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        weights = self.bilinear[-history.shape[1] :]  # right-aligned: positions count from the most recent
        votes = torch.einsum("bld,lkde->bkle", self.item_embedding(history), weights)
        logits = votes.new_zeros(history.shape[0], self.n_interests, history.shape[1])
        return dynamic_routing(votes, (history > 0).float(), logits, self.iterations) * self.logit_scale
