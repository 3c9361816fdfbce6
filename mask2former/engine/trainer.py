"""`Trainer`: detectron2's DefaultTrainer with Mask2Former's data, optimiser, precision and eval."""

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import MaskFormerCheckpointer
from ..checkpoint.checks import retag_after_nonfinite_forward
from ..data.dataset_mappers import MAPPERS
from ..solver import build_lr_scheduler, build_optimizer
from .compat import TrainerStateMixin
from .resume import IterationSeedHook, build_resumable_train_loader, fast_forward_train_loader
from .train_loop import MixedPrecisionTrainer
from .weights_guard import WeightsGuard

logger = logging.getLogger(__name__)

# Names that select detectron2's own DatasetMapper on purpose (boxes only for instance data).
DETECTRON2_MAPPER_NAMES = ("detectron2", "detectron2_default")


def _after_nonfinite_forward(trainer, err: Exception) -> None:
    """A non-finite loss (or NaN/Inf predictions reaching the matcher) right after a checkpoint:
    that checkpoint cannot restart the run; move 'last_checkpoint' back and say so."""
    from .weights_guard import NonFiniteWeightsError

    text = str(err)
    forward = isinstance(err, FloatingPointError) and not isinstance(err, NonFiniteWeightsError)
    forward = forward or (
        isinstance(err, ValueError) and "NaN/inf" in text and "not finite" in text
    )
    ckpt = trainer.checkpointer
    if not forward or not comm.is_main_process() or not ckpt.save_dir or "://" in ckpt.save_dir:
        return
    note = retag_after_nonfinite_forward(ckpt.save_dir, int(trainer.iter))
    if note:
        err.args = (text + note, *err.args[1:])
        logger.error(note.strip())


def amp_precision(cfg) -> str | None:
    """None (fp32) or the autocast dtype name from SOLVER.AMP.{ENABLED,PRECISION}.

    On the CPU, AMP (fp16 as in the paper configs, or bf16) trains in bf16 where the CPU computes
    it natively and in fp32 elsewhere: fp16, and bf16 without native support, are emulated there
    and many times slower than fp32 (mask2former.utils.precision; one log line says which).
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    precision = cfg.SOLVER.AMP.PRECISION
    if torch.device(cfg.MODEL.DEVICE).type == "cpu":
        from ..utils.precision import resolve_precision

        dtype = resolve_precision("cpu", "auto", amp_enabled=True, amp_precision=precision)
        return None if dtype is None else "bfloat16"
    return precision


def create_ddp_model(model: torch.nn.Module, device_type: str, **kwargs) -> torch.nn.Module:
    """DistributedDataParallel when there is more than one process (Gloo on the CPU)."""
    if comm.get_world_size() == 1:
        return model
    if device_type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


class Trainer(TrainerStateMixin, DefaultTrainer):
    """DefaultTrainer with the Mask2Former recipe.

    * train loader: the mapper named by INPUT.DATASET_MAPPER_NAME (mask2former.data.dataset_mappers.MAPPERS;
      any other name uses detectron2's DatasetMapper);
    * optimiser: per-parameter LR/decay, full-model clipping (mask2former.solver);
    * LR schedule: WarmupPolyLR or detectron2's (SOLVER.LR_SCHEDULER_NAME);
    * precision: SOLVER.AMP.ENABLED with SOLVER.AMP.PRECISION "float16" | "bfloat16", on CUDA or
      the CPU (MixedPrecisionTrainer); multi-process on the CPU uses Gloo + CPU DDP;
    * evaluators: mask2former.evaluation.build_evaluator by the dataset's evaluator_type;
    * semantic test-time augmentation: `test_with_TTA` (TEST.AUG);
    * checkpoints carry the optimizer and GradScaler state (engine/compat.py).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        device_type = torch.device(cfg.MODEL.DEVICE).type
        model = create_ddp_model(model, device_type, broadcast_buffers=False)
        # Re-seeds every RNG from (SEED, iteration, rank), so that a resumed run draws the same
        # random numbers as an uninterrupted one (engine/resume.py); first of the hooks.
        self.seed_hook = IterationSeedHook(cfg.SEED)
        self._trainer = MixedPrecisionTrainer(
            model,
            data_loader,
            optimizer,
            precision=amp_precision(cfg),
            device_type=device_type,
            seeds=self.seed_hook,
            last_checkpoint=self._last_checkpoint_name,
            weights_guard=WeightsGuard(model, self._last_checkpoint_name),
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MaskFormerCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            save_format=cfg.SOLVER.CHECKPOINT_FORMAT,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def train(self):
        try:
            return super().train()
        except (FloatingPointError, ValueError) as e:
            _after_nonfinite_forward(self, e)
            raise

    def _last_checkpoint_name(self) -> str | None:
        ckpt = self.checkpointer
        return ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        name = cfg.INPUT.DATASET_MAPPER_NAME
        if name not in MAPPERS and name not in DETECTRON2_MAPPER_NAMES:
            raise ValueError(
                f"INPUT.DATASET_MAPPER_NAME {name!r} is not a training mapper; valid: "
                f"{', '.join(MAPPERS)}, or {DETECTRON2_MAPPER_NAMES[0]!r} for detectron2's "
                "DatasetMapper (boxes only: no Mask2Former targets for instance data)."
            )
        mapper = MAPPERS[name](cfg, True) if name in MAPPERS else None  # None: detectron2's
        # Same loader as detectron2's, with a sampler that --resume can fast-forward.
        return build_resumable_train_loader(cfg, mapper=mapper)

    def build_hooks(self):
        ret = [self.seed_hook] + super().build_hooks()  # first: seeds before the data loads
        # The metrics printer every SOLVER.LOG_PERIOD iterations (detectron2: always 20).
        period = self.cfg.SOLVER.LOG_PERIOD
        return [
            hooks.PeriodicWriter(h._writers, period=period)
            if isinstance(h, hooks.PeriodicWriter)
            else h
            for h in ret
        ]

    def resume_or_load(self, resume=True):
        if self.cfg.MODEL.WEIGHTS and not (resume and self.checkpointer.has_checkpoint()):
            from ..model_zoo import local_weights_path

            local_weights_path(self.cfg.MODEL.WEIGHTS)  # a URL offline: a clear DownloadError
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:  # continue the data stream where the checkpoint left it
            fast_forward_train_loader(self._trainer, self.start_iter, self.cfg.SOLVER.IMS_PER_BATCH)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """Evaluators for `dataset_name`; files go to `output_folder`, by default
        OUTPUT_DIR/inference/<dataset> (one folder per test set: upstream's shared
        OUTPUT_DIR/inference let two test sets overwrite each other's prediction files)."""
        from ..evaluation import build_evaluator

        return build_evaluator(cfg, dataset_name, output_folder=output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Semantic multi-scale + flip TTA (TEST.AUG) evaluation, into OUTPUT_DIR/inference_TTA/<dataset>."""
        from ..test_time_augmentation import SemanticSegmentorWithTTA

        logger.info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(
                cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name)
            )
            for name in cfg.DATASETS.TEST
        ]
        aug = cfg.TEST.AUG
        for evaluator in evaluators:  # results.json says these are TTA results, and which
            if hasattr(evaluator, "run_info"):
                evaluator.run_info.update(
                    test_time_augmentation=True,
                    min_sizes=list(aug.MIN_SIZES),
                    max_size=aug.MAX_SIZE,
                    flip=aug.FLIP,
                )
        res = cls.test(cfg, model, evaluators)
        if len(cfg.DATASETS.TEST) == 1:
            res = {cfg.DATASETS.TEST[0]: res}
        return OrderedDict((k + "_TTA", v) for k, v in res.items())
