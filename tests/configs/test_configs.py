"""Every model config under configs/ builds (on the meta device) with the expected size.

Expected parameter counts = backbone-and-pixel-decoder base + class head (K+1) * 257
+ queries Q * 2 * 256. The bases come from the published key lists (R50 FrozenBN/SyncBN,
Swin-T, Swin-L: `../shared/reference/checkpoint_keys`), and by construction from them:
R101 = R50 + 17 res4 bottlenecks (+ their SyncBN affine parameters), Swin-S = Swin-T + 12
stage-3 blocks. Swin-B matches the paper's 107M (Table 1 & 2). The paper reports 44M (R50),
63M (R101), 47M (Swin-T), 69M (Swin-S), 107M (Swin-B), 216M (Swin-L 200 queries).
"""

from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model parts)
from mask2former.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

R50 = 43_983_878 - 134 * 257 - 100 * 512  # coco_panoptic_R50 key list
R50_SYNCBN = 44_007_700 - 20 * 257 - 100 * 512  # cityscapes_panoptic_R50 key list
RES4_BLOCK = 1024 * 256 + 256 * 256 * 9 + 256 * 1024  # conv weights of one res4 bottleneck
RES4_BLOCK_BN = 2 * (256 + 256 + 1024)  # its SyncBN weight + bias
SWIN_T = 47_435_264 - 134 * 257 - 100 * 512  # coco_panoptic_swin_tiny key list
SWIN_BLOCK_384 = (
    2 * 384
    + 169 * 12
    + (384 * 1152 + 1152)
    + (384 * 384 + 384)
    + 2 * 384
    + (384 * 1536 + 1536)
    + (1536 * 384 + 384)
)
SWIN_L = 215_535_610 - 134 * 257 - 200 * 512  # coco_panoptic_swin_large_IN21k_384_200q key list
BASE = {
    ("R50", False): R50,
    ("R50", True): R50_SYNCBN,
    ("R101", False): R50 + 17 * RES4_BLOCK,
    ("R101", True): R50_SYNCBN + 17 * (RES4_BLOCK + RES4_BLOCK_BN),
    ("swin_tiny", None): SWIN_T,
    ("swin_small", None): SWIN_T + 12 * SWIN_BLOCK_384,
    ("swin_base", None): 106_832_184,
    ("swin_large", None): SWIN_L,
}
PAPER_MILLIONS = {
    "R50": 44,
    "R101": 63,
    "swin_tiny": 47,
    "swin_small": 69,
    "swin_base": 107,
    "swin_large": 216,
}


def model_configs() -> list[Path]:
    return sorted(
        p
        for p in CONFIGS.rglob("*.yaml")
        if "demo" not in p.parts
        and not p.name.startswith("Base-")
        # configs/*/timm/: this project's timm-backbone configs (tests/modeling/backbone/)
        and "timm" not in p.relative_to(CONFIGS).parts
    )


def backbone_of(cfg) -> tuple[str, bool | None]:
    if cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer":
        name = {
            96: "swin_small" if cfg.MODEL.SWIN.DEPTHS[2] == 18 else "swin_tiny",
            128: "swin_base",
            192: "swin_large",
        }
        return name[cfg.MODEL.SWIN.EMBED_DIM], None
    return f"R{cfg.MODEL.RESNETS.DEPTH}", cfg.MODEL.RESNETS.NORM == "SyncBN"


def test_all_image_configs_present():
    names = {str(p.relative_to(CONFIGS)) for p in model_configs()}
    assert len(names) == 47, sorted(names)  # 57 published image configs, 10 of them Base-*
    bases = [p for p in CONFIGS.rglob("Base-*.yaml") if "demo" not in p.parts]
    assert len(bases) == 10


@pytest.mark.parametrize("path", model_configs(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_builds_with_expected_parameter_count(path):
    cfg = load_config(str(path), ["MODEL.DEVICE", "meta"], freeze=False)
    with torch.device("meta"):
        model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    backbone = backbone_of(cfg)
    K, Q = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    assert n == BASE[backbone] + (K + 1) * 257 + Q * 512
    paper = PAPER_MILLIONS[backbone[0]]
    # The paper's counts are for 100 queries (200 for Swin-L) and COCO's 133 classes.
    assert abs(n / 1e6 - paper) < 0.7, (n, paper)


def test_configs_hold_the_published_values():
    """Spot checks of section 2 of the reference inventory."""
    cfg = load_config(str(CONFIGS / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"))
    mf = cfg.MODEL.MASK_FORMER
    assert (
        mf.DEC_LAYERS,
        mf.NUM_OBJECT_QUERIES,
        mf.CLASS_WEIGHT,
        mf.MASK_WEIGHT,
        mf.DICE_WEIGHT,
    ) == (10, 100, 2.0, 5.0, 5.0)
    assert (mf.TEST.SEMANTIC_ON, mf.TEST.INSTANCE_ON, mf.TEST.PANOPTIC_ON) == (True, True, True)
    assert cfg.SOLVER.STEPS == (327778, 355092) and cfg.SOLVER.MAX_ITER == 368750
    assert cfg.INPUT.DATASET_MAPPER_NAME == "coco_panoptic_lsj"
    cfg = load_config(
        str(
            CONFIGS
            / "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
        )
    )
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200 and cfg.SOLVER.MAX_ITER == 737500
    assert cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE == 384 and cfg.MODEL.SWIN.WINDOW_SIZE == 12
    cfg = load_config(str(CONFIGS / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"))
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(int(x * 0.1 * 512) for x in range(5, 21))
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR" and cfg.INPUT.SIZE_DIVISIBILITY == 512
    cfg = load_config(
        str(CONFIGS / "mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml")
    )
    assert (
        cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD == 0.0
        and cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 65
    )
    cfg = load_config(
        str(CONFIGS / "cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml")
    )
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and tuple(cfg.INPUT.CROP.SIZE) == (512, 1024)
    for p in model_configs():  # every model config is a MaskFormer with the paper's decoder
        c = load_config(str(p))
        assert c.MODEL.META_ARCHITECTURE == "MaskFormer" and c.MODEL.MASK_FORMER.DEC_LAYERS == 10
