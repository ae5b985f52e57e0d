"""Small data and model builders shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from bivrec.data.sources import data_root
from bivrec.data.dataset import EvalSplit, SequenceData, last_window, pad_right
from bivrec.features.store import ItemFeatures

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
#: Real data (never committed): params.yaml's data_root, relative to the repo, or $BIVREC_DATA_ROOT.
SHARED_DATA = REPO / data_root(yaml.safe_load(PARAMS.read_text())["data_root"])


def bivrec_cfg(**overrides) -> dict:
    """params.yaml's BiVRec config (shared ``model`` keys + ``model.bivrec``) with ``overrides``."""
    model = yaml.safe_load(PARAMS.read_text())["model"]
    return {k: v for k, v in model.items() if not isinstance(v, dict)} | model["bivrec"] | overrides


def random_features(n_items: int, seed: int = 0) -> ItemFeatures:
    """Random 12-d image and 8-d text features; about a fifth of the items lack an image."""
    gen = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n_items + 1, 12, generator=gen), torch.randn(n_items + 1, 8, generator=gen)
    image_mask = torch.rand(n_items + 1, generator=gen) > 0.2
    text_mask = torch.ones(n_items + 1, dtype=torch.bool)
    image_mask[0] = text_mask[0] = False
    image[~image_mask], text[0] = 0, 0
    return ItemFeatures(image, text, image_mask, text_mask)


def cyclic_data(n_users=60, n_items=24, length=12, max_len=6, n_held=10, seed=0) -> SequenceData:
    """Users walk through the items in order, so the next item is predictable from the last one; the
    last ``n_held`` users (first 9 items as history, the rest as targets) are both valid and test."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(1, n_items + 1, (n_users,), generator=g)
    seqs = [((s - 1 + torch.arange(length)) % n_items + 1).tolist() for s in starts]
    train, held = seqs[: n_users - n_held], seqs[n_users - n_held :]
    split = EvalSplit(torch.arange(n_held), last_window([s[:9] for s in held], max_len), pad_right([s[9:] for s in held]))
    items = pad_right(train)
    counts = torch.bincount(items.flatten(), minlength=n_items + 1)
    counts[0] = 0
    return SequenceData(n_items, items, (items > 0).sum(1), split, split, counts)


class InterruptAfter:
    """Raise KeyboardInterrupt from the model's loss at a given call, like Ctrl-C mid-training."""

    def __init__(self, model, calls: int):
        self.model, self.calls, self.original = model, calls, model.loss

    def __call__(self, *args):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.original(*args)


def deep_update(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, nested dicts key by key."""
    for key, value in update.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def write_params(folder: Path, update: dict) -> Path:
    """params.yaml with ``update`` merged in, written to ``folder``; returns its path."""
    params = deep_update(yaml.safe_load(PARAMS.read_text()), update)
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> contents), to compare outputs byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
