"""Progress during evaluation and a results table (Markdown + CSV + JSON) next to the outputs.

`EvaluatorGroup` is what `build_evaluator` returns: detectron2's `DatasetEvaluators` (so any loop
that calls reset/process/evaluate, e.g. detectron2's `inference_on_dataset`, drives it) that also

* reports progress on the main process: images done / total, images per second and time left,
  as a tqdm bar on a terminal and as a log line every `log_period` seconds otherwise;
* after `evaluate()`, writes `results.json`, `results.md` and `results.csv` into `output_dir`.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import sys
import time
from collections import OrderedDict

from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

__all__ = ["EvaluatorGroup", "write_results_table", "images_on_this_rank"]


def images_on_this_rank(num_images: int) -> int:
    """How many of `num_images` detectron2's `InferenceSampler` gives to this process."""
    world, rank = comm.get_world_size(), comm.get_rank()
    shard = (num_images - 1) // world + 1 if num_images else 0
    return max(0, min(shard * (rank + 1), num_images) - shard * rank)


class _Progress:
    def __init__(self, name: str, total: int | None, log_period: float):
        self.name, self.total, self.log_period = name, total, log_period
        self.done = 0
        self.start = self.last_log = time.perf_counter()  # created by reset(), before the loop
        self.bar = None
        self.first: tuple[int, float] | None = None  # (images, time) after the first batch
        if comm.is_main_process() and total and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=f"Evaluating {name}", unit="img")
            except ImportError:
                pass

    def update(self, n: int) -> None:
        now = time.perf_counter()
        self.done += n
        if self.first is None:  # the first batch includes the warm-up: the rate starts after it
            self.first = (self.done, now)
        if self.bar is not None:
            self.bar.update(n)
            return
        finished = self.total is not None and self.done >= self.total
        if comm.is_main_process() and (
            finished or now - self.last_log >= self.log_period or self.done == n
        ):
            self.last_log = now
            logger.info(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        steady = None  # images/s after the first batch (model warm-up, first allocations)
        if self.first is not None and self.done > self.first[0] and now > self.first[1]:
            steady = (self.done - self.first[0]) / (now - self.first[1])
        if self.total:
            left = (self.total - self.done) / steady if steady else float("inf")
            if self.done >= self.total:
                left = 0.0
            eta = str(datetime.timedelta(seconds=int(left))) if math.isfinite(left) else "?"
            pct = 100.0 * self.done / self.total
            return (
                f"Evaluating {self.name}: {self.done}/{self.total} images ({pct:.0f}%), "
                f"{rate:.2f} img/s, ETA {eta}"
            )
        return f"Evaluating {self.name}: {self.done} images, {rate:.2f} img/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _DropProgress(logging.Filter):
    """Drops `inference_on_dataset`'s own "Inference done i/N ... ETA" lines: the group reports
    progress once, with an ETA from the rate after the first batch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Inference done ")


def _silence_detectron2_progress() -> None:
    log = logging.getLogger("detectron2.evaluation.evaluator")
    if not any(isinstance(f, _DropProgress) for f in log.filters):
        log.addFilter(_DropProgress())


class EvaluatorGroup(DatasetEvaluators):
    """The evaluators of one dataset, with progress reporting and a results table."""

    def __init__(
        self,
        evaluators: list,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        num_images: int | None = None,
        log_period: float = 10.0,
    ):
        super().__init__(evaluators)
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.num_images = num_images
        self.log_period = log_period
        self._progress = None
        # How the predictions were made, written as "_run" into results.json (the trainer sets
        # test_time_augmentation True and the TEST.AUG settings for a TTA evaluation).
        self.run_info: dict = {"test_time_augmentation": False}

    @property
    def evaluators(self) -> list:
        return list(self._evaluators)

    def _new_progress(self) -> _Progress:
        total = images_on_this_rank(self.num_images) if self.num_images is not None else None
        return _Progress(self.dataset_name, total, self.log_period)

    def reset(self):
        _silence_detectron2_progress()
        super().reset()
        if self._progress is not None:
            self._progress.close()
        self._progress = self._new_progress()

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        if self._progress is None:  # a loop that did not call reset()
            self._progress = self._new_progress()
        self._progress.update(len(inputs))

    def evaluate(self):
        if self._progress is not None:
            self._progress.close()
        start = time.perf_counter()
        results = super().evaluate()
        if comm.is_main_process():
            logger.info(
                f"Computed the metrics of {self.dataset_name} in "
                f"{time.perf_counter() - start:.1f} s"
            )
            if self.output_dir and results:
                tta = self.run_info.get("test_time_augmentation")
                title = self.dataset_name + (" (test-time augmentation)" if tta else "")
                paths = write_results_table(results, self.output_dir, title, self.run_info)
                logger.info(f"Results table: {paths['md']} (also .csv, .json)")
        return results


# ---- results table ------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def _json_safe(v):
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _json_safe(v.item())
    return v


def _split_per_class(metrics: dict) -> tuple[OrderedDict, OrderedDict]:
    """{"mIoU": .., "IoU-road": .., "ACC-road": ..} -> (summary, {"road": {"IoU": .., ..}})."""
    summary, per_class = OrderedDict(), OrderedDict()
    for k, v in metrics.items():
        prefix, sep, name = k.partition("-")
        if sep and prefix in ("IoU", "ACC", "AP", "PQ", "SQ", "RQ"):
            per_class.setdefault(name, OrderedDict())[prefix] = v
        else:
            summary[k] = v
    return summary, per_class


def write_results_table(
    results: dict, output_dir: str, title: str = "", run_info: dict | None = None
) -> dict:
    """Write `results` ({task: {metric: value}}) as results.{json,md,csv}; returns the paths.
    `run_info` (e.g. {"test_time_augmentation": True}) goes into results.json as "_run"."""
    PathManager.mkdirs(output_dir)
    paths = {ext: os.path.join(output_dir, f"results.{ext}") for ext in ("json", "md", "csv")}
    with PathManager.open(paths["json"], "w") as f:
        data = {**results, "_run": run_info} if run_info else results
        json.dump(_json_safe(data), f, indent=1)

    lines = [f"# Evaluation results{': ' + title if title else ''}", ""]
    rows = []
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        summary, per_class = _split_per_class(metrics)
        lines += [f"## {task}", ""]
        if summary:
            lines += ["| " + " | ".join(summary) + " |", "|" + "---:|" * len(summary)]
            lines += ["| " + " | ".join(_fmt(v) for v in summary.values()) + " |", ""]
        if per_class:
            cols = list(dict.fromkeys(c for d in per_class.values() for c in d))
            lines += ["| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
            for name, d in per_class.items():
                lines.append(f"| {name} | " + " | ".join(_fmt(d.get(c, "")) for c in cols) + " |")
            lines.append("")
        for k, v in metrics.items():
            rows.append([title, task, k, v])
    with PathManager.open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    with PathManager.open(paths["csv"], "w") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "task", "metric", "value"])
        for r in rows:
            v = r[3]
            writer.writerow(r[:3] + [("nan" if isinstance(v, float) and math.isnan(v) else v)])
    return paths
