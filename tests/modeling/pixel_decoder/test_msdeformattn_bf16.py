"""The MSDeformAttn pixel decoder under bf16 autocast (mask2former/modeling/pixel_decoder/
msdeformattn.py): the projections, encoder and convolutions run in bf16, the deformable sampling
locations and attention weights in fp32; all outputs within 1e-2 (relative) of a float64 run."""

from pathlib import Path

import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401
from mask2former.config import load_config

DEMO = str(Path(__file__).resolve().parents[3] / "configs/demo/panoptic.yaml")


def pixel_decoder_and_features():
    torch.manual_seed(0)
    model = build_model(load_config(DEMO, ["MODEL.WEIGHTS", ""])).eval()
    decoder = model.sem_seg_head.pixel_decoder
    g = torch.Generator().manual_seed(0)
    channels = {"res2": 64, "res3": 128, "res4": 256, "res5": 512}  # ResNet-18
    features = {
        f"res{i}": torch.randn(1, channels[f"res{i}"], 96 // 2**i, 128 // 2**i, generator=g)
        for i in range(2, 6)
    }
    return decoder, features


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).norm() / b.norm())


def test_bf16_pixel_decoder_against_float64():
    decoder, features = pixel_decoder_and_features()
    with torch.no_grad():
        ref = decoder.double().forward_features({k: v.double() for k, v in features.items()})
        decoder.float()
        seen = []
        msda = decoder.transformer.encoder.layers[0].self_attn
        hook = msda.value_proj.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = decoder.forward_features(features)
        hook.remove()
    assert seen == [torch.bfloat16]  # the encoder really ran in bf16
    (mask, coarse, multi), (mask_ref, coarse_ref, multi_ref) = out, ref
    assert mask.dtype == torch.bfloat16
    errors = [rel(mask, mask_ref), rel(coarse, coarse_ref)]
    errors += [rel(a, b) for a, b in zip(multi, multi_ref)]
    assert max(errors) <= 1e-2, errors


def test_fp16_autocast_keeps_the_published_fp32_region():
    decoder, features = pixel_decoder_and_features()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        mask, coarse, multi = decoder.forward_features(features)
    assert mask.dtype == coarse.dtype == torch.float32
