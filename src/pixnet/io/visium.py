"""Read a Visium (55 um spots) run through spatialdata-io, recording what pixnet needs."""

from __future__ import annotations

from pathlib import Path

from spatialdata import SpatialData

from .._constants import UNS_KEY
from . import _files

VISIUM_SPOT_UM = 55.0


def visium(path: str | Path, **kwargs) -> SpatialData:
    """Read a 10x Genomics Visium run with :func:`spatialdata_io.visium` and record its scale.

    The spots (55 um circles) and their table train and evaluate pixnet like any other bins.
    ``sdata.attrs["pixnet"]`` records the full-resolution image and micrometres per pixel,
    derived from Space Ranger's ``spot_diameter_fullres`` (the spot is 55 um across).

    Parameters
    ----------
    path
        The run's ``outs/`` folder.
    **kwargs
        Passed to :func:`spatialdata_io.visium`.

    """
    import spatialdata_io

    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; pass the `outs/` folder of a Space Ranger Visium run.")
    sf = _files.read_json(path / "spatial" / "scalefactors_json.json")
    if "spot_diameter_fullres" not in sf:
        raise ValueError(f"{path}/spatial/scalefactors_json.json has no spot_diameter_fullres; is this a Visium run?")
    sdata = spatialdata_io.visium(path, **kwargs)
    images = [k for k in sdata.images if k.endswith("_full_image")] or [
        k for k in sdata.images if k.endswith("hires_image")
    ]
    if not images:
        raise FileNotFoundError(
            f"No H&E image was found for {path}: "
            "pass fullres_image_file='path/to/image.tif' (forwarded to spatialdata-io)."
        )
    um_per_px = VISIUM_SPOT_UM / float(sf["spot_diameter_fullres"])
    if images[0].endswith("hires_image"):
        um_per_px /= float(sf["tissue_hires_scalef"])
    sdata.attrs[UNS_KEY] = {"image": images[0], "um_per_px": um_per_px, "source": str(path)}
    for table in sdata.tables.values():
        table.uns.setdefault(UNS_KEY, {})["um_per_px"] = um_per_px
    return sdata
