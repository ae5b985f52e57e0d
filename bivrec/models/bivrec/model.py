"""BiVRec: two views (item IDs, multimodal features) trained jointly and tied by cross-view losses.

    L = L_rec^ID + L_rec^MM + coarse_weight · L_coarse + fine_weight · L_fine

Each view: item vectors -> multi-scale tokens (embedding.py) -> K interests (decomposition.py);
its recommendation loss is a full softmax over all items with the ComiRec hard readout. The ID view
scores items with learned ID embeddings, the MM view with the items' projected features only (so it
transfers to another catalogue). See docs/model.md for the equations and the reconstructed choices.

The default readout with both views, ``fused`` (INFERRED), ranks by a per-item mixture of the views'
probabilities, trusting the ID view for item i by n_i / (n_i + fused_prior_count) with n_i its training
interactions: warm items are ranked mostly by their ID embeddings, items the ID view has (almost)
never seen by their content.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bivrec.features.store import ItemFeatures
from bivrec.models import register
from bivrec.models.base import MODALITIES, Recommender, model_option
from bivrec.models.bivrec.cross_view import COARSE_FORMS, FINE_FORMS, coarse_loss, fine_loss
from bivrec.models.bivrec.decomposition import InterestDecomposition
from bivrec.models.bivrec.embedding import MultiScaleEmbedding
from bivrec.models.layers import (
    Dropout,
    autocast_dtype,
    buffer_view,
    cpu_autocast,
    full_softmax_loss,
    hard_readout,
    init_weights,
    item_chunks,
    max_interest_scores,
    project_constant,
)

VIEWS = {"id": ("id",), "mm": ("mm",), "both": ("id", "mm")}
#: memory the fused readout may hold a user batch's scores of every item in (both views), to score once
FUSED_SCORE_CACHE_BYTES = 2**30
READOUTS = ("auto", "id", "mm", "sum", "max", "fused")
FUSIONS = ("concat", "sum")


def _option(cfg: dict, key: str):
    return model_option(cfg, key, "bivrec")


def _choice(cfg: dict, key: str, allowed) -> str:
    value = _option(cfg, key)
    if value not in allowed:
        raise ValueError(f"model.bivrec.{key} must be one of {list(allowed)}, got {value!r}")
    return value


@register("bivrec")
class BiVRec(Recommender):
    def __init__(self, n_items: int, features: ItemFeatures | None, cfg: dict):
        super().__init__(n_items, features, cfg)
        dim, max_len, dropout = _option(cfg, "dim"), _option(cfg, "max_len"), _option(cfg, "dropout")
        n_interests = _option(cfg, "n_interests")
        self.views = VIEWS[_choice(cfg, "views", VIEWS)]
        # filled by fit_counts(); NaN until then, so a forgotten call fails instead of ranking by content
        self.register_buffer("item_counts", torch.full((n_items + 1,), float("nan")), persistent=False)
        self.configure_readout(cfg)
        self.coarse_weight, self.fine_weight = float(_option(cfg, "coarse_weight")), float(_option(cfg, "fine_weight"))
        self.temperature = float(_option(cfg, "temperature"))
        self.coarse_form = _choice(cfg, "coarse_form", COARSE_FORMS)
        self.coarse_symmetric = bool(_option(cfg, "coarse_symmetric"))
        self.fine_form = _choice(cfg, "fine_form", FINE_FORMS)
        # "id" / "mm": that view's side of both cross-view losses is a fixed target, so the losses only
        # move the other view (does the coarse loss pull the MM view toward the ID view? docs/paper.md)
        self.stop_gradient = _choice(cfg, "cross_view_stop_gradient", ("none", "id", "mm"))
        allocation = _choice(cfg, "fine_allocation", ("soft", "hard"))

        if "id" in self.views:
            self.id_items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        if "mm" in self.views:
            self._build_mm_items(features, n_items, dim, list(_option(cfg, "modalities")), _choice(cfg, "fusion", FUSIONS))
        self.embed = nn.ModuleDict(
            {view: MultiScaleEmbedding(dim, max_len, list(_option(cfg, "patch_sizes")), dropout) for view in self.views}
        )
        decomposition = dict(
            dim=dim,
            n_interests=n_interests,
            dropout=dropout,
            gaussian=bool(_option(cfg, "gaussian")),
            gaussian_mode=_option(cfg, "gaussian_mode"),
            gaussian_centre=_option(cfg, "gaussian_centre"),
            cluster=bool(_option(cfg, "cluster")),
            gumbel=bool(_option(cfg, "gumbel")),
            gumbel_tau=float(_option(cfg, "gumbel_tau")),
            cluster_resoftmax=bool(_option(cfg, "cluster_resoftmax")),
            allocation_hard=allocation == "hard",
        )
        self.decompose = nn.ModuleDict({view: InterestDecomposition(**decomposition) for view in self.views})
        self.cross_view = len(self.views) == 2
        if self.cross_view and self.coarse_weight > 0:
            # official code: user vector = MLP(mean of the K interests), one head per view
            self.summary = nn.ModuleDict(
                {
                    view: nn.Sequential(
                        nn.Linear(dim, 4 * dim), nn.GELU(), Dropout(dropout), nn.Linear(4 * dim, dim), Dropout(dropout)
                    )
                    for view in self.views
                }
            )
        self.apply(init_weights)

    def configure_readout(self, cfg: dict) -> None:
        """How items are scored at evaluation: ``cfg``'s ``readout`` and, for ``fused``, its
        ``fused_prior_count``. No parameter depends on them, so a trained model can be scored under
        another readout without retraining (benchmarks/validation_defaults.py)."""
        readout = _choice(cfg, "readout", READOUTS)
        if readout == "auto":  # fused with both views (ranks cold items by content), else the only view
            readout = "fused" if len(self.views) == 2 else self.views[0]
        needed = ("id", "mm") if readout in ("sum", "max", "fused") else (readout,)
        if not set(needed) <= set(self.views):
            raise ValueError(f"model.bivrec.readout={readout!r} needs views {needed}, but the model has views {self.views}")
        if readout == "fused":
            prior_count = float(_option(cfg, "fused_prior_count"))
            if not prior_count > 0:
                raise ValueError(f"model.bivrec.fused_prior_count must be > 0, got {prior_count}")
            self.fused_prior_count = prior_count
        self.readout = readout

    def fit_counts(self, counts: torch.Tensor) -> None:
        """Training interactions per item [N+1], which weigh the views in the fused readout (all zeros
        for a catalogue without training data: every item is then ranked by content)."""
        if counts.shape != self.item_counts.shape:
            raise ValueError(f"item counts have shape {tuple(counts.shape)}; expected {tuple(self.item_counts.shape)}")
        if not bool(torch.all(counts >= 0)):
            raise ValueError("item counts must be non-negative")
        self.item_counts.copy_(counts.to(self.item_counts))

    def _build_mm_items(self, features: ItemFeatures | None, n_items: int, dim: int, modalities: list[str], fusion: str) -> None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if not modalities or unknown or len(set(modalities)) != len(modalities):
            raise ValueError(f"model.bivrec.modalities must be distinct names from {MODALITIES}, got {modalities}")
        self.modalities, self.fusion = modalities, fusion
        self._cast_features: dict[str, tuple] = {}  # modality -> (buffer, its version, low-precision copy)
        self.projections = nn.ModuleDict()
        for modality in modalities:
            table = None if features is None else getattr(features, modality)
            mask = None if features is None else getattr(features, f"{modality}_mask")
            if table is None or mask is None:
                raise ValueError(f"model.bivrec.modalities lists {modality!r} but no {modality} features were given")
            if table.shape[0] != n_items + 1 or mask.shape != (n_items + 1,):
                raise ValueError(
                    f"{modality} features have {table.shape[0]} rows (mask {tuple(mask.shape)}); expected n_items + 1 = {n_items + 1}"
                )
            # features are inputs, not learned state: kept off the checkpoint, moved with the model
            self.register_buffer(f"{modality}_features", table.float(), persistent=False)
            self.register_buffer(f"{modality}_mask", mask.float().unsqueeze(1), persistent=False)
            self.projections[modality] = nn.Linear(table.shape[1], dim)
        real = torch.ones(n_items + 1, 1)
        real[0] = 0
        self.register_buffer("real_items", real, persistent=False)
        self.fuse = nn.Linear(len(modalities) * dim, dim) if fusion == "concat" and len(modalities) > 1 else None

    def feature_table(self, modality: str) -> torch.Tensor:
        """The modality's feature buffer; under autocast its low-precision copy, made once: the features
        are constant, and autocast would cast the whole 4096-d image table again on every step."""
        table = getattr(self, f"{modality}_features")
        dtype = autocast_dtype(table.device)
        if dtype is None:
            return table
        source, version, cast = self._cast_features.get(modality, (None, None, None))
        if source is not table or version != table._version or cast.dtype != dtype:
            cast = table.to(dtype)
            self._cast_features[modality] = (table, table._version, cast)
        return cast

    def mm_item_table(self) -> torch.Tensor:
        """[N+1, d] projected, fused features of every item; a missing modality contributes 0, row 0 is 0."""
        parts = [project_constant(self.feature_table(m), self.projections[m]) * getattr(self, f"{m}_mask") for m in self.modalities]
        table = self.fuse(torch.cat(parts, 1)) if self.fuse is not None else torch.stack(parts).sum(0)
        return table * self.real_items

    def view_table(self, view: str) -> torch.Tensor:
        return self.id_items.weight if view == "id" else self.mm_item_table()

    def view_interests(self, view: str, history: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One view's interests [B, K, d], token allocation [B, K, n] and token mask [B, n]."""
        tokens, mask, positions = self.embed[view](F.embedding(history, table), history > 0)
        interests, allocation = self.decompose[view](tokens, mask, positions)
        return interests, allocation, mask

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms, outputs = {}, {}
        for view in self.views:
            table = self.view_table(view)  # projected once per step; tokens gather its d-dim rows
            outputs[view] = self.view_interests(view, history, table)
            interests = outputs[view][0]
            terms[f"rec_{view}"] = full_softmax_loss(hard_readout(interests, table[target]), table, target)
        total = sum(terms.values())
        if self.cross_view and self.stop_gradient != "none":
            stopped = outputs[self.stop_gradient]
            outputs[self.stop_gradient] = tuple(part.detach() for part in stopped)
        # the cross-view losses run in fp32 under autocast too: InfoNCE logits up to 1/τ ≈ 14 and
        # differences of co-allocation matrices lose too much in bf16, and on CPU bf16 elementwise work is slower
        full_precision = torch.autocast(history.device.type, enabled=False)
        low_precision = cpu_autocast(history)  # the opt-in path, free to compute in fewer passes
        if self.cross_view and self.coarse_weight > 0:
            id_user = self.summary["id"](outputs["id"][0].mean(1))
            mm_user = self.summary["mm"](outputs["mm"][0].mean(1))
            with full_precision:
                terms["coarse"] = coarse_loss(id_user, mm_user, self.temperature, self.coarse_form, self.coarse_symmetric, fused=low_precision)
            total = total + self.coarse_weight * terms["coarse"]
        if self.cross_view and self.fine_weight > 0:
            with full_precision:
                terms["fine"] = fine_loss(outputs["id"][1], outputs["mm"][1], outputs["id"][2], self.fine_form, fused=low_precision)
            total = total + self.fine_weight * terms["fine"]
        return total, {name: float(value.detach()) for name, value in terms.items()}

    def user_interests(self, history: torch.Tensor) -> torch.Tensor:
        """The readout's interests: one view's [B, K, d], or for ``sum``/``max`` fusion the pairs/blocks
        whose inner products with ``item_table()`` give the fused score (see docs/model.md); for
        ``fused`` the two views' interests side by side [B, K, 2d] (scored by ``ranking_scores``)."""
        if self.readout in ("id", "mm"):
            return self.view_interests(self.readout, history, self.view_table(self.readout))[0]
        z_id = self.view_interests("id", history, self.view_table("id"))[0]
        z_mm = self.view_interests("mm", history, self.view_table("mm"))[0]
        if self.readout == "fused":
            return torch.cat([z_id, z_mm], -1)
        if self.readout == "max":  # [z_id, 0] and [0, z_mm]: max over 2K interests = max of the views' scores
            return torch.cat([F.pad(z_id, (0, z_mm.shape[-1])), F.pad(z_mm, (z_id.shape[-1], 0))], 1)
        # sum: every pair (k, j) as [z_id_k, z_mm_j]; max over K² pairs = max_k s_id + max_j s_mm
        n_interests = z_id.shape[1]
        return torch.cat([z_id.repeat_interleave(n_interests, 1), z_mm.repeat(1, n_interests, 1)], -1)

    def item_table(self) -> torch.Tensor:
        if self.readout in ("id", "mm"):
            return self.view_table(self.readout)
        return torch.cat([self.view_table("id"), self.view_table("mm")], 1)

    def ranking_scores(self, history, item_table, chunk_size=None, buffers=None):
        """Fused readout: log(w_i · p_id(i) + (1 − w_i) · p_mm(i)) with w_i = n_i / (n_i + prior_count) and
        p_view the softmax over items of the view's best-interest scores; other readouts: inner products.

        Item-chunked in two passes: the softmax normalisers (log-sum-exp over all items, accumulated in
        float64 so the result does not depend on the chunking), then the chunks' fused scores."""
        if self.readout != "fused":
            yield from super().ranking_scores(history, item_table, chunk_size, buffers)
            return
        if torch.isnan(self.item_counts).any():
            raise RuntimeError("the fused readout needs training counts: call fit_counts(item_counts) first")
        interests = self.user_interests(history).float()
        dim = interests.shape[-1] // 2
        views = [(interests[..., :dim], item_table[:, :dim]), (interests[..., dim:], item_table[:, dim:])]
        chunks = item_chunks(self.n_items, chunk_size)
        out, work = buffers if buffers is not None else (None, None)
        rows = interests.shape[0]

        def view_scores(view, start, stop):
            user, table = views[view]
            return max_interest_scores(user, table[start:stop], buffer_view(out, rows, stop - start), buffer_view(work, rows, stop - start))

        # the first pass's scores are kept for the second when both views' fit FUSED_SCORE_CACHE_BYTES
        # (the same numbers as scoring again, at half the matrix products); otherwise they are recomputed
        keep = 2 * rows * self.n_items * 4 <= FUSED_SCORE_CACHE_BYTES
        kept: list[list[torch.Tensor]] = [[], []]
        log_norms = []
        for view in range(2):
            total = torch.full((rows, 1), float("-inf"), dtype=torch.float64, device=interests.device)
            for start, stop in chunks:
                if keep:
                    user, table = views[view]
                    kept[view].append(max_interest_scores(user, table[start:stop], None, buffer_view(work, rows, stop - start)))
                scores = kept[view][-1] if keep else view_scores(view, start, stop)
                total = torch.logaddexp(total, scores.double().logsumexp(1, keepdim=True))
            log_norms.append(total.float())
        trust_id = self.item_counts / (self.item_counts + self.fused_prior_count)
        log_trust_id, log_trust_mm = trust_id.log(), (1 - trust_id).log()
        for index, (start, stop) in enumerate(chunks):
            id_scores = kept[0][index] if keep else view_scores(0, start, stop)
            log_p_id = id_scores.sub(log_norms[0]).add_(log_trust_id[start:stop])
            mm_scores = kept[1][index] if keep else view_scores(1, start, stop)
            log_p_mm = mm_scores.sub_(log_norms[1]).add_(log_trust_mm[start:stop])
            yield start, torch.logaddexp(log_p_id, log_p_mm)
