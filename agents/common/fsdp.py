"""Fully sharded data parallelism: torch's FSDP2 (``torch.distributed.fsdp.fully_shard``) for llm-gym policies.

With ``fsdp=True`` (or ``accelerate launch --use_fsdp``, which sets ``ACCELERATE_USE_FSDP=true``) every rank
holds ``1 / world_size`` of the parameters, gradients and optimizer state instead of a full replica (DDP):

* **Units.** Each decoder layer (the classes the Hugging Face model lists in ``_no_split_modules``, the same
  rule as accelerate's ``transformer_based_wrap`` policy) is one FSDP unit; the policy itself is the root
  unit and holds the rest (embeddings, final norm, LM head, PPO's value head).
* **Training forwards** (log-probs, values, the loss) run in lockstep on every rank: each layer's parameters
  are all-gathered just before its forward and freed after it; gradients are reduce-scattered (averaged).
* **Sampling** cannot run in lockstep (each rank's responses end at different steps), so rollouts run
  inside :func:`gathered`: every unit is all-gathered once and kept whole until the rollout ends. Sampling
  therefore needs one full copy of the weights per rank for its duration, as in TRL and verl without a
  separate inference engine.
* **Checkpoints** hold full (unsharded) tensors in the single-process layout (:func:`full_state`,
  :func:`load_full_state`), so a checkpoint written under FSDP loads in one process and vice versa.

Without a process group, or with ``fsdp=False``, nothing here changes the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

__all__ = ["fsdp_requested", "full_model_state", "full_state", "gathered", "is_sharded", "layer_classes", "load_full_state",
           "shard_module"]

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def fsdp_requested(fsdp: bool) -> bool:
    """``fsdp`` or accelerate's FSDP launch (``ACCELERATE_USE_FSDP=true``, set by ``accelerate launch --use_fsdp``)."""
    return bool(fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def is_sharded(module: torch.nn.Module | None) -> bool:
    """True when ``module`` was sharded by :func:`shard_module`."""
    return isinstance(module, FSDPModule)


def layer_classes(module: torch.nn.Module) -> set[str]:
    """Names of the decoder-layer classes inside ``module``: the union of its HF models' ``_no_split_modules``.

    Raises:
        ValueError: no Hugging Face model inside declares ``_no_split_modules`` (nothing to shard by layer).
    """
    names = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    if not names:
        raise ValueError(f"{type(module).__name__} holds no Hugging Face model with `_no_split_modules`: FSDP "
                         "shards by decoder layer and cannot find the layers. Train it with DDP (fsdp=False).")
    return names


def shard_module(module: torch.nn.Module, forward_methods: tuple[str, ...] = ()) -> torch.nn.Module:
    """Shard ``module`` in place over the default process group: one FSDP unit per decoder layer, the rest in
    the root unit; ``forward_methods`` (methods other than ``forward`` that run the model) get FSDP's
    forward hooks. Rank 0's weights are broadcast to every rank first (as DDP does). Build the optimizer
    afterwards: sharding replaces the parameters by ``DTensor`` shards.

    Returns:
        The same module, now an ``FSDPModule``.

    Raises:
        ValueError: see :func:`layer_classes`.
    """
    classes = layer_classes(module)
    initial = module.state_dict() if dist.get_rank() == 0 else {}  # plain tensors; rank 0's are kept
    for sub in list(module.modules()):
        if type(sub).__name__ in classes:
            fully_shard(sub)
    fully_shard(module)
    # Every rank must start from the same weights (DDP broadcasts rank 0's; fully_shard keeps each rank's own
    # shard, and ranks seeded apart draw different random initialisations, e.g. LoRA's or a value head's).
    set_model_state_dict(module, initial, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for name in forward_methods:
        if hasattr(module, name):  # e.g. predict_values only on actor-critic policies
            register_fsdp_forward_method(module, name)
    # The first forward decides which unit is the root. Rollouts and evaluations call the inner HF model
    # directly, so settle it now: the policy (or reference) module is the root.
    module._get_fsdp_state()._lazy_init()
    return module


@contextlib.contextmanager
def gathered(module: torch.nn.Module | None) -> Iterator[None]:
    """Inside: every FSDP unit of ``module`` holds its full parameters, so forwards need no collective and
    ranks may run different numbers of them (sampling). Entering all-gathers (every rank must enter
    together); leaving frees the full copies. A no-op for an unsharded module.
    """
    if not is_sharded(module):
        yield
        return
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    module.set_reshard_after_forward(False)  # recursive
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        module.set_reshard_after_forward(True)
        module.set_reshard_after_forward(False, recurse=False)  # FSDP's default for the root unit


def full_model_state(module: torch.nn.Module) -> dict:
    """The full model state dict of a sharded ``module`` on rank 0's CPU (``module.state_dict()`` keys), an
    empty dict on the other ranks. Collective: every rank must call it. (Inside :func:`gathered` a sharded
    module's own ``state_dict()`` still returns shards.)"""
    return get_model_state_dict(module, options=_FULL)


def full_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The full model and optimizer state dicts of a sharded ``module``, on rank 0's CPU, in the
    single-process layout (``module.state_dict()`` keys; ``optimizer.state_dict()`` with integer parameter
    ids). Collective: every rank must call it; the other ranks get two empty dicts.
    """
    model_state = full_model_state(module)
    optim_state = get_optimizer_state_dict(module, optimizer, options=_FULL)
    if not optim_state:  # ranks other than 0 (cpu_offload gathers to rank 0 only)
        return {}, {}
    order = {fqn: i for i, fqn in enumerate(f for g in optim_state["param_groups"] for f in g["params"])}
    return model_state, {
        "state": {order[fqn]: value for fqn, value in optim_state["state"].items()},
        "param_groups": [{**g, "params": [order[f] for f in g["params"]]} for g in optim_state["param_groups"]],
    }


def load_full_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optim_state: dict) -> None:
    """Load full (single-process layout) state dicts into a sharded ``module`` and its ``optimizer``; each rank
    keeps its shards. Collective: every rank must call it with the same dicts.
    """
    set_model_state_dict(module, model_state, options=_FULL)
    every_rank = StateDictOptions(full_state_dict=True)  # (the optimizer has no state yet: cheap)
    names = [f for g in get_optimizer_state_dict(module, optimizer, options=every_rank)["param_groups"]
             for f in g["params"]]
    fqn_state: dict[str, Any] = {
        "state": {names[i]: value for i, value in optim_state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optim_state["param_groups"]],
    }
    set_optimizer_state_dict(module, optimizer, fqn_state, options=every_rank)
