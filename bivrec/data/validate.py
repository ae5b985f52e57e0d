"""Checks on raw and processed data; every failure is one ``DataError`` naming the file and the problem."""

from __future__ import annotations

import contextlib
import gzip
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from bivrec.config import ParamsError
from bivrec.data.dataset import DataError


def note(message: str) -> None:
    """Tell the user something they may want to act on (dropped rows, computed checksums)."""
    print(f"bivrec.data: {message}", file=sys.stderr)


def require_columns(frame: pd.DataFrame, columns: list[str], path: Path | str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def require_numeric_ids(frame: pd.DataFrame, columns: list[str], path: Path | str) -> pd.DataFrame:
    """Cast id columns to int64; a non-integer value is an error that shows the first offender."""
    out = frame.copy()
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {column!r} must hold integer ids; row {row} has {frame[column].iloc[row]!r}"
            )
        out[column] = values.astype(np.int64)
    return out


def require_no_missing(frame: pd.DataFrame, columns: list[str], path: Path | str) -> None:
    for column in columns:
        values = frame[column]
        missing = values.isna().to_numpy().copy()
        if pd.api.types.is_numeric_dtype(values):
            missing |= ~np.isfinite(values.to_numpy(np.float64))
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"{path}: column {column!r} has {int(missing.sum())} missing/NaN/inf value(s), first at row {row}")


def handle_duplicates(frame: pd.DataFrame, keys: list[str], path: Path | str, policy: str) -> pd.DataFrame:
    """Rows repeating the same ``keys`` are reported, then dropped (``policy="drop"``) or refused ("error")."""
    duplicated = frame.duplicated(subset=keys, keep="first").to_numpy()
    n = int(duplicated.sum())
    if not n:
        return frame
    example = frame.loc[duplicated, keys].iloc[0].to_dict()
    if policy == "error":
        raise DataError(f"{path}: {n} duplicate row(s) on {keys}, e.g. {example}")
    if policy != "drop":
        raise ParamsError(f"duplicates policy must be 'drop' or 'error', got {policy!r}")
    note(f"{path}: dropped {n} duplicate row(s) on {keys}, e.g. {example}")
    return frame.loc[~duplicated]


def require_users_left(n_users: int, source: str, why: str) -> None:
    if n_users == 0:
        raise DataError(f"{source}: no users left after filtering ({why})")


def check_feature_rows(features: np.ndarray, n_rows: int, path: Path | str) -> None:
    """Imported feature tables must have one finite row per item."""
    if features.ndim != 2 or features.shape[0] != n_rows:
        raise DataError(f"{path}: expected {n_rows} rows (one per item), got shape {list(features.shape)}")
    if not np.isfinite(features).all():
        raise DataError(f"{path}: contains NaN or inf")


#: what decompressing or decoding a damaged file raises (truncated download, flipped bytes, wrong format)
CORRUPT_FILE_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError,
                       pd.errors.ParserError, pd.errors.EmptyDataError)


@contextlib.contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn the errors of a truncated or corrupt compressed file read in the block into one DataError."""
    try:
        yield
    except CORRUPT_FILE_ERRORS as error:
        raise DataError(f"{path}: truncated or corrupt ({type(error).__name__}: {error}); "
                        "delete it and rerun the download stage") from error


def check_archive(path: Path) -> None:
    """Decompress a ``.gz`` file / CRC-check every member of a ``.zip`` once; other files pass."""
    name = Path(path).name.lower()
    with reading(path):
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"member {bad} fails its CRC check")
