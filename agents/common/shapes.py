"""Shape checks shared by the pure advantage and return functions (:mod:`agents.common.advantages`,
:mod:`agents.common.returns`): errors that name the argument and the shape it should have.

>>> check_shape("values", torch.zeros(2, 3), (2, 3))
>>> as_float(torch.tensor([1, 2])).dtype
torch.float32
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_float", "check_shape", "shape_of"]


def shape_of(t: Tensor) -> tuple[int, ...]:
    """``t``'s shape as a plain tuple (for messages and comparisons)."""
    return tuple(t.shape)


def check_shape(name: str, tensor: Tensor, expected: tuple[int, ...], hint: str = "") -> None:
    """Check that ``tensor`` (the argument ``name``) has the shape ``expected``.

    Args:
        name: the argument's name, for the message.
        tensor: the tensor to check.
        expected: the shape it must have, e.g. ``(N, T)``.
        hint: what the shape means, added to the message (``"same as token_rewards: (N, T)"``).

    Raises:
        ValueError: the shapes differ; the message names the argument and both shapes.
    """
    if shape_of(tensor) != expected:
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{name} has shape {shape_of(tensor)}, expected {expected}{extra}")


def as_float(t: Tensor) -> Tensor:
    """``t`` itself when it is floating point, else ``t`` cast to torch's default float dtype."""
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())
