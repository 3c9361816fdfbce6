"""Cityscapes evaluators: detectron2's, which call the official `cityscapesscripts`, made quiet.

Detectron2 v0.6's `CityscapesSemSegEvaluator` (IoU / iIoU over 19 classes and 7 categories) and
`CityscapesInstanceEvaluator` (AP, AP50) work on this stack unchanged as long as NumPy < 2
(`cityscapesscripts` 2.3.0 uses `np.in1d`); both were checked on a generated Cityscapes-layout
case (tests/evaluation/test_cityscapes_evaluation.py). They glob *every* ground-truth file under the metadata's
`gt_dir` (`<gt_dir>/<city>/*_gtFine_{labelIds,instanceIds}.png`) and need a prediction for each,
and they work on a single machine only (all ranks write into rank 0's temporary folder).

The subclasses below only route the scripts' per-image console output to the log (DEBUG), keep
the summary tables at INFO, and keep the instance script's `matches.json` out of the current
directory.
"""

from __future__ import annotations

import contextlib
import io
import logging

from detectron2.evaluation import cityscapes_evaluation as _d2

logger = logging.getLogger(__name__)

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]


@contextlib.contextmanager
def _captured(name: str):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue()
    # The scripts print a progress line per image, then the result tables.
    logger.debug(text)
    tables = text[text.find("#####") :] if "#####" in text else text[text.find("classes") :]
    if tables.strip():
        logger.info(f"cityscapesscripts ({name}):\n{tables.rstrip()}")


class CityscapesSemSegEvaluator(_d2.CityscapesSemSegEvaluator):
    """Cityscapes semantic IoU / iIoU (class and category level) via cityscapesscripts.

    Expects `output["sem_seg"]` (19, H, W) over Cityscapes train ids; metadata `gt_dir`."""

    def evaluate(self):
        with _captured("pixel-level semantic labeling"):
            return super().evaluate()


class CityscapesInstanceEvaluator(_d2.CityscapesInstanceEvaluator):
    """Cityscapes instance AP / AP50 via cityscapesscripts.

    Expects `output["instances"]` with classes indexing the metadata's `thing_classes`
    (Cityscapes label names); metadata `gt_dir`."""

    def evaluate(self):
        # The script also writes "matches.json" into the current directory: keep that in the
        # temporary results folder (removed afterwards).
        with _captured("instance-level semantic labeling"), contextlib.chdir(self._temp_dir):
            return super().evaluate()
