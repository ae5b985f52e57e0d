"""CPU mixed precision (``train.cpu_amp``): bf16 autocast on CPUs that multiply bf16 natively.

The numerics tests are skipped on CPUs without AVX512-BF16 or AMX (where the option is refused);
the refusal and the autocast switch are tested everywhere.
"""

from __future__ import annotations

import pytest
import torch
from helpers import bivrec_cfg, cyclic_data, random_features

from bivrec.config import ParamsError
from bivrec.models import build_model
from bivrec.models.bivrec.cross_view import FusedInfoNCE, coarse_loss, fine_loss
from bivrec.models.bivrec.decomposition import TokenProducts, attention_logits, attend_values
from bivrec.models.bivrec.embedding import MultiScaleEmbedding
from bivrec.models.layers import (
    Dropout,
    FastDropout,
    LowPrecisionSoftmaxCrossEntropy,
    SoftmaxCrossEntropy,
    low_precision_dropout,
    project_constant,
)
from bivrec.train import amp_context, cpu_has_bf16, fit

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
TRAIN = {"batch_size": 32, "learning_rate": 0.01, "max_steps": 60, "eval_every": 20, "patience": 50, "min_cut": 1, "amp": False}
EVAL = {"topk": [5], "user_batch_size": 4, "select_metric": "recall@5"}


def bivrec(n_items: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = bivrec_cfg(dim=16, max_len=6, n_interests=2, patch_sizes=[1, 2])
    return build_model("bivrec", n_items, random_features(n_items, seed), cfg)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_amp_context_turns_on_bf16_autocast_on_cpu_only_when_asked():
    with amp_context(CPU, True, cpu_amp=True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with amp_context(CPU, True):  # train.amp is about CUDA
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_amp_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr("bivrec.train.cpu_has_bf16", lambda: False)
    data = cyclic_data()
    with pytest.raises(ParamsError, match="train.cpu_amp: true needs a CPU with native bf16"):
        fit(bivrec(data.n_items), data, {**TRAIN, "cpu_amp": True}, EVAL, seed=0, progress=False)


@needs_bf16
def test_blocked_low_precision_loss_equals_autocasts_whole_matrix_loss(monkeypatch):
    # 8 rows per block: the 32 users take 4 blocks
    monkeypatch.setattr(LowPrecisionSoftmaxCrossEntropy, "BLOCK_LOGITS", 8 * 50)
    gen = torch.Generator().manual_seed(0)
    user, items = torch.randn(32, 16, generator=gen), torch.randn(50, 16, generator=gen)
    target = torch.randint(0, 50, (32,), generator=gen)

    def loss_and_gradients(blocked: bool):
        u, i = user.clone().requires_grad_(), items.clone().requires_grad_()
        if blocked:
            loss = LowPrecisionSoftmaxCrossEntropy.apply(u, i, target, torch.bfloat16)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = u @ i.T
            loss = SoftmaxCrossEntropy.apply(logits.float(), target)
        loss.backward()
        return loss.detach(), u.grad, i.grad

    for got, expected in zip(loss_and_gradients(blocked=True), loss_and_gradients(blocked=False)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@needs_bf16
def test_cpu_amp_loss_and_gradients_track_fp32():
    model = bivrec(40).eval()  # no dropout or Gumbel noise: bf16 and fp32 see the same computation
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(1, 41, (32, 6), generator=gen) * (torch.rand(32, 6, generator=gen) < 0.8)
    target = torch.randint(1, 41, (32,), generator=gen)

    def loss_and_gradients(cpu_amp: bool):
        model.zero_grad(set_to_none=True)
        with amp_context(CPU, False, cpu_amp):
            total, parts = model.loss(history, target)
        total.backward()
        return total.detach(), parts, {name: p.grad.detach().clone() for name, p in model.named_parameters()}

    reference, ref_parts, ref_grads = loss_and_gradients(cpu_amp=False)
    loss, parts, grads = loss_and_gradients(cpu_amp=True)
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads.values())
    # bf16 keeps ~3 significant digits: the loss within 1 %, each part within 2 % (or 1e-4: the fine
    # loss starts near 0, where bf16's allocations leave ~1e-6 of rounding)
    assert float(loss) == pytest.approx(float(reference), rel=1e-2)
    assert parts == pytest.approx(ref_parts, rel=2e-2, abs=1e-4)
    assert not [name for name, g in grads.items() if not torch.isfinite(g).all()]
    assert cosine(torch.cat([g.flatten() for g in grads.values()]), torch.cat([g.flatten() for g in ref_grads.values()])) > 0.99
    # every parameter whose gradient is not negligible points the same way (identically zero ones,
    # such as biases a softmax cancels, are rounding noise in both). Least alike (~0.87, as with plain
    # autocast): the cluster values', as a few hard token->interest choices flip on near-ties at init
    largest = max(float(g.norm()) for g in ref_grads.values())
    cosines = {name: cosine(grads[name], g) for name, g in ref_grads.items() if float(g.norm()) > 1e-4 * largest}
    assert len(cosines) > 0.5 * len(ref_grads)
    assert not {name: c for name, c in cosines.items() if c < (0.8 if ".cluster." in name else 0.95)}


@needs_bf16
@pytest.mark.parametrize("overrides", [
    {"gaussian_mode": "prior"}, {"gaussian": False}, {"cluster": False}, {"gaussian_centre": "token"},
    {"fine_form": "cosine", "coarse_form": "official"}, {"cross_view_stop_gradient": "id", "fine_allocation": "hard"},
])
def test_cpu_amp_variants_track_fp32(overrides):
    # every model variant through the autocast path's own formulations (shared queries, merged token
    # products, fused or generic cross-view losses): the loss within bf16 rounding of fp32's
    torch.manual_seed(0)
    cfg = bivrec_cfg(dim=16, max_len=6, n_interests=2, patch_sizes=[1, 2]) | overrides
    model = build_model("bivrec", 40, random_features(40), cfg).eval()
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(1, 41, (32, 6), generator=gen) * (torch.rand(32, 6, generator=gen) < 0.8)
    target = torch.randint(1, 41, (32,), generator=gen)
    losses = []
    for cpu_amp in (False, True):
        model.zero_grad(set_to_none=True)
        with amp_context(CPU, False, cpu_amp):
            total, _ = model.loss(history, target)
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        losses.append(float(total.detach()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


@needs_bf16
def test_cpu_amp_training_is_deterministic_and_validates_like_fp32():
    data = cyclic_data()
    amp_runs = [fit(bivrec(data.n_items), data, {**TRAIN, "cpu_amp": True}, EVAL, seed=3, progress=False) for _ in range(2)]
    fp32 = fit(bivrec(data.n_items), data, TRAIN, EVAL, seed=3, progress=False)
    assert amp_runs[0].history == [{**row, "seconds": amp_runs[0].history[i]["seconds"]} for i, row in enumerate(amp_runs[1].history)]
    assert amp_runs[0].history[-1]["loss"] < amp_runs[0].history[0]["loss"]
    # the cyclic data's next item follows from the last one: both learn it (loose bounds: 10 validation
    # users; chance is 5 / 24 ≈ 0.2, here fp32 reaches 0.67 and bf16 0.77)
    assert amp_runs[0].best_metric >= fp32.best_metric - 0.2 and amp_runs[0].best_metric > 0.4


@needs_bf16
def test_feature_tables_are_cast_once_under_autocast_and_recast_when_changed():
    model = bivrec(40)
    assert model.feature_table("image") is model.image_features  # fp32 outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = model.feature_table("image")
        assert first.dtype == torch.bfloat16 and model.feature_table("image") is first
        torch.testing.assert_close(first.float(), model.image_features, rtol=1e-2, atol=0)
        model.image_features.mul_(2)  # a changed buffer is cast again
        assert torch.equal(model.feature_table("image"), model.image_features.to(torch.bfloat16))


# --------------------------------------------------------------------------- the autocast path's own formulations
# (switched on by CPU autocast, so they never change fp32 training: these need no native bf16)


def test_low_precision_dropout_drops_the_rounded_share_and_keeps_the_mean():
    torch.manual_seed(0)
    out = low_precision_dropout(torch.ones(400, 500), 0.2)
    dropped = round(0.2 * 2**16) / 2**16  # 0.199997
    assert abs(float((out == 0).float().mean()) - dropped) < 0.003 and abs(float(out.mean()) - 1) < 0.005
    assert out.unique().tolist() == pytest.approx([0.0, 1 / (1 - dropped)])
    odd = low_precision_dropout(torch.ones(3, 7, dtype=torch.bfloat16), 0.5)  # numel not a multiple of 4
    assert odd.shape == (3, 7) and odd.dtype == torch.bfloat16


def test_dropouts_draw_as_before_outside_cpu_autocast_and_cheaply_inside():
    x = torch.randn(64, 35, 16)
    for module, reference in ((Dropout(0.2), lambda: torch.nn.Dropout(0.2)(x)), (FastDropout(0.2), lambda: x * torch.rand_like(x).ge_(0.2).mul_(1.25))):
        torch.manual_seed(1)
        expected = reference()
        torch.manual_seed(1)
        assert torch.equal(module(x), expected)  # fp32 training keeps its random numbers
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(1)
            fast = module(x)
        torch.manual_seed(1)
        assert torch.equal(fast, low_precision_dropout(x, 0.2))
        assert torch.equal(module.eval()(x), x)


@pytest.mark.parametrize("symmetric", [True, False])
def test_fused_infonce_equals_the_generic_loss_and_gradients(symmetric):
    gen = torch.Generator().manual_seed(0)
    mm_user = torch.randn(256, 16, generator=gen)
    id_user = torch.randn(256, 16, generator=gen) + mm_user  # positives more alike than negatives

    def loss_and_gradients(fused: bool):
        mm, ids = mm_user.clone().requires_grad_(), id_user.clone().requires_grad_()
        loss = coarse_loss(ids, mm, 0.07, "infonce", symmetric, fused=fused)
        loss.backward()
        return loss.detach(), mm.grad, ids.grad

    # fp32 rounding only: the generic path is no closer to a float64 reference (measured: both ~1e-6)
    for got, expected in zip(loss_and_gradients(fused=True), loss_and_gradients(fused=False)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_fused_infonce_hand_computed_value_and_where_it_does_not_apply(monkeypatch):
    id_user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mm_user = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    expected = coarse_loss(id_user, mm_user, 0.5, "infonce", symmetric=True)
    assert float(coarse_loss(id_user, mm_user, 0.5, "infonce", symmetric=True, fused=True)) == pytest.approx(float(expected), rel=1e-6)
    applied = []
    monkeypatch.setattr(FusedInfoNCE, "apply", lambda *args: applied.append(args) or torch.tensor(0.0))
    coarse_loss(id_user, mm_user, 0.5, "official", symmetric=False, fused=True)  # negatives-only denominator
    coarse_loss(id_user, mm_user, 0.02, "infonce", symmetric=True, fused=True)  # exp(−2/τ) would underflow
    assert not applied


def test_merged_token_products_give_autograds_values_and_gradients():
    # the decomposition's pattern: shared queries' logits, pooling, per-user queries from the pooled
    # values, their logits and pooling; only the tokens' gradient is computed differently
    torch.manual_seed(0)
    key, value = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    tokens, shared = torch.randn(5, 7, 8), torch.randn(1, 4, 8)

    def outputs_and_gradients(merge: bool):
        x, q = tokens.clone().requires_grad_(), shared.clone().requires_grad_()
        products = TokenProducts(x, merge)
        pooled = attend_values(torch.softmax(attention_logits(q, key, products), -1), value, products)
        out = attend_values(torch.softmax(attention_logits(pooled + q, key, products), -1), value, products)
        grads = torch.autograd.grad(out.square().sum(), [x, q, key.weight, value.weight])
        assert not products.pending  # the collecting product used every factor
        return out, *grads

    for got, expected in zip(outputs_and_gradients(merge=True), outputs_and_gradients(merge=False)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    expanded = TokenProducts(tokens).logits(shared.expand(5, -1, -1))
    torch.testing.assert_close(TokenProducts(tokens).logits(shared), expanded)  # shared queries = expanded ones


@pytest.mark.parametrize("noise", [0.01, 1.0])  # views that nearly agree (the Gram terms nearly cancel) or differ
def test_fused_fine_loss_equals_the_co_allocation_distance(noise):
    gen = torch.Generator().manual_seed(0)
    logits, mask = torch.randn(64, 4, 9, generator=gen), torch.rand(64, 9, generator=gen) < 0.7
    allocations = [torch.softmax(logits + shift, 1) * mask.unsqueeze(1) for shift in (0, noise * torch.randn(64, 4, 9, generator=gen))]

    def loss_and_gradients(fused: bool):
        inputs = [a.clone().requires_grad_() for a in allocations]
        loss = fine_loss(*inputs, mask, "mse", fused=fused)
        loss.backward()
        return loss.detach(), *(a.grad for a in inputs)

    # the fused form is the more exact one (float64 Gram matrices; measured against a float64 reference)
    for got, expected in zip(loss_and_gradients(fused=True), loss_and_gradients(fused=False)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-9)
    assert float(fine_loss(allocations[0], allocations[0], mask, "mse", fused=True)) == pytest.approx(0, abs=1e-12)


def test_projection_of_a_constant_table_equals_autocasts_linear():
    torch.manual_seed(0)
    linear, table = torch.nn.Linear(40, 8), torch.rand(30, 40)

    def output_and_gradients(constant: bool):
        linear.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = project_constant(table, linear) if constant else linear(table)
        out.float().square().sum().backward()
        return out, linear.weight.grad.clone(), linear.bias.grad.clone()

    got, expected = output_and_gradients(constant=True), output_and_gradients(constant=False)
    assert got[0].dtype == torch.bfloat16 and torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], rtol=1e-2, atol=0)
    # the bias gradient is summed in fp32 here (autocast sums the bf16 gradient in bf16)
    torch.testing.assert_close(got[2], expected[2], rtol=1e-2, atol=0)
    assert torch.equal(project_constant(table, linear), linear(table))  # outside autocast: the plain linear


@pytest.mark.parametrize("length", [8, 7])  # 7: the patches of 2 and 4 items start in left padding
def test_patch_sums_by_product_equal_the_per_scale_sums(length):
    torch.manual_seed(0)
    embed = MultiScaleEmbedding(dim=8, max_len=8, patch_sizes=[1, 2, 4], dropout=0.0)
    items, readout = torch.randn(5, length, 8), torch.randn(5, 15, 8)
    item_mask = torch.arange(length).expand(5, -1) >= torch.tensor([[0], [2], [3], [5], [length - 1]])

    def outputs_and_gradients(by_product: bool):
        embed.zero_grad()
        vecs = items.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=by_product):
            tokens, mask, positions = embed(vecs, item_mask)
        (tokens.float() * readout[:, : tokens.shape[1]]).sum().backward()  # not a squared sum: LayerNorm keeps that constant
        return tokens.detach().float(), mask, positions, vecs.grad, embed.position.weight.grad, embed.scale.weight.grad

    got, expected = outputs_and_gradients(by_product=True), outputs_and_gradients(by_product=False)
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])
    for a, b in zip(got[:1] + got[3:], expected[:1] + expected[3:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * float(b.abs().max()))  # tokens in bf16 there
