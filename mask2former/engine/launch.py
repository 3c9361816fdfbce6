"""Multi-process launch: detectron2's `launch` on GPUs (NCCL), CPU processes with Gloo otherwise.

detectron2 v0.6's `launch` asserts CUDA as soon as more than one process is asked for; on a
machine without a GPU (or with `device="cpu"`), this module spawns the processes itself and
initialises torch.distributed with the Gloo backend, setting up detectron2's `comm` the same way.
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: str = "auto",
):
    """Run `main_func(*args)` in `num_gpus_per_machine` processes on each of `num_machines`.

    Args:
        num_gpus_per_machine: processes per machine (one per GPU; on the CPU, CPU processes).
        dist_url: e.g. "tcp://127.0.0.1:8686", or "auto" for a free local port (one machine).
        device: "auto" (CUDA if available), "cuda" or "cpu".
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"launch: unknown device {device!r}; valid: 'auto', 'cuda', 'cpu'")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        return d2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "launch: dist_url 'auto' works on one machine only; give tcp://HOST:PORT"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.start_processes(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )


def _cpu_worker(
    local_rank, main_func, world_size, num_procs_per_machine, machine_rank, dist_url, args, timeout
):
    global_rank = machine_rank * num_procs_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logging.getLogger(__name__).error(f"Process group URL: {dist_url}")
        raise
    # detectron2's comm needs the group of the processes on this machine (get_local_rank etc.).
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // num_procs_per_machine):
        ranks = list(range(i * num_procs_per_machine, (i + 1) * num_procs_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Share the cores instead of oversubscribing them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_procs_per_machine))
    comm.synchronize()
    main_func(*args)
    comm.synchronize()
    dist.destroy_process_group()
