"""A tiny dataset and damaged predictions for the cross-check tests of the evaluators, and the
official tools' numbers for them (panopticapi `pq_compute`, pycocotools `COCOeval`, metric
definitions in float64). Nothing here uses mask2former's evaluation code.

Three 48 x 64 images; categories listed out of id order, non-contiguous ids:

    json order: tree (17, stuff), dog (11, thing: no ground truth, predicted once),
                person (7, thing), sky (40, stuff), chair (3, thing), water (25, stuff: nobody
                annotates it, nor predicts it in the panoptic predictions)

`cam0/frame.jpg` and `cam1/frame.jpg` share a basename and a size; the ground truth has VOID
pixels and a crowd "person" region. The predictions have shifted and eroded masks, dropped and
swapped instances, false positives, a duplicate, an empty mask (instances only) and varied scores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

H, W = 48, 64
CATEGORIES = [  # things in decreasing id order: json position != COCOeval's (sorted) position
    {"id": 17, "name": "tree", "isthing": 0},
    {"id": 11, "name": "dog", "isthing": 1},
    {"id": 7, "name": "person", "isthing": 1},
    {"id": 40, "name": "sky", "isthing": 0},
    {"id": 3, "name": "chair", "isthing": 1},
    {"id": 25, "name": "water", "isthing": 0},
]
TREE, DOG, PERSON, SKY, CHAIR, WATER = (c["id"] for c in CATEGORIES)
NAME = {c["id"]: c["name"] for c in CATEGORIES}
ISTHING = {c["id"]: c["isthing"] for c in CATEGORIES}
# contiguous id = position in the json's list (register_panoptic_dataset's documented rule)
PANOPTIC_CONTIGUOUS = {c["id"]: i for i, c in enumerate(CATEGORIES)}
IGNORE = 255

IMAGES = [(1, "cam0/frame"), (2, "cam1/frame"), (3, "other/street")]  # (image_id, path stem)


def box(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def shift(m: np.ndarray, dr: int, dc: int) -> np.ndarray:
    return np.roll(np.roll(m, dr, axis=0), dc, axis=1)


def erode(m: np.ndarray, k: int = 1) -> np.ndarray:
    out = m.copy()
    for _ in range(k):
        p = np.pad(out, 1)
        out = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


def gt_segments() -> dict[int, list[tuple[int, np.ndarray, int]]]:
    """image_id -> [(category id, mask, iscrowd)] in paint order; unpainted pixels are VOID."""
    return {
        1: [
            (SKY, box(0, 15, 0, 64), 0),
            (TREE, box(36, 48, 0, 64), 0),
            (PERSON, box(16, 36, 5, 20), 0),
            (PERSON, box(18, 34, 24, 38), 0),
            (CHAIR, box(20, 36, 44, 60), 0),
        ],
        2: [
            (SKY, box(0, 20, 0, 64), 0),
            (TREE, box(30, 48, 0, 64), 0),
            (PERSON, box(20, 30, 0, 30), 1),  # crowd
            (CHAIR, box(20, 30, 34, 50), 0),
            (PERSON, box(21, 29, 52, 62), 0),
        ],
        3: [
            (SKY, box(0, 24, 0, 64), 0),
            (TREE, box(24, 44, 0, 40), 0),
            (CHAIR, box(26, 40, 4, 18), 0),
            (CHAIR, box(28, 42, 22, 34), 0),
            (PERSON, box(10, 44, 44, 58), 0),
        ],
    }


def panoptic_predictions() -> dict[int, list[tuple[int, np.ndarray]]]:
    """image_id -> [(category id, mask)] in paint order (later on top)."""
    return {
        1: [
            (SKY, box(0, 17, 0, 64)),
            (TREE, box(38, 48, 0, 64)),
            (PERSON, shift(box(16, 36, 5, 20), 2, 1)),  # shifted
            (CHAIR, box(18, 34, 24, 38)),  # person predicted as chair (swapped)
            (CHAIR, erode(box(20, 36, 44, 60))),  # eroded
            (DOG, box(0, 6, 0, 8)),  # the only dog: predicted, no ground truth
        ],
        2: [
            (SKY, box(0, 18, 0, 64)),
            (TREE, box(30, 48, 0, 64)),
            (PERSON, box(21, 29, 2, 12)),  # inside the crowd region: not a false positive
            (CHAIR, shift(box(20, 30, 34, 50), 0, 3)),
            # the small person is dropped
        ],
        3: [
            (SKY, box(0, 24, 0, 64)),
            (TREE, box(24, 48, 0, 64)),  # spills over VOID and the person's feet
            (CHAIR, box(26, 40, 4, 18)),  # exact
            (PERSON, box(10, 40, 44, 58)),
            (CHAIR, box(16, 20, 30, 40)),  # false positive on sky
        ],
    }


def instance_predictions() -> dict[int, list[tuple[int, np.ndarray, float]]]:
    """image_id -> [(category id, mask, score)]: overlapping masks, a duplicate, an empty mask."""
    return {
        1: [
            (PERSON, shift(box(16, 36, 5, 20), 2, 1), 0.9),
            (PERSON, box(18, 34, 24, 38), 0.35),  # low score
            (CHAIR, box(18, 34, 24, 38), 0.8),  # the same person as a chair
            (CHAIR, erode(box(20, 36, 44, 60)), 0.7),
            (CHAIR, erode(box(20, 36, 44, 60), 2), 0.6),  # duplicate
            (DOG, box(0, 6, 0, 8), 0.55),  # the only dog
        ],
        2: [
            (PERSON, box(21, 29, 2, 12), 0.95),  # inside the crowd region
            # the small person is dropped
            (CHAIR, shift(box(20, 30, 34, 50), 1, 3), 0.65),
            (CHAIR, np.zeros((H, W), dtype=bool), 0.3),  # empty mask
        ],
        3: [
            (CHAIR, box(26, 40, 4, 18), 0.85),
            (CHAIR, box(16, 20, 30, 40), 0.75),  # false positive
            (PERSON, box(10, 40, 44, 58), 0.6),
            (PERSON, erode(box(28, 42, 22, 34), 2), 0.45),  # a chair as a person
        ],
    }


def paint(segments) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]:
    """-> (H, W) ids (0 = VOID), [(segment id, index into segments, visible mask)]."""
    pan = np.zeros((H, W), dtype=np.int32)
    for i, seg in enumerate(segments, start=1):
        pan[seg[1]] = i
    visible = [(i, i - 1, pan == i) for i in range(1, len(segments) + 1)]
    return pan, [v for v in visible if v[2].any()]


def id2rgb(pan: np.ndarray) -> np.ndarray:
    return np.stack([pan % 256, pan // 256 % 256, pan // 256**2], axis=-1).astype(np.uint8)


def rle(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def semantic_gt(image_id: int) -> np.ndarray:
    """(H, W) contiguous labels (json order), crowd included, IGNORE on VOID."""
    sem = np.full((H, W), IGNORE, dtype=np.int64)
    for cat, mask, _ in gt_segments()[image_id]:
        sem[mask] = PANOPTIC_CONTIGUOUS[cat]
    return sem


def semantic_prediction(image_id: int) -> np.ndarray:
    """(H, W) contiguous labels: the panoptic prediction's classes, "water" elsewhere (so water
    is predicted on labelled pixels without ground truth, like the dog)."""
    sem = np.full((H, W), PANOPTIC_CONTIGUOUS[WATER], dtype=np.int64)
    for cat, mask in panoptic_predictions()[image_id]:
        sem[mask] = PANOPTIC_CONTIGUOUS[cat]
    return sem


def write_dataset(root: str) -> dict:
    """Images, panoptic PNGs + json, semantic PNGs and an instance json under `root`."""
    paths = {k: os.path.join(root, k) for k in ("images", "panoptic", "semantic")}
    images, pan_anns, inst_anns = [], [], []
    for image_id, stem in IMAGES:
        for k, ext in (("images", ".jpg"), ("panoptic", ".png"), ("semantic", ".png")):
            os.makedirs(os.path.dirname(os.path.join(paths[k], stem + ext)), exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90 + 40 * image_id, np.uint8)).save(
            os.path.join(paths["images"], stem + ".jpg")
        )
        segs = gt_segments()[image_id]
        pan, visible = paint(segs)
        Image.fromarray(id2rgb(pan)).save(os.path.join(paths["panoptic"], stem + ".png"))
        Image.fromarray(semantic_gt(image_id).astype(np.uint8)).save(
            os.path.join(paths["semantic"], stem + ".png")
        )
        images.append({"id": image_id, "file_name": stem + ".jpg", "height": H, "width": W})
        infos = []
        for seg_id, k, mask in visible:
            cat, _, crowd = segs[k]
            infos.append(
                {"id": seg_id, "category_id": cat, "iscrowd": crowd, "area": int(mask.sum())}
            )
            if ISTHING[cat]:
                r = rle(mask)
                inst_anns.append(
                    {
                        "id": len(inst_anns) + 1,
                        "image_id": image_id,
                        "category_id": cat,
                        "segmentation": r,
                        "area": int(mask.sum()),
                        "bbox": [float(x) for x in mask_util.toBbox(r)],
                        "iscrowd": crowd,
                    }
                )
        pan_anns.append({"image_id": image_id, "file_name": stem + ".png", "segments_info": infos})
    out = dict(paths, root=root)
    out["panoptic_json"] = os.path.join(root, "panoptic.json")
    with open(out["panoptic_json"], "w") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": CATEGORIES}, f)
    out["instances_json"] = os.path.join(root, "instances.json")
    things = [c for c in CATEGORIES if c["isthing"]]
    with open(out["instances_json"], "w") as f:
        json.dump({"images": images, "annotations": inst_anns, "categories": things}, f)
    return out


# ---- the official tools' numbers ---------------------------------------------------------------
def official_pq(data: dict, work: str) -> dict:
    """panopticapi's `pq_compute` on prediction PNGs + json written here (unique names):
    {"PQ", "SQ", "RQ", "PQ_th", ..., "PQ-<name>", ...} in %, NaN for a class that has neither
    ground truth nor a prediction (panopticapi reports 0 there and leaves it out of the mean)."""
    from panopticapi.evaluation import pq_compute

    pred_dir = os.path.join(work, "official_panoptic_pred")
    os.makedirs(pred_dir, exist_ok=True)
    anns, present = [], set()
    for image_id, _ in IMAGES:
        pan, visible = paint(panoptic_predictions()[image_id])
        name = f"pred_{image_id}.png"
        Image.fromarray(id2rgb(pan)).save(os.path.join(pred_dir, name))
        cats = panoptic_predictions()[image_id]
        infos = [{"id": i, "category_id": cats[k][0]} for i, k, _ in visible]
        present |= {s["category_id"] for s in infos}
        anns.append({"image_id": image_id, "file_name": name, "segments_info": infos})
    for segs in gt_segments().values():
        present |= {cat for cat, _, crowd in segs if not crowd}
    pred_json = os.path.join(work, "official_panoptic_pred.json")
    with open(pred_json, "w") as f:
        json.dump({"annotations": anns}, f)
    with contextlib.redirect_stdout(io.StringIO()):
        res = pq_compute(data["panoptic_json"], pred_json, data["panoptic"], pred_dir)
    out = {}
    for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for m in ("pq", "sq", "rq"):
            out[m.upper() + suffix] = 100 * res[group][m]
    for cat, v in res["per_class"].items():
        for m in ("pq", "sq", "rq"):
            out[f"{m.upper()}-{NAME[cat]}"] = 100 * v[m] if cat in present else math.nan
    return out


def coco_results(preds=None) -> list[dict]:
    """The instance predictions as COCO results (dataset ids; float32 scores like a model's)."""
    preds = instance_predictions() if preds is None else preds
    out = []
    for image_id, items in preds.items():
        for cat, mask, score in items:
            r = rle(mask)
            out.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": r,
                    "bbox": [float(x) for x in mask_util.toBbox(r)],
                    "score": float(np.float32(score)),
                }
            )
    return out


def per_class_ap(coco_eval, gt_json: str) -> dict:
    """{"AP-<name>": AP} from COCOeval's precision, named through the ground-truth json."""
    with open(gt_json) as f:
        names = {c["id"]: c["name"] for c in json.load(f)["categories"]}
    out = {}
    for k, cat in enumerate(coco_eval.params.catIds):
        p = coco_eval.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        out[f"AP-{names[cat]}"] = 100 * float(p.mean()) if p.size else math.nan
    return out


def official_ap(gt_json: str, results: list[dict], iou_type: str, cocoeval_cls=None) -> dict:
    """pycocotools' COCOeval: AP, AP50, AP75, APs, APm, APl and AP-<name> in %. For "segm" the
    boxes are dropped (areas from the masks), as detectron2 does."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = (cocoeval_cls or COCOeval)(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    out = {n: 100 * s if s >= 0 else math.nan for n, s in zip(names, ev.stats)}
    out.update(per_class_ap(ev, gt_json))
    return out


def semseg_definition(gts, preds, k: int, names, gt_classes_only: bool = False) -> dict:
    """mIoU, fwIoU, mACC, pACC and per-class IoU/ACC in % from their definitions (float64).

    detectron2 v0.6: mIoU over classes in the ground truth *or* the prediction (a class only
    predicted counts as IoU 0); `gt_classes_only`: over classes in the ground truth only."""
    conf = np.zeros((k, k), dtype=np.float64)  # [gt, pred]
    for gt, pred in zip(gts, preds):
        valid = gt != IGNORE
        np.add.at(conf, (gt[valid], pred[valid]), 1)
    tp = np.diag(conf)
    n_gt, n_pred = conf.sum(1), conf.sum(0)
    has_gt = n_gt > 0
    iou = np.where(has_gt, tp / np.maximum(n_gt + n_pred - tp, 1), np.nan)
    acc = np.where(has_gt, tp / np.maximum(n_gt, 1), np.nan)
    counted = has_gt if gt_classes_only else (n_gt + n_pred) > 0
    out = {
        "mIoU": 100 * np.nan_to_num(iou)[counted].sum() / counted.sum(),
        "fwIoU": 100 * float(np.nansum(iou * n_gt) / n_gt.sum()),
        "mACC": 100 * float(np.nanmean(acc)),
        "pACC": 100 * tp.sum() / n_gt.sum(),
    }
    for i, n in enumerate(names):
        out[f"IoU-{n}"] = 100 * iou[i]
        out[f"ACC-{n}"] = 100 * acc[i]
    return out


def assert_all_close(ours: dict, expected: dict, tol: float = 0.01) -> None:
    """Every expected number is reported, and equal to `tol` (percent); NaN only as NaN."""
    missing = sorted(set(expected) - set(ours))
    assert not missing, f"not reported: {missing}"
    bad = {
        k: (ours[k], v)
        for k, v in expected.items()
        if not (
            (math.isnan(v) and math.isnan(ours[k]))
            or (not math.isnan(v) and not math.isnan(ours[k]) and abs(ours[k] - v) <= tol)
        )
    }
    assert not bad, f"(ours, official) differ: {bad}"


# ---- model outputs and the evaluation loop -------------------------------------------------------
def panoptic_output(image_id: int, meta) -> dict:
    """`panoptic_seg` as the model returns it: contiguous ids through the dataset's metadata."""
    import torch

    segs = panoptic_predictions()[image_id]
    pan, visible = paint(segs)
    info = []
    for seg_id, k, _ in visible:
        cat = segs[k][0]
        isthing = cat in meta.thing_dataset_id_to_contiguous_id
        table = (
            meta.thing_dataset_id_to_contiguous_id
            if isthing
            else meta.stuff_dataset_id_to_contiguous_id
        )
        info.append({"id": seg_id, "isthing": isthing, "category_id": table[cat]})
    return {"panoptic_seg": (torch.from_numpy(pan), info)}


def instances_output(image_id: int, meta, preds=None) -> dict:
    import torch
    from detectron2.structures import Boxes, Instances

    items = (instance_predictions() if preds is None else preds)[image_id]
    inst = Instances((H, W))
    masks = np.stack([m for _, m, _ in items]) if items else np.zeros((0, H, W), dtype=bool)
    inst.pred_masks = torch.from_numpy(masks)
    xywh = [mask_util.toBbox(rle(m)) for m in masks]
    inst.pred_boxes = Boxes(
        torch.tensor([[x, y, x + w, y + h] for x, y, w, h in xywh], dtype=torch.float32).reshape(
            -1, 4
        )
    )
    inst.scores = torch.tensor([s for *_, s in items], dtype=torch.float32)
    inst.pred_classes = torch.tensor(
        [meta.thing_dataset_id_to_contiguous_id[c] for c, *_ in items], dtype=torch.int64
    )
    return {"instances": inst}


def sem_seg_output(labels: np.ndarray, k: int) -> dict:
    import torch

    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), k)
    return {"sem_seg": onehot.permute(2, 0, 1).float()}


def run(evaluator, records: list[dict], output_of) -> dict:
    """reset / process (one image per call) / evaluate, as detectron2's inference loop does."""
    evaluator.reset()
    for r in records:
        inp = {k: r[k] for k in ("file_name", "image_id", "height", "width") if k in r}
        evaluator.process([inp], [output_of(r)])
    return evaluator.evaluate()


def fresh_name(name: str) -> str:
    """`name`, removed from detectron2's catalogs if an earlier test registered it."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    return name
