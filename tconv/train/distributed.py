"""Data-parallel training over processes (`torch.distributed`, DDP).

`torchrun --nproc-per-node N $(which tconv) train ...` starts N processes
with RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in their
environment; each trains on its share of every minibatch and DDP averages the
gradients. The process group uses NCCL where each process has a GPU and gloo
otherwise (CPUs, and tests on loopback). Only rank 0 writes files and
prints; without torchrun's environment training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tconv.errors import TconvError


@dataclass(frozen=True)
class Processes:
    device: torch.device
    """This process's device (its local rank's GPU under torchrun on CUDA)."""
    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        """The process that writes the outputs and reports progress."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def resolve_device(name: str) -> torch.device:
    """`auto` (a GPU where torch sees one, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TconvError(f"error: unknown device '{name}' (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TconvError(f"error: device '{name}': torch sees no CUDA GPU on this machine")
    return device


def start(device_name: str) -> Processes:
    """Join the process group that torchrun's environment describes (one
    process where there is none); on CUDA, take the local rank's GPU."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Processes(device)
    if not dist.is_available():
        raise TconvError("error: this torch build has no torch.distributed")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(device, dist.get_rank(), dist.get_world_size())


def stop(processes: Processes) -> None:
    """Leave the process group, all processes together: one that tears its
    connections down while another is still finishing can abort (gloo)."""
    if processes.parallel and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
