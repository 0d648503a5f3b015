"""A frozen encoder runs once per cached tile-augmentation; the cache is bounded; results are unchanged."""

import pytest
import torch

import pixnet
from pixnet.model import ModelConfig, PixNetModule
from pixnet.model.feature_cache import FeatureCache, freeze
from pixnet.train import frozen as _frozen

SPEC = {"arch": "vit_tiny_patch16_224", "kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64},
        "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip


def _net(vit: bool) -> PixNetModule:
    torch.manual_seed(0)
    spec = SPEC if vit else None
    return PixNetModule(ModelConfig(genes=("a",), encoder=SPEC["arch"] if vit else "resnet18", encoder_spec=spec,
                                    decoder_hidden=16))  # fmt: skip


@pytest.mark.parametrize("vit", [False, True])
def test_frozen_encoder_runs_once_per_cached_tile(vit):
    net = _net(vit)
    x = torch.rand(4, 3, 64, 64)
    expected = net.eval()(x)
    frozen = freeze(net.encoder, FeatureCache(max_bytes=2**26), skip_levels=net.first_level)
    net.train()  # Lightning's every epoch: the frozen part must stay in eval mode
    net(x)
    assert frozen.calls == 4
    net(x[[2, 0]])  # seen tiles only: the encoder is not run
    assert frozen.calls == 4
    net(torch.cat([x[:1], torch.rand(1, 3, 64, 64)]))  # one new tile: one run
    assert frozen.calls == 5
    net.eval()
    torch.testing.assert_close(net(x), expected, rtol=2e-2, atol=2e-3)  # float16 storage
    part = net.encoder.backbone if vit else net.encoder
    assert not any(p.requires_grad for p in part.parameters())
    assert all(p.requires_grad for p in net.stages.parameters())
    if vit:  # the pyramid is new: it trains
        assert all(p.requires_grad for p in net.encoder.pyramid.parameters())
    frozen.remove()
    net(x)
    assert frozen.calls == 5


def test_cache_is_bounded_least_recently_used(tmp_path):
    for directory in (None, tmp_path / "cache"):
        cache = FeatureCache(max_bytes=3 * 200, directory=directory)  # three entries of 100 float16
        for k in "abcd":
            cache.put(k, [None, torch.full((100,), ord(k), dtype=torch.float32)])
            if k == "b":
                assert cache.get("a") is not None  # a is now more recent than b
        assert cache.get("b") is None and len(cache) == 3 and cache.bytes == 600
        assert cache.get("d")[1][0] == ord("d") and cache.get("d")[0] is None
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="positive"):
        FeatureCache(max_bytes=0)


def test_fit_with_a_frozen_encoder_computes_each_tile_once(sdata, monkeypatch):
    made = []

    class Counting(FeatureCache):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.puts = 0
            made.append(self)

        def put(self, key, feats):
            self.puts += 1
            super().put(key, feats)

    monkeypatch.setattr(_frozen, "FeatureCache", Counting)
    torch.manual_seed(0)
    model = pixnet.tl.fit(sdata, bin_size=16, n_genes=8, tile_px=128, context_px=8, batch_size=2, epochs=3,
                          tiles_per_epoch=4, frozen_views=1, freeze_encoder=True, progress=False)  # fmt: skip
    (cache,) = made
    # the 4 training tiles and the validation tiles were computed once each over the 3 epochs...
    assert len(model.history) == 3 and cache.puts >= 4 and cache.puts == len(cache)
    assert cache.hits >= 2 * cache.puts  # ...epochs 2 and 3 were served from the cache

