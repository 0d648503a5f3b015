"""Encoders from every checkpoint layout (tiny random models written to tmp_path), ViT pyramids, fitting."""

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import pixnet
from pixnet.model import ModelConfig, PixNet, PixNetModule, build_encoder
from pixnet.model.checkpoints import folder_config, read_state_dict
from pixnet.model.encoder import resolve_encoder, timm_model
from pixnet.model.vit import ViTPyramid

TINY_VIT = {"depth": 4, "embed_dim": 32, "num_heads": 2, "img_size": 64}
TINY_FIT = {"bin_size": 16, "n_genes": 8, "tile_px": 128, "context_px": 8, "batch_size": 2, "epochs": 1,
            "tiles_per_epoch": 2, "progress": False}  # fmt: skip
H_OPTIMUS_MEAN = [0.707223, 0.578729, 0.703617]  # H-optimus-0's pretrained_cfg: not ImageNet's


def _vit(patch: int = 16, arch: str = "vit_tiny_patch16_224") -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=0, patch_size=patch, **TINY_VIT)


def _resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False)


def _same(a: torch.nn.Module, b_state: dict) -> None:
    a_state = a.state_dict()
    shared = [k for k in a_state if k in b_state]
    assert len(shared) >= 0.9 * len(a_state)
    for k in shared:
        torch.testing.assert_close(a_state[k], b_state[k], msg=k)


def _hf_keys(vit: torch.nn.Module, prefix: str = "vit.") -> dict:
    """A timm ViT's tensors named as transformers' ViTModel names them (Phikon's layout)."""
    s, out = vit.state_dict(), {}
    out[prefix + "embeddings.cls_token"] = s["cls_token"]
    out[prefix + "embeddings.position_embeddings"] = s["pos_embed"]
    for t in ("weight", "bias"):
        out[f"{prefix}embeddings.patch_embeddings.projection.{t}"] = s[f"patch_embed.proj.{t}"]
        out[f"{prefix}layernorm.{t}"] = s[f"norm.{t}"]
        out[f"{prefix}pooler.dense.{t}"] = torch.zeros(3)
        for i in range(len(vit.blocks)):
            hf = f"{prefix}encoder.layer.{i}."
            q, k, v = s[f"blocks.{i}.attn.qkv.{t}"].chunk(3)
            out[hf + f"attention.attention.query.{t}"], out[hf + f"attention.attention.key.{t}"] = q, k
            out[hf + f"attention.attention.value.{t}"] = v
            out[hf + f"attention.output.dense.{t}"] = s[f"blocks.{i}.attn.proj.{t}"]
            out[hf + f"intermediate.dense.{t}"] = s[f"blocks.{i}.mlp.fc1.{t}"]
            out[hf + f"output.dense.{t}"] = s[f"blocks.{i}.mlp.fc2.{t}"]
            out[hf + f"layernorm_before.{t}"] = s[f"blocks.{i}.norm1.{t}"]
            out[hf + f"layernorm_after.{t}"] = s[f"blocks.{i}.norm2.{t}"]
    return out


def _phikon_folder(path, vit) -> None:
    path.mkdir()
    cfg = {"model_type": "vit", "architectures": ["ViTModel"], "hidden_size": 32, "num_hidden_layers": 4,
           "num_attention_heads": 2, "intermediate_size": 128, "patch_size": 16, "image_size": 64,
           "layer_norm_eps": 1e-12, "qkv_bias": True}  # fmt: skip
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": H_OPTIMUS_MEAN, "image_std": [0.2] * 3}))
    torch.save(_hf_keys(vit), path / "pytorch_model.bin")


def _timm_folder(path, model, mean=None) -> None:
    from timm.models import save_for_hf

    model_config = {"pretrained_cfg": {"mean": tuple(mean), "std": (0.2, 0.2, 0.2)}} if mean else None
    args = TINY_VIT if hasattr(model, "blocks") else None
    save_for_hf(model, str(path), model_config=model_config, model_args=args, safe_serialization=True)


# --- state dict files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("tenpercent_resnet18.ckpt", lambda s: {"state_dict": {f"model.resnet.{k}": v for k, v in s.items()}}),
        ("dp.pth", lambda s: {f"module.{k}": v for k, v in s.items()}),
        ("ssl.pt", lambda s: {"model": {f"backbone.{k}": v for k, v in s.items()}, "epoch": 3}),
        ("plain.safetensors", dict),
    ],
)
def test_resnet_state_dict_layouts(tmp_path, name, wrap):
    ref = _resnet()
    state = wrap(ref.state_dict())
    path = tmp_path / name
    save_file(state, str(path)) if name.endswith(".safetensors") else torch.save(state, path)
    enc = build_encoder("resnet18", weights=path)  # a timm name and weights from the file
    _same(enc, ref.state_dict())
    enc2 = build_encoder(str(path))  # or the file alone: ResNets are recognised from their keys
    _same(enc2, ref.state_dict())
    assert enc2.feature_info.channels() == [64, 64, 128, 256, 512]


def test_vit_state_dict_and_its_errors(tmp_path):
    ref = _vit()
    torch.save({"state_dict": {f"model.encoder.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "vit.ckpt")
    spec = {"arch": "vit_tiny_patch16_224", "kwargs": TINY_VIT, "mean": [0.5] * 3, "std": [0.5] * 3}
    enc = build_encoder("vit_tiny_patch16_224", weights=tmp_path / "vit.ckpt", spec=spec)
    assert isinstance(enc, ViTPyramid)
    _same(timm_model(enc), ref.state_dict())
    with pytest.raises(ValueError, match="encoder=<timm name>"):  # a bare ViT file: the heads are unknown
        build_encoder(str(tmp_path / "vit.ckpt"))
    with pytest.raises(ValueError, match="matches only"):  # the wrong architecture is refused
        build_encoder("resnet18", weights=tmp_path / "vit.ckpt")
    with pytest.raises(FileNotFoundError):
        build_encoder(str(tmp_path / "nothing.pt"))
    with pytest.raises(ValueError, match="not a timm model"):
        build_encoder("resnet_eighteen")


# --- folders -----------------------------------------------------------------------------------------------


def test_timm_folder_vit_with_its_own_normalisation(tmp_path):
    ref = _vit()
    _timm_folder(tmp_path / "uni", ref, mean=H_OPTIMUS_MEAN)
    spec = folder_config(tmp_path / "uni")
    assert spec["arch"] == "vit_tiny_patch16_224" and spec["kwargs"]["embed_dim"] == 32
    enc = build_encoder(str(tmp_path / "uni"))
    _same(timm_model(enc), ref.state_dict())
    np.testing.assert_allclose(enc.feature_info[0]["mean"], H_OPTIMUS_MEAN, rtol=1e-6)


def test_timm_folder_resnet(tmp_path):
    ref = _resnet()
    _timm_folder(tmp_path / "r18", ref)
    _same(build_encoder(str(tmp_path / "r18")), ref.state_dict())
    _same(build_encoder("resnet18", weights=tmp_path / "r18"), ref.state_dict())


def test_transformers_vit_folder_is_mapped_to_timm(tmp_path):
    ref = _vit()
    _phikon_folder(tmp_path / "phikon", ref)
    assert set(read_state_dict(tmp_path / "phikon")) >= set(ref.state_dict())
    enc = build_encoder(str(tmp_path / "phikon"))
    _same(timm_model(enc), ref.state_dict())
    assert enc.feature_info[0]["mean"] == tuple(H_OPTIMUS_MEAN)
    x = torch.rand(1, 3, 64, 64)  # the same function, not only the same tensors
    torch.testing.assert_close(timm_model(enc).forward_features(x), ref.forward_features(x))


def test_hub_names_are_fetched_then_read_as_folders(tmp_path, monkeypatch):
    import huggingface_hub

    _timm_folder(tmp_path / "snapshot", _vit(), mean=H_OPTIMUS_MEAN)
    calls = []

    def fake_download(repo, filename, revision=None):  # the network call, replaced (one file at a time)
        calls.append((repo, revision))
        return str(tmp_path / "snapshot" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec, weights = resolve_encoder("hf-hub:bioptimus/H-optimus-0@main")
    assert set(calls) == {("bioptimus/H-optimus-0", "main")} and weights == str(tmp_path / "snapshot")
    assert spec["mean"] == pytest.approx(H_OPTIMUS_MEAN)


# --- the pyramid and the network -----------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "patch"), [("vit_tiny_patch16_224", 16), ("vit_small_patch14_reg4_dinov2", 14)])
def test_vit_pyramid_channels_and_map_shape(arch, patch):
    spec = {"arch": arch, "kwargs": {**TINY_VIT, "patch_size": patch}, "mean": [0.5] * 3, "std": [0.5] * 3}
    net = PixNetModule(ModelConfig(genes=("a", "b"), encoder=arch, encoder_spec=spec, decoder_hidden=16))
    info = net.encoder.feature_info
    assert info.channels() == [8, 16, 32, 32] and info.reduction() == [4, 8, 16, 32]
    x = torch.rand(2, 3, 96, 128)  # not the ViT's 64 px: the position embedding is interpolated
    feats = net.encoder(x)
    shapes = [(2, c, 96 // r, 128 // r) for c, r in zip(info.channels(), [4, 8, 16, 32])]
    assert [tuple(f.shape) for f in feats] == shapes
    assert net(x).shape == (2, 3, 24, 32)  # two genes + "other", at map stride 4


def test_fit_one_step_with_a_vit_folder_then_load_offline(sdata, tmp_path):
    _phikon_folder(tmp_path / "phikon", _vit())
    model = pixnet.tl.fit(sdata, encoder=str(tmp_path / "phikon"), model_dir=tmp_path / "m", **TINY_FIT)
    assert model.config.encoder_spec["kwargs"]["embed_dim"] == 32
    assert model.config.encoder_weights == str(tmp_path / "phikon")
    shutil.rmtree(tmp_path / "phikon")  # the saved model no longer needs its encoder's checkpoint
    loaded = PixNet.load(tmp_path / "m")
    tiles = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict_map(tiles), model.predict_map(tiles), rtol=1e-5, atol=1e-6)


def test_fit_one_step_with_the_histology_resnet_layout(sdata, tmp_path):
    ref = _resnet()
    torch.save({"state_dict": {f"model.resnet.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "t.ckpt")
    model = pixnet.tl.fit(sdata, encoder="resnet18", encoder_weights=str(tmp_path / "t.ckpt"), **TINY_FIT)
    assert model.config.encoder_spec is None and model.history
