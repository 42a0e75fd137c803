"""Data-parallel training on ``torch.distributed``: process group, rank helpers and the collectives llm-gym needs.

Launch with ``torchrun --nproc_per_node N scripts/train.py ...`` or ``accelerate launch --num_processes N
...``: both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` starts the process group from them (gloo on CPU, NCCL on GPUs). The gradients are
all-reduced by ``torch.nn.parallel.DistributedDataParallel`` (:mod:`agents.common.base`); this module only
holds the small collectives around it: gathering a rollout's rows (global metrics, global advantage
statistics, DAPO's global group count) and reducing scalars (the loss normaliser, the training stats).

Without a process group every helper is the single-process identity, so the same code runs both ways.

Collectives time out after :data:`DEFAULT_TIMEOUT_SECONDS` (5 minutes; ``LLM_GYM_DIST_TIMEOUT`` seconds or
``init_distributed(timeout_seconds=...)`` to change it), so a rank that hangs (e.g. in a reward function
without ``reward_timeout``) ends the job in minutes instead of torch's default 10-30 minutes or the hour this
module used before. Work that rank 0 does alone (evaluation, saving) is fenced by
:func:`wait_for_main_process`, which waits up to ``LLM_GYM_DIST_WAIT_TIMEOUT`` (1 hour) instead.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from agents.common.buffers import RolloutSamples
from llm_gym.validation import check_real

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "DEFAULT_WAIT_TIMEOUT_SECONDS", "TIMEOUT_ENV", "WAIT_TIMEOUT_ENV",
           "all_gather_rows", "all_reduce_sum", "any_rank", "collective_timeout", "init_distributed",
           "is_distributed", "is_main_process", "mean_over_ranks", "rank", "shutdown_distributed",
           "wait_for_main_process", "world_size"]

#: Seconds a collective waits for the other ranks before the job fails (5 minutes: far longer than any
#: collective of a healthy step, short enough that a hung rank does not hold the machines for an hour).
DEFAULT_TIMEOUT_SECONDS = 300.0
#: Environment variable that overrides :data:`DEFAULT_TIMEOUT_SECONDS` (seconds, a finite number > 0).
TIMEOUT_ENV = "LLM_GYM_DIST_TIMEOUT"
#: Seconds the other ranks wait in :func:`wait_for_main_process` while rank 0 evaluates or saves alone.
DEFAULT_WAIT_TIMEOUT_SECONDS = 3600.0
#: Environment variable that overrides :data:`DEFAULT_WAIT_TIMEOUT_SECONDS`.
WAIT_TIMEOUT_ENV = "LLM_GYM_DIST_WAIT_TIMEOUT"
_MAX_TIMEOUT_SECONDS = 30 * 24 * 3600.0  # 30 days: beyond it timedelta arithmetic in torch may overflow
_wait_group: Any = None


def collective_timeout(timeout_seconds: float | None = None, *, env: str = TIMEOUT_ENV,
                       default: float = DEFAULT_TIMEOUT_SECONDS) -> datetime.timedelta:
    """The collective timeout: ``timeout_seconds`` if given, else ``$LLM_GYM_DIST_TIMEOUT``, else 5 minutes.

    Args:
        timeout_seconds: seconds (a finite number in (0, 30 days]), or None for the environment / default.
        env: the environment variable read when ``timeout_seconds`` is None.
        default: seconds when neither is set (an empty variable counts as unset).

    Returns:
        The timeout as a ``datetime.timedelta`` (what ``torch.distributed.init_process_group`` takes).

    Raises:
        ValueError: a value that is not a finite number of seconds in (0, 30 days]; the message names the
            argument or the environment variable and how to set it.

    >>> collective_timeout(90).total_seconds()
    90.0
    """
    span = f"(0, {_MAX_TIMEOUT_SECONDS:.0f}]"
    if timeout_seconds is not None:
        try:
            seconds = check_real("timeout_seconds", timeout_seconds, 0, _MAX_TIMEOUT_SECONDS, min_inclusive=False)
        except ValueError:
            raise ValueError(f"timeout_seconds must be a finite number of seconds in {span} (30 days), got "
                             f"{timeout_seconds!r}.") from None
        return datetime.timedelta(seconds=seconds)
    text = os.environ.get(env, "").strip()
    if not text:
        return datetime.timedelta(seconds=default)
    try:
        seconds = check_real(env, float(text), 0, _MAX_TIMEOUT_SECONDS, min_inclusive=False)
    except ValueError:
        raise ValueError(f"{env}={text!r} is not a number of seconds in {span}: set it to e.g. {env}=600 "
                         f"(10 minutes), or unset it for the default {default:g} s.") from None
    return datetime.timedelta(seconds=seconds)


def init_distributed(timeout_seconds: float | None = None) -> bool:
    """Start the default process group when launched by torchrun/accelerate (``WORLD_SIZE > 1``); idempotent.

    The backend is NCCL when CUDA is present (each process then uses ``cuda:LOCAL_RANK``), else gloo.

    Args:
        timeout_seconds: how long a collective waits for the other ranks before the job fails; None =
            ``$LLM_GYM_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_SECONDS` (5 minutes). Checked even in a single
            process, so a bad value fails at once rather than at the first multi-process launch. Ignored when
            the process group already exists.

    Returns:
        True when running with more than one process.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` without ``MASTER_ADDR`` / ``MASTER_PORT`` (not started by a launcher).
        ValueError: a timeout that is not a finite number of seconds in (0, 30 days] (:func:`collective_timeout`).
    """
    timeout = collective_timeout(timeout_seconds)
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
    dist.init_process_group(backend, timeout=timeout)
    return dist.get_world_size() > 1


def wait_for_main_process(timeout_seconds: float | None = None) -> None:
    """Hold every rank here until rank 0 arrives, waiting up to an hour (not the collective timeout).

    Call it on every rank right after work that rank 0 does alone (the evaluations and the saving of
    ``scripts/train.py``), so the other ranks do not sit in the next collective, whose timeout
    (:func:`init_distributed`, 5 minutes) is meant for hung ranks, not for a long evaluation. It is a barrier
    on a gloo group of its own, made on the first call (collective: every rank calls it at the same point).
    A no-op without a process group.

    Args:
        timeout_seconds: the wait; None = ``$LLM_GYM_DIST_WAIT_TIMEOUT`` or :data:`DEFAULT_WAIT_TIMEOUT_SECONDS`.
            The group keeps the timeout of the first call until :func:`shutdown_distributed`.

    Raises:
        ValueError: a timeout that is not a finite number of seconds in (0, 30 days].
    """
    global _wait_group
    timeout = collective_timeout(timeout_seconds, env=WAIT_TIMEOUT_ENV, default=DEFAULT_WAIT_TIMEOUT_SECONDS)
    if not is_distributed():
        return
    if _wait_group is None:
        _wait_group = dist.new_group(backend="gloo", timeout=timeout)
    dist.barrier(group=_wait_group)


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the default process group; a no-op without one.

    Call it once at the end of a job. A rank that exits while the others still run collectives (rank 0
    evaluating and saving) can abort in gloo's threads at interpreter exit ("terminate called without an
    active exception", SIGABRT), and torch warns when a process group is left undestroyed.
    """
    global _wait_group
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _wait_group = None


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
