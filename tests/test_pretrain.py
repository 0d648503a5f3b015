"""pixnet.tl.pretrain: a SimSiam warm start written as a timm folder that fit takes."""

import numpy as np
import pytest
import torch

import pixnet


@pytest.mark.slow  # pretrain and a fit: ~30 s on an idle CPU
def test_pretrain_writes_a_warm_start_that_fit_takes(sdata, tmp_path):
    import json

    out = pixnet.tl.pretrain(sdata, out=tmp_path / "ssl", n_tiles=8, epochs=1, batch_size=4, tile_px=64,
                             um_per_px=1.0, progress=False)  # fmt: skip
    meta = json.loads((out / "config.json").read_text())
    assert meta["architecture"] == "resnet18" and meta["pixnet_pretrain"]["method"].startswith("SimSiam")
    assert np.isfinite(meta["pixnet_pretrain"]["history"][0]["loss"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pixnet.tl.pretrain(sdata, out=out, n_tiles=8, epochs=1, progress=False)
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    model = pixnet.tl.fit(sdata, encoder="resnet18", encoder_weights=str(out), bin_size=16, n_genes=8, tile_px=128,
                          context_px=8, batch_size=2, epochs=1, tiles_per_epoch=2, freeze_encoder=True,
                          progress=False)  # fmt: skip
    torch.testing.assert_close(model.module.encoder.conv1.weight, saved["conv1.weight"])  # frozen: unchanged
