"""Fetch (or generate) a dataset's raw files into ``raw/<dataset>/``, exactly as published.

Sources live in params.yaml (``data.<dataset>.sources.<name>: {url, sha256, size, file}``); ``mirror``
replaces where they come from (a local folder, ``file://`` or ``http(s)://`` base that holds each
source under its ``file`` name). Every file is streamed to a ``.part`` file with a progress bar, resumed
with an HTTP Range request after an interruption, retried with exponential backoff, checked against its
sha256 (and, for ``.gz`` / ``.zip``, decompressed once to prove it whole) and only then renamed into
place. Everything is staged in ``raw/<dataset>.partial/`` (kept across interrupted or killed runs, so
a rerun resumes) and published as ``raw/<dataset>/`` in one atomic step. Image URLs found in the
downloaded metadata are fetched only over http(s) (see ``refuse_metadata_job``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from bivrec.atomic import atomic_path, clean_stale_temporaries, publish, write_json
from bivrec.checksums import file_sha256
from bivrec.data.dataset import DataError
from bivrec.data.sources import local_mirror, refuse_metadata_job, resolve_url, source_file
from bivrec.data.validate import check_archive, note

DOWNLOAD_DEFAULTS = {"timeout_s": 60.0, "retries": 3, "backoff_s": 2.0, "image_workers": 8}
CHUNK = 1 << 20


class DownloadError(DataError):
    """A source could not be fetched intact; the message names the URL and the reason."""


class _Transient(Exception):
    """A failure worth retrying (network hiccup, timeout, 5xx)."""


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


def _stream(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    local = _local_path(url)
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"{url}: file not found")
        source, total = open(local, "rb"), local.stat().st_size
        source.seek(min(offset, total))
        mode = "ab"
    else:
        request = urllib.request.Request(url, headers={"User-Agent": "bivrec"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            source = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416:  # asked past the end: the partial file is already whole
                return
            if error.code >= 500 or error.code == 429:
                raise _Transient(f"HTTP {error.code} {error.reason}") from error
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, socket.timeout, ConnectionError) as error:
            raise _Transient(str(getattr(error, "reason", error))) from error
        resumed = source.status == 206
        mode = "ab" if resumed else "wb"
        offset = offset if resumed else 0
        length = source.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=Path(part.name).stem,
               disable=None if progress else True, file=sys.stderr, leave=False)
    try:
        with source, open(part, mode) as sink:
            for block in iter(lambda: source.read(CHUNK), b""):
                sink.write(block)
                bar.update(len(block))
    except (socket.timeout, TimeoutError, ConnectionError, http.client.IncompleteRead, urllib.error.URLError) as error:
        raise _Transient(f"interrupted: {str(error) or type(error).__name__}") from error
    finally:
        bar.close()
    if total is not None and part.stat().st_size < total:
        raise _Transient(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None, *, timeout_s: float = 60.0,
          retries: int = 3, backoff_s: float = 2.0, progress: bool = True) -> str:
    """Download ``url`` to ``dest`` intact and return its sha256.

    An existing ``dest`` with the expected hash is kept. A leftover ``dest.part`` is resumed. Transient
    failures and checksum mismatches are retried ``retries`` times with exponential backoff; a mismatch
    deletes the partial file first. Errors name the URL (and both hashes on a mismatch).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        actual = file_sha256(dest)
        if sha256 is None or actual == sha256:
            return actual
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _stream(url, part, timeout_s, progress)
        except _Transient as error:
            last_error = str(error)
            continue
        actual_size = part.stat().st_size if part.exists() else 0
        actual = file_sha256(part) if part.exists() else hashlib.sha256(b"").hexdigest()
        if size is not None and actual_size != size:
            last_error = f"size mismatch: expected {size} bytes, got {actual_size}"
            part.unlink(missing_ok=True)
            continue
        if sha256 is not None and actual != sha256:
            last_error = f"sha256 mismatch: expected {sha256}, got {actual}"
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        return actual
    raise DownloadError(f"{url}: failed after {retries + 1} attempt(s): {last_error}")


def _image_is_valid(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # any decoder complaint means the file is not a usable image
        return False


def fetch_images(jobs: pd.DataFrame, folder: Path, settings: dict, progress: bool = True,
                 local_root: Path | None = None) -> pd.DataFrame:
    """Fetch item images with bounded concurrency; returns the failures (``name, url, error``).

    ``jobs`` has columns ``name`` (file name under ``folder``), ``url`` and optionally ``sha256``; they
    come from downloaded metadata, so a job whose URL is not http(s) (unless it lies inside
    ``local_root``, a configured local mirror) or whose name is not a plain file name is refused and
    listed as a failure. Files already present and decodable (and matching their hash) are skipped, so
    reruns are cheap.
    """
    folder.mkdir(parents=True, exist_ok=True)
    hashes = jobs["sha256"] if "sha256" in jobs else pd.Series([None] * len(jobs), index=jobs.index)

    def one(name: str, url: str, sha256: str | None) -> tuple[str, str, str] | None:
        refusal = refuse_metadata_job(str(name), str(url), local_root)
        if refusal is not None:
            return name, url, refusal
        dest = folder / name
        try:
            fetch(url, dest, sha256, timeout_s=settings["timeout_s"], retries=settings["retries"],
                  backoff_s=settings["backoff_s"], progress=False)
        except DownloadError as error:
            return name, url, str(error)
        if not _image_is_valid(dest):
            dest.unlink()
            return name, url, "not a decodable image"
        return None

    with ThreadPoolExecutor(max_workers=int(settings["image_workers"])) as pool:
        results = pool.map(one, jobs["name"], jobs["url"], hashes)
        failures = [r for r in tqdm(results, total=len(jobs), desc="images", unit="img", file=sys.stderr,
                                    disable=None if progress else True) if r is not None]
    return pd.DataFrame(failures, columns=["name", "url", "error"])


def _fetch_sources(dataset: str, cfg: dict, staging: Path, settings: dict) -> dict:
    """Fetch every configured source into ``staging``; returns the checksum record."""
    record = {}
    for name, source in cfg.get("sources", {}).items():
        file = source_file(cfg, name)
        url = resolve_url(source["url"], file, cfg.get("mirror"))
        digest = fetch(url, staging / file, source.get("sha256"), source.get("size"),
                       timeout_s=settings["timeout_s"], retries=settings["retries"], backoff_s=settings["backoff_s"])
        try:
            check_archive(staging / file)
        except DataError as error:
            (staging / file).unlink()  # so that a rerun fetches it again
            raise DownloadError(f"{url}: {error}") from error
        if source.get("sha256") is None:
            note(f"{url}: no sha256 pinned; computed {digest} (pin it as data.{dataset}.sources.{name}.sha256)")
        record[name] = {"url": url, "file": file, "sha256": digest, "size": (staging / file).stat().st_size}
    return record


def _image_jobs(cfg: dict, staging: Path) -> tuple[pd.DataFrame | None, Path | None]:
    """Which item images the kind wants, read from the sources it just fetched, and the local folder
    (a configured local mirror) their URLs may point into besides http(s)."""
    kind = cfg["kind"]
    if kind == "amazon2014" and cfg.get("images", True):
        from bivrec.data.amazon import image_urls

        return image_urls(staging / source_file(cfg, "reviews"), staging / source_file(cfg, "meta")), local_mirror(cfg.get("mirror"))
    if kind in ("mmrec", "bivrec_split") and cfg.get("images", False):
        from bivrec.data.mmrec import image_urls

        return image_urls(staging / source_file(cfg, "image_urls")), local_mirror(cfg.get("mirror"))
    if kind.startswith("movielens") and cfg.get("posters"):
        from bivrec.data.movielens import poster_jobs

        posters = cfg["posters"]["url"]
        return poster_jobs(cfg["posters"], staging / source_file(cfg, "poster_checksums")), local_mirror(posters)
    return None, None


def download(dataset: str, dataset_cfg: dict, out_dir: Path) -> None:
    """Write ``raw/<dataset>/``: generated for kind ``synthetic``, fetched from its sources otherwise."""
    out_dir = Path(out_dir)
    if dataset_cfg["kind"] == "synthetic":
        from bivrec.data.synthetic import DEFAULT_GENERATOR_SEED, SEED_KEY, generate

        with atomic_path(out_dir) as tmp:
            generate(dataset_cfg, dataset_cfg.get(SEED_KEY, DEFAULT_GENERATOR_SEED), tmp)
        return

    settings = {**DOWNLOAD_DEFAULTS, **dataset_cfg.get("download", {})}
    staging = out_dir.with_name(out_dir.name + ".partial")
    clean_stale_temporaries(out_dir)
    if not staging.exists() and out_dir.is_dir():
        # start from the last complete download (hard links, no copy) so valid files are not fetched again
        shutil.copytree(out_dir, staging, copy_function=os.link)
    staging.mkdir(parents=True, exist_ok=True)

    record = {"sources": _fetch_sources(dataset, dataset_cfg, staging, settings)}
    jobs, local_root = _image_jobs(dataset_cfg, staging)
    if jobs is not None:
        failures = fetch_images(jobs, staging / "images", settings, local_root=local_root)
        failures.to_csv(staging / "images_failed.csv", index=False)
        record["images"] = {"requested": int(len(jobs)), "failed": int(len(failures))}
        if len(failures):
            note(f"{dataset}: {len(failures)} of {len(jobs)} image(s) failed (listed in images_failed.csv); "
                 "those items get no image")
    write_json(staging / "checksums.json", record)
    publish(staging, out_dir)  # one atomic step: the old raw folder or the new one, never neither
