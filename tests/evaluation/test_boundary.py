"""Boundary IoU on squares whose boundaries are counted by hand (mask2former/evaluation/boundary.py)."""

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from numpy.lib.stride_tricks import sliding_window_view
from pycocotools.cocoeval import COCOeval

from mask2former.data.datasets.custom import register_instance_dataset, register_panoptic_dataset
from mask2former.evaluation import InstanceSegEvaluator, boundary_iou, mask_to_boundary
from mask2former.evaluation.boundary import boundary_width

from . import crosscheck_data as X


def box(r0, r1, c0, c1, size=100):
    m = np.zeros((size, size), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


G = box(20, 60, 20, 60)


SHIFT1 = box(20, 60, 21, 61)  # one column to the right


SHIFT3 = box(20, 60, 23, 63)


def test_boundary_width_and_ring_size():
    assert boundary_width(100, 100) == 3
    assert boundary_width(10, 10) == 1  # never 0
    assert mask_to_boundary(G).sum() == 40**2 - 34**2
    # A mask touching the image border has a boundary along it (the image is padded with 0).
    assert mask_to_boundary(box(0, 100, 0, 100)).sum() == 100**2 - 94**2


def test_boundary_iou_by_hand():
    # Shift by 1: both rings share the top/bottom bands (6 rows x 39 cols = 234) and, in the 34
    # middle rows, columns 21, 22, 58, 59 (136): 370; union 444 + 444 - 370 = 518 -> 5/7.
    assert boundary_iou(G, SHIFT1) == pytest.approx(370 / 518)
    # Shift by 3: only the bands overlap (6 x 37 = 222); union 666 -> 1/3.
    assert boundary_iou(G, SHIFT3) == pytest.approx(1 / 3)
    assert boundary_iou(G, G) == 1.0


def test_bad_mode_is_a_clear_error():
    from pycocotools.coco import COCO

    from mask2former.evaluation import make_boundary_cocoeval

    with pytest.raises(ValueError, match="min"):
        make_boundary_cocoeval(COCO(), COCO(), iou_mode="mean")


def test_rle_boundary_on_the_bounding_box_equals_the_full_image(monkeypatch):
    from mask2former.evaluation import boundary
    from mask2former.evaluation.boundary import _boundaries, rle_boundary

    monkeypatch.setattr(boundary, "_MIN_MASKS_PER_WORKER", 10)

    rng = np.random.default_rng(0)
    rles, expected = [], []
    for k in range(12):
        h, w = rng.integers(20, 90, size=2)
        m = np.zeros((h, w), np.uint8)
        for _ in range(3):  # blobs, some touching the image border
            r0, c0 = rng.integers(0, h - 5), rng.integers(0, w - 5)
            m[r0 : r0 + rng.integers(3, h), c0 : c0 + rng.integers(3, w)] = 1
        m[rng.random((h, w)) < 0.05] ^= 1  # ragged edges and holes
        if k == 0:
            m[:] = 0
        rle = mask_util.encode(np.asfortranarray(m))
        rles.append(rle)
        expected.append(mask_to_boundary(m, 0.05))
        assert np.array_equal(mask_util.decode(rle_boundary(rle, 0.05)), expected[-1])
    pooled = _boundaries(rles * 4, 0.05, workers=2)  # the process-pool path
    assert all(np.array_equal(mask_util.decode(b), e) for b, e in zip(pooled, expected * 4))


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
