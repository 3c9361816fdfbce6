"""SOLVER.LOG_PERIOD sets how often training prints its metrics line (detectron2: always 20)."""

import os

from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils.events import EventWriter

from mask2former import load_config
from mask2former.engine.resume import IterationSeedHook
from mask2former.engine.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_log_period_from_config(monkeypatch):
    writer = EventWriter()
    other = hooks.IterationTimer()
    monkeypatch.setattr(
        DefaultTrainer,
        "build_hooks",
        lambda self: [other, hooks.PeriodicWriter([writer], period=20)],
    )
    trainer = Trainer.__new__(Trainer)  # build_hooks needs only cfg and the seed hook
    trainer.seed_hook = IterationSeedHook(0)
    config = os.path.join(REPO, "configs", "demo", "panoptic.yaml")
    for period, expected in ((None, 20), (3, 3)):
        opts = [] if period is None else ["SOLVER.LOG_PERIOD", str(period)]
        trainer.cfg = load_config(config, opts)
        built = trainer.build_hooks()
        assert other in built
        (printer,) = [h for h in built if isinstance(h, hooks.PeriodicWriter)]
        assert printer._period == expected and printer._writers == [writer]
