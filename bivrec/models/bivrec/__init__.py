"""BiVRec (importing this package registers the model as "bivrec")."""

from bivrec.models.bivrec.model import BiVRec

__all__ = ["BiVRec"]
