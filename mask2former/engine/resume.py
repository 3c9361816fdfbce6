"""Make a resumed training run continue exactly where the killed one stopped.

Restoring the weights, optimizer, scheduler and iteration (what Detectron2's checkpoint holds) is
not enough for the resumed run to *see* what the uninterrupted one would have seen:

* the training sampler restarts its infinite index stream from the beginning, so the first
  iterations after a resume re-use the images of iterations 0, 1, ... instead of k+1, k+2, ...;
* the random streams (augmentation in the mapper, dropout, point sampling in the matcher and the
  loss) restart from the process seed.

:class:`SkippableSampler` wraps any Detectron2 training sampler so that its stream can start at a
given position (iterations done x total batch size): :func:`build_resumable_train_loader` builds
the usual loader with it and :func:`fast_forward_train_loader` moves a trainer's loader to the
resumed iteration. :class:`IterationSeedHook` re-seeds Python's ``random``, NumPy and PyTorch
from (base seed, iteration, rank) at the start of every iteration and again once its batch is
loaded (called by the training step, train_loop.py); its base seed is stored in the checkpoint
(hook state), so a resumed run re-uses it even when ``SEED`` was random (< 0).

With ``DATALOADER.NUM_WORKERS 0`` and square-or-same-aspect images this reproduces the data and
randomness of the uninterrupted run exactly (losses then match up to floating-point
non-determinism). With data-loader workers the data order after a resume is the same stream
position (no images repeated or skipped) but the augmentation randomness inside workers is not
re-seeded per iteration.
"""

from __future__ import annotations

import itertools
import logging
import random

import numpy as np
import torch
from detectron2.engine.train_loop import HookBase

logger = logging.getLogger(__name__)

__all__ = [
    "IterationSeedHook",
    "SkippableSampler",
    "build_resumable_train_loader",
    "fast_forward_train_loader",
    "validate_train_dicts",
    "iteration_seed",
]


class SkippableSampler(torch.utils.data.Sampler):
    """Any per-rank infinite training sampler, minus the first `skip` indices of each rank.

    Detectron2's samplers give rank r the indices ``stream[r::world_size]``; skipping S global
    indices (S a multiple of the world size, e.g. iterations x total batch) is skipping S/world of
    each rank's. Set :attr:`skip` before the iterator is created.
    """

    def __init__(self, sampler, skip: int = 0):
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self):
        yield from itertools.islice(iter(self.sampler), self.skip, None)


def build_resumable_train_loader(cfg, mapper=None, **kwargs):
    """``build_detection_train_loader(cfg, mapper=mapper)`` whose sampler can be fast-forwarded.

    The records are checked first (:func:`validate_train_dicts`). The returned loader has a
    ``resumable_sampler`` attribute (a :class:`SkippableSampler`) used
    by :func:`fast_forward_train_loader`.
    """
    from detectron2.data.build import _train_loader_from_config, build_detection_train_loader

    from ..data.dataset_checks import check_num_classes, explain_empty_dataset

    check_num_classes(cfg, cfg.DATASETS.TRAIN)  # NUM_CLASSES = the datasets' class count
    try:
        args = _train_loader_from_config(cfg, mapper, **kwargs)
    except AssertionError as e:  # detectron2's "Got an invalid category_id=4 for ... 2 classes"
        if "category_id" in str(e):
            _explain_invalid_category(cfg)
        raise explain_empty_dataset(cfg, e) from None  # "Dataset 'x' is empty!": says why
    if isinstance(args["dataset"], list) and "dataset" not in kwargs:
        args["dataset"] = validate_train_dicts(cfg, args["dataset"])
    sampler = SkippableSampler(args["sampler"])
    args["sampler"] = sampler
    loader = build_detection_train_loader(**args)
    loader.resumable_sampler = sampler
    return loader


def validate_train_dicts(cfg, dataset_dicts: list[dict]) -> list[dict]:
    """Check every training record before training starts (mask2former.data.validation).

    Files named by the records must exist; category ids must be below
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``; polygons with < 3 points are dropped (counted in one
    warning, with the number of images without annotations).
    """
    import time

    from detectron2.data import MetadataCatalog

    from ..data.validation import validate_dataset_dicts

    names = list(cfg.DATASETS.TRAIN)
    num_classes = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    class_names = None
    if len(names) == 1:
        meta = MetadataCatalog.get(names[0])
        for key in ("stuff_classes", "thing_classes"):
            cls = meta.get(key, None)
            if cls is not None and len(cls) == num_classes:
                class_names = list(cls)
                break
    start = time.perf_counter()
    out = validate_dataset_dicts(
        dataset_dicts,
        ", ".join(names),
        num_classes=num_classes,
        class_names=class_names,
        check_files=True,
    )
    logger.info(
        "Checked %d training records and their files in %.1f s.",
        len(out),
        time.perf_counter() - start,
    )
    return out


def _explain_invalid_category(cfg) -> None:
    """Re-check the records of cfg.DATASETS.TRAIN to raise an error naming the file and the id."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..data.validation import validate_dataset_dicts

    for name in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None:
            validate_dataset_dicts(
                DatasetCatalog.get(name), name, num_classes=len(classes), class_names=list(classes)
            )


def fast_forward_train_loader(loop, start_iter: int, total_batch_size: int) -> bool:
    """Make the data of `loop` (a `MixedPrecisionTrainer` whose loader came from
    :func:`build_resumable_train_loader`) start at iteration `start_iter` of the uninterrupted
    stream. Re-creates the data iterator (and its workers). Returns False (and logs why) when the
    loader cannot be fast-forwarded.
    """
    from detectron2.utils import comm

    sampler = getattr(loop.data_loader, "resumable_sampler", None)
    if sampler is None:
        logger.warning(
            "Resuming at iteration %d: the training data loader cannot be fast-forwarded, so the "
            "data order restarts from the beginning of its stream.",
            start_iter,
        )
        return False
    sampler.skip = int(start_iter) * int(total_batch_size) // comm.get_world_size()
    loop.restart_data()
    logger.info(
        "Resuming the training data stream at iteration %d (%d samples per rank skipped).",
        start_iter,
        sampler.skip,
    )
    return True


def iteration_seed(base_seed: int, iteration: int, rank: int = 0, stream: int = 0) -> int:
    """A 32-bit seed that depends only on (base seed, iteration, rank, stream)."""
    entropy = [int(base_seed) % 2**32, int(iteration), int(rank), int(stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class IterationSeedHook(HookBase):
    """Re-seed all RNGs from (base seed, iteration, rank) at the start of every iteration (for
    the data) and, from the training step, once the batch is loaded (for the model).

    Put it first in the hook list so that it runs before the data of the iteration is loaded
    (with ``NUM_WORKERS 0`` the mapper runs inside ``run_step``).
    """

    def __init__(self, base_seed: int | None = None):
        if base_seed is None or base_seed < 0:
            from detectron2.utils import comm

            base_seed = int(comm.shared_random_seed())
        self.base_seed = int(base_seed)

    def _seed(self, iteration: int, stream: int) -> None:
        from detectron2.utils import comm

        seed_everything(iteration_seed(self.base_seed, iteration, comm.get_rank(), stream))

    def before_step(self):
        self._seed(self.trainer.iter, stream=0)

    def seed_model(self, iteration: int) -> None:
        """Re-seed once the batch of `iteration` is loaded, before the forward pass.

        Loading may draw a different number of random numbers after a resume (e.g. a new
        DataLoader iterator draws its base seed from the global RNG on its first use); re-seeding
        here makes the model's random numbers (dropout, point sampling) independent of that.
        """
        self._seed(iteration, stream=1)

    def state_dict(self):
        return {"base_seed": self.base_seed}

    def load_state_dict(self, state_dict):
        if "base_seed" in state_dict:
            if int(state_dict["base_seed"]) != self.base_seed:
                logger.info("Resuming with the checkpoint's base seed %s", state_dict["base_seed"])
            self.base_seed = int(state_dict["base_seed"])
