"""TEST.AMP: the network's inference precision (mask2former/modeling/inference_precision.py, used by
MaskFormer.forward). The fallback to fp32 on CPUs without native bf16, one log line, fp32
post-processing, and bf16-vs-fp32 agreement of all three outputs on a small model whose outputs are
not degenerate. bf16 is forced where the CPU lacks it (slow there, not wrong; the sizes are tiny)."""

import logging
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401
from mask2former.config import load_config
from mask2former.evaluation.agreement import instance_agreement, pooled_iou
from mask2former.modeling.inference_precision import InferencePrecision
from mask2former.utils import precision

DEMO = str(Path(__file__).resolve().parents[2] / "configs/demo/panoptic.yaml")


def blob_image(h=64, w=96, seed=0) -> torch.Tensor:
    """(3, h, w) uint8: six flat-coloured discs on black plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
    img = torch.zeros(3, h, w)
    for _ in range(6):
        cy, cx, r = torch.rand(3, generator=g) * torch.tensor([h, w, 20.0]) + torch.tensor(
            [0, 0, 8]
        )
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = torch.where(disc, torch.rand(3, 1, 1, generator=g) * 255, img)
    return (img + 2 * torch.randn(3, h, w, generator=g)).clamp(0, 255).to(torch.uint8)


def tiny_model(amp: bool, overlap: float = 0.0):
    """The demo config's model (R18, 20 queries, 7 classes) with random weights made decisive:
    decoder layer updates scaled down (random layers otherwise make all queries alike), class head
    and mask embedding scaled up, and the mask features centred on `blob_image()` (else one
    direction common to all pixels lets one query win everywhere), so queries differ in class and
    in where their masks lie. Every query's mask covers about half the image, so panoptic keeps
    segments only without the overlap threshold (`overlap` 0)."""
    cfg = load_config(
        DEMO,
        [
            "MODEL.WEIGHTS", "",
            "TEST.DETECTIONS_PER_IMAGE", "20",
            "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", str(overlap),
            "TEST.AMP.ENABLED", str(amp),
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    pred = model.sem_seg_head.predictor
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pred.named_parameters():
            if "out_proj.weight" in name or "linear2.weight" in name:
                p.mul_(0.2)
        pred.class_embed.weight.copy_(torch.randn(pred.class_embed.weight.shape, generator=g) * 10)
        pred.mask_embed.layers[-1].weight.mul_(5)
        images = model.preprocess_image([{"image": blob_image()}])
        features = model.backbone(images.tensor)
        mask_features = model.sem_seg_head.pixel_decoder.forward_features(features)[0]
        model.sem_seg_head.pixel_decoder.mask_features.bias.sub_(mask_features.mean((0, 2, 3)))
    return model


@pytest.fixture()
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture()
def native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def test_config_keys_and_bad_precision():
    cfg = load_config(DEMO, [])
    assert cfg.TEST.AMP.ENABLED is False and cfg.TEST.AMP.PRECISION == "bfloat16"
    assert InferencePrecision.from_config(cfg).dtype("cpu") is None
    with pytest.raises(ValueError, match="TEST.AMP.PRECISION 'bf16'"):
        InferencePrecision(True, "bf16")


def test_cpu_choice_is_logged_once(no_native_bf16, monkeypatch, caplog):
    p = InferencePrecision(True, "bfloat16")
    with caplog.at_level(logging.INFO):
        assert p.dtype("cpu") is None and p.dtype("cpu") is None
    lines = [r.message for r in caplog.records if "Precision on cpu" in r.message]
    assert len(lines) == 1 and "fp32" in lines[0] and "no native bf16" in lines[0]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert InferencePrecision(True, "float16").dtype("cpu") is torch.bfloat16  # never fp16 on CPU
    assert InferencePrecision(True, "float16").dtype("cuda") is torch.float16
    assert InferencePrecision(True, "bfloat16").network("cpu", training=True).__enter__() is None


def capture_head_dtypes(model) -> list[torch.dtype]:
    seen = []
    model.sem_seg_head.predictor.register_forward_hook(
        lambda m, a, out: seen.append(out["pred_masks"].dtype)
    )
    model.sem_seg_head.pixel_decoder.mask_features.register_forward_hook(
        lambda m, a, out: seen.append(out.dtype)
    )
    return seen


def test_without_native_bf16_runs_fp32_with_identical_outputs(no_native_bf16):
    img = blob_image()
    with torch.no_grad():
        ref = tiny_model(amp=False)([{"image": img}])[0]
        model = tiny_model(amp=True)
        seen = capture_head_dtypes(model)
        out = model([{"image": img}])[0]
    assert seen == [torch.float32, torch.float32]
    assert torch.equal(out["sem_seg"], ref["sem_seg"])
    assert torch.equal(out["panoptic_seg"][0], ref["panoptic_seg"][0])


def test_bf16_agrees_with_fp32_on_all_outputs(native_bf16):
    img = blob_image()
    with torch.no_grad():
        a = tiny_model(amp=False)([{"image": img}])[0]
        model = tiny_model(amp=True)
        seen = capture_head_dtypes(model)
        b = model([{"image": img}])[0]
    # The network ran in bf16 (pixel decoder included), every output is float32.
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert b["sem_seg"].dtype == torch.float32 and b["instances"].scores.dtype == torch.float32

    # Semantic: the outputs are not degenerate (several classes), the argmax agrees.
    sa, sb = a["sem_seg"].argmax(0), b["sem_seg"].argmax(0)
    assert len(sa.unique()) >= 3
    assert (sa == sb).float().mean() >= 0.99

    # Panoptic: several segments, the category of each pixel agrees (-1: void).
    def categories(pan):
        seg, info = pan
        cat = torch.full_like(seg, -1, dtype=torch.int64)
        for s in info:
            cat[seg == s["id"]] = s["category_id"]
        return cat

    # 0.97, not the 0.99 asked of trained weights: here ~15 half-image masks compete at every
    # pixel with near-equal scores (a trained model has one clear winner), measured 0.980.
    assert len(a["panoptic_seg"][1]) >= 3
    assert (categories(a["panoptic_seg"]) == categories(b["panoptic_seg"])).float().mean() >= 0.97

    # Instances: the top-20 classes are the same (every one has a partner of its class, one to
    # one), and the matched masks overlap: pooled IoU >= 0.95 (mask2former.evaluation.agreement).
    ia = a["instances"]
    assert len(ia) >= 10 and len(set(ia.pred_classes.tolist())) >= 3  # top-20, things only
    same = instance_agreement(a, b, top_k=20, min_score=0.0)
    assert same.classes_equal and len(same.overlaps) == len(ia)
    iou = pooled_iou(same.overlaps)
    print(f"semantic {(sa == sb).float().mean():.4f} IoU {iou:.4f}")
    assert iou >= 0.95


def test_allow_emulated_is_the_native_bf16_path(no_native_bf16, monkeypatch, caplog):
    """tools/check_precision.py --allow-emulated: bf16 on a CPU without it natively, logged,
    giving exactly what the TEST.AMP path gives on a CPU with native bf16."""
    assert InferencePrecision(False, allow_emulated=True).dtype("cpu") is None
    assert InferencePrecision(True, "float16", allow_emulated=True).dtype("cuda") is torch.float16
    img = blob_image()
    model = tiny_model(amp=False)
    model.inference_precision = InferencePrecision(True, allow_emulated=True)
    seen = capture_head_dtypes(model)
    with caplog.at_level(logging.INFO), torch.no_grad():
        emulated = model([{"image": img}])[0]
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert any("bf16 (emulated on this CPU" in r.message for r in caplog.records)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model.inference_precision = InferencePrecision(True)
    with torch.no_grad():
        native = model([{"image": img}])[0]
    assert torch.equal(emulated["sem_seg"], native["sem_seg"])
    assert torch.equal(emulated["instances"].scores, native["instances"].scores)
