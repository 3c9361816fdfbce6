"""Tiny generated datasets and model outputs with known metrics, for the evaluation tests.

`make_panoptic_world(root)` writes a 2-image COCO-panoptic dataset (PNGs + json, an instance json,
no semantic PNGs so the semantic GT comes from the panoptic PNGs) with interleaved thing/stuff
classes and dataset ids that are not 0..N-1:

    contiguous: 0 sky (stuff, id 20), 1 cat (thing, id 7), 2 grass (stuff, id 25),
                3 dog (thing, id 12)

`perfect_outputs` returns model outputs equal to the ground truth; `partial_outputs` the
hand-worked case whose PQ and AP are derived in tests/evaluation/test_build.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

H = W = 100
CATEGORIES = [  # contiguous order
    {"id": 20, "name": "sky", "isthing": 0},
    {"id": 7, "name": "cat", "isthing": 1},
    {"id": 25, "name": "grass", "isthing": 0},
    {"id": 12, "name": "dog", "isthing": 1},
]
SKY, CAT, GRASS, DOG = range(4)


def _box(r0, r1, c0, c1):
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def gt_segments() -> dict[int, list[tuple[int, np.ndarray]]]:
    """image_id -> [(contiguous class, mask)], segments in paint order (later ones on top)."""
    return {
        1: [
            (SKY, _box(0, 30, 0, 100)),
            (GRASS, _box(70, 100, 0, 100)),
            (CAT, _box(35, 65, 10, 40)),
            (DOG, _box(35, 65, 60, 90)),
        ],
        2: [
            (SKY, _box(0, 50, 0, 100)),
            (GRASS, _box(50, 100, 0, 100)),
            (CAT, _box(20, 60, 20, 60)),
        ],
    }


def partial_segments() -> dict[int, list[tuple[int, np.ndarray, float]]]:
    """The hand-worked prediction: (class, mask, score) per image, paint order."""
    return {
        1: [
            (SKY, _box(0, 30, 0, 100), 0.99),  # overwritten by the dog FP below: 2900 px
            (GRASS, _box(80, 100, 0, 100), 0.98),  # 2000 of 3000 px
            (CAT, _box(35, 65, 13, 43), 0.9),  # shifted by 3 px, 90 px on VOID
            (DOG, _box(0, 10, 0, 10), 0.95),  # false positive on sky; the real dog is missed
        ],
        2: [  # sky and grass exact; the cat's right 9 columns are left VOID
            (SKY, _box(0, 50, 0, 100) & ~_box(20, 60, 20, 60), 0.99),
            (GRASS, _box(50, 100, 0, 100) & ~_box(20, 60, 20, 60), 0.98),
            (CAT, _box(20, 60, 20, 51), 0.7),  # 1240 of 1600 px
        ],
    }


def _paint(segments):
    """-> (H, W) int32 panoptic ids (0 = VOID), [(id, class, visible mask)]."""
    pan = np.zeros((H, W), dtype=np.int32)
    for i, seg in enumerate(segments, start=1):
        pan[seg[1]] = i
    return pan, [(i, seg[0], pan == i) for i, seg in enumerate(segments, start=1)]


def make_panoptic_world(root: str) -> dict:
    """Write the dataset under `root`; returns the metadata dict to register."""
    from panopticapi.utils import id2rgb

    pan_dir = os.path.join(root, "panoptic")
    img_dir = os.path.join(root, "images")
    os.makedirs(pan_dir, exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    images, pan_anns, inst_anns = [], [], []
    for image_id, segs in gt_segments().items():
        name = f"img{image_id}"
        image = np.full((H, W, 3), 128, np.uint8)
        Image.fromarray(image).save(os.path.join(img_dir, name + ".jpg"))
        pan, painted = _paint(segs)
        Image.fromarray(id2rgb(pan)).save(os.path.join(pan_dir, name + ".png"))
        images.append({"id": image_id, "file_name": name + ".jpg", "height": H, "width": W})
        infos = []
        for seg_id, cls, mask in painted:
            cat = CATEGORIES[cls]
            area = int(mask.sum())
            infos.append({"id": seg_id, "category_id": cat["id"], "iscrowd": 0, "area": area})
            if cat["isthing"]:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                inst_anns.append(
                    {
                        "id": len(inst_anns) + 1,
                        "image_id": image_id,
                        "category_id": cat["id"],
                        "segmentation": rle,
                        "area": area,
                        "bbox": list(mask_util.toBbox(rle)),
                        "iscrowd": 0,
                    }
                )
        pan_anns.append({"image_id": image_id, "file_name": name + ".png", "segments_info": infos})
    pan_json = os.path.join(root, "panoptic.json")
    with open(pan_json, "w") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": CATEGORIES}, f)
    inst_json = os.path.join(root, "instances.json")
    things = [c for c in CATEGORIES if c["isthing"]]
    with open(inst_json, "w") as f:
        json.dump({"images": images, "annotations": inst_anns, "categories": things}, f)
    return {
        "root": root,
        "panoptic_json": pan_json,
        "panoptic_root": pan_dir,
        "json_file": inst_json,
        "image_root": img_dir,
    }


def register_panoptic_world(
    name: str, world: dict, evaluator_type: str = "coco_panoptic_seg", instance_json: bool = True
):
    """Register `world` (from make_panoptic_world) as dataset `name` (replacing any previous
    one); without `instance_json` the metadata has no `json_file` (like Mapillary Vistas)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    with open(world["panoptic_json"]) as f:
        pj = json.load(f)
    c_of = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    records = []
    for img, ann in zip(pj["images"], pj["annotations"]):
        records.append(
            {
                "file_name": os.path.join(world["image_root"], img["file_name"]),
                "image_id": img["id"],
                "height": H,
                "width": W,
                "pan_seg_file_name": os.path.join(world["panoptic_root"], ann["file_name"]),
                "segments_info": [
                    dict(s, category_id=c_of[s["category_id"]]) for s in ann["segments_info"]
                ],
            }
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        thing_classes=[c["name"] for c in CATEGORIES if c["isthing"]],
        stuff_classes=[c["name"] for c in CATEGORIES],
        thing_dataset_id_to_contiguous_id={
            c["id"]: i for i, c in enumerate(CATEGORIES) if c["isthing"]
        },
        stuff_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(CATEGORIES)},
        ignore_label=255,
        label_divisor=1000,
        evaluator_type=evaluator_type,
        panoptic_json=world["panoptic_json"],
        panoptic_root=world["panoptic_root"],
        **({"json_file": world["json_file"]} if instance_json else {}),
    )
    return records


def outputs_from_segments(segments, num_classes: int = 4) -> dict:
    """Model outputs (sem_seg, panoptic_seg, instances) painting `segments` = [(cls, mask[, s])]."""
    from detectron2.structures import BitMasks, Instances

    pan, painted = _paint(segments)
    scores = [s[2] if len(s) > 2 else 1.0 for s in segments]
    info = [
        {"id": i, "isthing": bool(CATEGORIES[c]["isthing"]), "category_id": c}
        for i, c, _ in painted
    ]
    sem = torch.zeros(num_classes, H, W)
    for _, c, m in painted:
        sem[c][torch.from_numpy(m)] = 1.0
    things = [(c, m, s) for (c, m, *_), s in zip(segments, scores) if CATEGORIES[c]["isthing"]]
    inst = Instances((H, W))
    masks = (
        torch.from_numpy(np.stack([m for _, m, _ in things]))
        if things
        else torch.zeros(0, H, W, dtype=torch.bool)
    )
    inst.pred_masks = masks
    inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
    inst.scores = torch.tensor([s for *_, s in things], dtype=torch.float32)
    inst.pred_classes = torch.tensor([c for c, *_ in things], dtype=torch.int64)
    return {"sem_seg": sem, "panoptic_seg": (torch.from_numpy(pan), info), "instances": inst}


def perfect_outputs() -> dict[int, dict]:
    return {i: outputs_from_segments(s) for i, s in gt_segments().items()}


def partial_outputs() -> dict[int, dict]:
    return {i: outputs_from_segments(s) for i, s in partial_segments().items()}


def empty_outputs() -> dict[int, dict]:
    out = {}
    for i in gt_segments():
        o = outputs_from_segments([])
        o["sem_seg"][SKY] = 1.0  # semantic outputs cannot be empty: everything is "sky"
        out[i] = o
    return out


def run_evaluator(evaluator, records, outputs, rank: int = 0, world_size: int = 1):
    """reset / process (this rank's share of the images, one per call) / evaluate."""
    evaluator.reset()
    for r in records[rank::world_size]:
        inp = {k: r[k] for k in ("file_name", "image_id", "height", "width")}
        evaluator.process([inp], [outputs[r["image_id"]]])
    return evaluator.evaluate()


def distributed_worker(rank: int, world_size: int, init_file: str, world: dict, cfg_dict, out):
    """Body of one process of the 2-process Gloo test: evaluate and let rank 0 save results."""
    import torch.distributed as dist
    from detectron2.config import CfgNode
    from detectron2.utils import comm

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    comm._LOCAL_PROCESS_GROUP = dist.group.WORLD  # one machine: local group = world
    # One intra-op thread pool per core share, as `engine.launch` does. With torch's default pool
    # size, a spawned Gloo worker aborted at interpreter exit ("terminate called without an active
    # exception") in about 1 of 15 runs, after all its work was done; with this, 0 of 50.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        from mask2former.evaluation import build_evaluator

        records = register_panoptic_world("_eval_dist_world", world)
        cfg = CfgNode(cfg_dict)
        evaluator = build_evaluator(cfg, "_eval_dist_world", os.path.join(out, f"rank{rank}"))
        res = run_evaluator(evaluator, records, partial_outputs(), rank, world_size)
        if rank == 0:
            with open(os.path.join(out, "results.json"), "w") as f:
                json.dump(res, f)
        comm.synchronize()
    finally:
        dist.destroy_process_group()
