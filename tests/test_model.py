import numpy as np
import pytest
import shapely
import torch

from pixnet.geometry import Spots, spot_weights
from pixnet.model import (
    ModelConfig,
    PixNet,
    PixNetModule,
    aggregate,
    build_encoder,
    load_checkpoint,
)

GENES = tuple(f"G{i}" for i in range(7))


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet_b0", "mobilenetv3_small_100"])
@pytest.mark.parametrize("map_stride", [2, 4])
def test_block_shapes_for_backbones(encoder, map_stride):
    cfg = ModelConfig(genes=GENES, encoder=encoder, decoder_hidden=32, map_stride=map_stride)
    net = PixNetModule(cfg).eval()
    out = net(torch.rand(2, 3, 128, 96))
    assert out.shape == (2, len(GENES) + 1, 128 // map_stride, 96 // map_stride)
    assert (out >= 0).all()  # density maps are non-negative
    assert len(net.stages) == len(net.encoder.feature_info.channels()) - 1 - net.first_level


def test_paper_semantics_can_be_negative():
    net = PixNetModule(ModelConfig(genes=GENES, semantics="sum", decoder_hidden=16)).eval()
    assert net(torch.rand(1, 3, 64, 64)).shape[1] == len(GENES)


def _brute(kind, c, size, ang, shape, points=None):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5 if points is None else points[::-1]
    out = np.zeros((len(c), h * w))
    for n in range(len(c)):
        dx, dy = xx - c[n, 0], yy - c[n, 1]
        if kind == "circle":
            m = dx * dx + dy * dy <= size[n] ** 2
        else:
            u, v = dx * np.cos(ang) + dy * np.sin(ang), dy * np.cos(ang) - dx * np.sin(ang)
            m = (np.abs(u) <= size[n]) & (np.abs(v) <= size[n])
        out[n] = m.ravel()
    return out


@pytest.mark.parametrize(("kind", "angle"), [("circle", 0.0), ("square", 0.0), ("square", 0.35)])
def test_aggregation_equals_pixel_mask_sum(kind, angle):
    rng = np.random.default_rng(1)
    shape = (50, 64)
    c, size = rng.uniform(4, 46, (30, 2)), rng.uniform(0.7, 7, 30)
    spots = Spots(kind, c, size, angle)
    s, p, w = spot_weights(spots, shape, supersample=1)
    maps = torch.rand(1, 3, *shape, dtype=torch.float64)
    got = aggregate(maps, torch.as_tensor(s), torch.as_tensor(p), torch.as_tensor(w), len(c)).numpy()
    mask = _brute(kind, c, size, angle, shape)
    np.testing.assert_allclose(got, mask @ maps[0].reshape(3, -1).numpy().T, rtol=1e-10)


def test_aggregation_of_polygons_equals_mask_sum():
    rng = np.random.default_rng(2)
    shape = (40, 40)
    polys = [shapely.Polygon(rng.uniform(0, 12, (6, 2)) + rng.uniform(0, 28, 2)).convex_hull for _ in range(15)]
    spots = Spots("polygon", shapely.get_coordinates(shapely.centroid(polys)), polygons=polys)
    s, p, w = spot_weights(spots, shape, supersample=1)
    maps = torch.rand(1, 2, *shape, dtype=torch.float64)
    got = aggregate(maps, torch.as_tensor(s), torch.as_tensor(p), torch.as_tensor(w), len(polys)).numpy()
    yy, xx = np.mgrid[0:40, 0:40] + 0.5
    mask = np.stack([shapely.contains_xy(q, xx.ravel(), yy.ravel()) for q in polys]).astype(float)
    np.testing.assert_allclose(got, mask @ maps[0].reshape(2, -1).numpy().T, rtol=1e-10)


def test_supersampled_weights_measure_area():
    spots = Spots("square", np.array([[20.3, 20.7]]), np.array([3.0]), 0.4)
    _, _, w = spot_weights(spots, (40, 40), supersample=32)
    assert abs(w.sum() - 36.0) < 0.3


def test_gradients_reach_the_encoder():
    net = PixNetModule(ModelConfig(genes=GENES, decoder_hidden=16))
    spots = Spots("square", np.array([[8.0, 8.0], [20.0, 12.0]]), np.array([4.0, 4.0]))
    s, p, w = (torch.as_tensor(a) for a in spot_weights(spots, (32, 32)))
    out = aggregate(net(torch.rand(1, 3, 128, 128)), s, p, w, 2)
    out.sum().backward()
    grad = net.encoder.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_histology_checkpoint_key_layout(tmp_path):
    # Ciga et al. ship a Lightning checkpoint whose keys read "model.resnet.conv1.weight" and carry a head.
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    state = {f"model.resnet.{k}": v for k, v in ref.state_dict().items()}
    state["model.projection.0.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state, "epoch": 9}, tmp_path / "tenpercent_resnet18.ckpt")
    enc = build_encoder("resnet18", weights=tmp_path / "tenpercent_resnet18.ckpt")
    torch.testing.assert_close(enc.conv1.weight, ref.conv1.weight)
    torch.testing.assert_close(enc.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_wrong_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {"x.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    enc = build_encoder("resnet18")
    with pytest.raises(ValueError, match="matches only 0%"):
        load_checkpoint(enc, tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(enc, tmp_path / "missing.ckpt")


def test_save_load_round_trip(tmp_path):
    model = PixNet(
        ModelConfig(genes=GENES, decoder_hidden=16), training={"params": {"a": 1}, "history": [{"epoch": 0}]}
    )
    tiles = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    before = model.predict_map(tiles)
    model.save(tmp_path / "m")
    loaded = PixNet.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_map(tiles), before)
    assert loaded.config == model.config and loaded.history == [{"epoch": 0}]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_folders_take_the_permissions_mkdir_gives(tmp_path, umask):
    """A saved model, an encoder's warm start and a demo slide are readable as the user's umask says, not 0700."""
    import os
    import stat

    from pixnet.datasets import visium_hd_demo
    from pixnet.model._atomic import aside, publish_dir

    before = os.umask(umask)
    try:
        (tmp_path / "plain").mkdir()
        want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
        assert want == 0o777 & ~umask
        want_file = 0o666 & ~umask
        model = PixNet(ModelConfig(genes=GENES, decoder_hidden=16))
        for overwrite in (False, True):
            model.save(tmp_path / "m", overwrite=overwrite)
            assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == want
            # safetensors writes its file 0600: it too is readable as the umask says
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "m").iterdir()} == dict.fromkeys(
                ["model.safetensors", "config.json", "training.json"], want_file
            )
        tmp = aside(tmp_path / "encoder")  # as pixnet.tl.pretrain writes its encoder
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"0")
        os.chmod(tmp / "model.safetensors", 0o600)
        publish_dir(tmp, tmp_path / "encoder")
        assert stat.S_IMODE((tmp_path / "encoder").stat().st_mode) == want
        assert stat.S_IMODE((tmp_path / "encoder" / "model.safetensors").stat().st_mode) == want_file
        slide = visium_hd_demo(tmp_path / "slide", size_um=100, seed=1)
        assert stat.S_IMODE(slide.stat().st_mode) == want
        assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder", "m", "plain", "slide"]  # nothing left aside
    finally:
        os.umask(before)


def test_config_refuses_other_versions():
    d = ModelConfig(genes=GENES).to_dict()
    d["format_version"] = 99
    with pytest.raises(ValueError, match="format version 99"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="semantics='density'"):
        ModelConfig(genes=GENES, semantics="sum", loss="poisson")


@pytest.mark.parametrize("per_pixel", [1e-6, 0.3, 40.0, 500.0])
def test_density_head_starts_at_the_observed_counts(per_pixel):
    # Coarse maps (2 um/px and up) hold hundreds of counts per pixel: the start must stay finite.
    net = PixNetModule(ModelConfig(genes=["a", "b"], decoder_hidden=16, map_stride=4)).eval()
    net.init_density(torch.full((3,), per_pixel))
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(out).all()
    assert out.mean().item() == pytest.approx(per_pixel, rel=0.3)


def test_one_size_for_all_spots_stays_a_broadcast_view():
    """A grid's bins share one size: subsets, rescaled copies and extents keep it as a view, with the same values."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(5, 45, (1000, 2))
    one = Spots.squares(centres, 2.5, 0.3)
    assert one.size.strides == (0,)
    full = Spots("square", centres, np.full(1000, 2.5), 0.3)
    mask = rng.random(1000) < 0.3
    pairs = [
        (one.scaled(2.0, (1.0, 2.0)), full.scaled(2.0, (1.0, 2.0))),
        (one.subset(slice(10, 20)), full.subset(slice(10, 20))),
        (one.subset(mask), full.subset(mask)),
        (one.subset(np.array([3, 1, 4])), full.subset(np.array([3, 1, 4]))),
    ]
    for a, b in pairs:
        assert a.size.strides == (0,) or len(a) < 2
        np.testing.assert_array_equal(a.size, b.size)
        np.testing.assert_array_equal(a.extent(), b.extent())
        np.testing.assert_array_equal(a.centres, b.centres)
    for got, want in zip(spot_weights(one, (50, 50)), spot_weights(full, (50, 50)), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("kind", "angle"), [("circle", 0.0), ("square", 0.0), ("square", 0.35)])
def test_supersampled_weights_are_the_covered_fraction(kind, angle):
    """Each weight is the fraction of a pixel's s x s sample points inside the spot; spots may overhang the grid."""
    rng = np.random.default_rng(3)
    shape, s = (30, 40), 4
    c, size = rng.uniform(-2, 42, (40, 2)), rng.uniform(0.3, 3, 40)
    spot, pix, w = spot_weights(Spots(kind, c, size, angle), shape, supersample=s)
    got = np.zeros((len(c), shape[0] * shape[1]))
    got[spot, pix] = w
    off = (np.arange(s) + 0.5) / s
    yy, xx = np.mgrid[0 : shape[0] * s, 0 : shape[1] * s]
    yy, xx = yy // s + off[yy % s], xx // s + off[xx % s]  # the sample points of every pixel
    fine = _brute(kind, c, size, angle, (shape[0] * s, shape[1] * s), points=(xx, yy))
    want = fine.reshape(len(c), shape[0], s, shape[1], s).mean(axis=(2, 4)).reshape(len(c), -1)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert w.dtype == np.float32 and (w > 0).all() and len(np.unique(spot * 10**6 + pix)) == len(spot)


def test_inference_softplus_matches_float64():
    """The head's softplus at inference (in place, compensated log) stays within 2.5e-7 of float64's, everywhere."""
    import torch.nn.functional as F

    from pixnet.model.head import SOFTPLUS_CHUNK, softplus_

    # every value a map holds in practice and beyond: below exp's underflow to past torch's threshold of 20,
    # more values than one block, in both layouts the network gives
    x = torch.linspace(-100, 100, 3 * SOFTPLUS_CHUNK + 7)
    exact = F.softplus(x.double())
    for t in (x.clone(), x.clone().view(1, -1, 1, 1).contiguous(memory_format=torch.channels_last)):
        got = softplus_(t).reshape(-1).double()
        keep = exact > 1e-37  # float32's normal range
        assert (torch.abs(got - exact)[keep] / exact[keep]).max().item() < 2.5e-7
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    torch.testing.assert_close(softplus_(special.clone()), F.softplus(special), equal_nan=True)
    # small values are kept, not rounded to 0 as log(1 + exp(x)) would round them
    assert softplus_(torch.tensor([-30.0])).item() == pytest.approx(np.exp(-30.0), rel=1e-6)


def test_training_keeps_torch_softplus_and_its_gradient():
    net = PixNetModule(ModelConfig(genes=GENES, decoder_hidden=16)).train()
    out = net(torch.rand(1, 3, 64, 64))
    assert out.grad_fn is not None and "Softplus" in type(out.grad_fn).__name__
    out.sum().backward()
    assert net.head.weight.grad is not None


@pytest.mark.parametrize(
    ("encoder", "map_stride", "side"),
    [("resnet18", 4, 320), ("resnet18", 2, 256), ("resnet18", 1, 192), ("resnet18", 4, 200), ("efficientnet_b0", 4, 288)],
)
def test_cropped_forward_is_the_whole_map_cropped(encoder, map_stride, side):
    """Predict leaves a tile's context out of the decoder and head: each kept pixel is the whole map's.

    Sides that halve evenly down the pyramid window every stage; 200 px (odd sizes from 25 px down) computes
    the coarser stages whole; map_stride 1 resizes the head's output (it reads one decoder pixel beyond).
    """
    from pixnet.model import forward_cropped
    from pixnet.model.ensemble import MeanOfMaps
    from pixnet.model.tta import DihedralTTA

    torch.manual_seed(0)
    cfg = ModelConfig(genes=GENES, encoder=encoder, decoder_hidden=32, map_stride=map_stride)
    nets = [PixNetModule(cfg).eval() for _ in range(2)]
    for net in nets:  # weights away from their start, so that every stage matters
        for p in net.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 3, side, side)
    with torch.no_grad():
        for net in (nets[0], MeanOfMaps(nets), DihedralTTA(nets[0], views=8)):
            whole = net(x)
            for crop in (1, 2, 3, 7, 16):
                got = forward_cropped(net, x, crop)
                torch.testing.assert_close(got, whole[..., crop:-crop, crop:-crop], rtol=1e-5, atol=1e-6)
    # the coarse stages' windows: one pixel of context kept beyond what the next level needs, whole when unaligned
    feats = nets[0].encoder(x)[nets[0].first_level :]
    crops = nets[0].stages.crops(feats, 16)
    assert crops[0] == (14, 16)
    assert all(window <= max(kept - 1, 0) and window % 2 == 0 for window, kept in crops)


def test_the_model_says_how_long_it_trained():
    model = PixNet(ModelConfig(genes=GENES, decoder_hidden=16))
    assert repr(model).endswith(", untrained)")
    for n, words in ((1, "trained 1 epoch)"), (3, "trained 3 epochs)")):
        model.training["history"] = [{"epoch": i} for i in range(n)]
        assert repr(model).endswith(words)
