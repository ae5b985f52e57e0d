"""ComiRec split protocol, k-core filtering and data validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bivrec.data.dataset import DataError
from bivrec.data.preprocess import k_core, preprocess
from bivrec.config import ParamsError
from bivrec.data.split import TEST, TRAIN, VALID, assign_user_fold, assign_users, history_lengths, split_tables
from bivrec.data.validate import handle_duplicates, require_columns, require_no_missing, require_numeric_ids

SPLIT = {"valid_ratio": 0.2, "test_ratio": 0.2, "history_ratio": 0.8, "min_sequence_length": 3}
CFG = {"kind": "synthetic"}


def test_assign_users_is_seeded_and_sized():
    a = assign_users(1000, 0.1, 0.15, seed=1)
    assert (a == assign_users(1000, 0.1, 0.15, seed=1)).all()
    assert (a != assign_users(1000, 0.1, 0.15, seed=2)).any()
    assert np.bincount(a).tolist() == [750, 100, 150]


def test_user_folds_test_every_user_exactly_once():
    folds = [assign_user_fold(943, 0.1, fold, 5, seed=3407) for fold in range(5)]
    test_count = sum((codes == TEST).astype(int) for codes in folds)
    assert (test_count == 1).all()  # every user is a test user in exactly one fold
    for codes in folds:
        assert np.bincount(codes, minlength=3)[VALID] == 94  # round(0.1 * 943), never a test user
        assert abs(int((codes == TEST).sum()) - 943 / 5) <= 1
    assert (folds[0] == assign_user_fold(943, 0.1, 0, 5, seed=3407)).all()
    assert (folds[0] != assign_user_fold(943, 0.1, 0, 5, seed=1)).any()
    with pytest.raises(ParamsError, match="index must be in"):
        assign_user_fold(10, 0.1, 5, 5, seed=0)


def test_preprocess_honours_user_fold(tmp_path):
    _write_raw(tmp_path / "raw", _toy(n_users=30))
    tested = []
    for fold in range(3):
        cfg = {**CFG, "user_fold": {"index": fold, "of": 3}}
        preprocess("toy", cfg, {**SPLIT, "seed": 3}, tmp_path / "raw", tmp_path / f"f{fold}")
        tested.append(set(pd.read_parquet(tmp_path / f"f{fold}" / "split" / "test.parquet")["user"]))
        expected = np.flatnonzero(assign_user_fold(30, SPLIT["valid_ratio"], fold, 3, 3) == TEST)
        assert tested[-1] == set(expected.tolist())
    assert set().union(*tested) == set(range(30)) and sum(map(len, tested)) == 30


def test_history_is_first_80_percent():
    assert history_lengths(np.array([2, 5, 9, 10, 11]), 0.8).tolist() == [1, 4, 7, 8, 8]


def test_split_tables_known_answer():
    # user 0: train, items 1..5; user 1: valid, items 11..20; user 2: test, items 7, 8
    users = np.repeat([0, 1, 2], [5, 10, 2])
    items = np.concatenate([np.arange(1, 6), np.arange(11, 21), [7, 8]])
    tables = split_tables(users, items, np.array([TRAIN, VALID, TEST], np.int8), 0.8)
    assert tables["train"].to_pydict() == {"user": [0], "items": [[1, 2, 3, 4, 5]]}
    assert tables["valid"].to_pydict() == {"user": [1], "history": [list(range(11, 19))], "targets": [[19, 20]]}
    assert tables["test"].to_pydict() == {"user": [2], "history": [[7]], "targets": [[8]]}


def test_held_out_user_needs_two_items():
    with pytest.raises(DataError, match="fewer than 2"):
        split_tables(np.array([0]), np.array([3]), np.array([VALID], np.int8), 0.8)


def test_k_core_iterates_to_fixed_point():
    # min_item=3 removes item c (2 users), which leaves z and w with one item each; removing them
    # leaves a and b with 2 users each, so the next pass removes everything
    users = np.array(["x", "x", "y", "y", "z", "z", "w", "w"])
    items = np.array(["a", "b", "a", "b", "c", "b", "a", "c"])
    keep = k_core(users, items, min_user=2, min_item=3)
    assert keep.tolist() == [False] * 8
    keep = k_core(users, items, min_user=2, min_item=2)
    assert keep.all()


def _write_raw(folder, interactions: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(folder / "interactions.csv", index=False)
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].astype(str).unique())})
    items = items.assign(title="t", description="d", categories="c", image="")
    items.to_json(folder / "items.jsonl", orient="records", lines=True)


def _toy(n_users=20, length=6, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat([f"u{u}" for u in range(n_users)], length)
    items = np.concatenate([rng.choice(15, size=length, replace=False) for _ in range(n_users)])
    times = np.tile(np.arange(length) * 10, n_users)
    return pd.DataFrame({"user_id": users, "item_id": [f"i{i}" for i in items], "timestamp": times})


def test_same_seed_gives_byte_identical_files(tmp_path):
    _write_raw(tmp_path / "raw", _toy())
    preprocess("toy", CFG, {**SPLIT, "seed": 3}, tmp_path / "raw", tmp_path / "a")
    preprocess("toy", CFG, {**SPLIT, "seed": 3}, tmp_path / "raw", tmp_path / "b")
    preprocess("toy", CFG, {**SPLIT, "seed": 4}, tmp_path / "raw", tmp_path / "c")
    for name in ["items.parquet", "interactions.parquet", "split/train.parquet", "split/valid.parquet", "split/test.parquet", "stats.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a/split/test.parquet").read_bytes() != (tmp_path / "c/split/test.parquet").read_bytes()


def test_order_is_chronological_with_stable_ties(tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": ["u1"] * 5 + ["u0"] * 5,
            "item_id": ["i3", "i1", "i2", "i9", "i5", "i1", "i2", "i3", "i4", "i5"],
            "timestamp": [30, 10, 10, 5, 40, 1, 2, 3, 4, 5],
        }
    )
    _write_raw(tmp_path / "raw", frame)
    preprocess("toy", CFG, {**SPLIT, "valid_ratio": 0.0, "test_ratio": 0.5, "seed": 0}, tmp_path / "raw", tmp_path / "out")
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("item")["original_id"]
    u1 = inter[inter["user"] == 1]  # users are numbered in sorted original-id order: u0 -> 0, u1 -> 1
    assert items[u1["item"]].tolist() == ["i9", "i1", "i2", "i3", "i5"]  # i1 before i2: file order on the tie


def test_empty_after_filtering_and_empty_split_are_errors(tmp_path):
    _write_raw(tmp_path / "raw", _toy(n_users=5, length=4))
    with pytest.raises(DataError, match="no users left after filtering"):
        preprocess("toy", {**CFG, "k_core": 50}, {**SPLIT, "seed": 0}, tmp_path / "raw", tmp_path / "out")
    with pytest.raises(DataError, match="the valid split is empty"):
        preprocess("toy", CFG, {**SPLIT, "valid_ratio": 0.01, "seed": 0}, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_validation_messages_name_the_file(tmp_path):
    path = tmp_path / "x.csv"
    frame = pd.DataFrame({"user_id": ["1", "2", "b"], "item_id": [1, 2, 3], "timestamp": [1.0, np.nan, 3.0]})
    with pytest.raises(DataError, match=r"x\.csv: missing column\(s\) \['rating'\]"):
        require_columns(frame, ["user_id", "rating"], path)
    with pytest.raises(DataError, match=r"x\.csv: column 'user_id' must hold integer ids; row 2 has 'b'"):
        require_numeric_ids(frame, ["user_id"], path)
    with pytest.raises(DataError, match=r"x\.csv: column 'timestamp' has 1 missing"):
        require_no_missing(frame, ["timestamp"], path)
    assert require_numeric_ids(frame.iloc[:2], ["user_id"], path)["user_id"].tolist() == [1, 2]


def test_duplicates_dropped_or_refused(tmp_path):
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 5, 6], "timestamp": [7, 7, 8]})
    kept = handle_duplicates(frame, ["user_id", "item_id", "timestamp"], "d.csv", "drop")
    assert kept["item_id"].tolist() == [5, 6]
    with pytest.raises(DataError, match=r"d\.csv: 1 duplicate row"):
        handle_duplicates(frame, ["user_id", "item_id", "timestamp"], "d.csv", "error")

    toy = _toy(n_users=10)
    _write_raw(tmp_path / "raw", pd.concat([toy, toy.iloc[:3]]))
    stats = preprocess("toy", CFG, {**SPLIT, "seed": 0}, tmp_path / "raw", tmp_path / "out")
    assert stats["interactions"] == len(toy)
    with pytest.raises(DataError, match="duplicate"):
        preprocess("toy", {**CFG, "duplicates": "error"}, {**SPLIT, "seed": 0}, tmp_path / "raw", tmp_path / "out2")


def test_nan_timestamp_is_an_error(tmp_path):
    toy = _toy(n_users=10).astype({"timestamp": float})
    toy.loc[4, "timestamp"] = np.nan
    _write_raw(tmp_path / "raw", toy)
    with pytest.raises(DataError, match=r"interactions\.csv: column 'timestamp' has 1 missing"):
        preprocess("toy", CFG, {**SPLIT, "seed": 0}, tmp_path / "raw", tmp_path / "out")
