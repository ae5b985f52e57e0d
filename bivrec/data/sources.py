"""Where a dataset's raw files come from: ``data.<dataset>.sources`` and ``mirror`` in params.yaml.

Each source is ``{url, sha256, size, file}``: ``file`` (default: the URL's last path part) is the
name under ``raw/<dataset>/`` and under a mirror; ``sha256``/``size`` may be null until pinned.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from bivrec.config import ParamsError


DATA_ROOT_ENV = "BIVREC_DATA_ROOT"


def data_root(configured: str) -> Path:
    """The folder ``{data_root}`` stands for: $BIVREC_DATA_ROOT if set, else params.yaml's ``data_root``
    (relative paths are relative to the working directory, the repository root for both orchestrators)."""
    return Path(os.environ.get(DATA_ROOT_ENV) or configured)


def expand_data_root(cfg, root: Path):
    """``cfg`` with every ``{data_root}`` in its strings replaced by ``root`` (nested dicts and lists too)."""
    if isinstance(cfg, dict):
        return {k: expand_data_root(v, root) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [expand_data_root(v, root) for v in cfg]
    if isinstance(cfg, str) and "{data_root}" in cfg:
        return cfg.replace("{data_root}", root.as_posix())
    return cfg


def source_file(cfg: dict, name: str) -> str:
    """The file name of source ``name`` inside the raw folder."""
    sources = cfg.get("sources", {})
    if name not in sources:
        raise ParamsError(f"data kind {cfg['kind']!r} needs a source named {name!r} under sources")
    return sources[name].get("file") or Path(urllib.parse.urlparse(sources[name]["url"]).path).name


def resolve_url(url: str, file: str, mirror: str | None) -> str:
    """The address to fetch: ``mirror``/``file`` when a mirror is configured, else ``url``."""
    if not mirror:
        return url
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(file)
    return str(Path(mirror) / file)


def local_mirror(location: str | None) -> Path | None:
    """The folder a mirror (or posters) location names when it is local (a path or ``file://``), else None."""
    if not location:
        return None
    if location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    return None if "://" in location else Path(location)


def refuse_metadata_job(name: str, url: str, local_root: Path | None) -> str | None:
    """Why a download job read from downloaded metadata (an image URL and the file name to store it
    under) must not run, or None when it is safe.

    Metadata comes from the internet: its URLs are fetched only over http(s), never ``file://`` or a
    bare local path, except inside ``local_root`` (the dataset's configured local mirror); its file
    names must be plain names, so nothing is written outside the images folder.
    """
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        return f"refused: {name!r} is not a plain file name"
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return None
    if local_root is not None and (scheme == "file" or "://" not in url):
        local = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)) if scheme == "file" else Path(url)
        if local.resolve().is_relative_to(local_root.resolve()):
            return None
        return f"refused: {url} is outside the local mirror {local_root}"
    return f"refused: only http(s) URLs are fetched from downloaded metadata, not {url!r}"
