"""Multi-process training on the CPU (Gloo) through mask2former.engine.launch
(mask2former/engine/compat.py)."""

import json

import pytest
import torch
from detectron2.utils import comm

from mask2former.engine import launch

pytestmark = pytest.mark.slow


def _num_masks_worker(out_dir):
    from mask2former.modeling.criterion import SetCriterion
    from mask2former.modeling.matcher import HungarianMatcher

    rank = comm.get_rank()
    crit = SetCriterion(2, HungarianMatcher(), {}, 0.1, ["labels"], 16, 3.0, 0.75)
    # rank 0 sees 1 target mask, rank 1 sees 4: every worker normalises by their mean, 2.5.
    targets = [{"labels": torch.zeros(1 if rank == 0 else 4, dtype=torch.int64)}]
    result = {
        "rank": rank,
        "world": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "backend": torch.distributed.get_backend(),
        "num_masks": crit.num_masks_across_workers(targets, torch.device("cpu")),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


def _worker(out_dir, data_dir, argv):
    _num_masks_worker(out_dir)
    from tests.tools import (
        test_train_net as t,
    )  # registers the toy meta-architecture in this process

    t.register_tiny_dataset(data_dir)
    train_net = t.load_train_net()
    train_net.main(train_net.default_argument_parser().parse_args(argv))


def test_two_cpu_processes_with_gloo_train_and_share_num_masks(tmp_path):
    """One launch (spawning is slow): comm set-up, num_masks averaging, 2 DDP iterations."""
    from tests.tools import test_train_net as t

    out = tmp_path / "out"
    argv = ["--num-gpus", "2"] + t.toy_opts(out, max_iter=2, **{"DATASETS.TEST": ()})
    launch(_worker, 2, dist_url="auto", args=(tmp_path, tmp_path / "data", argv), device="cpu")

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["local_rank"] for r in results] == [0, 1]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in results)
    assert [r["num_masks"] for r in results] == [2.5, 2.5]

    assert (out / "model_final.pth").exists()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert metrics[-1]["iteration"] == 1 and metrics[-1]["total_loss"] > 0
