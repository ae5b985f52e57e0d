"""Baselines: the popularity floor, shapes of every model, and that each learns a planted structure."""

import numpy as np
import pytest
import torch

from bivrec.data.dataset import EvalSplit, SequenceData, last_window, pad_right
from bivrec.evaluate import evaluate
from bivrec.features.store import ItemFeatures
from bivrec.models import build_model
from bivrec.train import fit


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


SEQUENCE_MODELS = ["gru4rec", "sasrec", "mind", "comirec_dr", "comirec_sa", "fdsa", "nova", "difsr", "mmmlp", "unisrec"]
MULTI_INTEREST = {"mind", "comirec_dr", "comirec_sa"}
CONFIG = {
    "dim": 32,
    "max_len": 10,
    "dropout": 0.1,
    "n_interests": 2,
    "n_layers": 1,
    "n_heads": 2,
    "routing_iterations": 3,
    "attention_hidden": 64,
    "n_experts": 4,
    "temperature": 0.5,
}
N_CATEGORIES, CATEGORY_SIZE = 6, 8
N_ITEMS = N_CATEGORIES * CATEGORY_SIZE


def planted_data(seed: int = 0):
    """Users alternate between two item categories and walk each category's items in a fixed cycle.

    Every item is about equally popular, so popularity is near chance, while the next items follow
    from the last two. Image features carry the category (+ noise), text features identify the item.
    """
    rng = np.random.default_rng(seed)

    def sequence():
        first, second = rng.choice(N_CATEGORIES, 2, replace=False)
        starts = rng.integers(0, CATEGORY_SIZE, 2)
        length = int(rng.integers(12, 17))
        steps = np.arange(length)
        category = np.where(steps % 2 == 0, first, second)
        offset = (np.where(steps % 2 == 0, starts[0], starts[1]) + steps // 2) % CATEGORY_SIZE
        return (category * CATEGORY_SIZE + offset + 1).tolist()

    def held_out(n_users):
        sequences = [sequence() for _ in range(n_users)]
        cuts = [int(len(s) * 0.8) for s in sequences]
        return EvalSplit(
            torch.arange(n_users),
            last_window([s[:c] for s, c in zip(sequences, cuts)], CONFIG["max_len"]),
            pad_right([s[c:] for s, c in zip(sequences, cuts)]),
        )

    train = [sequence() for _ in range(400)]
    train_items = pad_right(train)
    counts = torch.bincount(train_items.flatten(), minlength=N_ITEMS + 1)
    counts[0] = 0
    data = SequenceData(N_ITEMS, train_items, (train_items > 0).sum(1), held_out(60), held_out(60), counts)
    category = np.repeat(np.arange(N_CATEGORIES), CATEGORY_SIZE)
    image = np.zeros((N_ITEMS + 1, 12), dtype=np.float32)
    image[1 + np.arange(N_ITEMS), category] = 1.0
    image[1:] += 0.1 * rng.standard_normal((N_ITEMS, 12)).astype(np.float32)
    text = np.zeros((N_ITEMS + 1, 16), dtype=np.float32)
    text[1:] = rng.standard_normal((N_ITEMS, 16)).astype(np.float32)
    mask = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    mask[0] = False
    return data, ItemFeatures(torch.from_numpy(image), torch.from_numpy(text), mask, mask.clone())


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_shapes_determinism_and_gradients(name):
    data, features = planted_data()
    torch.manual_seed(0)
    model = build_model(name, N_ITEMS, features, CONFIG)
    history, target = data.train_items[:5, :CONFIG["max_len"]], data.train_items[:5, CONFIG["max_len"]]
    history[0, :6] = 0  # a shorter, padded history
    loss, parts = model.loss(history, target)
    assert torch.isfinite(loss) and parts["rec"] == pytest.approx(loss.item())
    loss.backward()
    no_gradient = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not no_gradient, f"parameters without gradient: {no_gradient}"
    model.eval()
    interests = model.user_interests(history)
    expected_k = CONFIG["n_interests"] if name in MULTI_INTEREST else 1
    assert interests.shape == (5, expected_k, CONFIG["dim"])
    assert model.item_table().shape == (N_ITEMS + 1, CONFIG["dim"])
    torch.testing.assert_close(model.user_interests(history), interests)  # eval mode is deterministic
    assert "image_table" not in model.state_dict() and not any("_table" in k for k in model.state_dict())


def test_feature_models_need_features():
    for name in ("fdsa", "nova", "difsr", "mmmlp", "unisrec"):
        with pytest.raises(ValueError, match="no image or text features"):
            build_model(name, N_ITEMS, None, CONFIG)


def test_missing_hyper_parameter_names_the_key():
    with pytest.raises(KeyError, match="routing_iterations"):
        build_model("mind", N_ITEMS, None, {k: v for k, v in CONFIG.items() if k != "routing_iterations"})


TRAIN = {"batch_size": 128, "learning_rate": 0.005, "weight_decay": 0.0, "max_steps": 150, "eval_every": 50,
         "patience": 10, "min_cut": 1, "amp": False}
EVAL = {"topk": [10], "user_batch_size": 1024, "select_metric": "recall@10"}


@pytest.fixture(scope="module")
def popularity_recall():
    data, _ = planted_data()
    model = build_model("popularity", N_ITEMS, None, CONFIG)
    model.fit_counts(data.item_counts)
    return evaluate(model, data.test, topk=(10,)).metrics["recall@10"]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_trains_and_beats_popularity(name, popularity_recall):
    torch.set_num_threads(1)
    data, features = planted_data()
    torch.manual_seed(0)
    model = build_model(name, N_ITEMS, features, CONFIG)
    result = fit(model, data, TRAIN, EVAL, seed=0, progress=False)
    model.load_state_dict(result.best_state)
    recall = evaluate(model, data.test, topk=(10,)).metrics["recall@10"]
    # popularity is near chance (~0.2) here; 0.15 is about five standard errors over 60 test users
    assert recall > popularity_recall + 0.15, (recall, popularity_recall)


def test_whitening_experts_match_their_definition():
    from bivrec.models.baselines.unisrec import WhiteningExperts

    torch.manual_seed(0)
    adaptor = WhiteningExperts(10, 4, 3, dropout=0.0)
    torch.nn.init.normal_(adaptor.centres)
    x = torch.randn(7, 10)
    gate = torch.softmax(adaptor.gate(x), dim=1)
    expected = sum(gate[:, e : e + 1] * ((x - adaptor.centres[e]) @ adaptor.experts[e]) for e in range(3))
    torch.testing.assert_close(adaptor(x), expected)
