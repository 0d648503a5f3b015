"""Inference: the dense map tile by tile, its aggregation into spots, expected values, writing elements."""
