"""Space Ranger's cell segmentation (``segmented_outputs/``): an optional part, skipped with a warning when absent."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from spatialdata import SpatialData

from . import _files

SEGMENTATION_FILES = ("filtered_feature_cell_matrix.h5", "cell_segmentations.geojson")


def read_segmentations(outs: Path, dataset_id: str, cs: str) -> SpatialData | None:
    """Space Ranger's cell segmentation, read by spatialdata-io; None (with a warning) when absent or incomplete."""
    folder = outs / "segmented_outputs"
    if not folder.is_dir():
        return None
    missing = [f for f in SEGMENTATION_FILES if not (folder / f).is_file()]
    if missing:
        warnings.warn(
            f"Skipped the cell segmentation: {folder} lacks {', '.join(missing)} (it holds {_files.listing(folder)}). "
            "The bins are read; re-copy segmented_outputs/ to get the cells, or pass load_segmentations=False.",
            stacklevel=3,
        )
        return None
    import spatialdata_io

    hires = outs / "spatial" / "tissue_hires_image.png"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints what it found
            warnings.simplefilter("ignore")
            # The images are read by pixnet already; pointing spatialdata-io at the small PNG keeps it cheap.
            seg = spatialdata_io.visium_hd(
                outs, dataset_id=dataset_id or None, load_segmentations_only=True,
                fullres_image_file=hires if hires.is_file() else None,
            )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - an optional part: the bins must still read
        warnings.warn(
            f"Skipped the cell segmentation: spatialdata-io could not read {folder} ({type(err).__name__}: {err}). "
            "The bins are read; pass load_segmentations=False to silence this.",
            stacklevel=3,
        )
        return None
    # plain names: spatialdata-io keys the table with an enum, which anndata cannot write where it is recorded
    seg = SpatialData(
        shapes={str(k): v for k, v in seg.shapes.items()}, tables={str(k): v for k, v in seg.tables.items()}
    )
    if not seg.shapes:
        warnings.warn(f"Skipped the cell segmentation: {folder} holds no cells.", stacklevel=3)
        return None
    if cs != dataset_id:  # spatialdata-io names the coordinate system after the (empty) dataset id
        seg.rename_coordinate_systems({dataset_id: cs})
    return seg
