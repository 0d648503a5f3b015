"""UNI2-h and Virchow2 (timm ViTs with a packed SwiGLU MLP, SiLU and register tokens), from disk and the hub.

Tiny random models of the same layout (depth 2, width 32) are written by the tests in each
checkpoint layout; the hub is replaced at ``huggingface_hub.hf_hub_download`` (or run for real
against a cache the test writes, offline), so nothing is downloaded.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked

import pixnet
from pixnet.model import ModelConfig, PixNet, PixNetModule, build_encoder
from pixnet.model.encoder import resolve_encoder, timm_model
from pixnet.model.vit import ViTPyramid
from pixnet.model.vit_args import CARDS, complete_spec, timm_kwargs

# The cards' arguments at a tiny size (see pixnet.model.vit_args for the sources).
TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 56, "patch_size": 14}
UNI2 = ("vit_giant_patch14_224", {**TINY, "init_values": 1e-5, "mlp_ratio": 2.66667 * 2, "no_embed_class": True,
                                  "reg_tokens": 8})  # fmt: skip
VIRCHOW2 = ("vit_huge_patch14_224", {**TINY, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4, "global_pool": ""})
MODELS = {"uni2": UNI2, "virchow2": VIRCHOW2}
TINY_FIT = {"bin_size": 16, "n_genes": 8, "tile_px": 128, "context_px": 8, "batch_size": 2, "epochs": 1,
            "tiles_per_epoch": 2, "progress": False}  # fmt: skip


def _tiny(which: str) -> torch.nn.Module:
    arch, kwargs = MODELS[which]
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=0, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU,
                             **kwargs)  # fmt: skip


def _hub_folder(path, which: str, *, model_args: dict | None = None) -> torch.nn.Module:
    """A folder as the hub has it: config.json of JSON arguments only (no mlp_layer, act_layer), safetensors."""
    model = _tiny(which)
    arch, kwargs = MODELS[which]
    path.mkdir(parents=True)
    cfg = {"architecture": arch, "num_classes": 0, "model_args": kwargs if model_args is None else model_args,
           "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}  # fmt: skip
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(model.state_dict(), str(path / "model.safetensors"))
    return model


def _check(enc: torch.nn.Module, ref: torch.nn.Module) -> None:
    """The same ViT (tensors and function), and a pyramid fed with the patch tokens only (registers dropped)."""
    assert isinstance(enc, ViTPyramid)
    vit = timm_model(enc)
    assert isinstance(vit.blocks[0].mlp, timm.layers.GluMlp) and isinstance(vit.blocks[0].mlp.act, torch.nn.SiLU)
    assert vit.num_prefix_tokens == ref.num_prefix_tokens and vit.num_reg_tokens == ref.num_reg_tokens
    ref_state = ref.state_dict()
    assert set(vit.state_dict()) == set(ref_state)
    for k, v in vit.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], msg=k)
    x = torch.rand(2, 3, 56, 56)
    torch.testing.assert_close(vit.forward_features(x), ref.forward_features(x))
    seen = []
    hook = vit.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    tiles = torch.rand(2, 3, 64, 96)  # 14 px patches: resized by 14/16, a 4 x 6 token grid
    grids = enc.backbone(tiles)
    hook.remove()
    tokens = seen[0]  # (B, prefix + 24, D): class, registers, patches
    assert tokens.shape[1] == ref.num_prefix_tokens + 24
    patches = tokens[:, ref.num_prefix_tokens :].transpose(1, 2).reshape(2, 32, 4, 6)
    torch.testing.assert_close(grids[-1], patches)
    assert [tuple(f.shape) for f in enc(tiles)] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]


# --- the model cards ------------------------------------------------------------------------------------------


def test_the_cards_build_the_published_architectures():
    expected = {"MahmoodLab/UNI2-h": (681.4, 9, 1536), "paige-ai/Virchow2": (631.2, 5, 1280)}  # M params, prefix tokens
    for repo, (params, prefix, dim) in expected.items():
        card = CARDS[repo]
        with torch.device("meta"):
            m = timm.create_model(card["arch"], num_classes=0, **timm_kwargs(card["kwargs"]))
        assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(params, abs=0.1)
        assert m.num_prefix_tokens == prefix and m.embed_dim == dim
        assert isinstance(m.blocks[0].mlp.act, torch.nn.SiLU)
    # Virchow2's config.json as on the hub lacks the MLP: the card supplies it, JSON-ready
    hub_cfg = {"arch": "vit_huge_patch14_224", "mean": [0.5] * 3, "std": [0.5] * 3,
               "kwargs": {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4, "mlp_ratio": 5.3375,
                          "global_pool": "", "dynamic_img_size": True}}  # fmt: skip
    spec = complete_spec(hub_cfg, None, repo="paige-ai/Virchow2")
    assert spec["kwargs"]["mlp_layer"] == "swiglu_packed" and spec["kwargs"]["act_layer"] == "silu"
    json.dumps(spec)  # saved with the model
    with pytest.raises(ValueError, match="mlp_layer"):
        timm_kwargs({"mlp_layer": "SwiGLUPacked?"})


# --- local checkpoints in each layout -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["uni2", "virchow2"])
def test_timm_folder_whose_config_lacks_the_python_arguments(tmp_path, which):
    ref = _hub_folder(tmp_path / which, which)
    spec, weights = resolve_encoder(str(tmp_path / which))
    assert spec["kwargs"]["mlp_layer"] == "swiglu_packed" and spec["kwargs"]["reg_tokens"] == ref.num_reg_tokens
    _check(build_encoder(str(tmp_path / which)), ref)


def test_folder_with_only_architecture_and_heads_is_read_off_the_weights(tmp_path):
    # registers, the packed MLP and its ratio, layer scale, the class-free position embedding: from the tensors
    ref = _hub_folder(tmp_path / "uni2", "uni2", model_args={"num_heads": 2})
    spec, _ = resolve_encoder(str(tmp_path / "uni2"))
    kw = spec["kwargs"]
    assert (kw["embed_dim"], kw["depth"], kw["patch_size"], kw["reg_tokens"]) == (32, 2, 14, 8)
    assert kw["no_embed_class"] is True and kw["img_size"] == 56 and kw["init_values"] == 1e-5
    _check(build_encoder(str(tmp_path / "uni2")), ref)


@pytest.mark.parametrize(
    ("name", "wrap"),
    [("virchow2.bin", lambda s: s), ("ssl.ckpt", lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}})],
)
def test_state_dict_file_with_its_timm_name(tmp_path, name, wrap):
    torch.manual_seed(0)  # Virchow2's own heads (16, vit_huge's), at width 32
    ref = timm.create_model("vit_huge_patch14_224", num_classes=0, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU,
                            **{**VIRCHOW2[1], "num_heads": 16})  # fmt: skip
    torch.save(wrap(ref.state_dict()), tmp_path / name)
    _check(build_encoder("vit_huge_patch14_224", weights=tmp_path / name), ref)


# --- the hub ----------------------------------------------------------------------------------------------------


def _fake_hub(monkeypatch, repos: dict, calls: list):
    """``hf_hub_download`` replaced: files served from ``repos[repo]`` folders, absent ones as the hub says."""
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def download(repo_id, filename, *, revision=None, **kw):
        calls.append((repo_id, filename, revision))
        src = repos[repo_id] / filename
        if not src.is_file():
            raise RemoteEntryNotFoundError(f"404 {filename}", response=SimpleNamespace(headers={}, request=None))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


@pytest.mark.parametrize(("repo", "which"), [("MahmoodLab/UNI2-h", "uni2"), ("paige-ai/Virchow2", "virchow2")])
def test_hub_name_end_to_end_with_the_download_replaced(tmp_path, monkeypatch, repo, which):
    ref = _hub_folder(tmp_path / "remote", which)
    (tmp_path / "remote" / "pytorch_model.bin").write_bytes(b"never fetched: model.safetensors comes first")
    calls = []
    _fake_hub(monkeypatch, {repo: tmp_path / "remote"}, calls)
    enc = build_encoder(f"hf-hub:{repo}@v1")
    _check(enc, ref)
    fetched = [f for _, f, _ in calls]
    assert fetched == ["config.json", "preprocessor_config.json", "model.safetensors"]  # once; no .bin as well
    assert {r for r, _, _ in calls} == {repo} and {v for _, _, v in calls} == {"v1"}


def test_hub_name_through_the_real_download_code_offline_from_its_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "cache" / "models--MahmoodLab--UNI2-h"
    ref = _hub_folder(repo_dir / "snapshots" / commit, "uni2")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _check(build_encoder("hf-hub:MahmoodLab/UNI2-h"), ref)
    with pytest.raises(ValueError, match="cannot be reached") as err:  # not in the cache, and offline
        build_encoder("hf-hub:paige-ai/Virchow2")
    assert "encoder='/path/to/folder'" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no library traceback


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("GatedRepoError", ["is gated", "accept its licence on https://huggingface.co/MahmoodLab/UNI2-h",
                            "hf auth login", "huggingface-cli login", "encoder='/path/to/folder'"]),
        ("RepositoryNotFoundError", ["was not found", "hf auth login"]),
        ("LocalEntryNotFoundError", ["cannot be reached", "encoder='/path/to/folder'"]),
    ],
)  # fmt: skip
def test_hub_failures_name_their_fix(monkeypatch, error, says):
    import huggingface_hub
    from huggingface_hub import errors

    def download(*a, **kw):
        cls = getattr(errors, error)
        if error == "LocalEntryNotFoundError":
            raise cls("offline")
        raise cls("403 Client Error", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ValueError, match="MahmoodLab/UNI2-h") as err:
        pixnet.model.build_encoder("hf-hub:MahmoodLab/UNI2-h")
    for text in says:
        assert text in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# --- the network and fitting ------------------------------------------------------------------------------------


def test_fit_one_step_with_a_uni2_layout_folder_then_load_offline(sdata, tmp_path):
    _hub_folder(tmp_path / "uni2", "uni2")
    model = pixnet.tl.fit(sdata, encoder=str(tmp_path / "uni2"), model_dir=tmp_path / "m", **TINY_FIT)
    kw = model.config.encoder_spec["kwargs"]
    assert kw["mlp_layer"] == "swiglu_packed" and kw["reg_tokens"] == 8
    net = PixNetModule(ModelConfig(genes=("a", "b"), encoder="x", encoder_spec=model.config.encoder_spec))
    assert net.encoder.feature_info.channels() == [8, 16, 32, 32]
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3, 16, 16)
    shutil.rmtree(tmp_path / "uni2")  # the saved model rebuilds from its spec, without the checkpoint
    loaded = PixNet.load(tmp_path / "m")
    tiles = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict_map(tiles), model.predict_map(tiles), rtol=1e-5, atol=1e-6)
