"""demo/demo.py and demo/predictor.py: confidence filtering, and inference with random weights on
the CPU writes overlays."""

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "demo", "panoptic.yaml")


def _load(name):
    sys.path.insert(0, os.path.join(REPO, "demo"))
    spec = importlib.util.spec_from_file_location(
        f"_demo_{name}", os.path.join(REPO, "demo", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predictor = _load("predictor")


def _fake_predictions():
    inst = Instances((8, 8))
    inst.scores = torch.tensor([0.9, 0.3, 0.6])
    inst.pred_classes = torch.tensor([0, 1, 2])
    inst.pred_masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    inst.pred_boxes = Boxes(torch.zeros(3, 4))
    pan = torch.zeros(8, 8, dtype=torch.int32)
    pan[:4] = 1
    pan[4:, :4] = 2
    pan[4:, 4:] = 3
    segments = [
        {"id": 1, "category_id": 4, "isthing": False, "score": 0.95},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.2},
        {"id": 3, "category_id": 1, "isthing": True},  # no score: always kept
    ]
    return {"instances": inst, "panoptic_seg": (pan, segments), "sem_seg": torch.rand(7, 8, 8)}


def test_filter_predictions_by_confidence():
    preds = _fake_predictions()
    out = predictor.filter_predictions(preds, 0.5)
    assert out["instances"].scores.tolist() == pytest.approx([0.9, 0.6])
    pan, segments = out["panoptic_seg"]
    assert [s["id"] for s in segments] == [1, 3]
    assert set(pan.unique().tolist()) == {0, 1, 3}  # the low-score segment became void
    assert (pan[4:, :4] == 0).all()
    assert out["sem_seg"] is preds["sem_seg"]
    assert preds["panoptic_seg"][0][4, 0] == 2  # the input is not modified
    assert len(predictor.filter_predictions(preds, 0.0)["instances"]) == 3
    assert len(predictor.filter_predictions(preds, 1.0)["instances"]) == 0


@pytest.fixture(scope="module")
def image_path(tmp_path_factory, demo_shapes):
    path = tmp_path_factory.mktemp("img") / "scene.jpg"
    Image.fromarray(demo_shapes.render_scene((7, 7, 7))[0]).save(path)
    return str(path)


@pytest.mark.slow
def test_demo_writes_overlays_with_random_weights(image_path, tmp_path):
    demo = _load("demo")
    out = tmp_path / "out"
    for task in ("auto", "all"):
        demo.main(
            [
                "--config-file",
                CONFIG,
                "--input",
                image_path,
                "--output",
                str(out / task) + "/",
                "--task",
                task,
                "--confidence-threshold",
                "0.0",
                "--opts",
                "MODEL.WEIGHTS",
                "",
                "MODEL.DEVICE",
                "cpu",
            ]
        )
        vis = np.asarray(Image.open(out / task / "scene.png"))
        assert vis.ndim == 3 and vis.shape[2] == 3
        assert vis.shape[1] >= 256 * (4 if task == "all" else 1)
    # The folder and glob forms find the same image.
    assert demo.expand_inputs([os.path.dirname(image_path)]) == [image_path]
    assert demo.expand_inputs([os.path.join(os.path.dirname(image_path), "*.jpg")]) == [image_path]


@pytest.mark.slow
def test_confidence_threshold_filters_model_outputs(image_path):
    demo = _load("demo")
    args = demo.get_parser().parse_args(
        [
            "--config-file",
            CONFIG,
            "--input",
            image_path,
            "--opts",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    cfg = demo.setup_cfg(args)
    image = np.asarray(Image.open(image_path))[:, :, ::-1]
    counts = {}
    for threshold in (0.0, 1.01):
        vis_demo = predictor.VisualizationDemo(cfg, confidence_threshold=threshold)
        torch.manual_seed(0)
        preds = vis_demo.predict(image)
        counts[threshold] = len(preds["instances"])
        if threshold > 1:
            assert all(
                "score" not in s or s["score"] >= threshold for s in preds["panoptic_seg"][1]
            )
    assert counts[0.0] > 0 and counts[1.01] == 0


@pytest.mark.slow
def test_confidence_threshold_filters_panoptic_segments(image_path):
    demo = _load("demo")
    image = np.asarray(Image.open(image_path))[:, :, ::-1]
    counts = {}
    for threshold in ("0.0", "0.99"):
        args = demo.get_parser().parse_args(
            [
                "--config-file",
                CONFIG,
                "--input",
                image_path,
                "--confidence-threshold",
                threshold,
                "--opts",
                "MODEL.WEIGHTS",
                "",
                "MODEL.DEVICE",
                "cpu",
            ]
        )
        cfg = demo.setup_cfg(args)
        assert cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD == float(threshold)
        torch.manual_seed(0)
        preds = predictor.VisualizationDemo(cfg, float(threshold)).predict(image)
        counts[threshold] = len(preds["panoptic_seg"][1])
    assert counts["0.0"] > 0 and counts["0.99"] == 0  # random weights: no confident class


@pytest.mark.slow
def test_demo_on_a_video(tmp_path, demo_shapes):
    import cv2

    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (256, 256))
    for i in range(3):
        writer.write(np.ascontiguousarray(demo_shapes.render_scene((5, 0, i))[0][:, :, ::-1]))
    writer.release()
    demo = _load("demo")
    out = str(tmp_path / "out.mp4")
    demo.main(
        [
            "--config-file",
            CONFIG,
            "--video-input",
            video,
            "--output",
            out,
            "--opts",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    cap = cv2.VideoCapture(out)
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3
