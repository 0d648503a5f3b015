import json
import logging
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
        from pixnet.train import module as L
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
        [sys.executable, "-c", _script(slide_dir, ckpt)],
        # the same torch threads as this process, which trains the rest: bitwise equality depends on them
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(torch.get_num_threads())},
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


def _predict_script(store, model_dir):
    return textwrap.dedent(
        f"""
        import sys, time, zarr, spatialdata as sd, pixnet
        setitem = zarr.Array.__setitem__
        def slow(self, key, value):  # announce the first chunk of the map's element, then stall until killed
            if "images/pixnet_map" in str(self.store_path):
                print("WRITING", self.store_path, flush=True)
                time.sleep(600)
            return setitem(self, key, value)
        zarr.Array.__setitem__ = slow
        sdata = sd.read_zarr({str(store)!r})
        pixnet.tl.predict(sdata, model=pixnet.PixNet.load({str(model_dir)!r}), bin_size=16, progress=False)
        """
    )


def test_a_predict_killed_mid_write_leaves_the_store_intact(tmp_path, slide_dir, trained):
    import numpy as np
    import spatialdata as sd

    full = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    store = tmp_path / "slide.zarr"
    sd.SpatialData(
        images={"_full_image": full.images["_full_image"]}, shapes={"_square_016um": full.shapes["_square_016um"]},
        tables={"square_016um": full.tables["square_016um"]}, attrs=full.attrs,
    ).write(store)  # fmt: skip
    backed = sd.read_zarr(store)
    earlier = pixnet.tl.predict(backed, model=trained, bin_size=16, key_added="earlier", progress=False)
    before = sorted(sd.read_zarr(store).elements_paths_on_disk())
    trained.save(tmp_path / "model")

    proc = subprocess.Popen(
        [sys.executable, "-c", _predict_script(store, tmp_path / "model")], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    line = proc.stdout.readline()  # blocks until the map's chunks are being written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert line.startswith("WRITING"), line

    again = sd.read_zarr(store)  # opens, with every earlier element as it was
    assert sorted(again.elements_paths_on_disk()) == before
    np.testing.assert_array_equal(np.asarray(again.tables["earlier_square_016um"].X), np.asarray(earlier.X))
    assert again.tables["square_016um"].n_obs == full.tables["square_016um"].n_obs
    level0 = pixnet.data.image_levels(again.images["earlier_map"])[0]
    assert np.isfinite(level0.data.compute()).all()
    # the killed run's working folders are left beside the store, named after it
    left = sorted(p.name for p in tmp_path.glob(".pixnet-*"))
    assert left and all(f"-{proc.pid}-" in name for name in left), left
    # and the interrupted prediction can simply be run again: it removes them
    pixnet.tl.predict(again, model=trained, bin_size=16, progress=False)
    assert "pixnet_map" in sd.read_zarr(store).images
    assert not list(tmp_path.glob(".pixnet-*"))


def test_working_folders_of_processes_gone_are_swept_and_no_others(tmp_path, caplog):
    """Folders named for a process of this host that no longer runs go; this process's, another host's, other names stay."""
    from pixnet.infer import scratch

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    host = scratch._host()
    mine = scratch.scratch_folder(tmp_path, "pixnet_map")
    assert mine.name.startswith(f".pixnet-pixnet_map-{host}-{os.getpid()}-")
    (mine / "chunk").write_bytes(b"x" * 10)
    names = {
        "dead": f".pixnet-pixnet_map-{host}-{dead}-ab12_xyz",
        "dead_dashed": f".pixnet-my-key-square_008um-{host}-{dead}-q9w8e7r6",
        "kept_previous": f".pixnet-pixnet_square_016um-{host}-{dead}-zz99zz99",
        "other_host": f".pixnet-pixnet_map-{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead}-abcdefgh",
        "old_style": ".pixnet-scratch-gvzeeuv8",
        "not_ours": ".pixnet-notes",
    }
    for name in names.values():
        (tmp_path / name / "level0.zarr").mkdir(parents=True)
        (tmp_path / name / "level0.zarr" / "c0").write_bytes(b"y" * 1000)
    (tmp_path / names["kept_previous"] / "previous").mkdir()
    with caplog.at_level(logging.INFO, logger="pixnet.infer.scratch"):
        removed = scratch.sweep(tmp_path)
        scratch.sweep(tmp_path)  # the kept folder's warning is said once
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["dead_dashed"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, names["kept_previous"], names["other_host"], names["old_style"], names["not_ours"]]
    )
    assert (mine / "chunk").read_bytes() == b"x" * 10
    assert "removed 2 working folders" in caplog.text
    assert caplog.text.count("previous") == 1 and names["kept_previous"] in caplog.text


_BIG_IMAGE = """
import json, resource, sys, time
import dask.array as da, numpy as np, spatialdata as sd
from spatialdata.models import Image2DModel
import pixnet
model = pixnet.PixNet.load(sys.argv[1])
small = pixnet.io.visium_hd(sys.argv[2], bin_sizes=(16,))
tile = np.asarray(pixnet.data.image_levels(small.images[small.attrs["pixnet"]["image"]])[0].data)  # (3, h, w) uint8, a few MB
side = int(sys.argv[3])  # 20k: a 20k x 20k H&E, 1.2 GB if it were ever held in memory
reps = (1, -(-side // tile.shape[1]), -(-side // tile.shape[2]))
image = da.tile(da.from_array(tile, chunks=tile.shape), reps)[:, :side, :side].rechunk((3, 2048, 2048))
he = sd.SpatialData(images={"he": Image2DModel.parse(image, dims=("c", "y", "x"))})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.time()
table = pixnet.tl.predict(he, model=model, bin_size=32, um_per_px=small.attrs["pixnet"]["um_per_px"], progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "bins": table.n_obs, "s": time.time() - t0,
                  "finite": bool(np.isfinite(np.asarray(table.X)).all())}))
"""


def _peak_over_base(model_dir, slide_dir, side: int) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", _BIG_IMAGE, str(model_dir), str(slide_dir), str(side)],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["finite"]
    return {**out, "extra": out["peak"] - out["base"]}


def test_a_20k_image_predicts_in_bounded_memory(tmp_path, slide_dir):
    # A model at 2 um/px keeps the network's share small; the image is still read whole, in chunks.
    sdata = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    model = pixnet.tl.fit(sdata, **{**RUN, "epochs": 1, "um_per_px": 2.0, "tile_px": 64, "context_px": 8})
    model.save(tmp_path / "model")
    small = _peak_over_base(tmp_path / "model", slide_dir, 10_000)  # already several tiles in flight
    big = _peak_over_base(tmp_path / "model", slide_dir, 20_000)
    print({"10k": small, "20k": big})
    assert big["bins"] > 3 * small["bins"]  # 32 um bins over the tissue: 4x the area
    # Memory is bounded by the tile, not the slide: 4x the pixels (1.2 GB of image) cost about the same,
    # where reading the image whole took 3.7 GB more than the base before pixnet read it in chunks.
    assert big["extra"] < small["extra"] + 0.3 * 2**30
    assert big["extra"] < 1.5 * 2**30


TRIM_CHILD = """
import ctypes, os, sys, threading
import numpy as np
from pixnet._memory import _malloc_trim, trim
if _malloc_trim() is None:
    print("no-glibc"); sys.exit(0)
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def churn():  # as the network's forward does: large blocks freed in a worker thread's arena
    big = np.ones(30 * 2**20 // 8)  # freed below: glibc raises its mmap threshold to its size (<= 32 MB)
    del big
    blocks = [np.ones(4 * 2**20 // 8) for _ in range(100)]  # 400 MB in the arena, not mmapped
    keep = np.ones(1000)
    del blocks
    held.append(keep)
held = []
t = threading.Thread(target=churn); t.start(); t.join()
before = rss(); trim(force=True); after = rss()
print(before - after)
"""


def test_trim_hands_freed_arena_memory_back():
    """glibc keeps memory freed by a thread; pixnet._memory.trim (called by predict) gives it back."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True, check=True).stdout.strip()
    if out == "no-glibc":
        pytest.skip("malloc_trim is glibc's")
    assert int(out) > 300 * 2**20  # of the 400 MB freed


RESIDENT_CHILD = r"""
import resource, torch
from pixnet import _memory

if _memory._mallopt() is None:
    print("no-glibc")
    raise SystemExit


def faults_of_a_block_freed_and_made_again(mb=96):  # torch's, as the network's activations (numpy asks for huge pages)
    # made, touched, freed twice first: the first block may end below a small block allocated after it, where the
    # next request (posix_memalign's, padded) does not fit; the second then comes from the heap's top, and is reused
    torch.ones(mb * 2**18)
    torch.ones(mb * 2**18)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mb * 2**18)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


before = faults_of_a_block_freed_and_made_again()
with _memory.resident():
    with _memory.resident():  # nested: the inner end leaves the outer's settings
        pass
    assert _memory._DEPTH[0] == 1
    inside = faults_of_a_block_freed_and_made_again()
after = faults_of_a_block_freed_and_made_again()
print(before, inside, after, _memory._DEPTH[0])
"""


def test_resident_keeps_freed_blocks_for_reuse_and_ends_as_it_began():
    """Inside resident() a large block freed and made again faults no pages in; outside, each page faults again."""
    out = subprocess.run([sys.executable, "-c", RESIDENT_CHILD], capture_output=True, text=True, check=True).stdout
    if out.strip() == "no-glibc":
        pytest.skip("mallopt is glibc's")
    before, inside, after, depth = map(int, out.split())
    pages = 96 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert before > pages // 2 and after > pages // 2  # glibc maps a 96 MB block afresh (over its 32 MB at most)
    assert inside < pages // 20
    assert depth == 0
