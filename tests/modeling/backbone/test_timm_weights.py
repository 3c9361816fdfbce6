"""Pretrained timm weights from a local file: equal features, key report, MODEL.WEIGHTS wins."""

import logging

import pytest
import timm
import torch
from detectron2.modeling import build_model

from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.modeling.backbone.timm_weights import load_weights_file

from ._timm_helpers import FAMILIES, build
from .test_timm import tiny_maskformer_cfg


def save_timm_model(family, directory, seed=123):
    """A randomly initialised timm model, saved by timm itself (save_for_hf, .safetensors)."""
    name, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs)
    timm.models.save_for_hf(model, str(directory), safe_serialization=True)
    return directory / "model.safetensors"


def timm_features(family, path):
    """Features of timm's own feature extractor, with timm's own loading of `path`."""
    name, kwargs = FAMILIES[family]
    n = 1 if family == "vit" else 4
    if family == "vit":  # as TimmBackbone creates transformers: position embedding follows input
        kwargs = {**kwargs, "dynamic_img_size": True}
    ref = timm.create_model(
        name,
        features_only=True,
        out_indices=tuple(range(-n, 0)),
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        **kwargs,
    ).eval()
    return ref


@pytest.mark.parametrize("family", ["convnext", "vit", "resnet18"])
def test_pretrained_file_gives_timm_features(family, tmp_path):
    path = save_timm_model(family, tmp_path)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = timm_features(family, path)(x)
        random = build(family, seed=0).eval().forward_features(x)
        loaded = build(family, seed=0, PRETRAINED_FILE=str(path)).eval().forward_features(x)
    assert len(loaded) == len(expected)
    assert max((a - b).abs().max().item() for a, b in zip(random, expected)) > 1e-2
    for a, b in zip(loaded, expected):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-6


def test_timm_training_checkpoint_pth(tmp_path):
    """timm's train.py format: {"state_dict": ..., "epoch": ...} in a .pth file."""
    name, _ = FAMILIES["convnext"]
    torch.manual_seed(5)
    model = timm.create_model(name).eval()
    torch.save({"epoch": 3, "arch": name, "state_dict": model.state_dict()}, tmp_path / "c.pth")
    b = build("convnext", PRETRAINED_FILE=str(tmp_path / "c.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=4, intermediates_only=True)
        got = b(x)
    for a, k in zip(ref, ["res2", "res3", "res4", "res5"]):
        assert (a - got[k]).abs().max().item() <= 1e-6


def test_key_report_lists_missing_and_unexpected(tmp_path, caplog):
    name, _ = FAMILIES["convnext"]
    model = timm.create_model(name)
    sd = model.state_dict()
    sd.pop("stages.3.blocks.1.conv_dw.weight")
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "w.pth")
    target = timm.create_model(name)
    with caplog.at_level(logging.WARNING):
        report = load_weights_file(target, str(tmp_path / "w.pth"))
    assert report["missing"] == ["stages.3.blocks.1.conv_dw.weight"]
    assert report["unexpected"] == ["extra.weight"]
    assert report["ignored"] == ["head.fc.bias", "head.fc.weight"]
    assert "stages.3.blocks.1.conv_dw.weight" in caplog.text and "extra.weight" in caplog.text
    assert torch.equal(target.stem[0].weight, model.stem[0].weight)


def test_bad_files_say_why(tmp_path):
    name, _ = FAMILIES["convnext"]
    model = timm.create_model(name)
    with pytest.raises(FileNotFoundError, match="PRETRAINED_FILE"):
        load_weights_file(model, str(tmp_path / "nope.safetensors"))
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=".safetensors"):
        load_weights_file(model, str(tmp_path / "w.npz"))
    bigger = timm.create_model("convnext_femto").state_dict()
    torch.save(bigger, tmp_path / "femto.pth")
    with pytest.raises(ValueError, match="shape mismatches.*stem.0.weight"):
        load_weights_file(model, str(tmp_path / "femto.pth"))
    torch.save({"a.b": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of its 1 tensors"):
        load_weights_file(model, str(tmp_path / "other.pth"))


def test_model_weights_checkpoint_overrides_timm_weights(tmp_path):
    """MODEL.WEIGHTS (a whole Mask2Former checkpoint) is loaded after the timm file: it wins."""
    path = save_timm_model("convnext", tmp_path / "timm")
    cfg = tiny_maskformer_cfg("convnext")
    cfg.MODEL.TIMM.PRETRAINED_FILE = str(path)
    torch.manual_seed(1)
    source = build_model(cfg)
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(1.0)
    torch.save({"model": source.state_dict()}, tmp_path / "m2f.pth")
    model = build_model(cfg)
    key = "backbone.body.stem.0.weight"
    assert not torch.equal(model.state_dict()[key], source.state_dict()[key])
    MaskFormerCheckpointer(model, strict=True).load(str(tmp_path / "m2f.pth"))
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])


def test_pretrained_offline_says_to_use_a_file(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from mask2former.modeling.backbone.timm_weights import create_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="MODEL.TIMM.PRETRAINED_FILE"):
        create_model("convnext_atto", pretrained=True)
