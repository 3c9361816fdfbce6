"""Make a resumed training run continue exactly where the killed one stopped.

Restoring the weights, optimizer, scheduler and iteration (what Detectron2's checkpoint holds) is
not enough for the resumed run to *see* what the uninterrupted one would have seen:

* the training sampler restarts its infinite index stream from the beginning, so the first
  iterations after a resume re-use the images of iterations 0, 1, ... instead of k+1, k+2, ...;
* the random streams (augmentation in the mapper, dropout, point sampling in the matcher and the
  loss) restart from the process seed.

:class:`ResumableTrainingSampler` is Detectron2's ``TrainingSampler`` that can start at a given
position of its stream (``skip`` = iterations done x total batch size), and
:class:`IterationSeedHook` re-seeds Python's ``random``, NumPy and PyTorch at the start of every
iteration from (base seed, iteration, rank); its base seed is stored in the checkpoint (hook
state), so a resumed run re-uses it even when ``SEED`` was random (< 0).

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
from detectron2.data.samplers import TrainingSampler
from detectron2.engine.train_loop import HookBase

logger = logging.getLogger(__name__)

__all__ = ["IterationSeedHook", "ResumableTrainingSampler", "iteration_seed"]


class ResumableTrainingSampler(TrainingSampler):
    """``TrainingSampler`` whose infinite stream starts after the first `skip` global indices."""

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None, skip: int = 0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._skip = int(skip)

    def __iter__(self):
        yield from itertools.islice(
            self._infinite_indices(), self._skip + self._rank, None, self._world_size
        )


def iteration_seed(base_seed: int, iteration: int, rank: int = 0) -> int:
    """A 32-bit seed that depends only on (base seed, iteration, rank)."""
    return int(np.random.SeedSequence([int(base_seed) % 2**32, int(iteration), int(rank)]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class IterationSeedHook(HookBase):
    """Re-seed all RNGs at the start of every iteration from (base seed, iteration, rank).

    Put it first in the hook list so that it runs before the data of the iteration is loaded
    (with ``NUM_WORKERS 0`` the mapper runs inside ``run_step``).
    """

    def __init__(self, base_seed: int | None = None):
        if base_seed is None or base_seed < 0:
            from detectron2.utils import comm

            base_seed = int(comm.shared_random_seed())
        self.base_seed = int(base_seed)

    def before_step(self):
        from detectron2.utils import comm

        seed_everything(iteration_seed(self.base_seed, self.trainer.iter, comm.get_rank()))

    def state_dict(self):
        return {"base_seed": self.base_seed}

    def load_state_dict(self, state_dict):
        if "base_seed" in state_dict:
            if int(state_dict["base_seed"]) != self.base_seed:
                logger.info("Resuming with the checkpoint's base seed %s", state_dict["base_seed"])
            self.base_seed = int(state_dict["base_seed"])
