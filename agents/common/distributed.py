"""Data-parallel training on ``torch.distributed``: process group, rank helpers and the collectives llm-gym needs.

Launch with ``torchrun --nproc_per_node N scripts/train.py ...`` or ``accelerate launch --num_processes N
...``: both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` starts the process group from them (gloo on CPU, NCCL on GPUs). The gradients are
all-reduced by ``torch.nn.parallel.DistributedDataParallel`` (:mod:`agents.common.base`); this module only
holds the small collectives around it: gathering a rollout's rows (global metrics, global advantage
statistics, DAPO's global group count) and reducing scalars (the loss normaliser, the training stats).

Without a process group every helper is the single-process identity, so the same code runs both ways.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from agents.common.buffers import RolloutSamples

__all__ = ["all_gather_rows", "all_reduce_sum", "any_rank", "init_distributed", "is_distributed",
           "is_main_process", "mean_over_ranks", "rank", "shutdown_distributed", "world_size"]


def init_distributed(timeout_minutes: float = 60.0) -> bool:
    """Start the default process group when launched by torchrun/accelerate (``WORLD_SIZE > 1``); idempotent.

    The backend is NCCL when CUDA is present (each process then uses ``cuda:LOCAL_RANK``), else gloo.

    Returns:
        True when running with more than one process.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` without ``MASTER_ADDR`` / ``MASTER_PORT`` (not started by a launcher).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise RuntimeError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set: start the processes with "
                           "torchrun --nproc_per_node N (or accelerate launch --num_processes N).")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_world_size() > 1


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the default process group; a no-op without one.

    Call it once at the end of a job. A rank that exits while the others still run collectives (rank 0
    evaluating and saving) can abort in gloo's threads at interpreter exit ("terminate called without an
    active exception", SIGABRT), and torch warns when a process group is left undestroyed.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0: the process that logs, evaluates and saves."""
    return rank() == 0


def _device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_rows(samples: RolloutSamples) -> RolloutSamples:
    """Every rank's rows, in rank order (rank 0's first): a ``(world_size * B, ...)`` container on every rank.

    Every rank must pass the same shapes (llm-gym pads prompts to the env's ``max_prompt_length`` and
    responses to ``max_new_tokens``) and the same None fields. ``infos`` are gathered as Python objects.
    Without a process group the samples are returned unchanged.
    """
    if not is_distributed():
        return samples
    merged: dict[str, Any] = {}
    for name, value in samples._asdict().items():
        if value is None:
            merged[name] = None
        elif name == "infos":
            parts: list[Any] = [None] * world_size()
            dist.all_gather_object(parts, value)
            merged[name] = [info for part in parts for info in part]
        else:
            local = value.to(_device()).contiguous()
            parts = [torch.empty_like(local) for _ in range(world_size())]
            dist.all_gather(parts, local)
            merged[name] = torch.cat(parts).to(value.device)
    return RolloutSamples(**merged)


def all_reduce_sum(value: float | torch.Tensor) -> float:
    """The sum of a scalar over ranks (the value itself without a process group)."""
    if not is_distributed():
        return float(value)
    tensor = torch.tensor(float(value), dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor)


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is True on at least one rank (a decision every rank must take together)."""
    return all_reduce_sum(1.0 if flag else 0.0) > 0


def mean_over_ranks(stats: dict[str, float]) -> dict[str, float]:
    """Each key's mean over the ranks that report it (the stats of a training step, logged by rank 0)."""
    if not is_distributed():
        return stats
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, stats)
    keys = {k for part in parts for k in part}
    return {k: sum(p[k] for p in parts if k in p) / sum(k in p for p in parts) for k in sorted(keys)}
