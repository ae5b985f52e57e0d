"""MovieLens (GroupLens): ratings as implicit interactions, item text from title + genres (+ more).

- ``movielens1m``: ``ml-1m.zip`` (``ratings.dat``, ``movies.dat``; ``::``-separated, latin-1).
- ``movielens25m``: ``ml-25m.zip`` (``ratings.csv``, ``movies.csv``; optional user tags and genome tags
  as extra item text, see ``extra_text``).
- ``movielens100k``: ``u.data`` + ``u.item`` (from ``ml-100k.zip`` or as single files), optional TMDB plot
  overviews and posters (``posters``), as in ``../shared/data/movielens100k_posters``.

Each reader takes either an ``archive`` source (the zip as published) or the member files as separate
sources. Images exist only when ``posters`` is configured; otherwise the image column is empty and the
multimodal view uses text alone.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from bivrec.data.dataset import DataError
from bivrec.data.preprocess import RawData
from bivrec.data.sources import resolve_url, source_file
from bivrec.data.validate import reading

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def _member(raw_dir: Path, cfg: dict, source: str, member: str) -> tuple[bytes, str]:
    """Bytes of one file: ``member`` inside the ``archive`` source, else the source named ``source``."""
    if "archive" in cfg.get("sources", {}):
        archive = raw_dir / source_file(cfg, "archive")
        if not archive.exists():
            raise DataError(f"{archive}: file not found (run the download stage first)")
        # members are read into memory by their exact name: nothing is extracted, so no member's path
        # (absolute, "../") can ever reach the file system
        with reading(archive), zipfile.ZipFile(archive) as zipped:
            if member not in zipped.namelist():
                raise DataError(f"{archive}: has no member {member!r}")
            return zipped.read(member), f"{archive}:{member}"
    path = raw_dir / source_file(cfg, source)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the download stage first)")
    return path.read_bytes(), str(path)


def _table(data: bytes, name: str, sep: str, columns: list[str], **kwargs) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=sep, header=None, names=columns, encoding="latin-1", **kwargs)
    except (pd.errors.ParserError, ValueError) as error:
        raise DataError(f"{name}: cannot parse ({error})") from error
    if frame.empty:
        raise DataError(f"{name}: no rows")
    return frame


def _ratings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"user": "user_id", "movie": "item_id"})[["user_id", "item_id", "timestamp", "rating"]]


def _image_column(movie_ids: pd.Series, cfg: dict) -> pd.Series:
    if not cfg.get("posters"):
        return pd.Series("", index=movie_ids.index)
    return "images/" + movie_ids.astype(str) + ".jpg"


def read_movielens1m(raw_dir: Path, cfg: dict) -> RawData:
    data, name = _member(raw_dir, cfg, "ratings", "ml-1m/ratings.dat")
    ratings = _table(data.replace(b"::", b"\t"), name, "\t", ["user", "movie", "rating", "timestamp"])
    data, movies_name = _member(raw_dir, cfg, "movies", "ml-1m/movies.dat")
    movies = _table(data.replace(b"::", b"\t"), movies_name, "\t", ["movie", "title", "genres"], quoting=3)
    items = pd.DataFrame(
        {
            "item_id": movies["movie"].astype(str),
            "title": movies["title"],
            "description": "",
            "categories": movies["genres"].str.replace("|", ", ", regex=False),
            "image": _image_column(movies["movie"], cfg),
        }
    )
    return RawData(_ratings(ratings), items, name)


def _top_terms(frame: pd.DataFrame, key: str, term: str, score: str, k: int) -> pd.Series:
    """movie -> its ``k`` best-scoring terms joined by commas."""
    best = frame.sort_values([key, score], ascending=[True, False], kind="stable").groupby(key).head(k)
    return best.groupby(key)[term].agg(", ".join)


def read_movielens25m(raw_dir: Path, cfg: dict) -> RawData:
    data, name = _member(raw_dir, cfg, "ratings", "ml-25m/ratings.csv")
    ratings = _table(data, name, ",", ["user", "movie", "rating", "timestamp"], skiprows=1)
    data, movies_name = _member(raw_dir, cfg, "movies", "ml-25m/movies.csv")
    movies = _table(data, movies_name, ",", ["movie", "title", "genres"], skiprows=1)
    extra = pd.Series("", index=movies["movie"].to_numpy())
    top_k = int(cfg.get("top_tags", 5))
    if "tags" in cfg.get("extra_text", []):
        data, tags_name = _member(raw_dir, cfg, "tags", "ml-25m/tags.csv")
        tags = _table(data, tags_name, ",", ["user", "movie", "tag", "timestamp"], skiprows=1, dtype={"tag": str})
        tags["tag"] = tags["tag"].fillna("").str.strip().str.lower()
        counts = tags[tags["tag"] != ""].groupby(["movie", "tag"]).size().rename("n").reset_index()
        extra = extra.add("Tags: " + _top_terms(counts, "movie", "tag", "n", top_k) + ". ", fill_value="")
    if "genome" in cfg.get("extra_text", []):
        data, scores_name = _member(raw_dir, cfg, "genome_scores", "ml-25m/genome-scores.csv")
        scores = _table(data, scores_name, ",", ["movie", "tag_id", "relevance"], skiprows=1)
        data, gtags_name = _member(raw_dir, cfg, "genome_tags", "ml-25m/genome-tags.csv")
        names = _table(data, gtags_name, ",", ["tag_id", "tag"], skiprows=1).set_index("tag_id")["tag"]
        scores["tag"] = names.reindex(scores["tag_id"]).fillna("").to_numpy()
        extra = extra.add("Themes: " + _top_terms(scores, "movie", "tag", "relevance", top_k) + ".", fill_value="")
    items = pd.DataFrame(
        {
            "item_id": movies["movie"].astype(str),
            "title": movies["title"],
            "description": extra.reindex(movies["movie"]).fillna("").str.strip().to_numpy(),
            "categories": movies["genres"].replace("(no genres listed)", "").str.replace("|", ", ", regex=False),
            "image": _image_column(movies["movie"], cfg),
        }
    )
    return RawData(_ratings(ratings), items, name)


def read_movielens100k(raw_dir: Path, cfg: dict) -> RawData:
    data, name = _member(raw_dir, cfg, "ratings", "ml-100k/u.data")
    ratings = _table(data, name, "\t", ["user", "movie", "rating", "timestamp"])
    data, items_name = _member(raw_dir, cfg, "items", "ml-100k/u.item")
    movies = _table(data, items_name, "|", ["movie", "title", "release", "video_release", "imdb", *ML100K_GENRES])
    flags = movies[ML100K_GENRES].to_numpy(bool)
    genres = np.array(ML100K_GENRES, dtype=object)
    items = pd.DataFrame(
        {
            "item_id": movies["movie"].astype(str),
            "title": movies["title"].fillna(""),
            "description": "",
            "categories": [", ".join(genres[row]) for row in flags],
            "image": _image_column(movies["movie"], cfg),
        }
    )
    if "overviews" in cfg.get("sources", {}):
        path = raw_dir / source_file(cfg, "overviews")
        overviews = pd.read_csv(path, usecols=["movie_id", "overview"])
        overviews = overviews.dropna(subset=["overview"]).drop_duplicates("movie_id")  # first TMDB match wins
        plot = overviews.set_index("movie_id")["overview"].reindex(movies["movie"]).fillna("")
        items["description"] = plot.to_numpy()
    return RawData(_ratings(ratings), items, name)


def poster_jobs(posters_cfg: dict, checksum_file: Path) -> pd.DataFrame:
    """Download jobs for posters listed as ``<sha256>  <file>`` lines, fetched from ``posters.url``."""
    listing = pd.read_csv(checksum_file, sep=r"\s+", header=None, names=["sha256", "name"], dtype=str)
    if listing.isna().any().any():
        raise DataError(f"{checksum_file}: expected '<sha256>  <file name>' on every line")
    listing["url"] = [resolve_url("", name, posters_cfg["url"]) for name in listing["name"]]
    return listing[["name", "url", "sha256"]]
