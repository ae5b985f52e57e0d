import pytest
import torch
from helpers import InterruptAfter, cyclic_data

from bivrec.config import load_params, resolve_run
from bivrec.data.dataset import SequenceData
from bivrec.features.store import ItemFeatures
from bivrec.models import build_model
from bivrec.train import SequenceSampler, fit


def tiny_bivrec(data: SequenceData, seed=0):
    params = load_params("params.yaml")
    _, cfg = resolve_run(params, "bivrec")
    cfg.update(dim=16, max_len=6, n_interests=2, patch_sizes=[1, 2])
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(data.n_items + 1, 8, generator=g)
    feats[0] = 0
    mask = torch.ones(data.n_items + 1, dtype=torch.bool)
    mask[0] = False
    torch.manual_seed(seed)
    return build_model("bivrec", data.n_items, ItemFeatures(feats, feats[:, :5].clone(), mask, mask), cfg)


TRAIN = {"batch_size": 32, "learning_rate": 0.01, "max_steps": 30, "eval_every": 10, "patience": 50, "min_cut": 1, "amp": False}
EVAL = {"topk": [5], "user_batch_size": 4, "select_metric": "recall@5"}


def test_sampler_history_is_the_items_before_the_cut():
    data = cyclic_data()
    sampler = SequenceSampler(data, max_len=6, min_cut=2, seed=1)
    history, target = sampler.sample(500)
    assert history.shape == (500, 6) and target.shape == (500,)
    assert bool((target > 0).all())
    # in the cyclic data the item before the target is target - 1 (wrapping), and history is right-aligned
    assert bool((history[:, -1] == (target - 2) % data.n_items + 1).all())
    real = history > 0
    assert bool((real.int().diff(dim=1) >= 0).all()), "padding must be on the left"
    assert int(real.sum(1).min()) >= 2, "min_cut=2 means at least two history items"


def test_sampler_is_deterministic_per_seed():
    data = cyclic_data()
    a = SequenceSampler(data, 6, 1, seed=5).sample(64)
    b = SequenceSampler(data, 6, 1, seed=5).sample(64)
    c = SequenceSampler(data, 6, 1, seed=6).sample(64)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sampler_rejects_data_too_short():
    data = cyclic_data(length=3)
    with pytest.raises(ValueError, match="min_cut"):
        SequenceSampler(data, 6, min_cut=3, seed=0)


def test_training_learns_and_is_deterministic():
    data = cyclic_data()
    first = fit(tiny_bivrec(data), data, TRAIN, EVAL, seed=3, progress=False)
    second = fit(tiny_bivrec(data), data, TRAIN, EVAL, seed=3, progress=False)
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    assert first.history[-1]["loss"] < first.history[0]["loss"]
    assert first.best_state is not None and first.best_step in {10, 20, 30}


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    data = cyclic_data()
    uninterrupted = fit(tiny_bivrec(data), data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "a", progress=False)

    model = tiny_bivrec(data)
    model.loss = InterruptAfter(model, calls=25)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "b", fingerprint="x", progress=False)
    assert (tmp_path / "b" / "last.json").exists()
    resumed = fit(tiny_bivrec(data), data, TRAIN, EVAL, seed=3, resume_dir=tmp_path / "b", fingerprint="x", progress=False)

    assert [r["step"] for r in resumed.history] == [10, 20, 30]
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in uninterrupted.history])
    assert resumed.best_metric == uninterrupted.best_metric
    for key, value in uninterrupted.best_state.items():
        assert torch.allclose(value, resumed.best_state[key]), key


def test_resume_ignores_state_of_another_configuration(tmp_path):
    data = cyclic_data()
    fit(tiny_bivrec(data), data, {**TRAIN, "max_steps": 10}, EVAL, seed=3, resume_dir=tmp_path, fingerprint="old", progress=False)
    fresh = fit(tiny_bivrec(data), data, TRAIN, EVAL, seed=3, resume_dir=tmp_path, fingerprint="new", progress=False)
    assert [r["step"] for r in fresh.history] == [10, 20, 30]
