"""The embedded synthetic dataset: deterministic, in the raw layout, with learnable structure."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bivrec.config import ParamsError
from bivrec.data.dataset import load_dataset
from bivrec.data.download import download
from bivrec.data.preprocess import preprocess
from bivrec.data.synthetic import COLOURS, category_look, config_with_defaults, generate, style_hue

SMALL = {
    "kind": "synthetic",
    "n_users": 300,
    "n_items": 160,
    "n_categories": 5,
    "interests_per_user": [2, 3],
    "min_length": 8,
    "max_length": 24,
    "cold_fraction": 0.2,
    "cold_popularity": 0.03,
    "image_size": 32,
}
SPLIT = {"valid_ratio": 0.1, "test_ratio": 0.1, "history_ratio": 0.8, "min_sequence_length": 5}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "raw"
    download("synthetic", {**SMALL, "generator_seed": 7}, folder)
    return folder


def _tables(folder: Path):
    inter = pd.read_csv(folder / "interactions.csv")
    latent = pd.read_csv(folder / "latent.csv")
    items = pd.read_json(folder / "items.jsonl", lines=True)
    return inter, latent, items


def test_raw_layout_and_determinism(raw, tmp_path):
    inter, latent, items = _tables(raw)
    assert list(inter.columns) == ["user_id", "item_id", "timestamp"]
    assert {"item_id", "title", "description", "categories", "image"} <= set(items.columns)
    assert len(items) == SMALL["n_items"] == len(latent)
    assert all((raw / p).is_file() for p in items["image"])
    assert inter["user_id"].nunique() == SMALL["n_users"]

    generate(SMALL, 7, tmp_path / "again")
    for name in ["interactions.csv", "items.jsonl", "latent.csv", items["image"].iloc[3]]:
        assert (raw / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    generate(SMALL, 8, tmp_path / "other")
    assert (raw / "interactions.csv").read_bytes() != (tmp_path / "other" / "interactions.csv").read_bytes()


def test_category_shows_in_text_and_image(raw):
    _, latent, items = _tables(raw)
    merged = items.merge(latent, on="item_id")
    for _, row in merged.iterrows():
        theme, nouns = category_look(row["category"])["theme"]
        assert theme.title() in row["categories"]
        assert any(noun in row["title"] for noun in nouns)
        assert category_look(row["category"])["colour"][0] in row["title"]

    # the dominant hue of the saturated pixels is the category's colour, for nearly every item
    hues = np.array([hue for _, hue in COLOURS])
    hits = []
    for _, row in merged.iterrows():
        rgb = np.asarray(Image.open(raw / row["image"]).convert("RGB"), np.float64) / 255
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.reshape(-1, 3)])
        saturated = hsv[hsv[:, 1] > 0.6]  # the shape (saturation >= 0.7), not the tinted background (<= 0.3)
        angle = np.angle(np.exp(2j * np.pi * saturated[:, 0]).mean()) / (2 * np.pi) % 1
        distance = np.abs((hues - angle + 0.5) % 1 - 0.5)
        hits.append(COLOURS[int(distance.argmin())][0] == category_look(row["category"])["colour"][0])
    assert np.mean(hits) > 0.95


def test_style_shows_in_text_and_background_and_users_prefer_one(raw, tmp_path):
    _, latent, items = _tables(raw)
    merged = items.merge(latent, on="item_id")
    for _, row in merged.iterrows():
        noun = category_look(row["category"])["theme"][1][row["style"]]
        assert row["title"].endswith(noun)
    # background (unsaturated, bright) pixels take the style's hue
    errors = []
    for _, row in merged.head(60).iterrows():
        rgb = np.asarray(Image.open(raw / row["image"]).convert("RGB"), np.float64) / 255
        corners = np.concatenate([rgb[:4, :4].reshape(-1, 3), rgb[-4:, -4:].reshape(-1, 3)])
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in corners])
        angle = np.angle(np.exp(2j * np.pi * hsv[:, 0]).mean()) / (2 * np.pi) % 1
        errors.append(abs((angle - style_hue(row["style"]) + 0.5) % 1 - 0.5))
    assert np.median(errors) < 0.05
    # inside a category a user's clicks concentrate on one style; styles of ~30 items, so that a
    # preferred style is not used up by one user's sequence
    generate({**SMALL, "n_items": 480, "n_categories": 4}, 7, tmp_path / "styles")
    inter, latent, _ = _tables(tmp_path / "styles")
    seq = inter.merge(latent, on="item_id")

    def top_style_share(styles) -> float:
        per_interest = seq.assign(style=styles).groupby(["user_id", "category"])["style"]
        return per_interest.agg(lambda s: s.value_counts().iloc[0] / len(s))[per_interest.size() >= 5].mean()

    shuffled = np.random.default_rng(0).permutation(seq["style"].to_numpy())
    assert top_style_share(seq["style"].to_numpy()) > top_style_share(shuffled) + 0.15


def test_users_mix_few_interests_and_dwell(raw):
    inter, latent, _ = _tables(raw)
    seq = inter.merge(latent, on="item_id").sort_values(["user_id", "timestamp"])
    # timestamps are distinct and no item repeats inside a user's sequence
    assert not seq.duplicated(["user_id", "timestamp"]).any()
    assert not seq.duplicated(["user_id", "item_id"]).any()
    share = seq.groupby(["user_id", "category"]).size().groupby(level=0).apply(lambda s: s.nlargest(3).sum() / s.sum())
    assert share.mean() > 0.9  # 2-3 interests cover almost everything; the rest is noise
    n_interests = seq.groupby("user_id")["category"].agg(lambda c: (c.value_counts() >= 2).sum())
    assert n_interests.median() >= 2
    same_user = seq["user_id"].to_numpy()[1:] == seq["user_id"].to_numpy()[:-1]
    same_cat = seq["category"].to_numpy()[1:] == seq["category"].to_numpy()[:-1]
    assert same_cat[same_user].mean() > 0.65  # dwelling: far above the ~0.4 of shuffled interests


def test_cold_items_are_rare_but_have_content(raw):
    inter, latent, items = _tables(raw)
    counts = inter["item_id"].value_counts().reindex(latent["item_id"], fill_value=0).to_numpy()
    cold = latent["cold"].to_numpy()
    assert cold.mean() == pytest.approx(SMALL["cold_fraction"], abs=0.01)
    assert counts[cold].mean() < 0.1 * counts[~cold].mean()
    assert (counts[cold] > 0).mean() > 0.5  # most cold items still appear, just rarely
    cold_items = items[items["item_id"].isin(latent["item_id"][cold])]
    assert (cold_items["title"].str.len() > 0).all() and (cold_items["image"] != "").all()


def test_preprocess_roundtrip(raw, tmp_path):
    stats = preprocess("synthetic", SMALL, {**SPLIT, "seed": 7}, raw, tmp_path / "data")
    inter = pd.read_csv(raw / "interactions.csv")
    assert stats["users"] == SMALL["n_users"]
    assert stats["interactions"] == len(inter)
    assert stats["items"] == inter["item_id"].nunique()
    assert stats["density"] == pytest.approx(stats["interactions"] / (stats["users"] * stats["items"]), rel=1e-6)
    assert json.loads((tmp_path / "data" / "stats.json").read_text()) == stats
    items = pd.read_parquet(tmp_path / "data" / "items.parquet")
    assert items["item"].tolist() == list(range(1, stats["items"] + 1))
    assert all((raw / p).is_file() for p in items["image"])
    data = load_dataset(tmp_path / "data", max_len=10)
    assert data.n_items == stats["items"]
    assert len(data.valid) == stats["valid_users"] == 30 and len(data.test) == 30
    assert int(data.train_lengths.sum()) == stats["train_interactions"]


def test_config_rejects_unknown_and_inconsistent_keys():
    with pytest.raises(ParamsError, match="unknown key"):
        config_with_defaults({"kind": "synthetic", "n_userz": 3})
    with pytest.raises(ParamsError, match="interests_per_user"):
        config_with_defaults({"kind": "synthetic", "n_categories": 3, "interests_per_user": [2, 5]})


def test_popularity_draws_equal_the_matrix_comparison():
    """``_below`` (binary searches) picks exactly the items the [users, width] comparison picked,
    ties and the padding of short rows included."""
    from bivrec.data.synthetic import _below, _searchable

    rng = np.random.default_rng(0)
    sizes = np.array([5, 1, 9, 3])
    cdf = np.ones((4, 9))
    for row, size in enumerate(sizes):
        cdf[row, :size] = np.cumsum(rng.random(size)) / np.cumsum(rng.random(size))[-1] if size > 1 else 1.0
    cdf[2, 3:5] = cdf[2, 2]  # equal cumulative values (a zero-weight item)
    rows = rng.integers(0, 4, 2000)
    draws = rng.random((2000, 1))
    draws[:10, 0] = cdf[rows[:10], 0]  # draws exactly on a boundary
    assert np.array_equal(_below(_searchable(cdf), 9, rows, draws), (cdf[rows] < draws).sum(1))


def test_large_catalogues_walk_users_in_groups_and_skip_images(tmp_path, monkeypatch):
    """At MovieLens-25M scale the users' seen-flags do not fit at once: users walk in groups (forced here
    with a tiny budget); sequences keep their lengths and never repeat an item; images: false draws none."""
    import bivrec.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "SEEN_BUDGET", 40 * SMALL["n_items"])  # groups of 40 users
    generate({**SMALL, "images": False}, 7, tmp_path)
    inter = pd.read_csv(tmp_path / "interactions.csv")
    items = pd.read_json(tmp_path / "items.jsonl", lines=True)
    assert (items["image"] == "").all() and not list((tmp_path / "images").iterdir())
    lengths = inter.groupby("user_id").size()
    assert len(lengths) == SMALL["n_users"] and lengths.between(SMALL["min_length"] - 2, SMALL["max_length"]).all()
    assert not inter.duplicated(["user_id", "item_id"]).any()
