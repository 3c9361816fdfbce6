"""Two processes (Gloo, CPU) give the same metrics as one: each evaluator gathers its state."""

import json
import math

import pytest
import torch.multiprocessing as mp
from detectron2.config import CfgNode

from mask2former.evaluation import build_evaluator
from mask2former.evaluation import testing as T

CFG = {
    "OUTPUT_DIR": "",
    "MODEL": {
        "MASK_FORMER": {"TEST": {"PANOPTIC_ON": True, "INSTANCE_ON": True, "SEMANTIC_ON": True}}
    },
    "TEST": {"DETECTIONS_PER_IMAGE": 100, "BOUNDARY_AP": True},
}


def _same(a, b):
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for k, v in a[task].items():
            w = b[task][k]
            assert (v is None and w is None) or (
                v is not None
                and w is not None
                and (math.isnan(v) and math.isnan(w) or math.isclose(v, w, abs_tol=1e-9))
            ), (task, k, v, w)


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one(tmp_path):
    world = T.make_panoptic_world(str(tmp_path / "data"))
    records = T.register_panoptic_world("_eval_dist_world", world)
    single = T.run_evaluator(
        build_evaluator(CfgNode(CFG), "_eval_dist_world", str(tmp_path / "single")),
        records,
        T.partial_outputs(),
    )
    out = tmp_path / "dist"
    out.mkdir()
    # spawn (not fork: forked children of a process that has used torch's thread pool can hang)
    mp.spawn(
        T.distributed_worker,
        nprocs=2,
        join=True,
        args=(2, str(tmp_path / "init"), world, CFG, str(out)),
    )
    dist = json.loads((out / "results.json").read_text())
    single = json.loads(json.dumps(single))  # same NaN/float handling as the worker's file
    assert set(single) == {"panoptic_seg", "bbox", "segm", "boundary", "sem_seg"}
    _same(single, dist)
    assert (out / "rank0" / "results.md").exists() and not (out / "rank1" / "results.md").exists()
