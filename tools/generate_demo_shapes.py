#!/usr/bin/env python
"""Generate the built-in `demo_shapes` dataset (`make demo` and the tests run this before training).

Natural-looking 256x256 scenes: textured "stuff" regions (sky, water, ground) separated by wavy
horizons and shorelines, with textured "thing" shapes (circle, triangle, square, star) of varied
colours, sizes and rotations placed over them, with drop shadows and occlusion between shapes.
Deterministic (fixed seeds), written in the *real* formats that user datasets come in; the layout,
the categories and the registration are in `mask2former/data/datasets/register_demo_shapes.py`.

    python tools/generate_demo_shapes.py [--root DIR] [--force]

Default root: $MASK2FORMER_DEMO_DIR, else $DETECTRON2_DATASETS/demo_shapes, else
./datasets/demo_shapes. A root whose VERSION stamp does not match is regenerated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import cv2
import numpy as np
import tqdm
from PIL import Image

# Running from a checkout without `pip install -e .`: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mask2former.data.datasets.register_demo_shapes import (  # noqa: E402
    DEMO_CATEGORIES,
    IMAGE_SIZE,
    SEED,
    SPLITS,
    demo_shapes_root,
    demo_shapes_stamp,
    is_generated,
)

logger = logging.getLogger(__name__)

THING_NAMES = [c["name"] for c in DEMO_CATEGORIES if c["isthing"]]
_CAT_BY_NAME = {c["name"]: c for c in DEMO_CATEGORIES}
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(DEMO_CATEGORIES)}
_THING_IDS = {c["id"] for c in DEMO_CATEGORIES if c["isthing"]}
SKY, WATER, GROUND = 5, 6, 7

# Occlusion limits: every shape keeps at least this fraction of its in-frame area, and this many px.
_MIN_VISIBLE_FRACTION = 0.5
_MIN_VISIBLE_PIXELS = 100


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], octaves: int = 3):
    """Smooth fractal noise, zero-mean and ~unit-std, `cells` = (rows, cols) of the coarsest grid."""
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        gh, gw = max(2, cells[0] * 2**o), max(2, cells[1] * 2**o)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * (0.55**o)
    return out / (out.std() + 1e-6)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h in [0, 1)) as float RGB in [0, 1]."""
    px = np.uint8([[[int(h * 180) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _wavy_line(rng: np.random.Generator, w: int, base: float, amp: float) -> np.ndarray:
    """A boundary y(x) around `base`: two sines plus smooth noise (hills, shorelines)."""
    x = np.arange(w, dtype=np.float32)
    y = np.full(w, base, np.float32)
    for _ in range(2):
        period = rng.uniform(0.3, 1.5) * w
        y += (
            rng.uniform(0.2, 1.0) * amp * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))
        )
    y += amp * 0.3 * _noise(rng, 1, w, (1, 8), octaves=2)[0]
    return y


def _stuff_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """(H, W) map of stuff category ids: sky on top, then water / ground bands or a split."""
    h = w = size
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    layout = np.full((h, w), GROUND, np.int32)
    kind = rng.choice(
        ["lake", "shore", "land", "sea", "split", "aerial"], p=[0.25, 0.2, 0.15, 0.15, 0.15, 0.1]
    )
    horizon = _wavy_line(rng, w, rng.uniform(0.22, 0.5) * h, rng.uniform(2, 14))
    if kind == "lake":  # sky / water / ground (near shore)
        shore = _wavy_line(rng, w, rng.uniform(0.6, 0.85) * h, rng.uniform(3, 12))
        layout[ys >= horizon] = WATER
        layout[ys >= np.maximum(shore, horizon + 8)] = GROUND
    elif kind == "shore":  # sky / ground (far hills) / water (near)
        shore = _wavy_line(rng, w, rng.uniform(0.55, 0.8) * h, rng.uniform(3, 12))
        layout[ys >= np.maximum(shore, horizon + 8)] = WATER
    elif kind == "sea":
        layout[ys >= horizon] = WATER
    elif kind == "split":  # water on one side, a slanted, wavy coast on the other
        slope = rng.uniform(-1.5, 1.5)
        x0 = rng.uniform(0.3, 0.7) * w
        coast = x0 + slope * (ys - h / 2) + 8 * _noise(rng, h, 1, (6, 1), octaves=2)
        water = (xs < coast) if rng.random() < 0.5 else (xs >= coast)
        layout[water] = WATER
    if kind != "aerial":
        layout[ys < horizon] = SKY
    else:  # seen from above: ground with a lake blob, no sky
        blob = _noise(rng, h, w, (2, 2), octaves=2)
        layout[blob > rng.uniform(0.0, 0.8)] = WATER
    return layout


def _stuff_texture(rng: np.random.Generator, cat: int, size: int) -> np.ndarray:
    """Full-frame float RGB texture for one stuff category (only its region will be used)."""
    h = w = size
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    if cat == SKY:
        sunset = rng.random() < 0.2
        top = _hsv(rng.uniform(0.55, 0.63), rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.9))
        low = (
            _hsv(rng.uniform(0.02, 0.1), 0.5, 0.95)
            if sunset
            else _hsv(rng.uniform(0.52, 0.6), rng.uniform(0.1, 0.3), 0.97)
        )
        tex = top * (1 - ys) + low * ys
        clouds = _noise(rng, h, w, (5, 2), octaves=4)  # wide, flat clouds
        amount = np.clip((clouds - rng.uniform(0.0, 1.2)) * 0.8, 0, 0.85)[..., None]
        tex = tex * (1 - amount) + np.float32([0.96, 0.96, 0.97]) * amount
    elif cat == WATER:
        base = _hsv(rng.uniform(0.5, 0.6), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.65))
        tex = base * (0.75 + 0.35 * ys)
        ripples = _noise(rng, h, w, (24, 3), octaves=2)  # horizontally stretched streaks
        tex = tex * (1 + 0.12 * ripples[..., None])
        glint = np.clip(ripples - 1.6, 0, None)[..., None] * 0.5
        tex = tex + glint
    else:  # GROUND: grass, earth or sand
        hue = rng.choice([rng.uniform(0.2, 0.33), rng.uniform(0.06, 0.11), rng.uniform(0.11, 0.15)])
        base = _hsv(hue, rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.7))
        blotch = _noise(rng, h, w, (4, 4), octaves=3)
        grain = rng.standard_normal((h, w)).astype(np.float32)
        tex = base * (1 + 0.15 * blotch[..., None] + 0.08 * grain[..., None])
        tex = tex * (0.8 + 0.3 * ys)
    return tex.astype(np.float32)


def _shape_polygon(kind: str, cx: float, cy: float, r: float, theta: float) -> np.ndarray | None:
    """Vertices (N, 2) of a regular polygon / star; None for the circle."""
    if kind == "circle":
        return None
    if kind == "star":
        ang = theta + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        n = {"triangle": 3, "square": 4}[kind]
        ang = theta + np.arange(n) * 2 * np.pi / n
        rad = np.full(n, r)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)


def _shape_mask(kind: str, cx: float, cy: float, r: float, theta: float, size: int):
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel vertex precision
    if kind == "circle":
        center = (int(round(cx * 16)), int(round(cy * 16)))
        cv2.circle(mask, center, int(round(r * 16)), 1, -1, lineType=cv2.LINE_8, shift=shift)
    else:
        pts = np.round(_shape_polygon(kind, cx, cy, r, theta) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


# Each shape class has a typical colour family (hue centre; a shape varies +-0.035 around it, in
# saturation, brightness, pattern and shading), as real categories have typical appearance. The
# hues avoid those of sky/water (0.50-0.63) and ground (0.06-0.33); the families do not overlap,
# so colour largely tells the classes apart, while the model still has to find, separate and
# delineate overlapping shapes of every size and pattern. With random colours (GENERATOR_VERSION
# 3) a small model trained from scratch on the CPU found the shapes but could not tell them apart
# (PQ things 2-11).
_THING_HUES = {"circle": 0.99, "triangle": 0.43, "square": 0.75, "star": 0.87}


def _thing_texture(rng: np.random.Generator, kind: str, cx: float, cy: float, r: float, size: int):
    """Float RGB texture for one shape: a colour of its class's family with a pattern in darker
    or lighter tones of that colour, and directional shading."""
    h = w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    hue = (_THING_HUES[kind] + rng.uniform(-0.035, 0.035)) % 1.0
    sat, val = rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
    color = _hsv(hue, sat, val)
    other = _hsv(hue, sat * rng.uniform(0.4, 0.8), val * rng.uniform(0.4, 0.7))
    pattern = rng.choice(["plain", "stripes", "spots", "two_tone"])
    tex = np.broadcast_to(color, (h, w, 3)).copy()
    if pattern == "stripes":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(5, 14)
        s = np.sin(2 * np.pi * (xs * np.cos(a) + ys * np.sin(a)) / period) > 0
        tex[s] = tex[s] * 0.4 + other * 0.6
    elif pattern == "spots":
        spots = _noise(rng, h, w, (12, 12), octaves=1) > 0.8
        tex[spots] = tex[spots] * 0.45
    elif pattern == "two_tone":
        a = rng.uniform(0, 2 * np.pi)
        t = np.clip(((xs - cx) * np.cos(a) + (ys - cy) * np.sin(a)) / (2 * r) + 0.5, 0, 1)
        tex = color * (1 - t[..., None]) + other * t[..., None]
    # Light from the upper left: spheres get radial shading, flat shapes a linear gradient.
    lx, ly = (xs - cx) / max(r, 1), (ys - cy) / max(r, 1)
    if kind == "circle":
        z = np.sqrt(np.clip(1 - lx**2 - ly**2, 0, 1))
        shade = 0.45 + 0.6 * np.clip(-0.5 * lx - 0.5 * ly + 0.7 * z, 0, 1)
    else:
        shade = 1.0 - 0.18 * (lx + ly)
    tex = tex * shade[..., None] * (1 + 0.04 * rng.standard_normal((h, w, 1)).astype(np.float32))
    return tex


def render_scene(seed: tuple[int, ...], size: int = IMAGE_SIZE):
    """Render one scene from a seed.

    Returns:
        image: (H, W, 3) uint8 RGB.
        pan: (H, W) int32 panoptic segment ids (0 = void; unused here: every pixel is labelled).
        segments: list of dicts (id, category_id, iscrowd=0, area, bbox [x, y, w, h]), stuff first.
        thing_masks: list of (H, W) bool visible masks, aligned with the thing segments.
    """
    rng = np.random.default_rng(seed)
    layout = _stuff_layout(rng, size)
    image = np.zeros((size, size, 3), np.float32)
    for cat in (SKY, WATER, GROUND):
        region = layout == cat
        if region.any():
            image[region] = _stuff_texture(rng, cat, size)[region]
    # Soften the stuff boundaries in the image (the labels stay sharp).
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    edges = cv2.dilate(
        (cv2.Laplacian(layout.astype(np.float32), cv2.CV_32F) != 0).astype(np.uint8),
        np.ones((3, 3), np.uint8),
    ).astype(bool)
    image[edges] = blurred[edges]

    # Things, back to front. `owner` holds the index of the visible thing at each pixel, -1 = stuff.
    owner = np.full((size, size), -1, np.int32)
    full_area: list[int] = []
    kinds: list[str] = []
    n_target = int(rng.integers(1, 6))
    tries = 0
    while len(kinds) < n_target and tries < 40:
        tries += 1
        kind = THING_NAMES[int(rng.integers(len(THING_NAMES)))]
        r = float(np.exp(rng.uniform(np.log(16), np.log(50))))
        cx, cy = rng.uniform(0.05, 0.95, size=2) * size
        theta = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(kind, cx, cy, r, theta, size)
        area = int(mask.sum())
        if area < 2 * _MIN_VISIBLE_PIXELS:
            continue
        # Reject placements that would hide too much of a shape already in the scene.
        covered = np.bincount(owner[mask] + 1, minlength=len(kinds) + 1)[1:]
        visible = np.bincount(owner.ravel() + 1, minlength=len(kinds) + 1)[1:] - covered
        if any(
            v < max(_MIN_VISIBLE_FRACTION * a, _MIN_VISIBLE_PIXELS)
            for v, a in zip(visible, full_area)
        ):
            continue
        # Drop shadow: darken what is below, offset towards the lower right, blurred.
        off = r * rng.uniform(0.08, 0.2)
        shift = np.float32([[1, 0, off], [0, 1, off * rng.uniform(0.6, 1.2)]])
        shadow = cv2.warpAffine(mask.astype(np.float32), shift, (size, size))
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, r * 0.12))
        image *= 1 - rng.uniform(0.25, 0.45) * shadow[..., None]
        # Paint the shape with a slightly soft (anti-aliased) edge.
        tex = _thing_texture(rng, kind, cx, cy, r, size)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6)
        alpha = np.where(mask, np.maximum(alpha, 0.5), alpha)[..., None]
        image = image * (1 - alpha) + tex * alpha
        owner[mask] = len(kinds)
        kinds.append(kind)
        full_area.append(area)

    # Camera: vignetting, a colour cast and sensor noise.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    image *= (1 - rng.uniform(0.1, 0.35) * (xs**2 + ys**2) * 2)[..., None]
    image *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    image += rng.normal(0, 0.015, image.shape).astype(np.float32)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)

    # Panoptic segments: one per stuff class present, one per visible shape.
    pan = np.zeros((size, size), np.int32)
    segments = []
    thing_masks = []
    for cat in (SKY, WATER, GROUND):
        m = (owner < 0) & (layout == cat)
        if m.any():
            segments.append(_segment(cat * 1000, cat, m))
            pan[m] = cat * 1000
    for i, kind in enumerate(kinds):
        m = owner == i
        cat = _CAT_BY_NAME[kind]["id"]
        seg_id = cat * 1000 + i + 1
        segments.append(_segment(seg_id, cat, m))
        pan[m] = seg_id
        thing_masks.append(m)
    return image, pan, segments, thing_masks


def _segment(seg_id: int, cat: int, mask: np.ndarray) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {"id": seg_id, "category_id": cat, "iscrowd": 0, "area": int(mask.sum()), "bbox": bbox}


# ------------------------------------------------------------------------------------------------
# Writing the files
# ------------------------------------------------------------------------------------------------
def _id2rgb(pan: np.ndarray) -> np.ndarray:
    """COCO panoptic colour encoding: id = R + 256 * G + 256^2 * B."""
    return np.stack([pan % 256, pan // 256 % 256, pan // 256**2 % 256], axis=-1).astype(np.uint8)


def _write_one(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """Render image `index` of `split` and write its image, panoptic PNG and semantic PNG."""
    from pycocotools import mask as mask_util

    root, split, index, seed_offset = job
    image, pan, segments, thing_masks = render_scene((SEED, seed_offset, index))
    stem = f"{index:06d}"
    Image.fromarray(image).save(os.path.join(root, split, stem + ".jpg"), quality=92)
    Image.fromarray(_id2rgb(pan)).save(os.path.join(root, f"panoptic_{split}", stem + ".png"))
    sem = np.full(pan.shape, 255, np.uint8)
    for s in segments:
        sem[pan == s["id"]] = _CONTIGUOUS[s["category_id"]]
    Image.fromarray(sem).save(os.path.join(root, f"panoptic_semseg_{split}", stem + ".png"))

    instances = []
    things = [s for s in segments if s["category_id"] in _THING_IDS]
    for s, m in zip(things, thing_masks):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        instances.append(
            {
                "category_id": s["category_id"],
                "segmentation": rle,
                "area": s["area"],
                "bbox": s["bbox"],
                "iscrowd": 0,
            }
        )
    h, w = pan.shape
    return {
        "image": {"id": index, "file_name": stem + ".jpg", "height": h, "width": w},
        "panoptic": {"image_id": index, "file_name": stem + ".png", "segments_info": segments},
        "instances": instances,
    }


@contextlib.contextmanager
def _lock(root: str):
    """An exclusive inter-process lock for generating into `root` (several processes of a
    training run or tests may start at once). The lock file lives in the temporary directory,
    never next to the dataset."""
    import fcntl

    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"mask2former-demo_shapes-{key}.lock")
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _generate(root: str, splits: dict[str, tuple[int, int]], workers: int) -> None:
    os.makedirs(root)
    annotations = os.path.join(root, "annotations")
    os.makedirs(annotations)
    jobs = []
    for split, (n, offset) in splits.items():
        for d in (split, f"panoptic_{split}", f"panoptic_semseg_{split}"):
            os.makedirs(os.path.join(root, d))
        jobs += [(root, split, i, offset) for i in range(n)]
    # A progress bar (stderr; on a log, a line at most every 10 s): generation takes ~30 s.
    progress = tqdm.tqdm(
        total=len(jobs), desc="Generating demo_shapes", unit="img", mininterval=0.5, maxinterval=10
    )
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = []
            for r in pool.imap(_write_one, jobs, chunksize=16):
                results.append(r)
                progress.update(1)
    else:
        results = []
        for j in jobs:
            results.append(_write_one(j))
            progress.update(1)
    progress.close()

    start = 0
    for split, (n, _) in splits.items():
        split_results = results[start : start + n]
        start += n
        images = [r["image"] for r in split_results]
        panoptic = {
            "info": {"description": f"demo_shapes {split} (Mask2Former built-in demo dataset)"},
            "licenses": [],
            "images": images,
            "annotations": [r["panoptic"] for r in split_results],
            "categories": DEMO_CATEGORIES,
        }
        anns = []
        for r in split_results:
            for a in r["instances"]:
                anns.append({"id": len(anns) + 1, "image_id": r["image"]["id"], **a})
        instances = {
            "info": panoptic["info"],
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": [
                {k: c[k] for k in ("id", "name", "supercategory")}
                for c in DEMO_CATEGORIES
                if c["isthing"]
            ],
        }
        with open(os.path.join(annotations, f"panoptic_{split}.json"), "w") as f:
            json.dump(panoptic, f)
        with open(os.path.join(annotations, f"instances_{split}.json"), "w") as f:
            json.dump(instances, f)
    with open(os.path.join(root, "VERSION"), "w") as f:
        json.dump(demo_shapes_stamp(splits), f)


def prepare_demo_shapes(
    root: str | None = None,
    force: bool = False,
    workers: int | None = None,
    splits: dict[str, tuple[int, int]] | None = None,
) -> str:
    """Generate the dataset into `root` unless an up-to-date copy is there; returns the root.

    `splits` maps split name -> (number of images, seed offset); default `SPLITS` (the tests use
    smaller ones). Safe to call from several processes at once.
    """
    root = os.path.abspath(root or demo_shapes_root())
    splits = dict(splits or SPLITS)
    if not force and is_generated(root, splits):
        return root
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    with _lock(root):
        if not force and is_generated(root, splits):  # another process generated it meanwhile
            return root
        start = time.perf_counter()
        logger.info("Generating the demo_shapes dataset into %s ...", root)
        tmp = f"{root}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _generate(tmp, splits, workers if workers is not None else min(4, os.cpu_count() or 1))
            if os.path.exists(root):
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("Generated demo_shapes in %.1f s.", time.perf_counter() - start)
    return root


def main(argv: list[str] | None = None) -> str:
    import argparse

    parser = argparse.ArgumentParser(description="Generate the demo_shapes dataset.")
    parser.add_argument("--root", default=None, help="default: " + demo_shapes_root())
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    root = prepare_demo_shapes(args.root, force=args.force)
    print(root)
    return root


if __name__ == "__main__":
    main()
