"""Pieces that make a resumed run continue exactly (mask2former/utils/resume.py)."""

import itertools
import random

import numpy as np
import torch
from detectron2.data.samplers import TrainingSampler

from mask2former.utils.resume import IterationSeedHook, SkippableSampler, iteration_seed


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_skippable_sampler_continues_the_stream():
    full = _take(TrainingSampler(10, seed=3), 40)
    s = SkippableSampler(TrainingSampler(10, seed=3))
    s.skip = 13  # e.g. iteration 13 with batch 1
    assert _take(s, 27) == full[13:]


def test_skippable_sampler_per_rank(monkeypatch):
    """With 2 ranks each rank takes stream[rank::2]; skipping 3 iterations x batch 4 global
    indices = 6 of each rank's."""
    from detectron2.utils import comm

    stream = _take(TrainingSampler(7, seed=1), 60)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        s = SkippableSampler(TrainingSampler(7, seed=1), skip=3 * 4 // 2)
        assert _take(s, 10) == stream[rank::2][6:16]


class _FakeTrainer:
    iter = 0


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_iteration_seed_hook_is_a_function_of_the_iteration():
    hook = IterationSeedHook(base_seed=5)
    hook.trainer = _FakeTrainer()
    seen = {}
    for it in [0, 1, 2, 1, 0]:
        hook.trainer.iter = it
        hook.before_step()
        d = _draws()
        assert seen.setdefault(it, d) == d
    assert len({seen[i] for i in seen}) == 3
    assert iteration_seed(5, 1, 0) != iteration_seed(5, 1, 1) != iteration_seed(6, 1, 1)


def test_iteration_seed_hook_state_restores_a_random_base_seed():
    a = IterationSeedHook(base_seed=-1)  # SEED < 0: a random base seed ...
    b = IterationSeedHook(base_seed=-1)
    b.load_state_dict(a.state_dict())  # ... that the checkpoint carries to the resumed run
    assert b.base_seed == a.base_seed
