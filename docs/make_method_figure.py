"""Draw docs/_static/method.png from the demo's results: H&E, training bins, predicted 2 um bins, map.

python docs/make_method_figure.py demo_output
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def main(out: Path) -> None:
    import pixnet
    from pixnet.pl._utils import background, draw

    sdata = pixnet.io.visium_hd(out / "visium_hd_demo")
    model = pixnet.PixNet.load(out / "model")
    gene = "ERBB2" if "ERBB2" in model.genes else model.genes[0]
    pixnet.tl.predict(sdata, model=model, bin_size=2, progress=False)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    t16 = sdata.tables["square_016um"]
    meas = pixnet.pp.log_normalize(t16, genes=[gene]).X[:, 0]
    pred2 = sdata.tables["pixnet_square_002um"]
    dmap = pixnet.data.image_levels(sdata.images["pixnet_map"])[0].sel(c=gene)
    background(axes[0], sdata)
    axes[0].set_title("1. H&E image")
    background(axes[1], sdata)
    draw(axes[1], sdata, t16, meas, cmap="magma", vmin=0, vmax=float(np.percentile(meas, 99)), alpha=0.8)
    axes[1].set_title(f"2. training: 16 µm bins ({gene})")
    y0, x0, h, w = sdata.attrs["pixnet"]["maps"]["pixnet_map"]["region"]
    f = model.config.map_um_per_px / sdata.attrs["pixnet"]["um_per_px"]
    extent = (x0 * f, (x0 + w) * f, (y0 + h) * f, y0 * f)
    axes[2].imshow(np.asarray(dmap), cmap="magma", vmax=float(np.percentile(np.asarray(dmap), 99.5)), extent=extent)
    axes[2].set_xlim(axes[1].get_xlim())
    axes[2].set_ylim(axes[1].get_ylim())
    axes[2].set_title("3. dense map G (expected counts / px)")
    v = np.asarray(pred2[:, gene].layers["lognorm"]).ravel()
    draw(axes[3], sdata, pred2, v, cmap="magma", vmin=0, vmax=float(np.percentile(v, 99)))
    axes[3].set_title("4. any spots: 2 µm bins")
    for a in axes:
        a.set_axis_off()
    lo = np.array([0.35, 0.35])
    for a in axes:
        x0, x1 = a.get_xlim()
        y1, y0 = a.get_ylim()
        a.set_xlim(x0 + (x1 - x0) * lo[0], x0 + (x1 - x0) * (lo[0] + 0.3))
        a.set_ylim(y0 + (y1 - y0) * (lo[1] + 0.3), y0 + (y1 - y0) * lo[1])
    fig.tight_layout()
    fig.savefig(Path(__file__).parent / "_static" / "method.png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_output"))
