"""Evaluation progress is reported once, with an ETA from the rate after the first (warm-up)
batch (mask2former/evaluation/reporting.py)."""

import logging

from mask2former.evaluation import reporting


def test_eta_ignores_the_warm_up_batch(monkeypatch):
    clock = iter([0.0, 30.0, 31.0, 32.0, 33.0])  # start; first image 30 s, then 1 s per image
    monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
    p = reporting._Progress("d", total=10, log_period=0.0)
    p.update(1)  # t = 30: no steady rate yet
    assert p.line(30.0).endswith("ETA ?")
    p.update(1)  # t = 31
    p.update(1)  # t = 32: 2 images in 2 s after the first -> 1 img/s, 7 left
    assert p.line(32.0).endswith("ETA 0:00:07")
    p.update(7)  # t = 33: done
    assert p.line(33.0).endswith("ETA 0:00:00")


def test_detectron2_progress_lines_are_dropped(caplog):
    reporting._silence_detectron2_progress()
    reporting._silence_detectron2_progress()  # idempotent
    log = logging.getLogger("detectron2.evaluation.evaluator")
    assert sum(isinstance(f, reporting._DropProgress) for f in log.filters) == 1
    with caplog.at_level(logging.INFO, logger="detectron2.evaluation.evaluator"):
        log.info("Inference done 11/100. Dataloading: 0.0 s/iter. ETA=0:01:00")
        log.info("Total inference time: 0:00:10")
    assert "Inference done" not in caplog.text and "Total inference time" in caplog.text
