#!/usr/bin/env python
"""Mask2Former demo: segment images, a folder, a glob or a video file and draw the results.

Examples (CPU works; add MODEL.DEVICE cuda on a GPU):

    python demo/demo.py --config-file configs/demo/panoptic_demo_shapes.yaml \\
        --input datasets/demo_shapes/val/000000.jpg --output out/ \\
        --opts MODEL.WEIGHTS output/demo/model_final.pth
    python demo/demo.py --config-file ... --input 'photos/*.jpg' --output out/ --task all
    python demo/demo.py --config-file ... --video-input clip.mp4 --output out/clip.mp4

Overlays use detectron2's Visualizer (class names and confidences). `--confidence-threshold`
removes instances scoring below it, and panoptic segments whose class probability is below it. Without `--output` the results
are shown in an OpenCV window, which needs a display and a non-headless OpenCV.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time

import cv2
import numpy as np
import torch
import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E402  (predictor.py)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.projects.deeplab import add_deeplab_config  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from predictor import TASKS, VisualizationDemo, save_rgb  # noqa: E402

from mask2former import add_maskformer2_config  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WINDOW_NAME = "mask2former"


def setup_cfg(args: argparse.Namespace):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.confidence_threshold is not None:
        # Panoptic segments carry no score: the model keeps those whose class probability
        # exceeds OBJECT_MASK_THRESHOLD, so the threshold is applied there.
        cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = args.confidence_threshold
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    p.add_argument(
        "--input", nargs="+", default=[], help="image files, folders or glob patterns (quote globs)"
    )
    p.add_argument("--video-input", help="path to a video file")
    p.add_argument(
        "--output",
        help="a file or a folder for the overlays; a folder when several "
        "inputs are given. Without it, results are shown in a window",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum score of the instances drawn (default 0.5) and minimum class "
        "probability of the panoptic segments (default: the config's "
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD)",
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=("auto", "all") + TASKS,
        help="what to draw: auto (panoptic if the model predicts it, else semantic and "
        "instances), one task, or all three side by side",
    )
    p.add_argument(
        "--ground-truth",
        metavar="DATASET",
        help="with --task all: a registered panoptic dataset whose records (matched by "
        "file name) are drawn above the predictions",
    )
    p.add_argument("--scale", type=float, default=1.0, help="scale of the drawn overlays")
    p.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth",
    )
    return p


def expand_inputs(patterns: list[str]) -> list[str]:
    """Image paths from files, folders (their images, sorted) and glob patterns."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif any(c in pattern for c in "*?["):
            paths += sorted(glob.glob(os.path.expanduser(pattern)))
        else:
            paths.append(pattern)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"Input not found: {missing[:3]}; give image files, folders or quoted glob patterns."
        )
    if not paths:
        raise FileNotFoundError(f"No images matched {patterns}.")
    return paths


def output_path(output: str, image_path: str, many: bool) -> str:
    if many or os.path.isdir(output) or output.endswith(os.sep):
        return os.path.join(output, os.path.splitext(os.path.basename(image_path))[0] + ".png")
    return output


def run_images(demo: VisualizationDemo, args: argparse.Namespace, logger: logging.Logger) -> None:
    paths = expand_inputs(args.input)
    records = {}
    if args.ground_truth:
        records = {
            os.path.basename(r["file_name"]): r for r in DatasetCatalog.get(args.ground_truth)
        }
    for path in tqdm.tqdm(paths, disable=not args.output or len(paths) == 1):
        image = read_image(path, format="BGR")
        start = time.perf_counter()
        predictions = demo.predict(image)
        logger.info("%s: %s in %.2fs", path, _summary(predictions), time.perf_counter() - start)
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        if args.task == "all":
            vis = demo.draw_panel(rgb, predictions, records.get(os.path.basename(path)), args.scale)
        else:
            vis = demo.draw(rgb, predictions, args.task, args.scale)
        if args.output:
            save_rgb(output_path(args.output, path, len(paths) > 1), vis)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis[:, :, ::-1])
            if cv2.waitKey(0) == 27:
                break  # esc to quit


def run_video(demo: VisualizationDemo, args: argparse.Namespace) -> None:
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise FileNotFoundError(f"Could not open the video {args.video_input!r}.")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = None
    for vis in tqdm.tqdm(demo.run_on_video(video, args.task), total=frames or None):
        if args.output:
            if writer is None:
                out = args.output
                if os.path.isdir(out):
                    out = os.path.join(
                        out, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4"
                    )
                writer = cv2.VideoWriter(
                    out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (vis.shape[1], vis.shape[0])
                )
            writer.write(vis)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis)
            if cv2.waitKey(1) == 27:
                break
    video.release()
    if writer is not None:
        writer.release()


def _summary(predictions) -> str:
    parts = []
    if "panoptic_seg" in predictions:
        parts.append(f"{len(predictions['panoptic_seg'][1])} panoptic segments")
    if "instances" in predictions:
        parts.append(f"{len(predictions['instances'])} instances")
    if "sem_seg" in predictions:
        parts.append("semantic map")
    return ", ".join(parts) or "nothing"


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    logger = setup_logger(name="mask2former.demo")
    logger.info("Arguments: %s", args)
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("Give exactly one of --input and --video-input.")
    cfg = setup_cfg(args)
    threshold = 0.5 if args.confidence_threshold is None else args.confidence_threshold
    demo = VisualizationDemo(cfg, confidence_threshold=threshold)
    if args.input:
        run_images(demo, args, logger)
    else:
        run_video(demo, args)


if __name__ == "__main__":
    main()
