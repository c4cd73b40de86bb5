"""One place that decides how processes find each other."""

from __future__ import annotations

import os

import torch


def has_accelerator() -> bool:
    """A GPU (or other torch accelerator) is visible to this process."""
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def use_cpu() -> bool:
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not has_accelerator()


def process_state():
    """accelerate's `PartialState`, told it is on CPU when no accelerator is visible.

    Why: `PartialState()` joins a multi-process group on CPU only when told it is on CPU, so processes started by
    `torchrun --nproc_per_node 2 ...` on a machine without GPUs would otherwise each run the whole job alone.
    (`accelerate launch --cpu --num_processes 2` starts a single process unless MPI is configured.)
    """
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())
