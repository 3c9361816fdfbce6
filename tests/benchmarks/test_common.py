"""benchmarks/common.py: OOM and errors become a row's status; the timer and the memory meter."""

import time

import torch

from benchmarks import common


def test_oom_and_errors_become_row_status():
    def oom(_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken(_):
        raise ValueError("bad shape")

    assert common.run_row({}, oom, "cpu", log=lambda m: None)["status"] == "OOM"
    assert common.run_row({}, broken, "cpu", log=lambda m: None)["status"].startswith(
        "error: ValueError"
    )
    t = common.Table(
        "T", [("device", "device"), ("status", "status")], [{"device": "cpu", "status": "OOM"}]
    )
    assert "| cpu    | OOM    |" in t.render()


def test_timing_and_memory_helpers():
    t = common.time_fn(lambda i: torch.ones(64, 64) @ torch.ones(64, 64), "cpu", warmup=1, iters=5)
    assert len(t.times_ms) == 5 and t.median > 0
    with common.PeakMemory("cpu") as mem:
        x = torch.ones(64, 1024, 1024)  # 256 MiB
        x += 1
        time.sleep(0.02)
    del x
    assert mem.peak >= mem.static
    assert mem.growth_gib * 1024 > 200  # the 256 MiB tensor (RSS may lag it by a little)
