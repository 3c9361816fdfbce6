"""TimmBackbone: res2..res5 from timm's feature_info, one training step, freezing, errors."""

import math

import pytest
import timm
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from timm.layers import FrozenBatchNormAct2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d as TimmFrozenBN

from mask2former.config import load_config
from mask2former.modeling.backbone.timm import TimmBackbone, resolve_out_indices

from ._timm_helpers import FAMILIES, build, timm_cfg

RES = ["res2", "res3", "res4", "res5"]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param


def test_features_have_declared_shapes(family):
    backbone = build(family).eval()
    spec = backbone.output_shape()
    assert list(spec) == RES and [spec[k].stride for k in RES] == [4, 8, 16, 32]
    name, kwargs = FAMILIES[family]
    if family != "vit":  # channels and strides as timm's own feature extractor declares them
        ref = timm.create_model(name, features_only=True, out_indices=(-4, -3, -2, -1), **kwargs)
        assert [spec[k].channels for k in RES] == ref.feature_info.channels()
        assert [spec[k].stride for k in RES] == ref.feature_info.reduction()
    else:
        assert [spec[k].channels for k in RES] == [32] * 4  # PYRAMID_CHANNELS
    for size in [(64, 96), (70, 100)]:  # the second is padded to 32 and cropped back
        with torch.no_grad():
            out = backbone(torch.randn(2, 3, *size))
        assert list(out) == RES
        for k in RES:
            s, c = spec[k].stride, spec[k].channels
            assert out[k].shape == (2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
            assert torch.isfinite(out[k]).all()
    assert backbone.size_divisibility == 32


def tiny_maskformer_cfg(family):
    cfg = timm_cfg(family)
    cfg.merge_from_file("configs/demo/Base-DemoShapes.yaml")
    cfg.MODEL.BACKBONE.NAME = "TimmBackbone"
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 2
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.DIM_FEEDFORWARD, mf.NHEADS, mf.NUM_OBJECT_QUERIES = 32, 64, 2, 5
    mf.DEC_LAYERS, mf.TRAIN_NUM_POINTS = 4, 64
    mf.TEST.PANOPTIC_ON = mf.TEST.INSTANCE_ON = False
    return cfg


def test_one_training_step_reaches_every_parameter(family):
    torch.manual_seed(0)
    model = build_model(tiny_maskformer_cfg(family)).train()
    assert isinstance(model.backbone, TimmBackbone)
    batch = []
    for i, (h, w) in enumerate([(64, 64), (64, 96)]):
        inst = Instances((h, w))
        inst.gt_classes = torch.tensor([1, 5])
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, 8:40, 8 + i : 40], masks[1, 30:, 20:] = True, True
        inst.gt_masks = BitMasks(masks)
        batch.append(
            {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8), "instances": inst}
        )
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("backbone.body.") for n, _ in params)
    no_grad = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    # the timm trunk really learns: its first layer's gradient is not all zero
    assert next(p.grad for n, p in params if n.startswith("backbone.body.")).abs().sum() > 0


def test_freeze_at_cnn_freezes_stem_and_stages_with_frozen_bn():
    b = build("resnet18", FREEZE_AT=2)
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert {"body.conv1.weight", "body.layer1.0.conv1.weight"} <= frozen
    assert not any(n.startswith(("body.layer2.", "body.layer3.", "body.layer4.")) for n in frozen)
    assert isinstance(b.body.bn1, TimmFrozenBN) and isinstance(b.body.layer1[1].bn2, TimmFrozenBN)
    assert type(b.body.layer2[0].bn1) is nn.BatchNorm2d  # trainable stages keep their BN
    stats = b.body.bn1.running_mean.clone()
    b.train()(torch.randn(2, 3, 64, 64))
    assert torch.equal(b.body.bn1.running_mean, stats)
    assert all(not p.requires_grad for p in build("resnet18", FREEZE_AT=5).body.parameters())
    assert all(p.requires_grad for p in build("resnet18", FREEZE_AT=0).parameters())


def test_freeze_at_convnext_and_vit():
    b = build("convnext", FREEZE_AT=1)
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in b.named_parameters() if n.startswith("body.stem.")}
    b = build("convnext", FREEZE_AT=3)  # stem, stages.0 (res2), stages.1 (res3)
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert any(n.startswith("body.stages.1.") for n in frozen)
    assert not any(n.startswith(("body.stages.2.", "body.stages.3.")) for n in frozen)
    v = build("vit", FREEZE_AT=1)
    frozen = {n for n, p in v.named_parameters() if not p.requires_grad}
    assert {"body.pos_embed", "body.cls_token", "body.patch_embed.proj.weight"} <= frozen
    assert not any(n.startswith(("body.blocks.", "pyramid.")) for n in frozen)
    v = build("vit", FREEZE_AT=2)  # a plain ViT has no stages: all of it, not the new pyramid
    assert all(not p.requires_grad for p in v.body.parameters())
    assert all(p.requires_grad for p in v.pyramid.parameters())


def test_frozen_bn_everywhere():
    b = build("resnet18", FROZEN_BN=True)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in b.modules())
    assert isinstance(b.body.layer4[1].bn2, (TimmFrozenBN, FrozenBatchNormAct2d))


def test_unknown_model_name_lists_close_names():
    with pytest.raises(ValueError, match="convnext_atto") as e:
        build_cfg_backbone("convnext_ato")
    assert "MODEL.TIMM.NAME" in str(e.value)
    with pytest.raises(ValueError, match="fb_in22k"):
        build_cfg_backbone("convnext_tiny.fb_in22kk")
    with pytest.raises(ValueError, match="MODEL.TIMM.NAME is empty"):
        build_cfg_backbone("")


def build_cfg_backbone(name):
    from detectron2.modeling import build_backbone

    cfg = load_config("", ["MODEL.BACKBONE.NAME", "TimmBackbone"], freeze=False)
    cfg.MODEL.TIMM.NAME = name
    return build_backbone(cfg)


def test_wrong_out_indices_list_the_valid_levels():
    with pytest.raises(ValueError, match=r"0\.\.3.*stride 4, 40 ch \(stages\.0\)"):
        build("convnext", OUT_INDICES=[0, 1, 7])
    with pytest.raises(ValueError, match="distinct powers of two"):
        resolve_out_indices(
            [{"reduction": 8, "num_chs": 2, "module": "a"}] * 2
            + [{"reduction": 16, "num_chs": 2, "module": "b"}],
            [0, 1],
        )
    with pytest.raises(ValueError, match="give one index"):
        build("vit", OUT_INDICES=[0, 1])
    b = build("resnet18", OUT_INDICES=[-3, -2, -1])  # res3..res5 only
    assert list(b.output_shape()) == ["res3", "res4", "res5"]


def test_bad_kwargs_and_patch_size_errors():
    with pytest.raises(ValueError, match="'bogus'.*MODEL.TIMM.KWARGS"):
        build("convnext", KWARGS=_cn({"bogus": 1}))
    kw = {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 224}
    cfg = timm_cfg("vit")
    cfg.MODEL.TIMM.NAME = "vit_small_patch14_dinov2"
    cfg.MODEL.TIMM.KWARGS = _cn(kw)
    from detectron2.modeling import build_backbone

    with pytest.raises(ValueError, match="patch size 14.*patch_size: 16"):
        build_backbone(cfg)
    cfg.MODEL.TIMM.KWARGS = _cn({**kw, "patch_size": 16})
    out = build_backbone(cfg)(torch.randn(1, 3, 64, 64))
    assert out["res2"].shape[-2:] == (16, 16) and out["res5"].shape[-2:] == (2, 2)


def test_fixed_size_vit_says_so():
    b = build("vit", KWARGS=_cn({"depth": 1, "img_size": 64, "dynamic_img_size": False}))
    assert b(torch.randn(1, 3, 64, 64))["res4"].shape[-2:] == (4, 4)
    with pytest.raises(ValueError, match=r"only takes \(64, 64\) inputs"):
        b(torch.randn(1, 3, 64, 96))


def test_kwargs_from_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "MODEL:\n  BACKBONE:\n    NAME: TimmBackbone\n  TIMM:\n    NAME: vit_tiny_patch16_224\n"
        "    KWARGS:\n      depth: 1\n      qkv_bias: false\n"
    )
    cfg = load_config(str(f))
    assert dict(cfg.MODEL.TIMM.KWARGS) == {"depth": 1, "qkv_bias": False}


def _cn(d):
    from detectron2.config import CfgNode

    return CfgNode(d, new_allowed=True)
