"""Workarounds for detectron2 v0.6, each marked with the detectron2 version that makes it
unnecessary. Delete a piece (and use detectron2's own) when the pinned detectron2 has that version.

* `launch`: multi-process launch on the CPU (Gloo). Unnecessary from detectron2 commit `b4b6cc9c`
  (after v0.6), whose `launch` runs CPU processes.
* `TrainerStateMixin`: the optimizer and GradScaler state in checkpoints. Unnecessary with
  detectron2 after v0.6, whose `DefaultTrainer.state_dict` saves them under "_trainer".

(The install-time patches of detectron2 v0.6 itself are in tools/install_detectron2.py.)
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "TrainerStateMixin", "launch"]

logger = logging.getLogger(__name__)

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
    """Run `main_func(*args)` in `num_gpus_per_machine` processes on each of `num_machines`:
    detectron2's `launch` on GPUs (NCCL); on the CPU, processes spawned here with Gloo, detectron2's
    `comm` set up the same way (v0.6's `launch` asserts CUDA for more than one process).

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
        logger.error(f"Process group URL: {dist_url}")
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


class TrainerStateMixin:
    """For a `DefaultTrainer` subclass whose `_trainer` has `state_dict`/`load_state_dict`.

    detectron2 v0.6's DefaultTrainer checkpoints only the iteration and the hooks: the optimizer
    (AdamW moments, per-group LR) and the GradScaler are lost on --resume, and the first resumed
    iteration runs at BASE_LR. Later detectron2 saves them under "_trainer", as done here.
    """

    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning(
                "The checkpoint has no optimizer state (written by detectron2 v0.6's "
                "DefaultTrainer?): the optimizer restarts from scratch."
            )
