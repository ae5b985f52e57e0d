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
