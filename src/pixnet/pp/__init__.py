"""Preprocessing: gene selection, the paper's normalisation, and its noise-aware expectation."""

from ._expectation import expected_log_normalized
from ._genes import select_genes
from ._normalize import Normalization, log_normalize
from ._spots import pseudo_visium
from ._tissue import tissue_mask

__all__ = ["Normalization", "expected_log_normalized", "log_normalize", "pseudo_visium", "select_genes", "tissue_mask"]
