"""mask2former/deploy/runtime.py without an export: padding, the model's post-processing on
given predictions, errors. (Exported files are run in test_export.py.)"""

import pytest
import torch

from mask2former.deploy.export import ExportableMaskFormer
from mask2former.deploy.runtime import ExportedModel, load_runner, postprocessor

from .conftest import build, image


@pytest.fixture(scope="module")
def demo():
    return build("demo")


def test_padding_normalises_to_the_models_zero_padding(demo):
    cfg, model = demo
    runtime = ExportedModel(cfg, None, runner=lambda x: None)
    img = image(45, 70)
    x, size = runtime.pad(img)
    assert size == (45, 70) and x.shape == (1, 3, 64, 96) and x.dtype == torch.float32
    assert torch.equal(x[0, :, :45, :70], img.float())
    normalised = (x[0] - model.pixel_mean) / model.pixel_std
    assert torch.equal(normalised, model.preprocess_image([{"image": img}]).tensor[0])


def test_network_wrapper_equals_the_models_forward(demo):
    cfg, model = demo
    net = ExportableMaskFormer(model)
    img = image(45, 70, seed=1)
    runtime = ExportedModel(cfg, None, runner=net)
    with torch.no_grad():
        logits, masks, _ = runtime.network(img)
        out = model.sem_seg_head(model.backbone(model.preprocess_image([{"image": img}]).tensor))
    assert torch.equal(logits, out["pred_logits"]) and torch.equal(masks, out["pred_masks"])
    assert logits.shape == (1, 20, 8) and masks.shape == (1, 20, 16, 24)


def test_postprocessing_is_the_models(demo):
    """Given the eager network as runner, the runtime returns exactly what the model returns for
    each image alone (the runtime runs batch 1: each image padded only to its own size)."""
    cfg, model = demo
    runtime = ExportedModel(cfg, None, runner=ExportableMaskFormer(model))
    inputs = [{"image": image(45, 70, seed=2), "height": 30, "width": 50}, {"image": image(64, 64)}]
    with torch.no_grad():
        expected = [model([x])[0] for x in inputs]
    got = runtime(inputs)
    assert len(got) == 2
    for e, g in zip(expected, got):
        assert set(g) == set(e) == {"sem_seg", "panoptic_seg", "instances"}
        assert torch.equal(g["sem_seg"], e["sem_seg"])
        assert torch.equal(g["panoptic_seg"][0], e["panoptic_seg"][0])
        assert g["panoptic_seg"][1] == e["panoptic_seg"][1]
        assert torch.equal(g["instances"].pred_classes, e["instances"].pred_classes)
        assert torch.equal(g["instances"].pred_masks, e["instances"].pred_masks)
    assert len(expected[0]["panoptic_seg"][1]) > 0  # the comparison covered real segments


def test_postprocessor_holds_no_weights(demo):
    cfg, _ = demo
    post = postprocessor(cfg)
    assert all(p.is_meta for p in post.backbone.parameters())
    assert post.pixel_mean.device.type == "cpu" and post.sem_seg_head.num_classes == 7


def test_static_size_and_file_errors(demo, tmp_path):
    cfg, _ = demo
    runtime = ExportedModel(cfg, None, fixed_size=(64, 64), runner=lambda x: None)
    assert runtime.pad(image(40, 64))[0].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="larger than the static export's 64x64"):
        runtime.pad(image(40, 70))
    with pytest.raises(FileNotFoundError, match="export_model.py"):
        ExportedModel(cfg, tmp_path / "model.onnx")
    (tmp_path / "model.trt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.onnx or \.pt2"):
        load_runner(tmp_path / "model.trt")
