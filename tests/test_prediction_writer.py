"""mask2former/prediction_writer.py: files that panopticapi and pycocotools read back equal to
the in-memory outputs (hand-made outputs, dataset category ids, the empty cases)."""

import json

import numpy as np
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from PIL import Image

from mask2former.prediction_writer import PredictionWriter

META = Metadata(
    name="writer_test",
    thing_classes=["cat", "dog"],
    stuff_classes=["cat", "dog", "sky"],
    thing_dataset_id_to_contiguous_id={10: 0, 20: 1},
    stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
)


def _outputs(h=7, w=9, with_instances=True):
    g = torch.Generator().manual_seed(0)
    sem = torch.rand(3, h, w, generator=g)
    pan = torch.zeros(h, w, dtype=torch.int32)
    pan[:3, :4] = 1  # a dog
    pan[4:, :] = 2  # sky
    segments = [
        {"id": 1, "category_id": 1, "isthing": True, "score": 0.9},
        {"id": 2, "category_id": 2, "isthing": False},
    ]
    inst = Instances((h, w))
    masks = torch.zeros(2 if with_instances else 0, h, w, dtype=torch.bool)
    if with_instances:
        masks[0, 1:3, 2:5] = True
        masks[1, 5:, 7:] = True
    inst.pred_masks = masks
    inst.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    inst.scores = torch.tensor([0.8, 0.3][: len(masks)])
    inst.pred_classes = torch.tensor([0, 1][: len(masks)])
    return {"sem_seg": sem, "panoptic_seg": (pan, segments), "instances": inst}


def test_files_read_back_equal_the_outputs(tmp_path):
    from panopticapi.utils import rgb2id
    from pycocotools.coco import COCO

    outs = {"a/x": _outputs(), "b/x": _outputs(5, 6, with_instances=False)}
    writer = PredictionWriter(str(tmp_path), META, {"test_time_augmentation": False})
    for name, o in outs.items():
        writer.add(name, o, file_name=f"/data/{name}.jpg")
    files = writer.close({"skipped": []})

    for name, o in outs.items():
        sem = np.asarray(Image.open(tmp_path / "semantic" / f"{name}.png"))
        assert np.array_equal(sem, o["sem_seg"].argmax(0).numpy())
        pan = rgb2id(np.asarray(Image.open(tmp_path / "panoptic" / f"{name}.png")))
        assert np.array_equal(pan, o["panoptic_seg"][0].numpy())

    pan_json = json.loads(open(files["panoptic"]).read())
    segs = pan_json["annotations"][0]["segments_info"]
    assert [(s["id"], s["category_id"], s["area"]) for s in segs] == [(1, 20, 12), (2, 30, 27)]
    assert {c["id"]: c["isthing"] for c in pan_json["categories"]} == {10: 1, 20: 1, 30: 0}

    coco = COCO(files["instances"])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    inst = outs["a/x"]["instances"]
    assert len(anns) == 2 and coco.getAnnIds(imgIds=[2]) == []  # the empty case
    for ann, mask, score, cls in zip(anns, inst.pred_masks, inst.scores, inst.pred_classes):
        assert np.array_equal(coco.annToMask(ann), mask.numpy().astype(np.uint8))
        assert ann["score"] == pytest.approx(float(score))
        assert ann["category_id"] == {0: 10, 1: 20}[int(cls)]
        ys, xs = np.nonzero(mask.numpy())
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    # What COCOeval takes: loadRes on the annotation list.
    assert len(coco.loadRes(json.loads(open(files["instances"]).read())["annotations"]).anns) == 2
    index = json.loads(open(files["index"]).read())
    assert index["test_time_augmentation"] is False
    assert [im["name"] for im in index["images"]] == ["a/x", "b/x"]


def test_panopticapi_scores_the_written_files_against_themselves(tmp_path):
    """pq_compute reads our panoptic.json + PNGs as both ground truth and prediction: PQ 100."""
    from panopticapi.evaluation import pq_compute

    writer = PredictionWriter(str(tmp_path), META)
    writer.add("x", _outputs())
    path = writer.close()["panoptic"]
    result = pq_compute(path, path, str(tmp_path), str(tmp_path))
    assert result["All"]["pq"] == pytest.approx(1.0)
    assert result["All"]["n"] == 2


def test_without_metadata_ids_stay_contiguous(tmp_path):
    writer = PredictionWriter(str(tmp_path), None)
    writer.add("x", {"instances": _outputs()["instances"]})
    files = writer.close()
    assert set(files) == {"instances", "index"}
    anns = json.loads(open(files["instances"]).read())["annotations"]
    assert [a["category_id"] for a in anns] == [0, 1]
