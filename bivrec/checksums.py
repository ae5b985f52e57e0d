"""SHA-256 of files and sets of files: downloads, feature inputs, model weights, stage code."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20


def _update(digest, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path], root: Path | None = None) -> str:
    """One checksum over the files' contents in sorted order; with ``root``, over their names too."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        if root is not None:
            digest.update(str(path.relative_to(root)).encode())
        _update(digest, path)
    return digest.hexdigest()
