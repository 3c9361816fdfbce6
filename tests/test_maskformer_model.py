"""Forward passes of full models (R50 and Swin-T configs, nothing shrunk but the input)."""

from pathlib import Path

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import mask2former  # noqa: F401
from mask2former.config import load_config
from mask2former.modeling import postprocessing
from mask2former.modeling.postprocessing import semantic_inference

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = {
    "R50": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "SwinT": "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
}


@pytest.fixture(scope="module", params=sorted(CASES))
def model(request):
    torch.manual_seed(0)
    cfg = load_config(
        str(CONFIGS / CASES[request.param]),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""],
        freeze=False,
    )
    m = build_model(cfg)
    m.cfg = cfg
    return m


def image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def test_train_forward_backward(model):
    model.train()
    a = Instances((64, 96))
    a.gt_classes = torch.tensor([3, 120])
    a.gt_masks = BitMasks(torch.zeros(2, 64, 96, dtype=torch.bool))
    a.gt_masks.tensor[0, 8:40, 8:40] = True
    a.gt_masks.tensor[1, 30:, 50:] = True
    b = Instances((64, 64))  # smaller image: padded in the batch
    b.gt_classes = torch.tensor([7])
    b.gt_masks = torch.ones(1, 64, 64, dtype=torch.bool)
    losses = model(
        [{"image": image(64, 96), "instances": a}, {"image": image(64, 64, 1), "instances": b}]
    )
    # 3 losses for the final prediction + 3 for each of the DEC_LAYERS - 1 = 9 aux predictions.
    assert len(losses) == 30 and {"loss_ce", "loss_mask", "loss_dice", "loss_ce_8"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


def test_eval_forward_all_outputs(model):
    model.eval()
    md = MetadataCatalog.get(model.cfg.DATASETS.TRAIN[0])
    assert model.thing_ids == frozenset(md.thing_dataset_id_to_contiguous_id.values())
    with torch.no_grad():
        out = model(
            [{"image": image(64, 96), "height": 32, "width": 48}, {"image": image(70, 60, 2)}]
        )
    assert len(out) == 2
    r = out[0]
    assert r["sem_seg"].shape == (133, 32, 48)
    seg, info = r["panoptic_seg"]
    assert seg.shape == (32, 48) and seg.dtype == torch.int32 and isinstance(info, list)
    inst = r["instances"]
    assert inst.image_size == (32, 48) and len(inst) <= 100
    assert inst.pred_masks.shape[1:] == (32, 48) and inst.pred_boxes.tensor.shape == (len(inst), 4)
    assert {int(c) for c in inst.pred_classes} <= model.thing_ids
    r = out[1]  # no height/width given: the input size
    assert r["sem_seg"].shape == (133, 70, 60) and r["panoptic_seg"][0].shape == (70, 60)


def test_eval_semantic_only_resizes_after_fusion(model):
    """SEMANTIC_ON only: fusion at the padded size, then crop + resize (published order)."""
    model.eval()
    flags = (model.panoptic_on, model.instance_on, model.sem_seg_postprocess_before_inference)
    model.panoptic_on = model.instance_on = model.sem_seg_postprocess_before_inference = False
    try:
        with torch.no_grad():
            out = model([{"image": image(60, 90), "height": 30, "width": 45}])
            images = model.preprocess_image([{"image": image(60, 90)}])
            pred = model.sem_seg_head(model.backbone(images.tensor))
        assert set(out[0]) == {"sem_seg"} and out[0]["sem_seg"].shape == (133, 30, 45)
        masks = torch.nn.functional.interpolate(
            pred["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
        )
        ref = semantic_inference(pred["pred_logits"][0], masks[0].sigmoid())[:, :60, :90]
        ref = torch.nn.functional.interpolate(
            ref[None], size=(30, 45), mode="bilinear", align_corners=False
        )[0]
        torch.testing.assert_close(out[0]["sem_seg"], ref)
    finally:
        model.panoptic_on, model.instance_on, model.sem_seg_postprocess_before_inference = flags


def test_padding_is_to_multiple_of_32(model):
    images = model.preprocess_image([{"image": image(33, 65)}])
    assert images.tensor.shape[-2:] == (64, 96) and images.image_sizes == [(33, 65)]


def _flat(result):
    seg, info = result["panoptic_seg"]
    inst = result["instances"]
    return [
        result["sem_seg"],
        seg,
        inst.pred_masks,
        inst.pred_boxes.tensor,
        inst.scores,
        inst.pred_classes,
    ], info


def test_cpu_buffer_reuse_gives_identical_outputs(model, monkeypatch):
    """Post-processing reuses CPU memory across images (`CpuBuffers`, for intermediates and
    outputs): outputs equal those without reuse, whatever the order of image sizes (padded,
    resized to a requested output size), and later images never change earlier outputs."""
    model.eval()
    pool = model.buffers.pool
    monkeypatch.setattr(pool, "min_bytes", 0)  # pool every tensor at these small sizes
    cases = [
        ((96, 128), None),
        ((70, 60), None),
        ((96, 128), (50, 70)),
        ((128, 96), None),
        ((70, 60), (140, 120)),
    ]

    def run(i, size, out_size):
        x = {"image": image(*size, i)}
        if out_size:
            x["height"], x["width"] = out_size
        return model([x])[0]

    with torch.no_grad():
        with_reuse = [run(i, *c) for i, c in enumerate(cases)]
        kept = pool.free_bytes()
        assert kept > 0  # the buffers were used (the intermediates are back in the pool)
        model.eval()
        assert pool.free_bytes() == kept  # eval() again (e.g. per image) keeps the buffers
        model.train()
        assert pool.free_bytes() == 0  # training gives the memory back
        model.eval()
        monkeypatch.setattr(postprocessing.CpuBuffers, "empty", lambda *a, **k: None)
        without = [run(i, *c) for i, c in enumerate(cases)]
    for a, b in zip(with_reuse, without):
        (ta, ia), (tb, ib) = _flat(a), _flat(b)
        assert ia == ib
        for x, y in zip(ta, tb):
            assert x.dtype == y.dtype and torch.equal(x, y)


def test_cpu_outputs_are_recycled_only_once_dropped(model, monkeypatch):
    model.eval()
    monkeypatch.setattr(model.buffers.pool, "min_bytes", 0)
    inputs = [{"image": image(96, 128)}]
    with torch.no_grad():
        first = model(inputs)[0]
        kept = first["sem_seg"][:5]  # a view keeps the semantic scores' memory in use
        ref = kept.clone()
        sem_ptr, masks_ptr = first["sem_seg"].data_ptr(), first["instances"].pred_masks.data_ptr()
        del first
        second = model(inputs)[0]
    assert torch.equal(kept, ref)
    assert second["sem_seg"].data_ptr() != sem_ptr
    assert second["instances"].pred_masks.data_ptr() == masks_ptr  # dropped: its memory reused
    model.train()


def test_cuda_oom_late_in_postprocessing_reruns_the_image(model, monkeypatch):
    """A CUDA out-of-memory error late in an image's post-processing (after the in-place
    sigmoid) reruns that image from its untouched logits (detectron2's `retry_if_cuda_oom`
    around the per-image function): the outputs are those of a run without the error."""
    model.eval()
    inputs = [{"image": image(96, 128), "height": 50, "width": 70}]
    real, calls = postprocessing.panoptic_inference, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (raised by the test)")
        return real(*args, **kwargs)

    with torch.no_grad():
        expected = model(inputs)[0]
        monkeypatch.setattr(postprocessing, "panoptic_inference", fails_once)
        got = model(inputs)[0]
    assert len(calls) == 2
    (te, ie), (tg, ig) = _flat(expected), _flat(got)
    assert ie == ig
    for x, y in zip(te, tg):
        assert torch.equal(x, y)
