"""Boundary AP of InstanceSegEvaluator against a slow reference written here from the definition
(Cheng et al., "Boundary IoU", CVPR 2021): boundary = mask minus its erosion by
d = round(0.02 x image diagonal) pixels (chessboard distance, outside the image = background);
IoU of a (detection, ground truth) pair = min(mask IoU, Boundary IoU), or Boundary IoU alone, and
for a crowd ground truth the plain crowd mask IoU |D ∩ G| / |D|; the matching and averaging are
pycocotools' COCOeval's. Data: tests/evaluation/crosscheck_data.py (a crowd "person" region with a
high-scoring detection inside it)."""

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from numpy.lib.stride_tricks import sliding_window_view
from pycocotools.cocoeval import COCOeval

from mask2former.data.datasets.custom import register_instance_dataset, register_panoptic_dataset
from mask2former.evaluation import InstanceSegEvaluator

from . import crosscheck_data as X


def reference_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """Pixels of `mask` with a background pixel (or the outside of the image) within
    chessboard distance d."""
    h, w = mask.shape
    d = max(1, int(round(ratio * math.hypot(h, w))))
    padded = np.pad(mask, d, constant_values=False)
    window_all = sliding_window_view(padded, (2 * d + 1, 2 * d + 1)).all(axis=(-1, -2))
    return mask & ~window_all


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def reference_cocoeval(mode: str):
    class DefinitionBoundaryEval(COCOeval):
        def computeIoU(self, imgId, catId):  # noqa: N802
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order][: self.params.maxDets[-1]]
            if not gt or not dt:
                return []
            ious = np.zeros((len(dt), len(gt)))
            for i, d in enumerate(dt):
                dm = mask_util.decode(d["segmentation"]).astype(bool)
                for j, g in enumerate(gt):
                    gm = mask_util.decode(g["segmentation"]).astype(bool)
                    if g["iscrowd"]:
                        ious[i, j] = (dm & gm).sum() / dm.sum() if dm.any() else 0.0
                        continue
                    b = _iou(reference_boundary(dm), reference_boundary(gm))
                    ious[i, j] = min(b, _iou(dm, gm)) if mode == "min" else b
            return ious

    return DefinitionBoundaryEval


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return X.write_dataset(str(tmp_path_factory.mktemp("crosscheck_boundary")))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MASK2FORMER_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("fast", [True, False], ids=["faster-coco-eval", "pycocotools"])
@pytest.mark.parametrize("mode", ["min", "boundary"])
@pytest.mark.parametrize("how", ["instance", "panoptic_only"])
def test_boundary_ap_equals_definition(data, tmp_path, mode, how, fast):
    name = X.fresh_name(f"_xcheck_boundary_{how}")
    if how == "instance":
        register_instance_dataset(name, data["instances_json"], data["images"])
    else:
        register_panoptic_dataset(name, data["images"], data["panoptic"], data["panoptic_json"])
    meta = MetadataCatalog.get(name)
    ev = InstanceSegEvaluator(
        name,
        output_dir=str(tmp_path),
        boundary_ap=True,
        boundary_iou_mode=mode,
        use_fast_impl=fast,
    )
    ours = X.run(ev, DatasetCatalog.get(name), lambda r: X.instances_output(r["image_id"], meta))
    expected = X.official_ap(
        data["instances_json"], X.coco_results(), "segm", reference_cocoeval(mode)
    )
    X.assert_all_close(ours["boundary"], expected)
    assert ours["boundary"]["AP"] < ours["segm"]["AP"]  # boundaries are stricter here


def test_reference_boundary_is_the_ring_of_width_d():
    m = X.box(10, 30, 10, 40)  # 48 x 64 image: d = round(0.02 * 80) = 2
    b = reference_boundary(m)
    assert b.sum() == 20 * 30 - 16 * 26
    assert reference_boundary(X.box(0, 48, 0, 64)).sum() == 48 * 64 - 44 * 60  # image border


def _random_boundary_case(seed: int, h: int, w: int):
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": f"c{i}"} for i in (4, 1)]
    images, anns, results = [], [], []

    def masks(n):
        out = []
        for _ in range(n):
            m = np.zeros((h, w), dtype=np.uint8)
            r0, c0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
            m[r0 : r0 + rng.integers(2, h - r0 + 1), c0 : c0 + rng.integers(2, w - c0 + 1)] = 1
            m[rng.random((h, w)) < 0.04] ^= 1  # ragged edges and holes
            out.append(m)
        return out

    def enc(m):
        r = mask_util.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode()}

    for image_id in range(1, 5):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        for m in masks(int(rng.integers(1, 4))):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([4, 1])),
                    "segmentation": enc(m),
                    "area": int(m.sum()),
                    "bbox": [float(x) for x in mask_util.toBbox(enc(m))],
                    "iscrowd": int(rng.random() < 0.2),
                }
            )
        for m in masks(int(rng.integers(0, 6))):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice([4, 1])),
                    "segmentation": enc(m),
                    "score": float(rng.random()),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("seed,h,w", [(0, 30, 40), (1, 64, 48), (2, 90, 120), (3, 25, 25)])
def test_fast_boundary_ap_equals_definition_on_random_masks(tmp_path, seed, h, w):
    """The Boundary AP that `InstanceSegEvaluator` computes with faster-coco-eval (mode "min")
    equals the definition on random ragged masks, crowd regions and image sizes (d = 1..3)."""
    import json

    from pycocotools.coco import COCO

    from mask2former.evaluation.coco_backend import evaluate_on_coco

    dataset, results = _random_boundary_case(seed, h, w)
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(dataset))
    expected = X.official_ap(str(gt_json), results, "segm", reference_cocoeval("min"))
    coco = COCO(str(gt_json))
    for backend in ("faster-coco-eval", "pycocotools"):
        ev = evaluate_on_coco(coco, results, "boundary", backend=backend)
        names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        ours = {n: 100 * s if s >= 0 else math.nan for n, s in zip(names, ev.stats)}
        ours.update(X.per_class_ap(ev, str(gt_json)))
        X.assert_all_close(ours, expected, tol=1e-9)
