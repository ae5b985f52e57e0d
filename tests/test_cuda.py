"""The CUDA path: AMP training steps, CPU/CUDA agreement of the evaluator, resumable fit on the GPU.

Every test is skipped where ``torch.cuda.is_available()`` is false (CI has no GPU); they run in a
few seconds on one.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import InterruptAfter, bivrec_cfg, cyclic_data, random_features

from bivrec.evaluate import evaluate, top_items
from bivrec.models import build_model
from bivrec.train import amp_context, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
TRAIN = {"batch_size": 64, "learning_rate": 0.01, "max_steps": 30, "eval_every": 10, "patience": 50, "min_cut": 1, "amp": True}
EVAL = {"topk": [5, 10], "user_batch_size": 7, "select_metric": "recall@5"}


def model_cfg(**overrides) -> dict:
    """params.yaml's BiVRec config at test size."""
    return bivrec_cfg(**({"dim": 16, "max_len": 6, "n_interests": 2, "patch_sizes": [1, 2]} | overrides))


def bivrec(n_items: int, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model("bivrec", n_items, random_features(n_items, seed), model_cfg(**overrides))


def random_history(batch: int, n_items: int, max_len: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(1, n_items + 1, (batch, max_len), generator=gen)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=gen)
    return history * (torch.arange(max_len) >= max_len - lengths[:, None])  # right-aligned, 0-padded


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.fixture
def no_bf16(monkeypatch):
    """Make the training loop take the fp16 + GradScaler path of GPUs without bf16 (V100, T4)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_loss_and_gradients_are_finite_and_follow_fp32(dtype):
    model = bivrec(40).to(CUDA).eval()  # no dropout or Gumbel noise: AMP and fp32 see the same computation
    history, target = random_history(32, 40).to(CUDA), torch.randint(1, 41, (32,)).to(CUDA)

    def loss_and_gradients(amp: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=amp):
            total, parts = model.loss(history, target)
        total.backward()
        assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
        return total.detach(), {name: p.grad.detach().float().clone() for name, p in model.named_parameters()}

    reference, ref_grads = loss_and_gradients(amp=False)
    loss, grads = loss_and_gradients(amp=True)
    assert loss.dtype == torch.float32  # the softmax loss is computed in fp32
    assert float(loss) == pytest.approx(float(reference), rel=2e-2)
    assert not [name for name, g in grads.items() if not torch.isfinite(g).all()]
    # the whole gradient points the same way, and so does every parameter's whose gradient is not
    # negligible (a few, e.g. the cluster queries' biases, have an identically zero gradient: fp32
    # shows rounding noise of ~1e-12 there, bf16 exact zeros or noise)
    assert cosine(torch.cat([g.flatten() for g in grads.values()]), torch.cat([g.flatten() for g in ref_grads.values()])) > 0.99
    largest = max(float(g.norm()) for g in ref_grads.values())
    cosines = {name: cosine(grads[name], g) for name, g in ref_grads.items() if float(g.norm()) > 1e-4 * largest}
    assert len(cosines) > 0.5 * len(ref_grads)
    assert not {name: c for name, c in cosines.items() if c < 0.9}


def test_amp_context_picks_bf16_where_supported_and_nothing_on_cpu():
    with amp_context(CUDA, True):
        assert torch.is_autocast_enabled("cuda")
        assert torch.get_autocast_dtype("cuda") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    with amp_context(CUDA, False):
        assert not torch.is_autocast_enabled("cuda")
    with amp_context(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")


def ranked_items(model, history: torch.Tensor, n: int) -> torch.Tensor:
    """The evaluator's top-n item ids [B, n] for ``history``, on the model's device."""
    model.eval()
    with torch.no_grad():
        return top_items(model.item_scores(history, model.item_table().float()), n)


@pytest.mark.parametrize("readout", ["auto", "id", "max", "sum"])
def test_evaluation_on_cuda_equals_evaluation_on_cpu(readout):
    data = cyclic_data(n_users=80, n_items=40, n_held=20)
    cpu_model = bivrec(data.n_items, seed=1, readout=readout)
    if hasattr(cpu_model, "fit_counts"):  # the fused readout weighs the views by training counts
        cpu_model.fit_counts(data.item_counts)
    fit(cpu_model, data, {**TRAIN, "max_steps": 20, "amp": False}, EVAL, seed=0, progress=False)  # non-random weights
    cuda_model = copy.deepcopy(cpu_model).to(CUDA)

    on_cpu = evaluate(cpu_model, data.test, EVAL["topk"], EVAL["user_batch_size"])
    on_cuda = evaluate(cuda_model, data.test, EVAL["topk"], EVAL["user_batch_size"])  # split on CPU
    on_cuda_moved = evaluate(cuda_model, data.test.to(CUDA), EVAL["topk"], EVAL["user_batch_size"])
    for result in (on_cuda, on_cuda_moved):
        assert result.metrics == pytest.approx(on_cpu.metrics, abs=1e-9)
        for name, values in on_cpu.per_user.items():
            assert result.per_user[name] == pytest.approx(values, abs=1e-9), name

    # the same ranked lists, not only the same metrics
    history = data.test.history
    assert torch.equal(ranked_items(cuda_model, history.to(CUDA), 10).cpu(), ranked_items(cpu_model, history, 10))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fit_on_cuda_learns_with_amp(request, precision):
    if precision == "fp16":  # fp16 autocast with a GradScaler that skips overflowing steps
        request.getfixturevalue("no_bf16")
    data = cyclic_data(n_users=80, n_items=40, n_held=20).to(CUDA)
    result = fit(bivrec(data.n_items).to(CUDA), data, {**TRAIN, "max_steps": 150, "eval_every": 50}, EVAL, seed=3, progress=False)
    losses = [row["loss"] for row in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert result.best_metric > 0.3  # random ranking gives 5/40; fp32 on CPU reaches ~0.42-0.45 here
    assert all(v.device.type == "cuda" for v in result.best_state.values())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_interrupted_fit_on_cuda_resumes_to_the_same_result(tmp_path, request, precision):
    if precision == "fp16":
        request.getfixturevalue("no_bf16")
    data = cyclic_data(n_users=80, n_items=40, n_held=20).to(CUDA)
    uninterrupted = fit(bivrec(data.n_items).to(CUDA), data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "a", fingerprint="x", progress=False)

    model = bivrec(data.n_items).to(CUDA)
    model.loss = InterruptAfter(model, calls=25)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "b", fingerprint="x", progress=False)
    assert (tmp_path / "b" / "last.json").exists()
    resumed = fit(bivrec(data.n_items).to(CUDA), data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "b", fingerprint="x", progress=False)

    assert [r["step"] for r in resumed.history] == [10, 20, 30]
    # bit-identical on an H100; a little room for CUDA kernels with atomics on other GPUs
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in uninterrupted.history], rel=1e-4)
    assert resumed.best_metric == pytest.approx(uninterrupted.best_metric, abs=1e-6)
    for key, value in uninterrupted.best_state.items():
        assert torch.allclose(value.float(), resumed.best_state[key].float(), rtol=1e-3, atol=1e-4), key
