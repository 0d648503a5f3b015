import numpy as np
import pytest
import torch

import pixnet

TINY = {"n_genes": 20, "tile_px": 128, "context_px": 8, "batch_size": 2, "progress": False}


def test_fit_lowers_validation_loss(sdata):
    model = pixnet.tl.fit(sdata, bin_size=16, epochs=4, tiles_per_epoch=12, lr=1e-3, **TINY)
    h = model.history
    assert len(h) == 4 and all("val_loss" in r and "val_pcc" in r for r in h)
    assert min(r["val_loss"] for r in h[1:]) < h[0]["val_loss"]
    assert model.training["params"]["n_val_bins"] > 0
    assert sdata.attrs["pixnet"]["last_model"] == "pixnet"


def test_same_seed_same_model(sdata):
    a = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, seed=5, **TINY)
    b = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, seed=5, **TINY)
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_fit_on_several_slides_and_spots(sdata, prefixed_dir):
    other = pixnet.io.visium_hd(prefixed_dir, bin_sizes=(8, 16))
    model = pixnet.tl.fit([sdata, other], bin_size=16, epochs=1, tiles_per_epoch=4, **TINY)
    assert model.training["params"]["n_slides"] == 2
    assert other.attrs["pixnet"]["last_model"] == "pixnet"
    # Any table annotating circles trains too (here: circles at the 16 um bins, as Visium spots would be).
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    t = sdata.tables["square_016um"].copy()
    sdata.shapes["circles"] = ShapesModel.parse(
        t.obsm["spatial"], geometry=0, radius=np.full(t.n_obs, 25.0), transformations={"global": Identity()}
    )
    del t.uns["pixnet"]
    t.obs["region"] = "circles"
    t.obs["region"] = t.obs["region"].astype("category")
    del t.uns["spatialdata_attrs"]
    sdata.tables["circle_table"] = TableModel.parse(
        t, region="circles", region_key="region", instance_key="location_id"
    )
    m = pixnet.tl.fit(sdata, table="circle_table", epochs=1, tiles_per_epoch=4, **TINY)
    assert len(m.genes) == 20


def test_fit_paper_semantics(sdata):
    m = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, semantics="sum", **TINY)
    assert m.config.n_outputs == 20
    t = pixnet.tl.predict(sdata, model=m, bin_size=8, progress=False, key_added="paper")
    assert "counts" not in t.layers


def test_fit_errors(sdata):
    with pytest.raises(KeyError, match="not in the table"):
        pixnet.tl.fit(sdata, bin_size=16, genes=["NOT_A_GENE"], epochs=1, progress=False)
    with pytest.raises(KeyError, match="No table of 4 um bins"):
        pixnet.tl.fit(sdata, bin_size=4, epochs=1, progress=False)
    with pytest.raises(ValueError, match="do not fit"):
        pixnet.tl.fit(sdata, bin_size=16, epochs=1, tile_px=64, context_px=8, progress=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        pixnet.tl.fit(sdata, bin_size=16, epochs=1, tile_px=100, progress=False)
