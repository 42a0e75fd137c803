"""The tensor members of a checkpoint, checked against the model they are loaded into.

``policy.pt`` must hold exactly the model's state-dict keys with the model's shapes and dtypes;
``optimizer.pt`` contributes only the per-parameter *state* (the keys, shapes and dtypes the optimizer itself
writes), never its hyperparameters; ``torch_rng.pt`` holds torch's RNG states. Weights and optimizer state
must be finite unless the caller passes ``allow_nonfinite=True``. Every failure is a
:class:`~agents.common.checkpoint_schema.CheckpointError` naming the file, the member and the key.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from agents.common.checkpoint_schema import RNG_MAX_BYTES, CheckpointError, Keys
from agents.common.guards import all_finite, first_nonfinite_named

__all__ = ["check_optimizer_state", "check_policy_state", "check_torch_rng", "load_tensor_member", "member_caps",
           "named_state_tensors", "optimizer_state_layout"]


def member_caps(policy_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Size caps (bytes once inflated) of the tensor members for this model: twice the weights for
    ``policy.pt``, four tensors per trainable parameter for ``optimizer.pt`` (AdamW keeps two), with room for
    torch's framing; 4 MiB for ``torch_rng.pt``."""
    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {"policy": 2 * sum(nbytes(t) for t in policy_state.values()) + 2**20 + 4096 * len(policy_state),
            "optimizer": 4 * sum(nbytes(p) for p in params) + 2**20 + 16384 * len(params),
            "torch_rng": RNG_MAX_BYTES}


def load_tensor_member(path: Path, member: str, raw: bytes) -> Any:
    """``torch.load(weights_only=True)`` of a member's bytes: tensors and plain data only, never code.

    Raises:
        CheckpointError: anything torch refuses or cannot read (a pickled object, a truncated file...).
    """
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a damaged file; all mean the same
        detail = str(exc)  # torch's own text suggests weights_only=False: keep only the reason
        detail = detail.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0][:160]
        raise CheckpointError(f"{path}: {member}: refused by torch.load(weights_only=True), which reads tensors and "
                              f"plain data only ({type(exc).__name__}: {detail}). Nothing in it was run. Load "
                              f"another checkpoint.") from exc


def check_policy_state(path: Path, state: Any, expected: dict[str, torch.Tensor], allow_nonfinite: bool) -> None:
    """``policy.pt``: exactly the keys of ``expected`` (the built model's state dict), each a dense tensor of its
    shape and dtype, finite unless ``allow_nonfinite``.

    Raises:
        CheckpointError: a missing, unknown or wrong entry (names the key).
    """
    keys = Keys(path, "policy.pt")
    keys.mapping("", state, required=expected)
    for name, reference in expected.items():
        keys.tensor(name, state[name], shape=tuple(reference.shape), dtype=reference.dtype)
    if not allow_nonfinite and not all_finite(state.values()):  # one fused pass; then name the first
        bad = first_nonfinite_named(state.items())
        keys.tensor(bad, state[bad], allow_nonfinite=False)


def optimizer_state_layout(optimizer: torch.optim.Optimizer) -> dict[str, tuple[str, torch.dtype | None]] | None:
    """What one step of this optimizer's class writes per parameter: ``{key: (kind, dtype)}`` with kind
    ``"param"`` (the parameter's shape and dtype), ``"scalar"`` (a 0-d tensor of ``dtype``) or ``"any"``.

    Found by one step of a fresh optimizer with the same settings on a probe parameter; None when that step
    is not possible (an optimizer that needs a closure or a GPU), and then only generic checks apply.
    """
    probe = torch.zeros(3, requires_grad=True)
    accepted = inspect.signature(type(optimizer).__init__).parameters  # AdamW's defaults name a fixed setting
    settings = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    try:
        optimizer_copy = type(optimizer)([probe], **settings)
        probe.grad = torch.zeros_like(probe)
        optimizer_copy.step()
    except (TypeError, ValueError, RuntimeError):
        return None
    layout: dict[str, tuple[str, torch.dtype | None]] = {}
    for key, value in optimizer_copy.state[probe].items():
        if isinstance(value, torch.Tensor) and value.shape == probe.shape:
            layout[key] = ("param", None)
        elif isinstance(value, torch.Tensor) and value.dim() == 0:
            layout[key] = ("scalar", value.dtype)
        else:
            layout[key] = ("any", None)
    return layout


def check_optimizer_state(path: Path, data: Any, optimizer: torch.optim.Optimizer,
                          allow_nonfinite: bool) -> dict[str, Any]:
    """``optimizer.pt``'s per-parameter state, checked; returned with the optimizer's *own* ``param_groups``.

    The file's ``param_groups`` (learning rate, betas, ``maximize``...) are never read: the hyperparameters
    are those the model was built with (config and ``policy_kwargs``).

    Returns:
        A state dict for ``optimizer.load_state_dict``.

    Raises:
        CheckpointError: a wrong parameter index, state key, shape, dtype or a non-finite value (names it).
    """
    keys = Keys(path, "optimizer.pt")
    keys.mapping("", data, required=("state",), optional=("param_groups",))  # param_groups: never read
    params = [p for group in optimizer.param_groups for p in group["params"]]
    states = keys.mapping("state", data["state"], optional=range(len(params)))
    layout = optimizer_state_layout(optimizer)
    for index, entry in states.items():
        key = f"state.{index}"
        keys.mapping(key, entry, required=() if layout is None else layout,
                     optional=_str_keys(entry) if layout is None else ())
        for name, value in entry.items():
            kind, dtype = (layout or {}).get(name, ("generic", None))
            shape = tuple(params[index].shape)
            if kind == "any" and value is None:
                continue
            if kind == "generic" and isinstance(value, torch.Tensor) and value.dim() == 0:
                shape = ()
            if kind == "scalar":
                keys.tensor(f"{key}.{name}", value, shape=(), dtype=dtype)
            else:
                keys.tensor(f"{key}.{name}", value, shape=shape,
                            dtype=params[index].dtype if kind == "param" else None, floating=True)
    if not allow_nonfinite and not all_finite(value for _, value in named_state_tensors(states)):
        for label, value in named_state_tensors(states):  # name the first
            keys.tensor(label, value, allow_nonfinite=False)
    return {"state": states, "param_groups": optimizer.state_dict()["param_groups"]}


def _str_keys(entry: Any) -> tuple[str, ...]:
    """The string keys of a dict (for a state entry checked without a probe layout)."""
    return tuple(k for k in entry if isinstance(k, str)) if isinstance(entry, dict) else ()


def named_state_tensors(states: dict[Any, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """``("state.<index>.<key>", tensor)`` for every floating-point tensor of an optimizer's ``state``."""
    for index, entry in states.items():
        for name, value in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                yield f"state.{index}.{name}", value


def check_torch_rng(path: Path, rng: Any) -> None:
    """``torch_rng.pt``: ``{"cpu": <torch's CPU RNG state>, "cuda": [<one state per device>]}``.

    Raises:
        CheckpointError: another structure, or a state of the wrong size or dtype.
    """
    keys = Keys(path, "torch_rng.pt")
    keys.mapping("", rng, required=("cpu", "cuda"))
    keys.tensor("cpu", rng["cpu"], shape=tuple(torch.get_rng_state().shape), dtype=torch.uint8)
    cuda_shape = tuple(torch.cuda.get_rng_state().shape) if torch.cuda.is_available() else None
    for i, state in enumerate(keys.sequence("cuda", rng["cuda"], max_length=1024)):
        keys.tensor(f"cuda.{i}", state, shape=cuda_shape, dtype=torch.uint8)
        if state.dim() != 1:
            keys.fail(f"cuda.{i}", f"shape {tuple(state.shape)}, expected one dimension")
