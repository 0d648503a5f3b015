"""An ensemble of dense models predicts with the mean of their maps."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

import pixnet
from pixnet.model import PixNet, ensemble
from pixnet.model.ensemble import MeanOfMaps


def _other(model: PixNet, seed: int = 1) -> PixNet:
    """A second member: the same model with its weights moved (as another seed would)."""
    module = copy.deepcopy(model.module)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return PixNet(model.config, module, model.training)


def test_ensemble_map_is_the_mean_of_the_members_maps(trained):
    other = _other(trained)
    tiles = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    both = ensemble([trained, other])
    assert isinstance(both.module, MeanOfMaps) and both.training["params"]["ensemble"] == 2
    a, b, ab = trained.predict_map(tiles), other.predict_map(tiles), both.predict_map(tiles)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(ab, (a + b) / 2, rtol=1e-5, atol=1e-6)
    assert ensemble([trained]) is trained


def test_predict_with_a_list_of_models(sdata, trained):
    one = pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False).X.copy()
    same = pixnet.tl.predict(sdata, model=[trained, trained], bin_size=16, overwrite=True, progress=False)
    assert same.uns["pixnet"]["ensemble"] == 2
    np.testing.assert_allclose(same.X, one, rtol=1e-5, atol=1e-6)  # the mean of two equal maps is that map
    other = _other(trained)
    two = pixnet.tl.predict(sdata, model=[trained, other], bin_size=16, overwrite=True, progress=False).X.copy()
    alone = pixnet.tl.predict(sdata, model=other, bin_size=16, overwrite=True, progress=False).X.copy()
    assert not np.allclose(two, one) and not np.allclose(two, alone)  # no stored map of another model reused
    # between the members, gene by gene and bin by bin (the expectation is monotone in the mean map)
    lo, hi = np.minimum(one, alone), np.maximum(one, alone)
    assert ((two >= lo - 1e-4) & (two <= hi + 1e-4)).mean() > 0.99


def test_ensemble_refuses_members_that_make_other_maps(trained):
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])
    with pytest.raises(TypeError, match="not a pixnet.PixNet"):
        ensemble([trained, "model"])
    fewer = PixNet(replace(trained.config, genes=trained.config.genes[:-1]), trained.module)
    with pytest.raises(ValueError, match="genes"):
        ensemble([trained, fewer])
    coarser = PixNet(replace(trained.config, um_per_px=2 * trained.config.um_per_px), trained.module)
    with pytest.raises(ValueError, match="um_per_px"):
        ensemble([trained, coarser])
    spot = PixNet(replace(trained.config, method="spot"), trained.module)
    with pytest.raises(ValueError, match="baseline"):
        ensemble([trained, spot])


def test_an_ensemble_is_not_saved_but_its_members_are(trained, tmp_path):
    with pytest.raises(ValueError, match="save each member"):
        ensemble([trained, _other(trained)]).save(tmp_path / "both")
    assert not (tmp_path / "both").exists()
