"""Data parallel training over processes (``accelerate launch`` or ``torchrun``).

Every process holds the whole model and takes its share of each optimizer
step's tasks; the gradients are averaged over all of the step's tasks with one
all-reduce (nccl on GPUs, gloo on CPUs). A single process needs none of this
and never starts a process group.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch


def world_size() -> int:
    """Processes in this training run (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def steps_per_epoch(n_tasks: int, tasks_per_step: int, world: int | None = None) -> int:
    """Optimizer steps to visit ``n_tasks`` once, ``tasks_per_step`` tasks on each of ``world`` processes."""
    return math.ceil(n_tasks / (tasks_per_step * (world or world_size())))


@dataclass
class DistributedState:
    """This process's place in a (possibly single-process) training run."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @classmethod
    def start(cls, device: str) -> DistributedState:
        """Join the run's process group when there is more than one process.

        ``device`` is the config's (``auto``: cuda when available); under a
        launcher each process takes the device it assigns.
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if world_size() == 1:
            return cls(0, 1, device)
        from accelerate import PartialState  # sets up the process group (nccl on GPUs, gloo on CPUs)

        state = PartialState(cpu=device == "cpu")
        return cls(state.process_index, state.num_processes, str(state.device))

    @property
    def main(self) -> bool:
        """Process 0, the one that reports and saves."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place (a no-op for one process)."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            torch.distributed.barrier()


def average_gradients(params: list[torch.nn.Parameter], n_local: int, dist: DistributedState) -> int:
    """Turn each process's summed task gradients into the mean over every task
    of the step, on every process (one flat all-reduce). Returns the task count."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [torch.tensor([float(n_local)], device=params[0].device)])
    dist.all_reduce_sum(flat)
    count = int(round(float(flat[-1])))
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = (flat[offset: offset + n] / max(count, 1)).view_as(p).clone()
        offset += n
    return count
