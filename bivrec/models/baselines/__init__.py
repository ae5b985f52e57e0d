"""The paper's comparison baselines (importing this package registers them in ``bivrec.models``)."""

from bivrec.models.baselines.popularity import Popularity

__all__ = ["Popularity"]
