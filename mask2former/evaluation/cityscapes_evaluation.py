"""Cityscapes evaluators: detectron2's, which call the official `cityscapesscripts`, made quiet.

Detectron2 v0.6's `CityscapesSemSegEvaluator` (IoU / iIoU over 19 classes and 7 categories) and
`CityscapesInstanceEvaluator` (AP, AP50) work on this stack unchanged as long as NumPy < 2
(`cityscapesscripts` 2.3.0 uses `np.in1d`); both were checked on a generated Cityscapes-layout
case (tests/evaluation/test_cityscapes_evaluation.py). They glob *every* ground-truth file under the metadata's
`gt_dir` (`<gt_dir>/<city>/*_gtFine_{labelIds,instanceIds}.png`) and need a prediction for each,
and they work on a single machine only (all ranks write into rank 0's temporary folder).

The subclasses below route the scripts' per-image console output to the log (DEBUG), keep the
summary tables at INFO, keep the instance script's `matches.json` out of the current directory,
and raise if two inputs share a basename (their prediction files would overwrite each other).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os

from detectron2.evaluation import cityscapes_evaluation as _d2
from detectron2.utils import comm

from .panoptic_evaluation import check_unique_file_names

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


class _UniqueBasenames:
    """cityscapesscripts finds an image's prediction by the Cityscapes basename
    (`<city>_<seq>_<frame>`), so the prediction files must keep it: two inputs with one basename
    would overwrite each other's files. Checked over all processes before evaluating."""

    def reset(self):
        super().reset()
        self._file_names = []

    def process(self, inputs, outputs):
        self._file_names.extend(inp["file_name"] for inp in inputs)
        super().process(inputs, outputs)

    def _check_unique_basenames(self) -> None:
        names = list(itertools.chain(*comm.all_gather(self._file_names)))  # every rank raises
        check_unique_file_names(
            [(os.path.splitext(os.path.basename(f))[0], f) for f in names], self._metadata.name
        )


class CityscapesSemSegEvaluator(_UniqueBasenames, _d2.CityscapesSemSegEvaluator):
    """Cityscapes semantic IoU / iIoU (class and category level) via cityscapesscripts.

    Expects `output["sem_seg"]` (19, H, W) over Cityscapes train ids; metadata `gt_dir`."""

    def evaluate(self):
        self._check_unique_basenames()
        with _captured("pixel-level semantic labeling"):
            return super().evaluate()


class CityscapesInstanceEvaluator(_UniqueBasenames, _d2.CityscapesInstanceEvaluator):
    """Cityscapes instance AP / AP50 via cityscapesscripts.

    Expects `output["instances"]` with classes indexing the metadata's `thing_classes`
    (Cityscapes label names); metadata `gt_dir`."""

    def evaluate(self):
        self._check_unique_basenames()
        # The script also writes "matches.json" into the current directory: keep that in the
        # temporary results folder (removed afterwards).
        with _captured("instance-level semantic labeling"), contextlib.chdir(self._temp_dir):
            return super().evaluate()
