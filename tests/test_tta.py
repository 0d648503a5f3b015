"""Dihedral test-time augmentation: views are undone exactly, so an orientation-free network is unchanged."""

import pytest
import torch

from pixnet.model import ModelConfig
from pixnet.model.network import PixNetModule
from pixnet.model.tta import DihedralTTA


def test_pointwise_network_is_unchanged_by_its_views():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1), torch.nn.Softplus())  # no orientation to average out
    x = torch.rand(2, 3, 16, 16)
    for views in (4, 8):
        torch.testing.assert_close(DihedralTTA(net, views=views)(x), net(x))


def test_average_of_views_undone_by_hand():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, 3, padding=1, bias=False)  # an oriented kernel: views differ
    x = torch.rand(1, 3, 8, 8)
    by_hand = (net(x) + net(x.flip(-1)).flip(-1) + net(x.rot90(2, (-2, -1))).rot90(-2, (-2, -1))
               + net(x.rot90(2, (-2, -1)).flip(-1)).flip(-1).rot90(-2, (-2, -1))) / 4  # fmt: skip
    torch.testing.assert_close(DihedralTTA(net, views=4)(x), by_hand)
    assert not torch.allclose(by_hand, net(x))
    # the 8 views of a square input are the 4 flips plus the quarter turns; a non-square one falls back to 4
    assert DihedralTTA(net, views=8)(x).shape == net(x).shape
    y = torch.rand(1, 3, 8, 12)
    torch.testing.assert_close(DihedralTTA(net, views=8)(y), DihedralTTA(net, views=4)(y))


def test_pixnet_module_map_keeps_its_shape():
    net = PixNetModule(ModelConfig(genes=("A", "B", "C"), decoder_hidden=16)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = DihedralTTA(net)(x)
        assert out.shape == net(x).shape == (1, 4, 16, 16)  # 3 genes + other genes, stride 4
        assert torch.isfinite(out).all()


def test_views_must_be_four_or_eight():
    with pytest.raises(ValueError, match="4 or 8"):
        DihedralTTA(torch.nn.Identity(), views=2)


def test_predict_averages_views_and_never_reuses_another_views_map(sdata, trained):
    import numpy as np

    import pixnet

    plain = pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False).X.copy()
    with pytest.raises(ValueError, match="tta must be 1"):
        pixnet.tl.predict(sdata, model=trained, bin_size=16, tta=2, overwrite=True, progress=False)
    views8 = pixnet.tl.predict(sdata, model=trained, bin_size=16, tta=8, overwrite=True, progress=False)
    assert views8.uns["pixnet"]["tta"] == 8
    assert views8.X.shape == plain.shape and np.isfinite(views8.X).all()
    assert not np.allclose(views8.X, plain)  # the stored map of one view was recomputed, not reused
    assert not isinstance(trained.module, DihedralTTA)  # the user's model is left as it is
    views4 = pixnet.tl.predict(sdata, model=trained, bin_size=16, tta=4, overwrite=True, progress=False).X
    assert not np.allclose(views4, views8.X)
    again = pixnet.tl.predict(sdata, model=trained, bin_size=16, overwrite=True, progress=False).X
    np.testing.assert_allclose(again, plain, rtol=1e-5, atol=1e-6)
