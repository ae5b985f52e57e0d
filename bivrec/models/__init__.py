"""Model registry: every model (BiVRec and the baselines) by the name used in params.yaml."""

from __future__ import annotations

from bivrec.features.store import ItemFeatures
from bivrec.models.base import Recommender

MODELS: dict[str, type[Recommender]] = {}


def register(name: str):
    def add(cls: type[Recommender]) -> type[Recommender]:
        MODELS[name] = cls
        return cls

    return add


def build_model(name: str, n_items: int, features: ItemFeatures | None, cfg: dict) -> Recommender:
    _import_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](n_items, features, cfg)


def _import_all() -> None:
    # Importing a model module registers it; kept here so the registry is complete on first use.
    import bivrec.models.baselines  # noqa: F401
    import bivrec.models.bivrec  # noqa: F401
