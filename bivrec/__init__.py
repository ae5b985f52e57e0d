"""bivrec: reference implementation of BiVRec (Hu et al., 2024, arXiv 2402.17334)."""

__version__ = "0.1.0"
