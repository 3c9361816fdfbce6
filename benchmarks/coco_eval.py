#!/usr/bin/env python
"""Time of COCO AP (box, mask, Boundary) with faster-coco-eval vs pycocotools, same numbers.

    python -m benchmarks.coco_eval --images 500 --dets 96 [--boundary]

Generates a synthetic split (`--images` images of `--size` H W, 3-10 ground-truth objects each,
some crowd; `--dets` detections per image: noisy copies of the objects plus random false
positives, as RLE masks) and evaluates it through `mask2former.evaluation.coco_backend.
evaluate_on_coco` with each backend, i.e. the code path `InstanceSegEvaluator` runs. Prints one
row per (task, backend): wall-clock and CPU seconds (medians of `--runs`, benchmarks.common.time_fn;
CPU time counts all threads of the process, and is the steadier number where other work shares
the CPU), AP / AP50 / AP75, and the wall-clock speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import time_fn  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--dets", type=int, default=96, help="detections per image")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--boundary", action="store_true", help="also time Boundary AP")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _ellipse(h, w, cy, cx, ry, rx):
    m = np.zeros((h, w), dtype=np.uint8)
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    if y0 < y1 and x0 < x1:
        yy, xx = np.ogrid[y0:y1, x0:x1]
        m[y0:y1, x0:x1] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return m


def make_split(n_images: int, dets: int, size, seed: int):
    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO

    h, w = size
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": f"class{i}"} for i in range(1, 11)]

    def enc(m):
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    images, anns, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        objects = []
        for _ in range(rng.integers(3, 11)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(8, h / 4), rng.uniform(8, w / 4)
            cat = int(rng.integers(1, 11))
            m = _ellipse(h, w, cy, cx, ry, rx)
            if not m.any():
                continue
            objects.append((cat, cy, cx, ry, rx))
            r = enc(m)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": r,
                    "area": int(m.sum()),
                    "bbox": [float(x) for x in mask_util.toBbox(r)],
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
        for k in range(dets):
            if objects and k < 3 * len(objects):  # noisy copies, some with the wrong class
                cat, cy, cx, ry, rx = objects[k % len(objects)]
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, 11))
                jitter = rng.normal(0, 0.15, 4) * np.array([ry, rx, ry, rx])
                cy, cx, ry, rx = cy + jitter[0], cx + jitter[1], ry + jitter[2], rx + jitter[3]
            else:  # false positives
                cat = int(rng.integers(1, 11))
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                ry, rx = rng.uniform(4, h / 6), rng.uniform(4, w / 6)
            m = _ellipse(h, w, cy, cx, max(ry, 2), max(rx, 2))
            r = enc(m)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": r,
                    "bbox": [float(x) for x in mask_util.toBbox(r)],
                    "score": float(rng.random()),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": cats}
        coco.createIndex()
    return coco, results


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from tabulate import tabulate

    from mask2former.evaluation.coco_backend import evaluate_on_coco, faster_coco_eval_version

    t0 = time.perf_counter()
    coco, results = make_split(args.images, args.dets, args.size, args.seed)
    print(
        f"{args.images} images of {args.size[0]}x{args.size[1]}, {len(coco.dataset['annotations'])} "
        f"ground-truth objects, {len(results)} detections (generated in "
        f"{time.perf_counter() - t0:.1f} s); faster-coco-eval {faster_coco_eval_version()}"
    )
    tasks = ["bbox", "segm"] + (["boundary"] if args.boundary else [])
    rows = []
    for task in tasks:
        times = {}
        for backend in ("pycocotools", "faster-coco-eval"):
            done = {}

            def evaluate(_, task=task, backend=backend, done=done):
                if hasattr(coco, "_mask2former_faster_coco"):  # time the ground-truth copy too
                    del coco._mask2former_faster_coco
                with contextlib.redirect_stdout(io.StringIO()):
                    done["ev"] = evaluate_on_coco(coco, results, task, backend=backend)

            t = time_fn(evaluate, "cpu", 0, args.runs)
            times[backend] = t.median / 1e3
            ap = [100 * s for s in done["ev"].stats[:3]]
            rows.append([task, backend, times[backend], t.cpu_median / 1e3, *ap])
        rows[-1].append(times["pycocotools"] / times["faster-coco-eval"])
    table = tabulate(
        rows,
        headers=["task", "backend", "wall s", "CPU s", "AP", "AP50", "AP75", "wall speed-up"],
        floatfmt=".3f",
        tablefmt="pipe",
    )
    print(table)
    return rows


if __name__ == "__main__":
    main()
