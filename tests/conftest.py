import os
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
    """Demo slides and lookup tables go to a per-session folder, not the user's cache."""
    os.environ["PIXNET_DATA"] = str(tmp_path_factory.mktemp("pixnet-data"))


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory):
    """A small synthetic Visium HD run with a rotated grid (the shared slide of most tests)."""
    from pixnet.datasets import visium_hd_demo

    return visium_hd_demo(tmp_path_factory.mktemp("slides") / "small", size_um=320, seed=3, rotation_deg=2.0)


@pytest.fixture(scope="session")
def prefixed_dir(tmp_path_factory):
    from pixnet.datasets import visium_hd_demo

    return visium_hd_demo(
        tmp_path_factory.mktemp("slides") / "prefixed",
        size_um=200,
        seed=4,
        prefix="Visium_HD_Test",
        stain_variation=0.8,
    )


@pytest.fixture
def sdata(slide_dir):
    import pixnet

    return pixnet.io.visium_hd(slide_dir)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, slide_dir):
    """A tiny model fitted once on the small slide's 16 um bins, shared by predict tests."""
    import pixnet

    sd = pixnet.io.visium_hd(slide_dir)
    model = pixnet.tl.fit(
        sd,
        bin_size=16,
        n_genes=20,
        epochs=1,
        tiles_per_epoch=4,
        batch_size=2,
        tile_px=128,
        context_px=8,
        progress=False,
    )
    return model
