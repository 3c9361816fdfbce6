"""Drawing for demo/demo.py (and tools/run_demo.py) on top of `mask2former.predictor.Predictor`.

`VisualizationDemo` runs the package's `Predictor` (the project's config loader, checkpointer and
image reader), filters the predictions by confidence and draws them with detectron2's
`Visualizer` (class names and scores on every instance / segment). `draw_panel` puts the
panoptic, instance and semantic results side by side, optionally above the ground truth of a
registered dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

from mask2former.predictor import Predictor
from mask2former.visualization import TASKS, draw_predictions, filter_predictions

__all__ = ["TASKS", "VisualizationDemo", "filter_predictions", "save_rgb"]


class VisualizationDemo:
    """Run a model on images or videos and draw the results.

    Args:
        cfg: a config from `mask2former.load_config` (MODEL.WEIGHTS, INPUT.MIN_SIZE_TEST, ...).
        confidence_threshold: instances / panoptic segments scoring below it are dropped.
        instance_mode: detectron2 `ColorMode` for the instance overlays.
        **predictor_kwargs: device, precision, allow_partial_weights, max_size (`Predictor`).
    """

    def __init__(
        self,
        cfg,
        confidence_threshold: float = 0.5,
        instance_mode: ColorMode = ColorMode.IMAGE,
        **predictor_kwargs,
    ):
        self.predictor = Predictor(cfg, **predictor_kwargs)
        self.metadata = self.predictor.metadata
        self.cpu_device = torch.device("cpu")
        self.instance_mode = instance_mode
        self.confidence_threshold = confidence_threshold

    # -- inference --------------------------------------------------------------------------------
    def predict(self, image_bgr: np.ndarray, name: str = "input") -> dict[str, Any]:
        """Model outputs for one BGR image (H, W, 3), filtered by the confidence threshold."""
        outputs = self.predictor(image_bgr, input_format="BGR", name=name)
        return filter_predictions(outputs, self.confidence_threshold)

    def displayed_image(self, image_bgr: np.ndarray) -> np.ndarray:
        """The RGB image the predictions belong to (scaled down like the input, with max_size)."""
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        size = self.predictor.output_size(*rgb.shape[:2])
        if size != rgb.shape[:2]:
            rgb = cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)
        return rgb

    # -- drawing ----------------------------------------------------------------------------------
    def _visualizer(self, image_rgb: np.ndarray, scale: float = 1.0) -> Visualizer:
        return Visualizer(image_rgb, self.metadata, scale=scale, instance_mode=self.instance_mode)

    def draw(
        self,
        image_rgb: np.ndarray,
        predictions: dict[str, Any],
        task: str = "auto",
        scale: float = 1.0,
    ) -> np.ndarray:
        """Draw one task's predictions on `image_rgb`; returns an RGB uint8 image (see
        `mask2former.visualization.draw_predictions`)."""
        return draw_predictions(
            image_rgb, predictions, self.metadata, task, scale, self.instance_mode
        )

    def draw_ground_truth(
        self, image_rgb: np.ndarray, record: dict[str, Any], task: str, scale: float = 1.0
    ) -> np.ndarray:
        """Draw the ground truth of one detectron2 dataset record (panoptic dataset format)."""
        v = self._visualizer(image_rgb, scale)
        if task == "panoptic" and "pan_seg_file_name" in record:
            pan = _read_panoptic(record["pan_seg_file_name"])
            v.draw_panoptic_seg(torch.from_numpy(pan), record["segments_info"])
        elif task == "instance" and "pan_seg_file_name" in record:
            pan = _read_panoptic(record["pan_seg_file_name"])
            things = [s for s in record["segments_info"] if s.get("isthing", False)]
            inst = Instances(pan.shape)
            inst.pred_masks = torch.from_numpy(
                np.stack([pan == s["id"] for s in things])
                if things
                else np.zeros((0, *pan.shape), bool)
            )
            inst.pred_classes = torch.as_tensor(
                [s["category_id"] for s in things], dtype=torch.int64
            )
            v.draw_instance_predictions(inst)
        elif task == "semantic" and "sem_seg_file_name" in record:
            v.draw_sem_seg(np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64))
        return v.get_output().get_image()

    def draw_panel(
        self,
        image_rgb: np.ndarray,
        predictions: dict[str, Any],
        record: dict[str, Any] | None = None,
        scale: float = 1.0,
    ) -> np.ndarray:
        """Panoptic | instance | semantic predictions side by side (under the ground truth, when a
        dataset record is given), with the input image on the left; RGB uint8."""
        h, w = image_rgb.shape[:2]
        size = (int(round(w * scale)), int(round(h * scale)))
        inp = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
        rows = []
        if record is not None:
            gt = [self.draw_ground_truth(image_rgb, record, t, scale) for t in TASKS]
            rows.append(
                _titled([inp] + gt, ["input", "ground truth: panoptic", "instance", "semantic"])
            )
        preds = [self.draw(image_rgb, predictions, t, scale) for t in TASKS]
        first = inp if record is None else np.full_like(inp, 255)
        rows.append(
            _titled(
                [first] + preds,
                ["input" if record is None else "", "prediction: panoptic", "instance", "semantic"],
            )
        )
        return np.concatenate(rows, axis=0)

    def run_on_image(self, image_bgr: np.ndarray, task: str = "auto", scale: float = 1.0):
        """Returns (predictions, RGB visualisation). task "all" draws the three-task panel."""
        predictions = self.predict(image_bgr)
        rgb = self.displayed_image(image_bgr)
        if task == "all":
            return predictions, self.draw_panel(rgb, predictions, scale=scale)
        return predictions, self.draw(rgb, predictions, task, scale)

    def run_on_video(
        self, video: cv2.VideoCapture, task: str = "auto"
    ) -> Iterator[tuple[np.ndarray, dict, np.ndarray]]:
        """Yields (BGR frame, predictions, BGR visualisation) per frame of an opened video."""
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            predictions, vis = self.run_on_image(frame, task)
            yield frame, predictions, np.ascontiguousarray(vis[:, :, ::-1])


def _read_panoptic(path: str) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def _titled(images: list[np.ndarray], titles: list[str], bar: int = 22) -> np.ndarray:
    """Concatenate same-height RGB images horizontally, each under a white title bar."""
    tiles = []
    for img, title in zip(images, titles):
        head = np.full((bar, img.shape[1], 3), 255, np.uint8)
        cv2.putText(
            head, title, (4, bar - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
        tiles.append(np.concatenate([head, img], axis=0))
        tiles.append(np.full((bar + img.shape[0], 4, 3), 255, np.uint8))  # gutter
    return np.concatenate(tiles[:-1], axis=1)


def save_rgb(path: str, image_rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image_rgb).save(path)
