"""Dataset readers: small fixtures made here for every kind, plus the real data under the data root when present."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bivrec.config import load_params
from bivrec.data.dataset import DataError, load_dataset
from bivrec.data.download import download
from bivrec.data.preprocess import preprocess
from bivrec.data.sources import expand_data_root
from helpers import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA
SPLIT = {"valid_ratio": 0.2, "test_ratio": 0.2, "history_ratio": 0.8, "min_sequence_length": 3}


def _ratings(n_users=10, n_items=8, per_user=5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(u + 1, int(m) + 1, 4, 978300000 + t) for u in range(n_users)
            for t, m in enumerate(rng.choice(n_items, size=per_user, replace=False))]
    return pd.DataFrame(rows, columns=["user", "movie", "rating", "timestamp"])


def test_movielens1m_from_zip(tmp_path):
    ratings = _ratings()
    movies = "\n".join(f"{m}::Movie {m} (1999)::Comedy|Drama" for m in range(1, 9))
    with zipfile.ZipFile(tmp_path / "ml-1m.zip", "w") as archive:
        archive.writestr("ml-1m/ratings.dat", "\n".join("::".join(map(str, r)) for r in ratings.itertuples(index=False)))
        archive.writestr("ml-1m/movies.dat", movies.encode("latin-1"))
    cfg = {"kind": "movielens1m", "sources": {"archive": {"url": "https://x/ml-1m.zip"}}}
    stats = preprocess("ml", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")
    assert (stats["users"], stats["interactions"]) == (10, 50)
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["categories"].iloc[0] == "Comedy, Drama" and items["title"].iloc[0].startswith("Movie ")
    assert (items["image"] == "").all()  # no posters configured: the image modality is absent


def test_movielens100k_grouplens_entry_downloads_the_published_zip(tmp_path):
    """The ml100k_grouplens entry fetches ml-100k.zip from GroupLens; here a mirror folder stands in for
    files.grouplens.org (no network in tests), holding a small zip laid out like the published one."""
    cfg = dict(load_params(REPO / "params.yaml")["data"]["ml100k_grouplens"])
    assert cfg["sources"]["archive"]["url"] == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    ratings = _ratings()
    genres = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)  # Comedy
    items = "\n".join(f"{m}|Movie {m} (1995)|01-Jan-1995||http://imdb/{m}|{genres}" for m in range(1, 9))
    (tmp_path / "mirror").mkdir()
    with zipfile.ZipFile(tmp_path / "mirror" / "ml-100k.zip", "w") as archive:
        archive.writestr("ml-100k/u.data", ratings.to_csv(sep="\t", index=False, header=False))
        archive.writestr("ml-100k/u.item", items.encode("latin-1"))
    cfg["mirror"] = str(tmp_path / "mirror")
    download("ml100k_grouplens", cfg, tmp_path / "raw")
    stats = preprocess("ml100k_grouplens", cfg, {**SPLIT, "seed": 0}, tmp_path / "raw", tmp_path / "out")
    assert (stats["users"], stats["interactions"]) == (10, 50)
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["categories"].eq("Comedy").all() and (items["image"] == "").all() and (items["description"] == "").all()


def test_movielens25m_text_from_tags_and_genome(tmp_path):
    ratings = _ratings()
    with zipfile.ZipFile(tmp_path / "ml-25m.zip", "w") as archive:
        archive.writestr("ml-25m/ratings.csv", ratings.to_csv(index=False, header=["userId", "movieId", "rating", "timestamp"]))
        archive.writestr("ml-25m/movies.csv", "movieId,title,genres\n" + "\n".join(
            f'{m},"Film, part {m} (2001)",Action|Sci-Fi' for m in range(1, 9)))
        archive.writestr("ml-25m/tags.csv", "userId,movieId,tag,timestamp\n1,1,Space,1\n2,1,space,2\n3,1,robots,3\n")
        archive.writestr("ml-25m/genome-tags.csv", "tagId,tag\n1,dark\n2,funny\n")
        archive.writestr("ml-25m/genome-scores.csv", "movieId,tagId,relevance\n1,1,0.9\n1,2,0.1\n2,2,0.7\n2,1,0.2\n")
    cfg = {"kind": "movielens25m", "sources": {"archive": {"url": "https://x/ml-25m.zip"}},
           "extra_text": ["tags", "genome"], "top_tags": 1}
    preprocess("ml", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet").set_index("original_id")
    assert items.loc["1", "title"] == "Film, part 1 (2001)"
    assert items.loc["1", "description"] == "Tags: space. Themes: dark."  # most frequent tag, most relevant theme
    assert items.loc["2", "description"] == "Themes: funny."
    assert items.loc["3", "description"] == ""


def _mmrec(tmp_path: Path, n_items=8, image_rows=None) -> dict:
    ratings = _ratings(n_items=n_items)
    inter = pd.DataFrame({"userID": ratings["user"] - 1, "itemID": ratings["movie"] - 1, "rating": 5.0,
                          "timestamp": ratings["timestamp"], "x_label": 0})
    inter.to_csv(tmp_path / "toy.inter", sep="\t", index=False)
    rows = np.arange(n_items if image_rows is None else image_rows, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    np.save(tmp_path / "image_feat.npy", rows)
    return {"kind": "mmrec", "sources": {"inter": {"url": "x/toy.inter"}, "image_features": {"url": "x/image_feat.npy"}}}


def test_mmrec_import_keeps_ids_and_aligns_features(tmp_path):
    cfg = _mmrec(tmp_path)
    stats = preprocess("toy", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["original_id"].tolist() == [str(i) for i in range(8)]  # MMRec item i -> index i + 1
    table = np.load(tmp_path / "out" / "imported_features" / "image.npy")
    assert table.shape == (9, 4) and (table[0] == 0).all()
    assert (table[1:, 0] == np.arange(8)).all()  # row of index i + 1 is MMRec's feature row i
    assert stats["imported_image_dim"] == 4 and "imported_text_dim" not in stats


def test_mmrec_feature_rows_must_match_items(tmp_path):
    cfg = _mmrec(tmp_path, image_rows=7)
    with pytest.raises(DataError, match=r"image_feat\.npy: expected 8 rows"):
        preprocess("toy", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")
    bad = np.ones((8, 4), np.float32)
    bad[2, 1] = np.nan
    np.save(tmp_path / "image_feat.npy", bad)
    with pytest.raises(DataError, match=r"image_feat\.npy: contains NaN or inf"):
        preprocess("toy", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")


def test_mmrec_non_numeric_ids_are_refused(tmp_path):
    (tmp_path / "toy.inter").write_text("userID\titemID\trating\ttimestamp\tx_label\n0\tB00X\t5\t1\t0\n")
    with pytest.raises(DataError, match=r"toy\.inter: column 'itemID' must hold integer ids; row 0 has 'B00X'"):
        preprocess("toy", {"kind": "mmrec", "sources": {"inter": {"url": "x/toy.inter"}}}, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "o")


def test_authors_split_user_in_two_files_is_refused(tmp_path):
    for name, users in (("train", [1, 2]), ("valid", [2]), ("test", [3])):
        lines = [f"{u},{i},5.0,{100 + i},0" for u in users for i in range(3)]
        (tmp_path / f"toy_{name}.txt").write_text("\n".join(lines) + "\n")
    cfg = {"kind": "bivrec_split", "sources": {n: {"url": f"x/toy_{n}.txt"} for n in ("train", "valid", "test")}}
    with pytest.raises(DataError, match="user 2 appears in more than one"):
        preprocess("toy", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")


def test_amazon_metadata_must_be_python_literals(tmp_path):
    (tmp_path / "reviews.json.gz").write_bytes(gzip.compress(b'{"reviewerID": "U", "asin": "A1", "overall": 5, "unixReviewTime": 1}\n'))
    (tmp_path / "meta.json.gz").write_bytes(gzip.compress(b"{'asin': 'A1', 'title': 'broken\n"))
    cfg = {"kind": "amazon2014", "sources": {"reviews": {"url": "x/reviews.json.gz"}, "meta": {"url": "x/meta.json.gz"}}}
    with pytest.raises(DataError, match=r"meta\.json\.gz: line 1 is not a Python literal"):
        preprocess("toy", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")


def test_missing_raw_file_names_it(tmp_path):
    cfg = {"kind": "movielens1m", "sources": {"archive": {"url": "https://x/ml-1m.zip"}}}
    with pytest.raises(DataError, match=r"ml-1m\.zip: file not found"):
        preprocess("ml", cfg, {**SPLIT, "seed": 0}, tmp_path, tmp_path / "out")


# ---- real data (read-only, never copied into the repo) -------------------------------------------

needs_baby = pytest.mark.skipif(not (SHARED / "amazon_baby_mmrec" / "baby.inter").exists(),
                                reason=f"real Baby data not present ({SHARED / 'amazon_baby_mmrec'}; set BIVREC_DATA_ROOT)")
needs_ml100k = pytest.mark.skipif(not (SHARED / "movielens100k_posters" / "ml-100k" / "u.data").exists(),
                                  reason=f"real MovieLens-100K data not present ({SHARED / 'movielens100k_posters'}; set BIVREC_DATA_ROOT)")


@pytest.fixture(scope="module")
def params():
    params = load_params(REPO / "params.yaml")
    return {**params, "data": expand_data_root(params["data"], SHARED)}


@needs_baby
def test_real_baby_mmrec_import(params, tmp_path):
    download("baby_mmrec", params["data"]["baby_mmrec"], tmp_path / "raw")
    stats = preprocess("baby_mmrec", params["data"]["baby_mmrec"], params["split"], tmp_path / "raw", tmp_path / "data")
    assert (stats["users"], stats["items"], stats["interactions"]) == (19_445, 7_050, 160_792)


@needs_baby
def test_real_baby_authors_split(params, tmp_path):
    cfg = params["data"]["baby_bivrec"]
    download("baby_bivrec", cfg, tmp_path / "raw")
    stats = preprocess("baby_bivrec", cfg, params["split"], tmp_path / "raw", tmp_path / "data")
    assert (stats["train_users"], stats["valid_users"], stats["test_users"]) == (15_576, 1_894, 1_975)
    assert (stats["items"], stats["interactions"]) == (7_050, 160_792)
    items = pd.read_parquet(tmp_path / "data" / "items.parquet")
    assert items.loc[items["item"] == 1, "original_id"].item() == "0"  # the authors' item 0 is a real item
    data = load_dataset(tmp_path / "data", max_len=20)
    assert data.n_items == 7_050 and int(data.item_counts[1]) > 0  # item 0 is trained on, so it can be ranked
    # held-out users: history is the first 80 % of the authors' sequence, targets the rest
    raw_valid = pd.read_csv(tmp_path / "raw" / "baby_valid.txt", header=None, names=["u", "i", "r", "t", "l"])
    valid = pd.read_parquet(tmp_path / "data" / "split" / "valid.parquet")
    first = valid.iloc[0]
    users = pd.read_parquet(tmp_path / "data" / "interactions.parquet")
    assert sorted(np.concatenate([first["history"], first["targets"]]).tolist()) == \
        sorted(users.loc[users["user"] == first["user"], "item"].tolist())
    assert len(first["history"]) == int(0.8 * (len(first["history"]) + len(first["targets"])))
    assert valid["history"].map(len).sum() + valid["targets"].map(len).sum() == len(raw_valid)


@needs_ml100k
def test_real_movielens100k_with_posters(params, tmp_path):
    cfg = params["data"]["ml100k"]
    download("ml100k", cfg, tmp_path / "raw")
    stats = preprocess("ml100k", cfg, params["split"], tmp_path / "raw", tmp_path / "data")
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1_682, 100_000)
    assert stats["items_with_image"] == 1_663  # 19 movies have no poster
    items = pd.read_parquet(tmp_path / "data" / "items.parquet")
    with_image = items[items["image"] != ""]
    assert all((tmp_path / "raw" / p).is_file() for p in with_image["image"])
    assert (items["description"] != "").sum() > 1_600  # TMDB plot texts
