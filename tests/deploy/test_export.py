"""mask2former/deploy/export.py: exported graphs (ONNX Runtime, torch.export) against eager.

The export tests trace real R50 / Swin-T configs (random weights) at a small input size with a
shorter decoder (3 masked-attention layers: one round over 1/32, 1/16, 1/8) and one deformable
encoder layer: every kind of layer is in the graph. Tracing takes 30-120 s per export on a
2-core CPU, so they are marked slow. Swin-T is exported with static sizes only: its dynamic
export works but takes ~10 min to trace (docs/deploy.md).
"""

import pytest
import torch

from mask2former.deploy.export import (
    ExportableMaskFormer,
    check_input_size,
    export_model,
)
from mask2former.deploy.runtime import ExportedModel, load_runner

from .conftest import build, image

# Random masks overlap everywhere: with the 0.8 overlap threshold every panoptic segment of a
# random Swin-T is dropped; threshold 0 keeps them, so segments are compared.
SMALL = [
    "MODEL.MASK_FORMER.DEC_LAYERS", "4",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]  # fmt: skip
TOL = 1e-4


def test_sizes_must_be_multiples_of_the_divisibility():
    check_input_size(64, 96, 32)
    with pytest.raises(ValueError, match="multiple of the model's size divisibility 32"):
        check_input_size(70, 96, 32)
    with pytest.raises(ValueError, match="not a positive multiple"):
        check_input_size(0, 96, 32)


def test_training_models_and_unknown_formats_are_refused(tmp_path):
    _, model = build("demo")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(ExportableMaskFormer(model), "tflite", tmp_path, 64, 64)
    model.train()
    with pytest.raises(ValueError, match="eval-mode"):
        ExportableMaskFormer(model)


def panoptic_categories(result) -> torch.Tensor:
    """(H, W) category id per pixel, -1 for void."""
    seg, info = result["panoptic_seg"]
    lut = torch.full((int(seg.max()) + 2,), -1, dtype=torch.long)
    for s in info:
        lut[s["id"]] = s["category_id"]
    return lut[seg.long()]


def check_against_eager(model, cfg, path, sizes):
    """Raw outputs within TOL of eager, then the same post-processed results."""
    net = ExportableMaskFormer(model)
    run = load_runner(path)
    runtime = ExportedModel(cfg, path)
    for seed, (h, w) in enumerate(sizes):
        img = image(h, w, seed)
        x, _ = runtime.pad(img)
        with torch.no_grad():
            expected = net(x)
        got = run(x)
        for name, e, g in zip(("pred_logits", "pred_masks"), expected, got):
            assert g.shape == e.shape, name
            assert float((g - e).abs().max()) <= TOL, (name, h, w)
        with torch.no_grad():
            ref = model([{"image": img}])[0]
        out = runtime([{"image": img}])[0]
        agree = (panoptic_categories(out) == panoptic_categories(ref)).float().mean()
        assert agree >= 0.999, (h, w, float(agree))
        assert len(ref["panoptic_seg"][1]) > 0  # segments were compared, not two empty maps
        assert sorted(out["instances"].pred_classes.tolist()) == sorted(
            ref["instances"].pred_classes.tolist()
        )
        assert float((out["sem_seg"] - ref["sem_seg"]).abs().max()) <= TOL * 10


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_r50_dynamic_export_runs_two_sizes(fmt, tmp_path):
    cfg, model = build("R50", SMALL)
    path = export_model(ExportableMaskFormer(model), fmt, tmp_path, 64, 96, dynamic=True)
    # 64x96 is the traced size; 96x64 comes from an image of another size and aspect.
    check_against_eager(model, cfg, path, [(64, 96), (90, 50)])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_swin_t_static_export(fmt, tmp_path):
    cfg, model = build("SwinT", SMALL)
    path = export_model(ExportableMaskFormer(model), fmt, tmp_path, 64, 96)
    check_against_eager(model, cfg, path, [(64, 96), (50, 80)])  # the second padded to 64x96
