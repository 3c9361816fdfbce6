"""Model outputs written in the formats other tools read.

Under `output_dir`, for each image added under a unique relative `name` ("sub/img"):
  * semantic/NAME.png   the argmax of `sem_seg`: contiguous class indices (0..K-1, the order of
                        the metadata's stuff_classes), uint8 (uint16 when K > 256);
  * panoptic/NAME.png   `panoptic_seg` ids as panopticapi RGB (id = R + 256 G + 256^2 B; 0 void),
    panoptic.json       COCO panoptic predictions: "annotations" (image_id, file_name,
                        segments_info with dataset category ids), "categories";
  * instances.json      COCO instances with scores: "images", "annotations" (RLE
                        "segmentation", XYWH "bbox", "score", dataset "category_id"),
                        "categories" — `pycocotools.coco.COCO(path)` reads it, and its
                        "annotations" list is what `COCO.loadRes` / COCOeval take.
Category ids are the dataset's (through the metadata's *_dataset_id_to_contiguous_id) where the
metadata has them, else the contiguous ids.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from PIL import Image


def _inverse(mapping: dict | None) -> dict[int, int]:
    return {int(v): int(k) for k, v in (mapping or {}).items()}


class PredictionWriter:
    """Collects per-image outputs into files; `close()` writes the JSON files."""

    def __init__(self, output_dir: str, metadata=None, extra_info: dict | None = None):
        self.output_dir = output_dir
        self.metadata = metadata
        self.extra_info = dict(extra_info or {})
        self._thing_c2d = _inverse(getattr(metadata, "thing_dataset_id_to_contiguous_id", None))
        self._stuff_c2d = _inverse(getattr(metadata, "stuff_dataset_id_to_contiguous_id", None))
        self._images: list[dict] = []
        self._instances: list[dict] = []
        self._panoptic: list[dict] = []
        self._has = set()

    # -- categories ----------------------------------------------------------------------------
    def _dataset_id(self, contiguous: int, isthing: bool | None = True) -> int:
        """Contiguous class -> dataset category id (identity where the metadata has no table).
        Panoptic metadata maps every class in its stuff table, things too (detectron2's
        convention), so an unknown kind looks there first."""
        if isthing is None:
            table = self._stuff_c2d or self._thing_c2d
        else:
            table = self._thing_c2d if isthing else self._stuff_c2d
        return table.get(int(contiguous), int(contiguous))

    def _categories(self, thing_only: bool) -> list[dict]:
        meta = self.metadata
        things = list(getattr(meta, "thing_classes", []) or [])
        stuff = list(getattr(meta, "stuff_classes", []) or [])
        cats, seen = [], set()
        for i, name in enumerate(things):
            cid = self._dataset_id(i, True)
            cats.append({"id": cid, "name": name, "isthing": 1})
            seen.add(cid)
        if not thing_only and self._stuff_c2d:
            for i, name in enumerate(stuff):
                cid = self._stuff_c2d.get(i, i)
                if cid not in seen:
                    cats.append({"id": cid, "name": name, "isthing": 0})
                    seen.add(cid)
        return cats

    # -- writing -------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        path = os.path.join(self.output_dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def add(
        self,
        name: str,
        outputs: dict[str, Any],
        file_name: str = "",
        image_id: int | None = None,
    ) -> list[str]:
        """Write one image's outputs; `name` must be unique (no extension). Returns the files.

        image_id: the id the JSON files give the image (default: its position, from 1); pass the
        ground truth's ids to evaluate the files against it.
        """
        written = []
        image_id = len(self._images) + 1 if image_id is None else int(image_id)
        h, w = _output_size(outputs)
        self._images.append(
            {"id": image_id, "file_name": file_name or name, "height": h, "width": w, "name": name}
        )
        if "sem_seg" in outputs:
            labels = outputs["sem_seg"].argmax(dim=0).cpu().numpy()
            dtype = np.uint8 if outputs["sem_seg"].shape[0] <= 256 else np.uint16
            path = self._path("semantic", name + ".png")
            Image.fromarray(labels.astype(dtype)).save(path)
            written.append(path)
            self._has.add("semantic")
        if "panoptic_seg" in outputs:
            written.append(self._add_panoptic(name, image_id, *outputs["panoptic_seg"]))
            self._has.add("panoptic")
        if "instances" in outputs:
            self._add_instances(image_id, outputs["instances"])
            self._has.add("instances")
        return written

    def _add_panoptic(self, name: str, image_id: int, pan: torch.Tensor, segments: list) -> str:
        from panopticapi.utils import id2rgb

        pan = pan.cpu().numpy().astype(np.int64)
        rel = os.path.join("panoptic", name + ".png")
        Image.fromarray(id2rgb(pan)).save(self._path(rel))
        ids, counts = np.unique(pan, return_counts=True)
        area = dict(zip(ids.tolist(), counts.tolist()))
        infos = []
        for s in segments:
            info = {
                "id": int(s["id"]),
                "category_id": self._dataset_id(s["category_id"], s.get("isthing")),
                "iscrowd": 0,
                "area": int(area.get(int(s["id"]), 0)),
            }
            if "isthing" in s:
                info["isthing"] = int(bool(s["isthing"]))
            if "score" in s:
                info["score"] = float(s["score"])
            infos.append(info)
        self._panoptic.append(
            {"image_id": image_id, "file_name": rel.replace(os.sep, "/"), "segments_info": infos}
        )
        return os.path.join(self.output_dir, rel)

    def _add_instances(self, image_id: int, instances) -> None:
        import pycocotools.mask as mask_util

        inst = instances.to("cpu")
        if len(inst) == 0:
            return
        masks = np.asfortranarray(inst.pred_masks.numpy().astype(np.uint8).transpose(1, 2, 0))
        rles = mask_util.encode(masks)
        areas = mask_util.area(rles)
        boxes = mask_util.toBbox(rles)  # XYWH tight boxes of the masks
        for rle, area, box, score, cls in zip(
            rles, areas, boxes, inst.scores.tolist(), inst.pred_classes.tolist()
        ):
            rle["counts"] = rle["counts"].decode("ascii")
            self._instances.append(
                {
                    "id": len(self._instances) + 1,
                    "image_id": image_id,
                    "category_id": self._dataset_id(cls, True),
                    "segmentation": rle,
                    "area": float(area),
                    "bbox": [float(x) for x in box],
                    "score": float(score),
                    "iscrowd": 0,
                }
            )

    def close(self, summary: dict | None = None) -> dict[str, str]:
        """Write panoptic.json / instances.json (for the outputs seen) and predictions.json (the
        index: images, files, `summary` and `extra_info`). Returns {kind: path}."""
        files = {}
        images = [{k: v for k, v in im.items() if k != "name"} for im in self._images]
        if "panoptic" in self._has:
            files["panoptic"] = self._write_json(
                "panoptic.json",
                {
                    "images": images,
                    "annotations": self._panoptic,
                    "categories": self._categories(False),
                },
            )
        if "instances" in self._has:
            files["instances"] = self._write_json(
                "instances.json",
                {
                    "images": images,
                    "annotations": self._instances,
                    "categories": self._categories(True),
                },
            )
        if "semantic" in self._has:
            files["semantic"] = os.path.join(self.output_dir, "semantic")
        index = {**self.extra_info, **(summary or {}), "files": files, "images": self._images}
        files["index"] = self._write_json("predictions.json", index)
        return files

    def _write_json(self, name: str, data: dict) -> str:
        path = self._path(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        return path


def _output_size(outputs: dict) -> tuple[int, int]:
    if "sem_seg" in outputs:
        return tuple(outputs["sem_seg"].shape[-2:])
    if "panoptic_seg" in outputs:
        return tuple(outputs["panoptic_seg"][0].shape[-2:])
    if "instances" in outputs:
        return tuple(outputs["instances"].image_size)
    return (0, 0)
