"""Amazon review data 2014 (McAuley et al.): 5-core reviews (JSON lines, gz) and item metadata.

The 2014 metadata is one Python literal per line (single quotes), not strict JSON, so it is read with
``ast.literal_eval``, and only for the items that have reviews (found by a cheap regex first).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path

import pandas as pd

from bivrec.config import ParamsError
from bivrec.data.dataset import DataError
from bivrec.data.preprocess import RawData
from bivrec.data.sources import source_file
from bivrec.data.validate import reading

REVIEW_FIELDS = {"reviewerID": "user_id", "asin": "item_id", "unixReviewTime": "timestamp", "overall": "rating"}
TEXT_FIELDS = ("title", "brand", "categories", "description")
_ASIN = re.compile(r"""['"]asin['"]:\s*['"]([^'"]+)['"]""")


def read_reviews(path: Path) -> pd.DataFrame:
    """user_id, item_id, timestamp, rating of every review line, in file order."""
    if not path.exists():
        raise DataError(f"{path}: file not found (run the download stage first)")
    columns = {name: [] for name in REVIEW_FIELDS.values()}
    with reading(path), gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):  # parsing: one record per line is the format
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}: line {number} is not JSON ({error.msg})") from error
            missing = [k for k in REVIEW_FIELDS if k not in record]
            if missing:
                raise DataError(f"{path}: line {number} lacks field(s) {missing}")
            for source, target in REVIEW_FIELDS.items():
                columns[target].append(record[source])
    return pd.DataFrame(columns)


def read_metadata(path: Path, wanted: set[str]) -> dict[str, dict]:
    """asin -> metadata record for the ``wanted`` items."""
    if not path.exists():
        raise DataError(f"{path}: file not found (run the download stage first)")
    records = {}
    with reading(path), gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            match = _ASIN.search(line)
            if match is None or match.group(1) not in wanted:
                continue
            try:
                records[match.group(1)] = ast.literal_eval(line)
            except (ValueError, SyntaxError) as error:
                raise DataError(f"{path}: line {number} is not a Python literal ({error})") from error
    return records


def _categories(value) -> str:
    if isinstance(value, list):
        paths = [" > ".join(map(str, p)) if isinstance(p, list) else str(p) for p in value]
        return " | ".join(dict.fromkeys(paths))
    return str(value or "")


def item_texts(records: dict[str, dict], fields: list[str]) -> pd.DataFrame:
    """Title, description (brand first when selected) and categories per item, from ``fields`` only."""
    unknown = sorted(set(fields) - set(TEXT_FIELDS))
    if unknown:
        raise ParamsError(f"text_fields: unknown field(s) {unknown}; allowed: {list(TEXT_FIELDS)}")
    rows = []
    for asin, record in records.items():
        brand = str(record.get("brand") or "").strip() if "brand" in fields else ""
        description = str(record.get("description") or "").strip() if "description" in fields else ""
        rows.append(
            {
                "item_id": asin,
                "title": str(record.get("title") or "").strip() if "title" in fields else "",
                "description": " ".join(filter(None, [f"Brand: {brand}." if brand else "", description])),
                "categories": _categories(record.get("categories")) if "categories" in fields else "",
                "image": f"images/{asin}.jpg" if record.get("imUrl") else "",
            }
        )
    return pd.DataFrame(rows, columns=["item_id", "title", "description", "categories", "image"])


def image_urls(reviews_path: Path, meta_path: Path) -> pd.DataFrame:
    """Download jobs (``name, url``) for the images of the reviewed items."""
    wanted = set(read_reviews(reviews_path)["item_id"])
    records = read_metadata(meta_path, wanted)
    jobs = [(f"{asin}.jpg", r["imUrl"]) for asin, r in records.items() if r.get("imUrl")]
    return pd.DataFrame(jobs, columns=["name", "url"])


def read_amazon2014(raw_dir: Path, cfg: dict) -> RawData:
    reviews_path = raw_dir / source_file(cfg, "reviews")
    reviews = read_reviews(reviews_path)
    records = read_metadata(raw_dir / source_file(cfg, "meta"), set(reviews["item_id"]))
    items = item_texts(records, list(cfg.get("text_fields", TEXT_FIELDS)))
    return RawData(reviews, items, str(reviews_path))
