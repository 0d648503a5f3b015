import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import pixnet

RUN = {
    "bin_size": 16,
    "n_genes": 10,
    "epochs": 2,
    "tiles_per_epoch": 8,
    "batch_size": 2,
    "tile_px": 128,
    "context_px": 8,
    "seed": 11,
    "progress": False,
}


def _script(slide_dir, ckpt):
    return textwrap.dedent(
        f"""
        import time, pixnet
        from pixnet.model import lightning as L
        step = L.PixNetLightning.training_step
        def slow(self, batch, i):  # slow enough from step 3 on for the test to kill the run mid-epoch
            if self.global_step >= 3:
                time.sleep(1.0)
            return step(self, batch, i)
        L.PixNetLightning.training_step = slow
        sd = pixnet.io.visium_hd({str(slide_dir)!r}, bin_sizes=(16,))
        pixnet.tl.fit(sd, checkpoint_dir={str(ckpt)!r}, checkpoint_every=1, **{RUN!r})
        """
    )


def test_training_resumes_after_a_kill(tmp_path, slide_dir):
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(slide_dir, ckpt)], env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    last, deadline = ckpt / "last.ckpt", time.time() + 300
    while time.time() < deadline:  # wait until it has trained into the second epoch, then kill it
        if last.exists():
            try:
                state = torch.load(last, map_location="cpu", weights_only=False)
            except Exception:  # noqa: BLE001 - being written
                state = {}
            if state.get("global_step", 0) >= 5:
                break
        if proc.poll() is not None:
            pytest.fail("the training process ended before it could be killed")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 5 <= killed_at < 8  # mid-way through the second epoch (4 steps an epoch)

    sd = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    resumed = pixnet.tl.fit(sd, checkpoint_dir=ckpt, checkpoint_every=1, **RUN)
    straight = pixnet.tl.fit(sd, **RUN)
    for (k, a), b in zip(resumed.module.state_dict().items(), straight.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert [r["epoch"] for r in resumed.history] == [0, 1]


def test_checkpoint_dir_of_another_run_is_refused(tmp_path, slide_dir):
    sd = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    pixnet.tl.fit(sd, checkpoint_dir=tmp_path / "c", **{**RUN, "epochs": 1})
    with pytest.raises(ValueError, match="other parameters"):
        pixnet.tl.fit(sd, checkpoint_dir=tmp_path / "c", **{**RUN, "epochs": 1, "seed": 12})
