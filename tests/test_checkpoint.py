"""Checkpoint compatibility: exact published state-dict layouts, and loading zoo-style files."""

import logging
import pickle
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401
from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Names and shapes of the six official checkpoints (copied from the team's reference facts).
KEYS = Path(__file__).parent / "data" / "checkpoint_keys"

KEY_LISTS = {
    "coco_panoptic_R50": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "coco_instance_R50": "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "ade20k_semantic_R50": "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
    "cityscapes_panoptic_R50": "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
    "coco_panoptic_swin_tiny": "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "coco_panoptic_swin_large_IN21k_384_200q": (
        "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    ),
}


def read_key_list(path: Path) -> tuple[dict[str, tuple], int]:
    shapes, params = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("TOTAL_PARAMS_AND_BUFFERS"):
            params = int(line.split()[-1])
            continue
        name, shape = line.split(" ", 1)
        shapes[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes, params


def build(config: str, device: str = "meta", opts=()):
    cfg = load_config(
        str(CONFIGS / config), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts], freeze=False
    )
    with torch.device(device):
        return build_model(cfg)


@pytest.mark.skipif(not KEYS.is_dir(), reason="reference key lists not available")
@pytest.mark.parametrize("name", sorted(KEY_LISTS))
def test_state_dict_matches_published_keys_exactly(name):
    expected, expected_params = read_key_list(KEYS / f"{name}.txt")
    model = build(KEY_LISTS[name])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(expected)) == []  # extra
    assert {k: ours[k] for k in expected if ours[k] != expected[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == expected_params


# ---- loading -------------------------------------------------------------------------------------
R50_PAN = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


@pytest.fixture(scope="module")
def trained_model():
    torch.manual_seed(1)
    return build(R50_PAN, "cpu")


def zoo_pkl(model, path: Path, drop=("criterion.empty_weight",)) -> Path:
    """A file like the published model zoo: numpy arrays, `static_query`, no empty_weight."""
    state = {}
    for k, v in model.state_dict().items():
        if k in drop:
            continue
        k = k.replace("predictor.query_feat.", "predictor.static_query.")
        state[k] = v.numpy()
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "MaskFormer Model Zoo"}, f)
    return path


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_zoo_pkl_maps_static_query_and_reports_nothing(trained_model, tmp_path, caplog):
    path = zoo_pkl(trained_model, tmp_path / "model_final.pkl")
    fresh = build(R50_PAN, "cpu")
    assert not torch.equal(
        fresh.sem_seg_head.predictor.query_feat.weight,
        trained_model.sem_seg_head.predictor.query_feat.weight,
    )
    with caplog.at_level(logging.INFO, logger="mask2former.checkpoint"):
        MaskFormerCheckpointer(fresh, strict=True).load(str(path))
    assert_same_weights(fresh, trained_model)
    assert "static_query.weight -> sem_seg_head.predictor.query_feat.weight" in caplog.text
    assert "NOT FOUND" not in caplog.text and "NOT USED" not in caplog.text


def test_resaved_pth_loads_completely(trained_model, tmp_path):
    """The published hook rewrote keys of re-saved checkpoints (pixel decoder left random)."""
    path = tmp_path / "resaved.pth"
    torch.save({"model": trained_model.state_dict()}, path)
    fresh = build(R50_PAN, "cpu")
    MaskFormerCheckpointer(fresh, strict=True).load(str(path))
    assert_same_weights(fresh, trained_model)


def test_missing_and_unexpected_keys_are_reported_loudly(trained_model, tmp_path, caplog):
    path = zoo_pkl(
        trained_model,
        tmp_path / "partial.pkl",
        drop=("criterion.empty_weight", "sem_seg_head.pixel_decoder.mask_features.weight"),
    )
    with open(path, "rb") as f:
        data = pickle.load(f)
    data["model"]["sem_seg_head.pixel_decoder.pixel_decoder.adapter_1.weight"] = data["model"][
        "sem_seg_head.pixel_decoder.adapter_1.weight"
    ]
    data["model"]["sem_seg_head.predictor.class_embed.bias"] = data["model"][
        "sem_seg_head.predictor.class_embed.bias"
    ][:10]
    with open(path, "wb") as f:
        pickle.dump(data, f)

    fresh = build(R50_PAN, "cpu")
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        MaskFormerCheckpointer(fresh).load(str(path))
    text = caplog.text
    assert "sem_seg_head.pixel_decoder.mask_features.weight" in text and "NOT FOUND" in text
    assert (
        "sem_seg_head.pixel_decoder.pixel_decoder.adapter_1.weight" in text and "NOT USED" in text
    )
    assert "sem_seg_head.predictor.class_embed.bias" in text and "DIFFERENT SHAPE" in text
    assert "criterion.empty_weight" not in text  # optional

    with pytest.raises(RuntimeError, match="mask_features.weight"):
        MaskFormerCheckpointer(fresh, strict=True).load(str(path))


def test_convert_torchvision_keys():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "conv_tv", ROOT / "tools" / "convert-torchvision-to-d2.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    expected, _ = read_key_list(KEYS / "coco_panoptic_R50.txt") if KEYS.is_dir() else ({}, None)
    import torchvision

    names = [mod.convert_key(k) for k in torchvision.models.resnet50().state_dict()]
    names = [n for n in names if n is not None]
    assert len(names) == len(set(names))
    backbone = {k for k in expected if k.startswith("backbone.")}
    if backbone:
        assert set(names) == backbone


def test_convert_tools_write_d2_pickles(tmp_path):
    """Both conversion scripts, loaded by path (their shared code sits next to them in tools/)."""
    import importlib.util

    def load_tool(name):
        spec = importlib.util.spec_from_file_location(
            name.replace("-", "_"), ROOT / "tools" / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    swin = load_tool("convert-pretrained-swin-model-to-d2")
    sd = {
        "patch_embed.proj.weight": torch.ones(4, 3, 2, 2),
        "layers.0.blocks.0.attn_mask": torch.zeros(2, 2),
        "head.weight": torch.ones(3, 4),
        "norm.weight": torch.ones(4),
    }
    torch.save({"model": sd}, tmp_path / "swin.pth")
    assert swin.main([str(tmp_path / "swin.pth"), str(tmp_path / "swin.pkl")]) == 0
    with open(tmp_path / "swin.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["__author__"] == "third_party" and out["matching_heuristics"] is False
    assert list(out["model"]) == ["backbone.patch_embed.proj.weight"]
    assert out["model"]["backbone.patch_embed.proj.weight"].shape == (4, 3, 2, 2)

    tv = load_tool("convert-torchvision-to-d2")
    sd = {
        "conv1.weight": torch.ones(2, 3, 7, 7),
        "bn1.num_batches_tracked": torch.tensor(1),
        "layer1.0.downsample.1.bias": torch.zeros(2),
        "fc.bias": torch.zeros(3),
    }
    torch.save({"state_dict": sd}, tmp_path / "tv.pth")
    assert tv.main([str(tmp_path / "tv.pth"), str(tmp_path / "tv.pkl")]) == 0
    with open(tmp_path / "tv.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["__author__"] == "torchvision"
    assert sorted(out["model"]) == [
        "backbone.res2.0.shortcut.norm.bias",
        "backbone.stem.conv1.weight",
    ]
