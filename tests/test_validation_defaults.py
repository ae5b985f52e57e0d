"""benchmarks/validation_defaults.py: readouts compared on validation users, without retraining."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import torch
from helpers import REPO, bivrec_cfg, cyclic_data, random_features

from bivrec.models import build_model

spec = importlib.util.spec_from_file_location("validation_defaults", REPO / "benchmarks" / "validation_defaults.py")
validation_defaults = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validation_defaults)

EVAL_CFG = {"topk": [20], "user_batch_size": 4, "item_chunk_size": 7}


def tiny_model(data, **overrides):
    torch.manual_seed(0)
    cfg = bivrec_cfg(**({"dim": 16, "max_len": 6, "n_interests": 2, "dropout": 0.0} | overrides))
    model = build_model("bivrec", data.n_items, random_features(data.n_items), cfg)
    model.fit_counts(data.item_counts)
    return model


def test_scores_only_validation_users_and_never_changes_the_weights():
    data = cyclic_data(n_held=12)
    # validation users distinct from the test ones, and no test split to read
    valid = dataclasses.replace(data.valid, users=data.valid.users + 100)
    data = dataclasses.replace(data, valid=valid, test=None)
    model = tiny_model(data)
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    settings = validation_defaults.readout_settings([1, 10])
    threshold = int(data.item_counts[1:].median())

    scores = validation_defaults.score_validation([model], data, settings, threshold, EVAL_CFG)

    assert list(scores) == ["fused, prior 1", "fused, prior 10", "id", "mm", "max", "sum"]
    for groups in scores.values():
        assert np.array_equal(groups["all"]["users"], valid.users.numpy())
        assert 0 < len(groups["cold_items"]["users"]) < len(valid)
        assert set(groups["cold_items"]["users"]) <= set(valid.users.tolist())
        assert np.array_equal(groups["cold_among_cold"]["users"], groups["cold_items"]["users"])
    assert scores["fused, prior 1"]["all"]["recall@20"].shape == (len(valid),)
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())


def item_scores(model, history):
    with torch.no_grad():
        return model.eval().item_scores(history, model.item_table())


def test_switching_the_readout_scores_like_a_model_built_with_it():
    data = cyclic_data()
    trained = tiny_model(data)  # readout auto = fused, prior 10
    history = data.valid.history
    previous = item_scores(trained, history)
    for readout_cfg in ({"readout": "id"}, {"readout": "sum"}, {"readout": "fused", "fused_prior_count": 3}):
        built = tiny_model(data, **readout_cfg)
        built.load_state_dict(trained.state_dict())
        trained.configure_readout(readout_cfg)
        assert validation_defaults.setting_label(trained) == validation_defaults.setting_label(built)
        scores = item_scores(trained, history)
        assert torch.equal(scores, item_scores(built, history))
        assert not torch.equal(scores, previous)  # the switch changed the ranking scores
        previous = scores
