"""On a CUDA device: fit trains there (bf16 mixed precision) and predict's map matches the CPU's.

Deselected by default; run with ``bash scripts/test.sh -m gpu tests/test_gpu.py`` on a machine
with a GPU (``benchmarks/gpu.sh`` runs it on a lent device).
"""

import numpy as np
import pytest
import torch

import pixnet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fit_trains_on_the_gpu_and_its_map_matches_the_cpu(slide_dir):
    sd = pixnet.io.visium_hd(slide_dir)
    torch.cuda.reset_peak_memory_stats()
    model = pixnet.tl.fit(sd, bin_size=16, n_genes=20, epochs=2, tile_px=128, context_px=8, progress=False)
    assert torch.cuda.max_memory_allocated() > 0, "fit did not use the GPU"
    assert len(model.history) == 2 and np.isfinite(model.history[-1]["train_loss"])
    assert next(model.module.parameters()).device.type == "cpu"  # handed back on the CPU, ready to save

    gpu = pixnet.tl.predict(sd, model=model, bin_size=8, key_added="gpu", device="cuda", progress=False)
    cpu = pixnet.tl.predict(sd, model=model, bin_size=8, key_added="cpu", device="cpu", progress=False)
    assert list(gpu.obs_names) == list(cpu.obs_names)
    a, b = np.asarray(gpu.layers["counts"]), np.asarray(cpu.layers["counts"])
    # bf16 autocast on the GPU, float32 on the CPU: the same map up to bf16 rounding
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(a.sum(0), b.sum(0), rtol=0.02)
