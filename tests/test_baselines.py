"""Baselines: the popularity floor, shapes of every model, and that each learns a planted structure."""

import numpy as np
import torch

from bivrec.data.dataset import EvalSplit, pad_right
from bivrec.evaluate import evaluate
from bivrec.models import build_model


def test_popularity_ranks_by_training_counts_and_survives_state_dict():
    counts = torch.tensor([9, 3, 7, 7, 1, 0])  # row 0 (padding) must be ignored
    model = build_model("popularity", 5, None, {"dim": 8, "max_len": 4, "dropout": 0.0, "n_interests": 2})
    assert not model.trainable
    model.fit_counts(counts)
    split = EvalSplit(torch.arange(3), torch.tensor([[0, 0, 1, 2]] * 3), pad_right([[2], [3], [1, 4]]))
    result = evaluate(model, split, topk=(1, 2))
    # ranking 2, 3 (tie on 7 broken by id), 1, 4, 5
    np.testing.assert_array_equal(result.per_user["recall@1"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(result.per_user["recall@2"], [1.0, 1.0, 0.0])
    restored = build_model("popularity", 5, None, {})
    restored.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(evaluate(restored, split, topk=(2,)).per_user["recall@2"], [1.0, 1.0, 0.0])
