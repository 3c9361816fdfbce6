#!/usr/bin/env python
"""Mask2Former demo: segment images, folders (recursively), globs or a video; write overlays and
the predictions in standard formats.

Examples (from the repository root, after `make setup`; add --device cuda on a GPU):

    .venv/bin/python demo/demo.py --config-file configs/demo/panoptic.yaml \\
        --input datasets/demo_shapes/val/000000.jpg --output out/ \\
        --opts MODEL.WEIGHTS output/demo/train/model_final.pth
    .venv/bin/python demo/demo.py --config-file <config> --input photos/ --output out/ \\
        --weights model_final_94dc52.pkl --task all
    .venv/bin/python demo/demo.py --config-file <config> --video-input clip.mp4 --output out/

Written under --output DIR: an overlay per image (DIR/NAME.png; NAME keeps the sub-folders of a
folder input, so equal file names never collide), the predictions (DIR/semantic/NAME.png label
PNGs, DIR/panoptic/NAME.png + DIR/panoptic.json in COCO panoptic format, DIR/instances.json COCO
instances with RLE masks) and DIR/predictions.json (the index, with skipped inputs). Weights load
through the project's checkpointer (published .pkl, .pth, .safetensors), as in training.
Unreadable images are skipped, reported, and listed at the end (exit status 1).
Without --output the results are shown in a window, which needs a display and a non-headless
OpenCV; the demo says so before loading the model.

A backend other than the PyTorch `Predictor` plugs in at `build_predictor`.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time

import cv2
import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E402  (predictor.py)

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from predictor import TASKS, VisualizationDemo, save_rgb  # noqa: E402

from mask2former import load_config  # noqa: E402
from mask2former.data.validation import read_image  # noqa: E402
from mask2former.prediction_writer import PredictionWriter  # noqa: E402
from mask2former.utils.precision import PRECISIONS  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
WINDOW_NAME = "mask2former"


def setup_cfg(args: argparse.Namespace):
    """The config through the project's loader, with the demo's overrides."""
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if args.confidence_threshold is not None:
        # Panoptic segments carry no score: the model keeps those whose class probability
        # exceeds OBJECT_MASK_THRESHOLD, so the threshold is applied there.
        cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = args.confidence_threshold
    if getattr(args, "weights", None):
        cfg.MODEL.WEIGHTS = args.weights
    cfg.freeze()
    return cfg


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    p.add_argument(
        "--input",
        nargs="+",
        default=[],
        help="image files, folders (searched recursively) or glob patterns (quote globs)",
    )
    p.add_argument("--video-input", help="path to a video file")
    p.add_argument(
        "--output",
        help="a folder for overlays and predictions (or, for one image / a video, an overlay "
        "file name with an image / video extension); "
        "without it, results are shown in a window (needs a display)",
    )
    p.add_argument("--weights", help="checkpoint (.pkl, .pth, .safetensors); = MODEL.WEIGHTS")
    p.add_argument(
        "--onnx",
        metavar="FILE",
        help="run an exported network (model.onnx with ONNX Runtime, or model.pt2) from "
        "tools/deploy/export_model.py instead of the PyTorch model; --config-file is the config "
        "it was exported with (classes, thresholds); --weights is then not used",
    )
    p.add_argument(
        "--device", help="cpu, cuda, cuda:1, ... (default: MODEL.DEVICE; the CPU without CUDA)"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: the config's AMP on a GPU; on a CPU bf16 only where it is native, else fp32",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="scale images whose longer side exceeds PIXELS down to it first (bounds memory: "
        "outputs are full-size float maps per query); predictions are then at that size",
    )
    p.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="run even when the checkpoint provides under half of the model's parameters",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum score of the instances drawn and saved (default 0.5) and minimum class "
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
        "--no-predictions",
        action="store_true",
        help="write only the overlays, not the prediction files",
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


# ---- inputs ----------------------------------------------------------------------------------
def expand_inputs(patterns: list[str]) -> list[str]:
    """Image paths from files, folders (their images, recursively, sorted) and glob patterns."""
    return [path for path, _ in expand_named_inputs(patterns)]


def expand_named_inputs(patterns: list[str]) -> list[tuple[str, str]]:
    """(path, unique output name without extension) for every input image.

    A folder's images are named by their path inside it ("sub/img"), so equal file names in
    different sub-folders stay apart; remaining clashes get a numeric suffix ("img_2").
    """
    found: list[tuple[str, str]] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            for root, dirs, files in os.walk(pattern):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(root, f)
                        found.append((path, os.path.splitext(os.path.relpath(path, pattern))[0]))
        elif any(c in pattern for c in "*?["):
            for path in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
                found.append((path, os.path.splitext(os.path.basename(path))[0]))
        else:
            found.append((pattern, os.path.splitext(os.path.basename(pattern))[0]))
    missing = [p for p, _ in found if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"Input not found: {missing[:3]}; give image files, folders or quoted glob patterns."
        )
    if not found:
        raise FileNotFoundError(f"No images matched {patterns}.")
    seen: dict[str, int] = {}
    named = []
    for path, name in found:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        named.append((path, name if seen[key] == 1 else f"{name}_{seen[key]}"))
    return named


def check_display(args: argparse.Namespace) -> None:
    """Without --output a window is needed: fail now, before loading the model, if impossible."""
    if args.output:
        return
    info = cv2.getBuildInformation()
    gui_line = next((ln for ln in info.splitlines() if ln.strip().startswith("GUI:")), "GUI: NONE")
    gui = gui_line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not gui or (sys.platform.startswith("linux") and not has_display):
        raise SystemExit(
            "No --output given, and results cannot be shown in a window here ("
            + (
                "this OpenCV has no GUI support, e.g. opencv-python-headless"
                if not gui
                else "no display"
            )
            + "). Pass --output DIR to write the overlays and the prediction files."
        )


def build_predictor(cfg, args: argparse.Namespace, threshold: float) -> VisualizationDemo:
    """The inference backend of the demo (the PyTorch `Predictor`, with drawing); with --onnx
    the exported network (mask2former.deploy) runs in the Predictor instead of the model."""
    model = None
    if getattr(args, "onnx", None):
        from mask2former.deploy.runtime import ExportedModel

        model = ExportedModel(cfg, args.onnx)
    return VisualizationDemo(
        cfg,
        confidence_threshold=threshold,
        device=args.device,
        precision=args.precision,
        allow_partial_weights=args.allow_partial_weights,
        max_size=args.max_size,
        model=model,
    )


# ---- images ----------------------------------------------------------------------------------
def run_images(demo: VisualizationDemo, args: argparse.Namespace, logger: logging.Logger) -> int:
    """Every input image: predict, draw, save. Returns the number of inputs skipped."""
    named = expand_named_inputs(args.input)
    records = _ground_truth_records(args.ground_truth)
    to_folder = bool(args.output) and (
        len(named) > 1 or not args.output.lower().endswith(IMAGE_EXTENSIONS)
    )
    writer = None
    if to_folder and not args.no_predictions:
        writer = PredictionWriter(args.output, demo.metadata, _run_info(args, demo))
    elif args.output and not to_folder and not args.no_predictions:
        logger.info("--output is a file: writing the overlay only (give a folder for predictions)")
    skipped: list[tuple[str, str]] = []
    image_ids = _image_ids(named)
    bar = tqdm.tqdm(named, disable=len(named) == 1, unit="img", file=sys.stderr)
    for path, name in bar:
        start = time.perf_counter()
        try:
            image = read_image(path, format="BGR")
            predictions = demo.predict(image, name=path)
        except (OSError, ValueError, MemoryError) as e:  # unreadable, too large, ...
            logger.error("Skipped %s: %s", path, e)
            skipped.append((path, str(e)))
            continue
        logger.info("%s: %s in %.2fs", path, _summary(predictions), time.perf_counter() - start)
        rgb = demo.displayed_image(image)
        if args.task == "all":
            vis = demo.draw_panel(rgb, predictions, records.get(os.path.basename(path)), args.scale)
        else:
            vis = demo.draw(rgb, predictions, args.task, args.scale)
        if writer is not None:
            writer.add(name, predictions, file_name=path, image_id=image_ids[path])
        if to_folder:
            save_rgb(os.path.join(args.output, name + ".png"), vis)
        elif args.output:
            save_rgb(args.output, vis)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis[:, :, ::-1])
            if cv2.waitKey(0) == 27:
                break  # esc to quit
    summary = {"num_inputs": len(named), "skipped": [{"file": p, "error": e} for p, e in skipped]}
    if writer is not None:
        files = writer.close(summary)
        logger.info("Predictions written: %s", ", ".join(f"{k}: {v}" for k, v in files.items()))
    _report_skipped(skipped, len(named), logger)
    return len(skipped)


def _image_ids(named: list[tuple[str, str]]) -> dict[str, int]:
    """COCO's convention where it applies: files named by their id (000000397133.jpg -> 397133,
    unique) keep it, so the JSON files evaluate against the dataset's ground truth; otherwise
    1, 2, ... in input order."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in named]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {p: int(s) for (p, _), s in zip(named, stems)}
    return {p: i + 1 for i, (p, _) in enumerate(named)}


def _report_skipped(skipped: list, total: int, logger: logging.Logger) -> None:
    if not skipped:
        return
    lines = "\n".join(f"  {p}: {e}" for p, e in skipped)
    logger.error("%d of %d inputs were skipped:\n%s", len(skipped), total, lines)


def _ground_truth_records(dataset: str | None) -> dict:
    if not dataset:
        return {}
    records = DatasetCatalog.get(dataset)
    if not any("pan_seg_file_name" in r for r in records):
        raise SystemExit(
            f"--ground-truth {dataset}: its records have no panoptic annotation "
            "(pan_seg_file_name); give a panoptic dataset, e.g. demo_shapes_panoptic_val."
        )
    return {os.path.basename(r["file_name"]): r for r in records}


def _run_info(args: argparse.Namespace, demo: VisualizationDemo) -> dict:
    return {
        "config_file": args.config_file,
        "weights": demo.predictor.weights,
        "device": str(demo.predictor.device),
        "max_size": args.max_size,
        "confidence_threshold": demo.confidence_threshold,
        "test_time_augmentation": False,
    }


# ---- video -----------------------------------------------------------------------------------
def run_video(demo: VisualizationDemo, args: argparse.Namespace, logger: logging.Logger) -> None:
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise FileNotFoundError(f"Could not open the video {args.video_input!r}.")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    stem = os.path.splitext(os.path.basename(args.video_input))[0]
    to_folder = bool(args.output) and not args.output.lower().endswith(VIDEO_EXTENSIONS)
    out_video = os.path.join(args.output, stem + ".mp4") if to_folder else args.output
    writer = None
    if to_folder and not args.no_predictions:
        writer = PredictionWriter(args.output, demo.metadata, _run_info(args, demo))
    video_writer = None
    for i, (_frame, predictions, vis) in enumerate(
        tqdm.tqdm(demo.run_on_video(video, args.task), total=frames or None, file=sys.stderr)
    ):
        if writer is not None:
            writer.add(f"{stem}/{i:06d}", predictions, file_name=f"{args.video_input}#{i}")
        if out_video:
            if video_writer is None:
                os.makedirs(os.path.dirname(os.path.abspath(out_video)), exist_ok=True)
                video_writer = cv2.VideoWriter(
                    out_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, (vis.shape[1], vis.shape[0])
                )
            video_writer.write(vis)
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis)
            if cv2.waitKey(1) == 27:
                break
    video.release()
    if video_writer is not None:
        video_writer.release()
        logger.info("Overlay video written: %s", out_video)
    if writer is not None:
        writer.close({"video": args.video_input})


def _summary(predictions) -> str:
    parts = []
    if "panoptic_seg" in predictions:
        parts.append(f"{len(predictions['panoptic_seg'][1])} panoptic segments")
    if "instances" in predictions:
        parts.append(f"{len(predictions['instances'])} instances")
    if "sem_seg" in predictions:
        parts.append("semantic map")
    return ", ".join(parts) or "nothing"


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="mask2former")
    logger = setup_logger(name="mask2former.demo")
    logger.info("Arguments: %s", args)
    if bool(args.input) == bool(args.video_input):
        raise SystemExit("Give exactly one of --input and --video-input.")
    check_display(args)  # before the model is loaded
    cfg = setup_cfg(args)
    threshold = 0.5 if args.confidence_threshold is None else args.confidence_threshold
    demo = build_predictor(cfg, args, threshold)
    if args.input:
        return 1 if run_images(demo, args, logger) else 0
    run_video(demo, args, logger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
