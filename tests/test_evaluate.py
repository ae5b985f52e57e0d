"""The vectorized evaluator against a plain per-user reference and hand-made cases."""

import math

import numpy as np
import pytest
import torch

from bivrec.data.dataset import EvalSplit, pad_right
from bivrec.evaluate import RunningTop, eval_options, evaluate, paired_significance, top_items
from bivrec.models.base import Recommender


class FixedModel(Recommender):
    """Returns preset interests: the last history column holds the user's row + 1."""

    def __init__(self, interests: torch.Tensor, table: torch.Tensor):
        super().__init__(table.shape[0] - 1, None, {})
        self.register_buffer("interests", interests)
        self.register_buffer("table", table)
        self.seen_training_flags = []

    def user_interests(self, history):
        self.seen_training_flags.append(self.training)
        return self.interests[history[:, -1] - 1]

    def item_table(self):
        return self.table


def make_split(target_lists) -> EvalSplit:
    n_users = len(target_lists)
    history = torch.zeros(n_users, 3, dtype=torch.long)
    history[:, -1] = torch.arange(1, n_users + 1)
    return EvalSplit(torch.arange(100, 100 + n_users), history, pad_right(target_lists))


def reference_ranking(interests: np.ndarray, table: np.ndarray, n: int) -> list[int]:
    """ComiRec literally: each interest's top-n, merged by score, de-duplicated, first n kept."""
    n_items = table.shape[0] - 1
    candidates = []
    for interest in interests:
        scores = {i: float(np.dot(interest, table[i])) for i in range(1, n_items + 1)}
        ranked = sorted(scores, key=lambda i: (-scores[i], i))[:n]
        candidates += [(scores[i], i) for i in ranked]
    merged, seen = [], set()
    for score, item in sorted(candidates, key=lambda c: (-c[0], c[1])):
        if item not in seen:
            seen.add(item)
            merged.append(item)
    return merged[:n]


def reference_metrics(ranked: list[int], targets: list[int], n: int) -> dict[str, float]:
    truth = set(targets) - {0}
    hit_ranks = [rank for rank, item in enumerate(ranked[:n], start=1) if item in truth]
    dcg = sum(1 / math.log2(rank + 1) for rank in hit_ranks)
    idcg_hits = sum(1 / math.log2(rank + 1) for rank in range(1, len(hit_ranks) + 1))
    idcg_std = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(truth), n) + 1))
    return {
        f"recall@{n}": len(hit_ranks) / len(truth),
        f"ndcg@{n}": dcg / idcg_hits if hit_ranks else 0.0,
        f"ndcg_std@{n}": dcg / idcg_std,
        f"hitrate@{n}": float(bool(hit_ranks)),
    }


@pytest.mark.parametrize("n_interests,integer_scores", [(1, False), (3, False), (3, True)])
def test_matches_reference_on_random_data(n_interests, integer_scores):
    generator = torch.Generator().manual_seed(n_interests + 10 * integer_scores)
    n_users, n_items, dim = 37, 60, 5
    if integer_scores:  # small integers: many exact ties, scores exact in float32
        interests = torch.randint(-2, 3, (n_users, n_interests, dim), generator=generator).float()
        table = torch.randint(-2, 3, (n_items + 1, dim), generator=generator).float()
    else:
        interests = torch.randn(n_users, n_interests, dim, generator=generator)
        table = torch.randn(n_items + 1, dim, generator=generator)
    table[0] = 10.0  # the padding row would win every ranking if it were not excluded
    target_lists = [
        torch.randint(1, n_items + 1, (int(torch.randint(1, 40, (1,), generator=generator)),), generator=generator).tolist()
        for _ in range(n_users)
    ]
    result = evaluate(FixedModel(interests, table), make_split(target_lists), topk=(5, 20), user_batch_size=8)

    for n in (5, 20):
        expected = {key: [] for key in result.metrics if key.endswith(f"@{n}")}
        for user in range(n_users):
            ranked = reference_ranking(interests[user].double().numpy(), table.double().numpy(), n)
            assert 0 not in ranked
            for key, value in reference_metrics(ranked, target_lists[user], n).items():
                expected[key].append(value)
        for key, values in expected.items():
            np.testing.assert_allclose(result.per_user[key], values, rtol=1e-12, atol=1e-12, err_msg=key)
            assert result.metrics[key] == pytest.approx(np.mean(values), abs=1e-12)
    np.testing.assert_array_equal(result.per_user["users"], np.arange(100, 100 + n_users))


def test_hand_made_case_with_known_answers():
    # one interest; item scores 5, 4, 3, 2, 1 for items 1..5, so the ranking is 1, 2, 3, 4, 5
    table = torch.tensor([[100.0], [5.0], [4.0], [3.0], [2.0], [1.0]])
    interests = torch.ones(2, 1, 1)
    targets = [[2, 5, 2], [4]]  # the repeated 2 counts once
    result = evaluate(FixedModel(interests, table), make_split(targets), topk=(2, 5))
    log3 = math.log2(3)
    # user 0: targets {2, 5}; top-2 = [1, 2] hits at rank 2
    assert result.per_user["recall@2"][0] == pytest.approx(0.5)
    assert result.per_user["ndcg@2"][0] == pytest.approx((1 / log3) / 1.0)
    assert result.per_user["ndcg_std@2"][0] == pytest.approx((1 / log3) / (1 + 1 / log3))
    assert result.per_user["hitrate@2"][0] == 1.0
    # top-5 = all items: hits at ranks 2 and 5
    dcg = 1 / log3 + 1 / math.log2(6)
    assert result.per_user["recall@5"][0] == pytest.approx(1.0)
    assert result.per_user["ndcg@5"][0] == pytest.approx(dcg / (1 + 1 / log3))
    # user 1: target 4 is ranked 4th: no hit at 2, hit at 5
    assert result.per_user["recall@2"][1] == 0.0
    assert result.per_user["ndcg@2"][1] == 0.0
    assert result.per_user["hitrate@2"][1] == 0.0
    # one hit at rank 4 of one target: both definitions normalise by IDCG = 1
    assert result.per_user["ndcg@5"][1] == pytest.approx(1 / math.log2(5))
    assert result.per_user["ndcg_std@5"][1] == pytest.approx(1 / math.log2(5))
    assert result.metrics["recall@2"] == pytest.approx(0.25)
    assert result.metrics["hitrate@5"] == pytest.approx(1.0)
    # N larger than the catalogue: the list holds the 5 real items and nothing else
    beyond = evaluate(FixedModel(interests, table), make_split(targets), topk=(50,))
    assert beyond.per_user["recall@50"].tolist() == [1.0, 1.0]
    assert beyond.per_user["ndcg_std@50"][0] == pytest.approx(dcg / (1 + 1 / log3))


def test_ties_break_by_smaller_item_id():
    scores = torch.tensor([[0.0, 1.0, 3.0, 1.0, 3.0, 1.0, 0.0]])
    scores[:, 0] = float("-inf")
    assert top_items(scores, 3).tolist() == [[2, 4, 1]]
    assert top_items(scores, 4).tolist() == [[2, 4, 1, 3]]
    # more requested than there are real items: every real item once, never padding
    assert top_items(scores, 50).tolist() == [[2, 4, 1, 3, 5, 6]]
    all_minus_inf = torch.full((1, 4), float("-inf"))
    assert top_items(all_minus_inf, 2).tolist() == [[1, 2]]


def test_multi_interest_uses_each_items_best_interest():
    # interest 0 likes item 1, interest 1 likes item 3; item 2 is second for both
    table = torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [0.0, 9.0]])
    interests = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    result = evaluate(FixedModel(interests, table), make_split([[3]]), topk=(1, 2))
    assert result.per_user["recall@1"][0] == 0.0  # item 1 (score 10) is first
    assert result.per_user["recall@2"][0] == 1.0  # item 3 (score 9 by interest 1) is second
    assert result.per_user["ndcg_std@2"][0] == pytest.approx(1 / math.log2(3))


def test_batch_size_does_not_change_results_and_mode_is_restored():
    generator = torch.Generator().manual_seed(0)
    interests, table = torch.randn(50, 2, 4, generator=generator), torch.randn(31, 4, generator=generator)
    split = make_split([[int(i) % 30 + 1, 7] for i in range(50)])
    model = FixedModel(interests, table)
    model.train()
    small = evaluate(model, split, topk=(10,), user_batch_size=7)
    large = evaluate(model, split, topk=(10,), user_batch_size=1000)
    assert model.training and not any(model.seen_training_flags)
    for key in small.per_user:
        np.testing.assert_array_equal(small.per_user[key], large.per_user[key])


def test_user_without_targets_is_an_error():
    model = FixedModel(torch.ones(2, 1, 1), torch.ones(4, 1))
    split = make_split([[1], [2]])
    split.targets[1] = 0
    with pytest.raises(ValueError, match="without targets"):
        evaluate(model, split)


def test_paired_significance():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    assert paired_significance(base, base) == 1.0
    assert paired_significance(base + 0.05 + 0.01 * rng.standard_normal(300), base) < 1e-6
    noise = rng.standard_normal(300) * 0.1
    assert paired_significance(base + noise, base) > 1e-3
    assert paired_significance(base, base + noise) == pytest.approx(paired_significance(base + noise, base))
    with pytest.raises(ValueError):
        paired_significance(base, base[:10])


def test_candidates_restrict_the_ranking_and_are_validated():
    # one user, one interest; item scores 5, 4, 3, 2, 1 for items 1..5
    model = FixedModel(torch.ones(1, 1, 1), torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]]))
    split = make_split([[4]])
    assert evaluate(model, split, [2]).metrics["recall@2"] == 0.0  # item 4 ranks 4th among all items
    candidates = torch.tensor([False, False, True, False, True, True])  # items 2, 4, 5
    result = evaluate(model, split, [2], candidates=candidates)
    assert result.metrics["recall@2"] == 1.0 and result.metrics["ndcg_std@2"] == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="outside the candidates"):
        evaluate(model, make_split([[1]]), [2], candidates=candidates)
    with pytest.raises(ValueError, match="n_items \\+ 1"):
        evaluate(model, split, [2], candidates=candidates[:5])
    with pytest.raises(ValueError, match="bool mask"):
        evaluate(model, split, [2], candidates=candidates.long())


@pytest.mark.parametrize("integer_scores", [False, True])
def test_item_chunks_with_a_running_top_n_rank_exactly_as_the_full_matrix(integer_scores):
    generator = torch.Generator().manual_seed(3)
    n_users, n_items = 45, 97
    if integer_scores:  # many exact ties, several across chunk boundaries
        interests = torch.randint(-1, 2, (n_users, 2, 3), generator=generator).float()
        table = torch.randint(-1, 2, (n_items + 1, 3), generator=generator).float()
    else:
        interests, table = torch.randn(n_users, 2, 6, generator=generator), torch.randn(n_items + 1, 6, generator=generator)
    model = FixedModel(interests, table)
    split = make_split([torch.randint(1, n_items + 1, (5,), generator=generator).tolist() for _ in range(n_users)])
    candidates = torch.rand(n_items + 1, generator=generator) < 0.7
    candidates[0] = False
    candidates[split.targets[split.targets > 0]] = True
    for kwargs in ({}, {"candidates": candidates}):
        full = evaluate(model, split, topk=(5, 20, 150), user_batch_size=16, **kwargs)
        for chunk in (1, 7, 19, 96, 97, 1000):
            chunked = evaluate(model, split, topk=(5, 20, 150), user_batch_size=16, item_chunk_size=chunk, **kwargs)
            for key in full.per_user:
                np.testing.assert_array_equal(chunked.per_user[key], full.per_user[key], err_msg=f"{key} chunk {chunk}")
    # the chunked running top-n equals the sort of the whole score matrix (ties by smaller id)
    scores = model.item_scores(split.history, table)
    for n in (1, 5, 40):
        best = RunningTop(n, n_items)
        for start in range(1, n_items + 1, 13):
            best.add(start, scores[:, start : start + 13])
        expected = [sorted(range(1, n_items + 1), key=lambda i: (-float(row[i]), i))[:n] for row in scores]
        assert best.ranked().tolist() == expected
    with pytest.raises(ValueError, match="item_chunk_size"):
        evaluate(model, split, item_chunk_size=0)


def test_eval_options_read_the_params_section():
    assert eval_options({"topk": [5], "user_batch_size": 3, "item_chunk_size": 11}) == {
        "topk": [5], "user_batch_size": 3, "item_chunk_size": 11
    }
    assert eval_options({"topk": [5]})["item_chunk_size"] is None
