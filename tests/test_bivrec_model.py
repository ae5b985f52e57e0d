"""BiVRec model: shapes, padding, attention mechanisms, cross-view losses, gradients, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import bivrec_cfg, random_features

from bivrec.data.dataset import EvalSplit, SequenceData, last_window, pad_right
from bivrec.evaluate import evaluate
from bivrec.experiments.cold_start import cold_item_split
from bivrec.features.store import ItemFeatures
from bivrec.models import build_model
from bivrec.models.bivrec.cross_view import coarse_loss, fine_loss
from bivrec.models.bivrec.decomposition import (
    ClusterAttention,
    GaussianAttention,
    attend_values,
    attention_logits,
    competitive_assignment,
)
from bivrec.models.bivrec.embedding import MultiScaleEmbedding
from bivrec.models.layers import FastDropout, full_softmax_loss, hard_readout
from bivrec.train import fit


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, more threads spin against each other (~10x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def model_cfg(**overrides) -> dict:
    """params.yaml's BiVRec config at test size, with ``overrides``."""
    return bivrec_cfg(**({"dim": 16, "max_len": 10, "n_interests": 2, "dropout": 0.0} | overrides))


def random_history(batch: int, length: int, n_items: int, max_real: int, seed: int = 0) -> torch.Tensor:
    """Right-aligned histories with 1..max_real real items, left-padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=gen)
    real = torch.randint(1, max_real + 1, (batch, 1), generator=gen)
    return items * (torch.arange(length) >= length - real)


def planted_data(seed: int = 0, n_items: int = 120, n_categories: int = 6) -> tuple[SequenceData, ItemFeatures, torch.Tensor]:
    """Items in categories that their (noisy) features reveal; a quarter of them are cold (almost never
    clicked in training). Users mix 1-2 categories; held-out users' targets are drawn uniformly from
    their categories, so many targets are cold. Returns (data, features, cold item mask)."""
    rng = np.random.default_rng(seed)
    items = np.arange(1, n_items + 1)
    category = (items - 1) % n_categories
    cold = ((items - 1) // n_categories) % 4 == 3
    weight = np.where(cold, 0.002, 1.0)
    members = [items[category == c] for c in range(n_categories)]
    member_weights = [weight[category == c] / weight[category == c].sum() for c in range(n_categories)]

    def sequence(cats, length, uniform=False):
        picks = rng.choice(cats, size=length)
        return [int(rng.choice(members[c], p=None if uniform else member_weights[c])) for c in picks]

    train, held_out = [], []
    for user in range(800):
        cats = rng.choice(n_categories, size=rng.integers(1, 3), replace=False)
        if user < 600:
            train.append(sequence(cats, int(rng.integers(8, 15))))
        else:
            held_out.append((sequence(cats, int(rng.integers(5, 10))), sequence(cats, 3, uniform=True)))
    train_items = pad_right(train)

    def split(rows, offset):
        return EvalSplit(
            torch.arange(offset, offset + len(rows)),
            last_window([h for h, _ in rows], 10),
            pad_right([t for _, t in rows]),
        )

    counts = torch.bincount(train_items.flatten(), minlength=n_items + 1)
    counts[0] = 0
    data = SequenceData(n_items, train_items, (train_items > 0).sum(1), split(held_out[:100], 600), split(held_out[100:], 700), counts)

    onehot = np.eye(n_categories, dtype=np.float32)[category]
    image = np.concatenate([onehot, np.zeros((n_items, 6), np.float32)], 1) + rng.normal(0, 0.3, (n_items, 12))
    text = onehot @ rng.normal(0, 1, (n_categories, 8)) + rng.normal(0, 0.3, (n_items, 8))
    pad = lambda a: torch.from_numpy(np.concatenate([np.zeros((1, a.shape[1])), a]).astype(np.float32))  # noqa: E731
    mask = torch.ones(n_items + 1, dtype=torch.bool)
    mask[0] = False
    features = ItemFeatures(pad(image), pad(text), mask, mask.clone())
    return data, features, torch.from_numpy(np.concatenate([[False], cold]))


# --------------------------------------------------------------------------- shapes and padding


@pytest.mark.parametrize(
    "readout,width,interests", [("id", 16, 2), ("mm", 16, 2), ("sum", 32, 4), ("max", 32, 4), ("fused", 32, 2)]
)
def test_shapes_of_interests_table_and_loss(readout, width, interests):
    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg(readout=readout))
    history = random_history(5, 10, 30, max_real=10)
    assert model.user_interests(history).shape == (5, interests, width)
    table = model.item_table()
    assert table.shape == (31, width)
    assert torch.all(table[0] == 0)
    total, parts = model.loss(history, torch.randint(1, 31, (5,)))
    assert total.ndim == 0 and torch.isfinite(total)
    assert set(parts) == {"rec_id", "rec_mm", "coarse", "fine"}


@pytest.mark.parametrize("views,readout", [("both", "fused"), ("id", "id"), ("mm", "mm")])
def test_auto_readout_fuses_both_views_else_uses_the_only_one(views, readout):
    assert build_model("bivrec", 30, random_features(30), model_cfg(views=views, readout="auto")).readout == readout


def best(interests, table):
    return torch.einsum("bkd,nd->bkn", interests, table).amax(1)


def test_max_and_sum_readouts_score_the_max_and_the_sum_of_the_views():
    torch.manual_seed(0)
    history = random_history(5, 10, 30, max_real=10)
    model = build_model("bivrec", 30, random_features(30), model_cfg(readout="max")).eval()

    with torch.no_grad():
        per_view = {v: best(model.view_interests(v, history, model.view_table(v))[0], model.view_table(v)) for v in ("id", "mm")}
        fused_max = best(model.user_interests(history), model.item_table())
        model.readout = "sum"
        fused_sum = best(model.user_interests(history), model.item_table())
    torch.testing.assert_close(fused_max, torch.maximum(per_view["id"], per_view["mm"]))
    torch.testing.assert_close(fused_sum, per_view["id"] + per_view["mm"])


def test_fused_readout_mixes_the_views_probabilities_by_training_counts():
    torch.manual_seed(0)
    history = random_history(5, 10, 30, max_real=10)
    model = build_model("bivrec", 30, random_features(30), model_cfg(readout="fused", fused_prior_count=4)).eval()
    counts = torch.randint(0, 20, (31,))
    counts[0], counts[1], counts[2] = 0, 0, 10**9  # item 1 never seen, item 2 seen "always"
    model.fit_counts(counts)
    with torch.no_grad():
        log_p = {}
        for view in ("id", "mm"):
            scores = best(model.view_interests(view, history, model.view_table(view))[0], model.view_table(view))
            scores[:, 0] = float("-inf")
            log_p[view] = scores.log_softmax(1)
        fused = model.item_scores(history, model.item_table())
    w = counts.double() / (counts.double() + 4)
    expected = torch.log(w * log_p["id"].double().exp() + (1 - w) * log_p["mm"].double().exp())
    torch.testing.assert_close(fused[:, 1:].double(), expected[:, 1:], rtol=1e-4, atol=1e-5)
    assert torch.isneginf(fused[:, 0]).all()  # padding is never recommended
    torch.testing.assert_close(fused[:, 1], log_p["mm"][:, 1])  # unseen: content only
    torch.testing.assert_close(fused[:, 2], log_p["id"][:, 2])  # well seen: its ID embedding only
    model.fit_counts(torch.zeros(31))  # no training counts (another catalogue): the MM view's ranking
    with torch.no_grad():
        assert torch.equal(model.item_scores(history, model.item_table()).argsort(1)[:, 1:], log_p["mm"].argsort(1)[:, 1:])
    fresh = build_model("bivrec", 30, random_features(30), model_cfg(readout="fused"))
    with pytest.raises(RuntimeError, match="fit_counts"):
        fresh.item_scores(history, fresh.item_table())
    with pytest.raises(ValueError, match="non-negative"):
        fresh.fit_counts(-torch.ones(31))
    with pytest.raises(ValueError, match="fused_prior_count"):
        build_model("bivrec", 30, random_features(30), model_cfg(readout="fused", fused_prior_count=0))


@pytest.mark.parametrize("overrides", [{}, {"gaussian_mode": "prior", "gaussian_centre": "token", "patch_sizes": [1, 3]}, {"cluster": False}])
def test_extra_left_padding_changes_nothing(overrides):
    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg(readout="sum", **overrides)).eval()
    history = random_history(6, 10, 30, max_real=5)  # at most 5 real items: the last 5 columns hold them all
    short = history[:, -5:]
    torch.testing.assert_close(model.user_interests(history), model.user_interests(short))
    target = torch.randint(1, 31, (6,))
    with torch.no_grad():
        (_, long_parts), (_, short_parts) = model.loss(history, target), model.loss(short, target)
    assert long_parts == pytest.approx(short_parts, rel=1e-5, abs=1e-6)


def test_users_do_not_influence_each_other():
    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg()).eval()
    history = random_history(6, 10, 30, max_real=10)
    torch.testing.assert_close(model.user_interests(history)[2:3], model.user_interests(history[2:3]))


def test_multiscale_patches_are_sums_aligned_on_the_latest_item():
    embed = MultiScaleEmbedding(dim=4, max_len=5, patch_sizes=[1, 2], dropout=0.0)
    vecs = torch.arange(1.0, 6.0).view(1, 5, 1).expand(1, 5, 4)
    mask = torch.tensor([[False, True, True, True, True]])
    captured = {}
    embed.norm.register_forward_hook(lambda m, inp, out: captured.update(raw=inp[0]))
    tokens, token_mask, positions = embed(vecs, mask)
    assert tokens.shape == (1, 5 + 3, 4)
    # scale 2: patches (pad, item1), (item2, item3), (item4, item5) with item1 masked as padding
    raw = captured["raw"] - embed.scale.weight.repeat_interleave(torch.tensor([5, 3]), 0)
    raw = raw - embed.position(torch.tensor([4, 3, 2, 1, 0, 2, 1, 0]))
    torch.testing.assert_close(raw[0, 5:, 0], torch.tensor([0.0, 2 + 3, 4 + 5]))
    assert token_mask.tolist() == [[False, True, True, True, True, False, True, True]]
    torch.testing.assert_close(positions, torch.tensor([4, 3, 2, 1, 0, 4.5, 2.5, 0.5]) / 5)


def test_patches_of_a_length_divisible_by_the_size_equal_the_padded_sums_exactly():
    """Without left padding the patches are summed from the items directly (no F.pad copy): the same
    bits, forward and backward, as the padded path."""
    torch.manual_seed(0)
    embed = MultiScaleEmbedding(dim=8, max_len=20, patch_sizes=[1, 2, 4], dropout=0.0)
    vecs = torch.randn(6, 20, 8, requires_grad=True)
    mask = torch.rand(6, 20) > 0.3
    captured = {}
    embed.norm.register_forward_hook(lambda m, inp, out: captured.update(raw=inp[0]))
    embed(vecs, mask)
    masked, tokens = vecs * mask.unsqueeze(-1).float(), []
    for index, size in enumerate((1, 2, 4)):  # the padded path step by step (autograd sums in creation order)
        patches = masked if size == 1 else torch.nn.functional.pad(masked, (0, 0, 0, 0)).view(6, 20 // size, size, 8).sum(2)
        tokens.append(patches + (embed.position(torch.arange(20 // size - 1, -1, -1)) + embed.scale.weight[index]))
    reference = torch.cat(tokens, 1)
    assert torch.equal(captured["raw"], reference)
    weights = torch.randn_like(reference)
    grads = [torch.autograd.grad((t * weights).sum(), vecs, retain_graph=True)[0] for t in (captured["raw"], reference)]
    assert torch.equal(*grads)


def test_full_softmax_loss_matches_cross_entropy_with_padding_masked():
    torch.manual_seed(0)
    user = torch.randn(5, 8, requires_grad=True)
    table = torch.randn(12, 8, requires_grad=True)
    target = torch.tensor([1, 4, 11, 4, 7])
    loss = full_softmax_loss(user, table, target)
    loss.backward()
    grads = user.grad.clone(), table.grad.clone()
    user.grad, table.grad = None, None
    logits = (user @ table.T).masked_fill(torch.arange(12) == 0, float("-inf"))
    reference = torch.nn.functional.cross_entropy(logits, target)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grads, (user.grad, table.grad))


def test_fast_dropout_drops_the_share_p_and_keeps_the_mean():
    torch.manual_seed(0)
    dropout = FastDropout(0.25)
    out = dropout(torch.ones(200, 500))
    assert abs((out == 0).float().mean().item() - 0.25) < 0.01 and abs(out.mean().item() - 1) < 0.02
    assert torch.equal(dropout.eval()(torch.ones(3, 3)), torch.ones(3, 3))


# --------------------------------------------------------------------------- attention mechanisms


def test_folded_projections_equal_projecting_every_token():
    torch.manual_seed(0)
    key, value = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    queries, tokens, weights = torch.randn(3, 4, 8), torch.randn(3, 7, 8), torch.rand(3, 4, 7)
    torch.testing.assert_close(attention_logits(queries, key, tokens), queries @ key(tokens).transpose(1, 2) / math.sqrt(8))
    torch.testing.assert_close(attend_values(weights, value, tokens), weights @ value(tokens))


def test_gaussian_attention_rows_sum_to_one_and_peak_at_the_centre():
    torch.manual_seed(0)
    attention = GaussianAttention(dim=8, n_interests=3, centre_parameterisation="free", dropout=0.0)
    embed = MultiScaleEmbedding(dim=8, max_len=20, patch_sizes=[1, 2, 4], dropout=0.0)
    mask_items = torch.arange(20).expand(2, 20) >= torch.tensor([[0], [12]])  # user 1 has 8 items
    tokens, mask, positions = embed(torch.randn(2, 20, 8), mask_items)
    queries = torch.randn(2, 3, 8)
    with torch.no_grad():
        attention.centres.centre.copy_(torch.tensor([0.1, 0.3, 0.77]))
    weights = attention.attention(queries, tokens, mask, positions)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    assert torch.all(weights[~mask.unsqueeze(1).expand_as(weights)] == 0)

    with torch.no_grad():  # without content scores the Gaussian alone decides: peak nearest its centre
        attention.query.weight.zero_()
        attention.query.bias.zero_()
    weights = attention.attention(queries, tokens, mask, positions)
    peak_positions = positions[weights.argmax(-1)]
    distance_to_centre = (positions.expand(2, 3, -1) - attention.centres.centre.view(1, 3, 1)).abs().masked_fill(~mask.unsqueeze(1), 9)
    torch.testing.assert_close(peak_positions, positions[distance_to_centre.argmin(-1)])
    # user 1 only has the 8 latest items (positions < 0.4): the far centre 0.77 peaks on its oldest token
    assert peak_positions[1, 2] == positions[mask[1]].max()


def test_cluster_assignment_is_one_hot_forward_and_passes_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7, requires_grad=True)
    mask = torch.ones(3, 1, 7, dtype=torch.bool)
    mask[:, :, :2] = False
    soft, hard = competitive_assignment(logits, mask, tau=1.0, gumbel=True)
    real = mask.expand_as(hard)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(hard.sum(1)[:, 2:], torch.ones(3, 5))  # each real token: exactly one interest
    assert torch.all(hard[~real] == 0) and torch.all(soft[~real] == 0)
    (hard * torch.randn_like(hard)).sum().backward()
    assert logits.grad[:, :, 2:].abs().sum() > 0

    block = ClusterAttention(dim=8, dropout=0.0, hard=True, gumbel=True, tau=1.0, resoftmax=False, allocation_hard=True)
    interests, allocation = block(torch.randn(3, 4, 8), torch.randn(3, 7, 8), mask.squeeze(1))
    torch.testing.assert_close(allocation.sum(1)[:, 2:], torch.ones(3, 5))
    (interests * torch.randn_like(interests)).sum().backward()
    assert block.query.weight.grad.abs().sum() > 0 and block.key.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- cross-view losses


def test_coarse_loss_equals_hand_computed_values():
    id_user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mm_user = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cosines: s = [[1, 0], [1/√2, 1/√2]]
    tau, r = 0.5, math.sqrt(2)  # logits s/τ = [[2, 0], [√2, √2]]
    rows = [-math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2)]
    cols = [-math.log(math.exp(2) / (math.exp(2) + math.exp(r))), -math.log(math.exp(r) / (1 + math.exp(r)))]
    assert coarse_loss(id_user, mm_user, tau, "infonce", symmetric=False).item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    expected_symmetric = (sum(rows) / 2 + sum(cols) / 2) / 2
    assert coarse_loss(id_user, mm_user, tau, "infonce", symmetric=True).item() == pytest.approx(expected_symmetric, rel=1e-6)
    # official code: denominator over negatives only -> row a: −s_aa/τ + log Σ_{b≠a} exp(s_ab/τ)
    assert coarse_loss(id_user, mm_user, tau, "official", symmetric=False).item() == pytest.approx((-2 + 0) / 2, rel=1e-6)


def test_fine_loss_zero_for_equal_allocations_and_permutation_invariant():
    torch.manual_seed(0)
    allocation = torch.softmax(torch.randn(4, 3, 6), 1)
    other = torch.softmax(torch.randn(4, 3, 6), 1)
    mask = torch.ones(4, 6, dtype=torch.bool)
    for form in ("mse", "cosine"):
        assert fine_loss(allocation, allocation, mask, form).item() == pytest.approx(0.0, abs=1e-6)
        value = fine_loss(allocation, other, mask, form)
        assert value.item() > 1e-4
        torch.testing.assert_close(fine_loss(allocation, other[:, [2, 0, 1]], mask, form), value)
        torch.testing.assert_close(fine_loss(allocation[:, [1, 2, 0]], other, mask, form), value)


def test_fine_loss_known_value_and_padding_ignored():
    together = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # tokens 0, 1 in interest 0; token 2 padding
    apart = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # co-allocation [[1,1],[1,1]] vs [[1,0],[0,1]]: squared difference 2 over n² = 4 real-token pairs
    assert fine_loss(together, apart, mask, "mse").item() == pytest.approx(0.5)
    assert fine_loss(together[..., :2], apart[..., :2], mask[:, :2], "mse").item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- gradients and learning


@pytest.mark.parametrize(
    "overrides",
    [{}, {"gaussian_mode": "prior", "gaussian_centre": "token", "fusion": "sum", "fine_allocation": "hard"}, {"cluster": False, "coarse_form": "official"}],
)
def test_every_parameter_gets_gradient_in_both_mode(overrides):
    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg(**overrides))
    history = random_history(16, 10, 30, max_real=10)
    total, _ = model.loss(history, torch.randint(1, 31, (16,)))
    total.backward()
    # a parameter whose effect cancels out gets gradients of rounding size (~1e-12), not exactly 0
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().max() < 1e-8]
    assert not missing


def test_stop_gradient_keeps_the_cross_view_losses_off_one_view():
    features, history, target = random_features(30), random_history(16, 10, 30, max_real=10), torch.randint(1, 31, (16,))

    torch.manual_seed(0)
    shared = build_model("bivrec", 30, features, model_cfg(coarse_weight=0.0, fine_weight=0.0)).state_dict()

    def gradients(**overrides):
        model = build_model("bivrec", 30, features, model_cfg(**overrides))
        model.load_state_dict(shared, strict=False)  # the same weights; only the cross-view heads are extra
        torch.manual_seed(1)  # the same Gumbel noise and dropout masks in every model
        model.loss(history, target)[0].backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    alone = gradients(coarse_weight=0.0, fine_weight=0.0)
    for stopped, moved in (("id", "mm"), ("mm", "id")):
        coupled = gradients(cross_view_stop_gradient=stopped)
        view_params = lambda view: [n for n in alone if n.startswith((f"embed.{view}.", f"decompose.{view}.", f"{view}_items"))]  # noqa: E731
        assert view_params(stopped) and all(torch.allclose(coupled[n], alone[n], atol=1e-7) for n in view_params(stopped))
        assert any(not torch.allclose(coupled[n], alone[n], atol=1e-7) for n in view_params(moved))
    with pytest.raises(ValueError, match="cross_view_stop_gradient"):
        build_model("bivrec", 30, features, model_cfg(cross_view_stop_gradient="both"))


def test_ablation_switches_build_the_right_parts():
    features = random_features(30)
    id_only = build_model("bivrec", 30, None, model_cfg(views="id"))
    assert not hasattr(id_only, "projections") and not hasattr(id_only, "summary")
    _, parts = id_only.loss(random_history(4, 10, 30, 10), torch.randint(1, 31, (4,)))
    assert set(parts) == {"rec_id"}
    mm_only = build_model("bivrec", 30, features, model_cfg(views="mm", modalities=["text"]))
    assert not hasattr(mm_only, "id_items") and mm_only.readout == "mm"
    no_cross = build_model("bivrec", 30, features, model_cfg(coarse_weight=0, fine_weight=0, gaussian=False, patch_sizes=[1]))
    _, parts = no_cross.loss(random_history(4, 10, 30, 10), torch.randint(1, 31, (4,)))
    assert set(parts) == {"rec_id", "rec_mm"}
    assert no_cross.embed["id"](torch.zeros(1, 10, 16), torch.ones(1, 10, dtype=torch.bool))[0].shape[1] == 10
    with pytest.raises(ValueError, match="no image features"):
        build_model("bivrec", 30, None, model_cfg())
    with pytest.raises(ValueError, match="coarse_form"):
        build_model("bivrec", 30, features, model_cfg(coarse_form="nce"))
    with pytest.raises(KeyError, match="fine_form"):
        build_model("bivrec", 30, features, {k: v for k, v in model_cfg().items() if k != "fine_form"})
    with pytest.raises(ValueError, match="readout"):
        build_model("bivrec", 30, None, model_cfg(views="id", readout="mm"))


def test_loss_and_gradients_are_finite_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = model.loss(random_history(8, 10, 30, max_real=10), torch.randint(1, 31, (8,)))
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_overfits_a_tiny_dataset():
    torch.manual_seed(0)
    model = build_model("bivrec", 20, random_features(20), model_cfg(gumbel=False))
    history = random_history(16, 10, 20, max_real=10, seed=1)
    target = torch.randint(1, 21, (16,), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        total, parts = model.loss(history, target)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert parts["rec_id"] < 0.05 and parts["rec_mm"] < 0.05
    model.eval()
    with torch.no_grad():
        for view in ("id", "mm"):  # the training readout (interest nearest the target) ranks it first
            table = model.view_table(view)
            chosen = hard_readout(model.view_interests(view, history, table)[0], table[target])
            assert torch.equal((chosen @ table[1:].T).argmax(1) + 1, target)


def test_both_views_beat_id_only_on_cold_items():
    data, features, cold = planted_data(seed=0)
    cold_split = cold_item_split(data.test, data.item_counts, max_interactions=2)
    assert len(cold_split) > 30 and int(data.item_counts[cold].max()) <= 2
    train_cfg = dict(batch_size=128, learning_rate=3e-3, max_steps=300, eval_every=100, patience=3, min_cut=1)
    recall = {}
    for views in ("id", "both"):  # "both" with the default fused readout
        torch.manual_seed(0)
        model = build_model("bivrec", data.n_items, features, model_cfg(views=views, readout="auto"))
        result = fit(model, data, train_cfg, {"topk": [20]}, seed=0, progress=False)
        model.load_state_dict(result.best_state)
        recall[views] = evaluate(model, cold_split, [20]).metrics["recall@20"]
    assert recall["both"] > recall["id"] + 0.1, recall


def test_fused_readout_ranks_identically_in_item_chunks():
    torch.manual_seed(1)
    n_items = 57
    model = build_model("bivrec", n_items, random_features(n_items), model_cfg(readout="fused", fused_prior_count=4)).eval()
    counts = torch.randint(0, 12, (n_items + 1,))
    counts[0] = 0
    model.fit_counts(counts)
    history = random_history(40, 10, n_items, max_real=10, seed=2)
    split = EvalSplit(torch.arange(40), history, torch.randint(1, n_items + 1, (40, 3)))
    with torch.no_grad():  # one chunk reproduces the full score matrix
        full_scores = model.item_scores(history, model.item_table())
        (start, chunk), = list(model.ranking_scores(history, model.item_table()))
    assert start == 1 and torch.equal(chunk, full_scores[:, 1:])
    full = evaluate(model, split, [5, 10])
    for size in (1, 8, 56):
        chunked = evaluate(model, split, [5, 10], user_batch_size=16, item_chunk_size=size)
        for key, values in full.per_user.items():
            np.testing.assert_array_equal(chunked.per_user[key], values, err_msg=f"{key} chunk {size}")


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_fused_readout_kept_scores_equal_scoring_again(monkeypatch, chunk_size):
    """The fused readout keeps its first pass's scores for the second when they fit its memory budget;
    the scores it yields are the very numbers it yields when it recomputes them."""
    import bivrec.models.bivrec.model as bivrec_model

    torch.manual_seed(0)
    model = build_model("bivrec", 30, random_features(30), model_cfg(readout="fused")).eval()
    model.fit_counts(torch.randint(0, 12, (31,)).float())
    history = torch.randint(0, 31, (9, 8))
    table = model.item_table()
    with torch.no_grad():
        kept = [(start, scores.clone()) for start, scores in model.ranking_scores(history, table, chunk_size)]
        monkeypatch.setattr(bivrec_model, "FUSED_SCORE_CACHE_BYTES", 0)
        again = [(start, scores.clone()) for start, scores in model.ranking_scores(history, table, chunk_size)]
    assert [s for s, _ in kept] == [s for s, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(kept, again))
