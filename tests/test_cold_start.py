import torch

from bivrec.data.dataset import EvalSplit
from bivrec.experiments.cold_start import cold_item_split, cold_items, short_history_split


def split() -> EvalSplit:
    history = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 7]])
    targets = torch.tensor([[4, 5, 0], [1, 2, 0], [5, 6, 4]])
    return EvalSplit(torch.tensor([10, 11, 12]), history, targets)


def test_cold_item_split_keeps_only_cold_targets_and_their_users():
    counts = torch.tensor([0, 50, 50, 9, 2, 8, 3, 40])  # cold (<= 3): items 4 and 6 (and 3, 0 targets)
    cold = cold_item_split(split(), counts, max_interactions=3)
    assert cold.users.tolist() == [10, 12]  # user 11 has only warm targets
    assert cold.targets.tolist() == [[4, 0, 0], [0, 6, 4]]
    assert torch.equal(cold.history, split().history[[0, 2]])


def test_short_history_split_counts_real_items_only():
    assert short_history_split(split(), max_length=2).users.tolist() == [10, 12]
    assert short_history_split(split(), max_length=0).users.tolist() == []


def test_cold_items_mask_excludes_padding():
    counts = torch.tensor([0, 50, 1, 9, 2])
    assert cold_items(counts, max_interactions=2).tolist() == [False, False, True, False, True]
