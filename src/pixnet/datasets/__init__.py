"""Demo data: synthetic slides in the real 10x Genomics Visium HD layout, with their ground truth."""

from .synthetic import default_data_dir, visium_hd_demo
from .truth import expected_counts

__all__ = ["default_data_dir", "expected_counts", "visium_hd_demo"]
