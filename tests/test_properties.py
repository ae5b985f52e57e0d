"""Property-based tests (hypothesis): random small interaction tables through preprocess -> split ->
sampler -> evaluation. Derandomized (a fixed example sequence) so CI runs the same cases every time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tree_bytes
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from bivrec.data.dataset import DataError, EvalSplit, last_window, load_dataset, pad_right
from bivrec.data.preprocess import preprocess
from bivrec.data.split import history_lengths
from bivrec.evaluate import evaluate
from bivrec.models.base import Recommender
from bivrec.train import SequenceSampler

PROPERTY = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MAX_LEN = 4


@st.composite
def interaction_tables(draw) -> pd.DataFrame:
    """user_id, item_id, timestamp rows in a shuffled file order; equal timestamps and repeated
    (user, item, time) rows occur; ids are integers or strings."""
    n_users, n_items = draw(st.integers(6, 20)), draw(st.integers(2, 12))
    numeric = draw(st.booleans())
    rows = []
    for user in range(n_users):
        length = draw(st.integers(2, 9))
        items = draw(st.lists(st.integers(0, n_items - 1), min_size=length, max_size=length))
        times = np.cumsum(draw(st.lists(st.integers(0, 2), min_size=length, max_size=length)))
        rows += [(user, item, int(t)) for item, t in zip(items, times)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    if not numeric:
        frame["user_id"], frame["item_id"] = "u" + frame["user_id"].astype(str), "i" + frame["item_id"].astype(str)
    order = draw(st.permutations(range(len(frame))))
    return frame.iloc[list(order)].reset_index(drop=True)


def _preprocess(frame: pd.DataFrame, folder: Path, split: dict, seed: int) -> dict:
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    frame.to_csv(raw / "interactions.csv", index=False)
    items = pd.DataFrame({"item_id": pd.unique(frame["item_id"]).astype(str)})
    items = items.assign(title="t", description="", categories="", image="")
    items.to_json(raw / "items.jsonl", orient="records", lines=True)
    try:
        return preprocess("p", {"kind": "synthetic"}, {**split, "seed": seed}, raw, folder / "data")
    except DataError as error:  # too few users left for a split: a clear refusal, not a property case
        assert "split is empty" in str(error) or "no users left" in str(error)
        reject()


def _expected_sequences(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's items in time order, ties in file order, exact duplicate rows dropped (by hand)."""
    seen, rows = set(), []
    for position, (user, item, time) in enumerate(frame[["user_id", "item_id", "timestamp"]].itertuples(index=False)):
        if (user, item, time) not in seen:
            seen.add((user, item, time))
            rows.append((str(user), time, position, str(item)))
    sequences: dict[str, list[str]] = {}
    for user, _, _, item in sorted(rows):
        sequences.setdefault(user, []).append(item)
    return sequences


@PROPERTY
@given(frame=interaction_tables(), seed=st.integers(0, 2**16), history_ratio=st.sampled_from([0.5, 0.8]),
       n=st.integers(1, 6), chunk=st.sampled_from([None, 1, 3]))
def test_preprocess_split_sampler_and_evaluation(tmp_path_factory, frame, seed, history_ratio, n, chunk):
    """One random table through the whole chain; each stage's properties on the previous one's output."""
    folder = tmp_path_factory.mktemp("prop")
    split = {"valid_ratio": 0.2, "test_ratio": 0.2, "history_ratio": history_ratio, "min_sequence_length": 2}
    stats = _preprocess(frame, folder, split, seed)
    data = folder / "data"
    items = pd.read_parquet(data / "items.parquet")
    interactions = pd.read_parquet(data / "interactions.parquet")
    tables = {name: pd.read_parquet(data / "split" / f"{name}.parquet") for name in ("train", "valid", "test")}

    # every item id is 1..N and N is the number of distinct items: every item is recommendable
    assert items["item"].tolist() == list(range(1, stats["items"] + 1))
    assert set(interactions["item"]) == set(items["item"])
    # users: contiguous, each in exactly one split
    users = [set(tables[name]["user"]) for name in tables]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert set().union(*users) == set(range(stats["users"]))
    # each user's sequence is the input's, in time order (ties in file order), duplicates dropped
    expected = _expected_sequences(frame)
    kept = [user for user, sequence in expected.items() if len(sequence) >= split["min_sequence_length"]]
    original_user = dict(enumerate(sorted(kept, key=_id_key)))  # users are numbered in id order
    original_item = dict(zip(items["item"], items["original_id"]))
    sequences = interactions.groupby("user", sort=True)["item"].agg(list)
    for user, sequence in sequences.items():
        assert [original_item[i] for i in sequence] == expected[original_user[user]]
    # train users keep everything; held-out users: history + targets is exactly the sequence, cut by the ratio
    for row in tables["train"].itertuples(index=False):
        assert list(row.items) == sequences[row.user]
    for name in ("valid", "test"):
        for row in tables[name].itertuples(index=False):
            full = sequences[row.user]
            assert list(row.history) + list(row.targets) == full
            assert len(row.history) == history_lengths(np.array([len(full)]), history_ratio)[0] >= 1
            assert len(row.targets) >= 1

    again = tmp_path_factory.mktemp("prop")
    _preprocess(frame, again, split, seed)
    assert tree_bytes(data) == tree_bytes(again / "data"), "same input and seed: byte-identical output"

    loaded = load_dataset(data, MAX_LEN)
    _check_sampler(loaded, tables["train"], seed)
    _check_evaluation(loaded, seed, n, chunk)


def _id_key(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _check_sampler(data, train: pd.DataFrame, seed: int) -> None:
    """Every drawn sample is a real (history window, next item) of a training user; same seed, same draw."""
    windows = set()  # every (history window, target) a training user offers
    for sequence in train["items"]:
        for cut in range(1, len(sequence)):
            window = tuple(([0] * MAX_LEN + list(sequence[:cut]))[-MAX_LEN:])
            windows.add((window, int(sequence[cut])))
    history, target = SequenceSampler(data, MAX_LEN, 1, seed).sample(64)
    drawn = {(tuple(h), int(t)) for h, t in zip(history.tolist(), target.tolist())}
    assert drawn <= windows
    again = SequenceSampler(data, MAX_LEN, 1, seed).sample(64)
    assert torch.equal(history, again[0]) and torch.equal(target, again[1])


class BagOfItems(Recommender):
    """Two interests over a fixed integer-valued item table (exact float sums, many tied scores):
    the sum of the history's item vectors and the last item's vector."""

    def __init__(self, n_items: int, seed: int):
        super().__init__(n_items, None, {})
        generator = torch.Generator().manual_seed(seed)
        table = torch.randint(-2, 3, (n_items + 1, 3), generator=generator).float()
        table[0] = 0
        self.register_buffer("table", table)

    def user_interests(self, history):
        vectors = self.table[history]
        return torch.stack([vectors.sum(1), vectors[:, -1]], dim=1)

    def item_table(self):
        return self.table


def _slow_metrics(model: BagOfItems, split: EvalSplit, n: int) -> dict[str, list[float]]:
    """The evaluator's metrics by their definitions, one user at a time, from plain Python sorting."""
    table = model.table.double().numpy()
    out = {f"{m}@{n}": [] for m in ("recall", "ndcg", "ndcg_std", "hitrate")}
    for history, targets in zip(split.history.tolist(), split.targets.tolist()):
        interests = [table[history].sum(0), table[history[-1]]]
        scores = {j: max(float(v @ table[j]) for v in interests) for j in range(1, model.n_items + 1)}
        ranked = sorted(scores, key=lambda j: (-scores[j], j))[:n]
        wanted = {t for t in targets if t > 0}
        hits = [r for r, item in enumerate(ranked, 1) if item in wanted]
        dcg = sum(1 / math.log2(r + 1) for r in hits)
        ideal = lambda k: sum(1 / math.log2(r + 1) for r in range(1, k + 1))  # noqa: E731
        out[f"recall@{n}"].append(len(hits) / len(wanted))
        out[f"ndcg@{n}"].append(dcg / ideal(len(hits)) if hits else 0.0)
        out[f"ndcg_std@{n}"].append(dcg / ideal(min(len(wanted), n, model.n_items)))
        out[f"hitrate@{n}"].append(float(bool(hits)))
    return out


def _check_evaluation(data, seed: int, n: int, chunk: int | None) -> None:
    """Metrics equal a slow reference, lie in [0, 1] and do not depend on batching."""
    model = BagOfItems(data.n_items, seed)
    result = evaluate(model, data.test, topk=[n], user_batch_size=5, item_chunk_size=chunk)
    reference = _slow_metrics(model, data.test, n)
    for name, values in reference.items():
        assert result.per_user[name] == pytest.approx(values, rel=1e-12, abs=1e-12), name
        assert 0.0 <= result.metrics[name] <= 1.0
    assert result.per_user["users"].tolist() == data.test.users.tolist()
    again = evaluate(model, data.test, topk=[n], user_batch_size=3, item_chunk_size=chunk)
    assert json.dumps(again.metrics) == json.dumps(result.metrics), "deterministic, whatever the batching"


class LastItem(Recommender):
    """Scores an item 1 when it is the history's last item, else 0: item j is the top-1 of a user whose last item is j."""

    def user_interests(self, history):
        return torch.nn.functional.one_hot(history[:, -1:], self.n_items + 1).float()

    def item_table(self):
        return torch.eye(self.n_items + 1)


@PROPERTY
@given(n_items=st.integers(1, 40), chunk=st.sampled_from([None, 1, 7]))
def test_every_item_is_recommendable(n_items, chunk):
    items = list(range(1, n_items + 1))
    split = EvalSplit(torch.arange(n_items), last_window([[j] for j in items], MAX_LEN), pad_right([[j] for j in items]))
    result = evaluate(LastItem(n_items, None, {}), split, topk=[1], item_chunk_size=chunk)
    assert result.per_user["hitrate@1"].tolist() == [1.0] * n_items
