"""mask2former/interop/hf_config.py: transformers config.json <-> our YAML configs."""

import copy
from pathlib import Path

import pytest

from mask2former.config import load_config
from mask2former.interop.hf import Layout
from mask2former.interop.hf_config import (
    cfg_from_hf,
    class_names_from_hf,
    class_names_of,
    hf_config_from_cfg,
    layout_from_cfg,
    preprocessor_config_from_cfg,
    yaml_from_hf,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def swin_small_hf(num_labels: int = 133, **kw) -> dict:
    """What a hub config.json of a Swin-S Mask2Former holds (the fields the converter reads)."""
    hf = {
        "model_type": "mask2former",
        "backbone_config": {"model_type": "swin", "embed_dim": 96, "depths": [2, 2, 18, 2],
                            "num_heads": [3, 6, 12, 24], "window_size": 7, "image_size": 224,
                            "drop_path_rate": 0.3, "out_features": STAGES},  # fmt: skip
        "id2label": {str(i): f"name{i}" for i in range(num_labels)},
        "num_queries": 100, "decoder_layers": 10, "hidden_dim": 256, "feature_size": 256,
        "mask_feature_size": 256, "encoder_layers": 6, "num_attention_heads": 8,
        "dim_feedforward": 2048, "class_weight": 2.0, "mask_weight": 5.0, "dice_weight": 5.0,
    }  # fmt: skip
    hf.update(kw)
    return hf


def test_coco_panoptic_swin_small():
    cfg, base = cfg_from_hf(swin_small_hf())
    assert base.endswith("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    m = cfg.MODEL
    assert m.BACKBONE.NAME == "D2SwinTransformer" and m.SWIN.DEPTHS == [2, 2, 18, 2]
    assert m.SWIN.NUM_HEADS == [3, 6, 12, 24] and m.SWIN.WINDOW_SIZE == 7
    assert m.SEM_SEG_HEAD.NUM_CLASSES == 133 and m.MASK_FORMER.DEC_LAYERS == 10
    assert cfg.DATASETS.TRAIN == ("coco_2017_train_panoptic",) and cfg.INPUT.FORMAT == "RGB"
    assert m.MASK_FORMER.TEST.PANOPTIC_ON
    # The same model as our paper config for Swin-S (the values that shape the weights).
    paper = load_config(str(CONFIGS / "coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml"))  # fmt: skip
    assert layout_from_cfg(cfg) == layout_from_cfg(paper)
    for key in ("EMBED_DIM", "DEPTHS", "NUM_HEADS", "WINDOW_SIZE", "MLP_RATIO", "QKV_BIAS"):
        assert cfg.MODEL.SWIN[key] == paper.MODEL.SWIN[key], key


@pytest.mark.parametrize(
    "name,task,folder",
    [
        ("facebook/mask2former-swin-small-ade-semantic", None, "ade20k/semantic"),
        ("facebook/mask2former-swin-small-ade-panoptic", None, "ade20k/panoptic"),
        ("my-finetune", None, "ade20k/semantic"),
        ("facebook/mask2former-swin-small-ade-semantic", "panoptic", "ade20k/panoptic"),
    ],
)
def test_the_task_picks_between_configs_with_the_same_classes(name, task, folder):
    _, base = cfg_from_hf(swin_small_hf(150, _name_or_path=name), task=task)
    assert f"/{folder}-segmentation/" in base


def test_unknown_class_count_has_no_dataset_and_semantic_output_only(tmp_path):
    hf = swin_small_hf(3)
    hf["id2label"] = {"0": "road", "1": "car", "2": "sky"}
    cfg, base = cfg_from_hf(hf)
    assert cfg.DATASETS.TRAIN == () and cfg.DATASETS.TEST == ()
    mf = cfg.MODEL.MASK_FORMER.TEST
    assert mf.SEMANTIC_ON and not mf.PANOPTIC_ON and not mf.INSTANCE_ON
    text = yaml_from_hf(cfg, base, class_names_from_hf(hf), "some/dir")
    assert "#   2: sky" in text and "register yours" in text
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(str(tmp_path / "c.yaml")).MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3


def test_preprocessor_mean_std_and_test_size():
    pre = {"image_mean": [0.5, 0.25, 0.0], "image_std": [0.2, 0.2, 0.4],
           "size": {"shortest_edge": 384, "longest_edge": 1024}}  # fmt: skip
    cfg, _ = cfg_from_hf(swin_small_hf(), preprocessor=pre)
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([127.5, 63.75, 0.0])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([51.0, 51.0, 102.0])
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (384, 1024)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"encoder_feedforward_dim": 2048}, "encoder_feedforward_dim"),
        ({"activation_function": "gelu"}, "activation"),
        ({"backbone_config": None, "backbone": "swin_tiny", "use_timm_backbone": True}, "timm"),
        ({"backbone_config": {"model_type": "convnext"}}, "convnext"),
        ({"id2label": {"0": "a", "2": "b"}}, "0..K-1"),
    ],
)
def test_what_cannot_be_converted_is_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        cfg_from_hf(swin_small_hf(**change))


def test_absolute_position_embeddings_are_refused():
    hf = swin_small_hf()
    hf["backbone_config"]["use_absolute_embeddings"] = True
    with pytest.raises(ValueError, match="absolute"):
        cfg_from_hf(hf)


@pytest.mark.parametrize(
    "config",
    [
        "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
        "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml",
        "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
    ],
)
def test_ours_to_config_json_and_back_keeps_the_model(config):
    cfg = load_config(str(CONFIGS / config))
    names = class_names_of(cfg)
    hf = hf_config_from_cfg(cfg, names)
    back, base = cfg_from_hf(copy.deepcopy(hf), opts=["MODEL.RESNETS.NORM", cfg.MODEL.RESNETS.NORM])
    assert layout_from_cfg(back) == layout_from_cfg(cfg)
    for key in ("NUM_OBJECT_QUERIES", "HIDDEN_DIM", "NHEADS", "DIM_FEEDFORWARD", "DEC_LAYERS"):
        assert back.MODEL.MASK_FORMER[key] == cfg.MODEL.MASK_FORMER[key], key
    assert back.MODEL.SEM_SEG_HEAD.NUM_CLASSES == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert back.DATASETS.TRAIN == cfg.DATASETS.TRAIN  # same dataset, same task, found again
    assert class_names_from_hf(hf) == names


def test_class_names_come_from_the_dataset_metadata():
    cfg = load_config(str(CONFIGS / "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml"))
    names = class_names_of(cfg)
    assert len(names) == 80 and names[:2] == ["person", "bicycle"]
    cfg = load_config(str(CONFIGS / "cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml"))  # fmt: skip
    assert class_names_of(cfg)[:3] == ["road", "sidewalk", "building"]


def test_layout_of_published_configs():
    cs = load_config(
        str(CONFIGS / "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml")
    )
    assert layout_from_cfg(cs) == Layout("resnet", (3, 4, 6, 3), bn_counters=True)
    fpn = load_config(str(CONFIGS / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"),
                      ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder"])  # fmt: skip
    with pytest.raises(ValueError, match="PIXEL_DECODER_NAME"):
        layout_from_cfg(fpn)


def test_preprocessor_config_for_transformers():
    cfg = load_config(str(CONFIGS / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"))
    pre = preprocessor_config_from_cfg(cfg)
    assert pre["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert pre["size"] == {"shortest_edge": 512, "longest_edge": 2048}
    bgr = load_config(str(CONFIGS / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"),
                      ["INPUT.FORMAT", "BGR"])  # fmt: skip
    assert preprocessor_config_from_cfg(bgr)["image_mean"] == pytest.approx([0.406, 0.456, 0.485])
