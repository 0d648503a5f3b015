import matplotlib.pyplot as plt
import numpy as np
import pytest
import spatialdata as sd
import torch

import pixnet


@pytest.fixture
def predicted(sdata, trained):
    pixnet.tl.predict(sdata, model=trained, bin_size=8, progress=False)
    pixnet.tl.predict(sdata, model=trained, bin_size=2, progress=False)
    pixnet.tl.evaluate(sdata, bin_size=8)
    return sdata


def _written(path):
    assert path.is_file() and path.stat().st_size > 10_000


def test_expression(predicted, trained, tmp_path):
    axes = pixnet.pl.expression(predicted, trained.genes[:3], bin_size=2, save=tmp_path / "e.png", show=False)
    assert len(axes) == 3 and axes[0].get_title() == trained.genes[0]
    assert axes[0].figure.get_suptitle() == "predicted, 2 µm bins"  # which prediction the figure shows
    _written(tmp_path / "e.png")
    # the title sits on the panels: no empty band (equal-aspect panels in square cells left one a fifth of the height)
    fig = axes[0].figure
    fig.canvas.draw()
    title, tops = fig._suptitle.get_window_extent(), max(a.get_tightbbox().y1 for a in axes)
    assert 0 <= title.y0 - tops < 0.05 * fig.bbox.height
    fig, ax = plt.subplots()
    assert pixnet.pl.expression(predicted, trained.genes[0], bin_size=8, ax=ax, show=False, layer="counts") is ax
    assert fig.get_suptitle() == ""  # the user's own figure: not titled


def test_compare(predicted, trained, tmp_path):
    axes = pixnet.pl.compare(predicted, trained.genes[:2], bin_size=8, save=tmp_path / "c.png", show=False)
    assert axes.shape == (2, 2) and "PCC" in axes[1, 0].get_title()
    assert axes[0, 0].figure.get_suptitle() == "measured (top) and predicted (bottom), 8 µm bins"
    _written(tmp_path / "c.png")


def test_map(predicted, trained, tmp_path):
    axes = pixnet.pl.map(predicted, trained.genes[:2], save=tmp_path / "m.png", show=False)
    _written(tmp_path / "m.png")
    assert [(a.get_title(), a.title.get_style()) for a in axes] == [(g, "italic") for g in trained.genes[:2]]
    assert axes[0].figure.get_suptitle() == f"dense map, {trained.config.map_um_per_px:g} µm per pixel"
    # low values transparent (the H&E shows, no dark slab over the glass), high ones at alpha
    image = axes[0].get_images()[-1]
    assert image.cmap(0.0)[3] == 0.0 and image.cmap(1.0)[3] == pytest.approx(0.85)
    # the panel spans the map where its transformation puts it (spatialdata's extent of the element)
    ext = sd.get_extent(predicted.images["pixnet_map"], coordinate_system="global")
    x0, x1 = axes[0].get_xlim()
    assert x0 < ext["x"][0] < x0 + 0.05 * (x1 - x0) and x1 - 0.05 * (x1 - x0) < ext["x"][1] < x1
    # each panel's colour bar lies under it (beside it, its label ran into the next panel), in the map's units
    fig = axes[0].figure
    bars = [a for a in fig.axes if a not in axes]
    assert len(bars) == 2 and all(b.get_xlabel() == "expected counts per map pixel" for b in bars)
    for a, b in zip(axes, bars):
        assert b.get_position().y1 <= a.get_position().y0 + 1e-6


def test_scores_and_training(predicted, trained, tmp_path):
    hist, _ = pixnet.pl.scores(predicted, bin_size=8, save=tmp_path / "s.png", show=False)
    _written(tmp_path / "s.png")
    pcc = predicted.tables["pixnet_square_008um"].var["pcc"].dropna()
    labels = [t.get_text() for t in hist.get_legend().get_texts()]  # each line says which summary it marks
    assert labels == [f"PCC@F (first quartile) {pcc.quantile(0.25):.3f}", f"PCC@S (median) {pcc.median():.3f}",
                      f"PCC@M (mean) {pcc.mean():.3f}"]  # fmt: skip
    assert hist.get_title() == "per-gene PCC, 8 µm bins"
    # the mean drawn first and widest, each line its own colour: a median equal to the mean does not hide it
    mean, median, first = hist.lines
    assert mean.get_linewidth() > median.get_linewidth() and len({mean.get_color(), median.get_color(),
                                                                  first.get_color()}) == 3  # fmt: skip
    axes = pixnet.pl.training(trained, save=tmp_path / "t.png", show=False)
    _written(tmp_path / "t.png")
    x = axes[1].lines[0].get_xdata()  # epochs from 1, as the log counts them ("epoch 1/n")
    assert list(x) == list(range(1, len(trained.history) + 1))
    # the loss named, and the epoch whose weights the model holds marked on both panels
    assert axes[0].get_ylabel() == {"poisson": "loss (Poisson)", "mse_pcc": "loss (MSE + PCC)",
                                    "poisson_pcc": "loss (Poisson + PCC)"}[trained.config.loss]  # fmt: skip
    best = trained.training["params"]["best_epoch"]
    assert best is not None
    for a in axes:
        kept = [ln for ln in a.lines if ln.get_label().startswith("kept")]
        assert len(kept) == 1 and list(kept[0].get_xdata()) == [best + 1, best + 1]
    kept_label = f"kept: epoch {best + 1} (best validation PCC)"  # why that epoch: not the lowest loss
    assert kept_label in [t.get_text() for t in axes[0].get_legend().get_texts()]
    shown = [t for t in axes[1].get_xticks() if axes[1].get_xlim()[0] <= t <= axes[1].get_xlim()[1]]
    assert shown and all(float(t).is_integer() for t in shown)  # whole epochs


def test_scores_legend_sits_above_the_bars_and_counts_are_whole(predicted, tmp_path):
    hist, _ = pixnet.pl.scores(predicted, bin_size=8, show=False)
    hist.figure.canvas.draw()
    box = hist.get_legend().get_window_extent().transformed(hist.transData.inverted())  # in data units
    tallest = max(p.get_height() for p in hist.patches)
    assert box.y0 >= tallest  # no bar under the legend's text
    assert all(float(t).is_integer() for t in hist.get_yticks())  # a count of genes


def test_map_arguments(predicted, trained):
    fig, grid = plt.subplots(2, 2)
    assert len(pixnet.pl.map(predicted, trained.genes[:3], ax=grid, show=False)) == 3  # the axes drawn in
    one = pixnet.pl.map(predicted, trained.genes[0], vmax="max", show=False)
    assert one.get_images()[-1].norm.vmax == pytest.approx(float(np.nanmax(predicted.images["pixnet_map"]["scale0"]
                                                                             ["image"].sel(c=trained.genes[0]))))  # fmt: skip
    with pytest.raises(ValueError, match="at least one gene"):
        pixnet.pl.map(predicted, [], show=False)
    with pytest.raises(ValueError, match="percentile such as 'p99'"):
        pixnet.pl.map(predicted, trained.genes[0], vmax="top", show=False)
    plt.close("all")


def test_plot_errors(predicted):
    with pytest.raises(KeyError, match="Genes not in the table"):
        pixnet.pl.expression(predicted, ["NOPE"], bin_size=8, show=False)
    with pytest.raises(KeyError, match="run pixnet.tl.predict"):
        pixnet.pl.expression(predicted, ["A"], bin_size=16, show=False)
    scores = pixnet.tl.evaluate(predicted, bin_size=8)  # what evaluate returns is not what the figures draw from
    with pytest.raises(TypeError, match="pass the slide"):
        pixnet.pl.scores(scores, bin_size=8, show=False)
    with pytest.raises(TypeError, match="Expected the SpatialData"):
        pixnet.pl.map(predicted.tables["pixnet_square_008um"], ["A"], show=False)


@pytest.mark.parametrize(
    ("semantics", "label"),
    [
        ("density", "expected counts per map pixel"),
        ("sum", "log-normalised expression per map pixel (summed over a spot)"),
        ("mean", "log-normalised expression"),
    ],
)
def test_the_maps_units_follow_the_semantics_of_the_model_that_made_it(semantics, label):
    # every semantics gets its label ("sum" maps had an empty one)
    import anndata as ad
    from spatialdata import SpatialData

    from pixnet._keys import UNS_KEY
    from pixnet.pl.maps import _units

    table = ad.AnnData(np.zeros((1, 1), np.float32))
    table.uns[UNS_KEY] = {"map": "run_map", "model": {"semantics": semantics}}
    assert _units(SpatialData(tables={"t": table}), "run_map") == label
    assert _units(SpatialData(tables={"t": table}), "other_map") == ""  # no table records that map


def test_the_he_and_the_map_are_drawn_through_their_transformations(sdata, trained):
    """A coordinate system in micrometres (the image scaled into it): H&E and map land where their elements lie."""
    from spatialdata.models import Image2DModel, ShapesModel
    from spatialdata.transformations import Identity, Scale

    u = 0.2737
    img = pixnet.data.image_levels(sdata.images["_full_image"])[0]
    he = Image2DModel.parse(
        np.asarray(img.data), dims=("c", "y", "x"), transformations={"um": Scale([u, u], ("x", "y"))}
    )
    xy = sdata.tables["square_016um"].obsm["spatial"][::3] * u
    circles = ShapesModel.parse(xy, geometry=0, radius=np.full(len(xy), 12.0), transformations={"um": Identity()})
    slide = sd.SpatialData(images={"he": he}, shapes={"circles": circles})
    slide.attrs["pixnet"] = {"image": "he", "coordinate_system": "um", "um_per_px": u}
    pixnet.tl.predict(slide, model=trained, shapes="circles", progress=False)
    gene = trained.genes[0]
    for ax in (pixnet.pl.map(slide, gene, show=False), pixnet.pl.expression(slide, gene, shapes="circles", show=False)):
        h_e = ax.get_images()[0]
        corners = (h_e.get_transform() - ax.transData).transform([[0, 0], [img.sizes["x"], img.sizes["y"]]])
        np.testing.assert_allclose(corners, [[0, 0], [img.sizes["x"] * u, img.sizes["y"] * u]], rtol=1e-6)
        assert 0 < ax.get_xlim()[1] < 0.5 * img.sizes["x"]  # the panel spans um (~410), not the image's pixels (1502)
    plt.close("all")


def test_a_slide_without_pixnets_record_is_drawn_with_its_he(sdata, trained):
    """Read by another reader (no attrs["pixnet"]), in a coordinate system not named "global": the H&E is drawn."""
    from spatialdata.transformations import Identity, get_transformation, remove_transformation, set_transformation

    slide = sd.SpatialData(
        images={"_full_image": sd.deepcopy(sdata.images["_full_image"])},
        shapes={"_square_008um": sd.deepcopy(sdata.shapes["_square_008um"])},
        tables={"square_008um": sdata.tables["square_008um"].copy()},
    )
    for name in ("_full_image", "_square_008um"):
        set_transformation(slide[name], Identity(), to_coordinate_system="sample1")
        for other in [k for k in get_transformation(slide[name], get_all=True) if k != "sample1"]:
            remove_transformation(slide[name], other)
    pixnet.tl.predict(slide, model=trained, bin_size=8, progress=False)
    gene = trained.genes[0]
    for ax in (pixnet.pl.map(slide, gene, show=False), pixnet.pl.expression(slide, gene, bin_size=8, show=False)):
        assert [im.get_array().ndim for im in ax.get_images()][0] == 3  # the H&E (RGB) first, under the values
    plt.close("all")


@pytest.mark.parametrize("bin_size", [8, 2])  # squares (shapes) and 2 um bins (labels)
def test_bins_are_drawn_where_they_lie_after_the_slide_is_moved(sdata, trained, bin_size):
    """Every element translated after predict: the predicted bins are drawn with the H&E (not at the recorded grid)."""
    from spatialdata.transformations import Sequence, Translation, get_transformation, set_transformation

    table = pixnet.tl.predict(sdata, model=trained, bin_size=bin_size, progress=False, map=False)

    def centre(ax):  # of the panel, framed on the bins drawn
        return np.mean(ax.get_xlim()), np.mean(ax.get_ylim())

    before = centre(pixnet.pl.expression(sdata, trained.genes[0], bin_size=bin_size, show=False))
    for _, _, element in list(sdata.gen_spatial_elements()):
        moved = Sequence([get_transformation(element, "global"), Translation([100, -40], axes=("x", "y"))])
        set_transformation(element, moved, to_coordinate_system="global")
    assert table.uns["pixnet"]["grid"] is not None  # recorded where the bins lay at predict
    after = centre(pixnet.pl.expression(sdata, trained.genes[0], bin_size=bin_size, show=False))
    np.testing.assert_allclose(np.subtract(after, before), [100, -40], atol=8)  # (squares framed as circles after)
    plt.close("all")


def test_compare_scores_the_rows_evaluate_scores_and_refuses_what_it_cannot_compare(predicted, trained):
    """From the verbs breaker: compare's PCC contradicted evaluate's (it kept bins off the image), compared expected
    counts with log-normalised measurements, failed inside anndata on renamed bins, and on a cropped table's region."""
    pred = predicted.tables["pixnet_square_008um"]
    off = np.zeros(pred.n_obs, bool)
    off[::3] = True  # as predict marks bins the H&E does not cover
    pred.obs["pixnet_on_image"] = ~off
    pred.X[off] = 0.0  # what predict leaves there: nothing to correlate
    pixnet.tl.evaluate(predicted, bin_size=8)
    genes = list(trained.genes[:2])
    axes = pixnet.pl.compare(predicted, genes, bin_size=8, show=False)
    for j, g in enumerate(genes):
        assert axes[1, j].get_title().endswith(f"PCC {pred.var.loc[g, 'pcc']:.2f}")
    with pytest.raises(ValueError, match="layer='counts' is not log-normalised"):
        pixnet.pl.compare(predicted, genes, bin_size=8, layer="counts", show=False)
    # a table cropped by spatialdata's queries annotates a one-element list
    for name in ("pixnet_square_008um", "square_008um"):
        attrs = predicted.tables[name].uns["spatialdata_attrs"]
        attrs["region"] = [attrs["region"]]
    assert pixnet.pl.compare(predicted, genes, bin_size=8, show=False).shape == (2, 2)
    measured = predicted.tables["square_008um"]
    measured.obs_names = "C2_" + measured.obs_names
    with pytest.raises(ValueError, match="share fewer than 2 bins"):
        pixnet.pl.compare(predicted, genes, bin_size=8, show=False)
    plt.close("all")


def test_training_without_validation_draws_no_empty_panel(trained):
    import copy

    model = copy.copy(trained)
    model.training = {**trained.training, "history": [{k: v for k, v in r.items() if not k.startswith("val_")}
                                                      for r in trained.history]}  # fmt: skip
    ax = pixnet.pl.training(model, show=False)  # fit(val_fraction=0), as on spot data
    assert ax.get_title() == "training loss (no validation)" and len(ax.figure.axes) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train"]
    plt.close("all")


def test_map_is_titled_by_the_model_that_made_it_now(sdata, trained):
    """A map replaced by another model (overwrite=True): the older table's claim was read first, and its scale."""
    import copy

    pixnet.tl.predict(sdata, model=trained, bin_size=8, progress=False)
    other = copy.deepcopy(trained)
    with torch.no_grad():
        next(other.module.parameters()).add_(1.0)  # another model, as a retrained one
    pixnet.tl.predict(sdata, model=other, bin_size=16, progress=False, overwrite=True)
    fp = sdata.attrs["pixnet"]["maps"]["pixnet_map"]["model"]
    assert sdata.tables["pixnet_square_016um"].uns["pixnet"]["map_model"] == fp
    assert sdata.tables["pixnet_square_008um"].uns["pixnet"]["map_model"] != fp
    from pixnet.pl.maps import _made_with

    assert _made_with(sdata, "pixnet_map") is sdata.tables["pixnet_square_016um"]
    # that table replaced by the first model without a map: the map's maker has no table; the first's claim is stale
    pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False, overwrite=True, map=False)
    assert _made_with(sdata, "pixnet_map") is None
    assert pixnet.pl.map(sdata, trained.genes[0], show=False).figure.get_suptitle() == "dense map"
    plt.close("all")
