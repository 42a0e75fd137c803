"""Non-finite guard: a NaN or infinity in rewards, log-probs, the loss or the gradient stops training loudly.

Training never applies an optimizer step computed from a non-finite quantity. With ``on_nonfinite="raise"``
(the default) :class:`NonFiniteError` names the quantity, the iteration and the likely causes; the weights and
the optimizer state are those before the step. With ``"skip"`` the step (or the whole rollout, for rewards
and log-probs) is skipped, a warning is issued once, and ``train/nonfinite_skips`` counts the skips.

The weights are also checked after every optimizer step (one fused max-abs over the trainable parameters,
:func:`all_finite`): a step computed from finite values can still write NaN or infinity (a non-finite
optimizer state, or a learning rate so large that the step overflows). Such a step cannot be skipped once
applied, so it raises :class:`NonFiniteError` naming the first non-finite parameter in both modes, and no
run returns from ``learn()`` with non-finite weights. ``save()`` and ``load()`` refuse them too, unless the
caller passes ``allow_nonfinite=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from agents.common.distributed import any_rank

__all__ = ["CAUSES", "NONFINITE_MODES", "NonFiniteError", "NonFiniteGuard", "all_finite", "first_nonfinite",
           "first_nonfinite_named", "nonfinite_message"]

#: Valid ``on_nonfinite`` values.
NONFINITE_MODES: tuple[str, ...] = ("raise", "skip")

#: Quantity -> the likely causes and fixes printed with the error.
CAUSES: dict[str, str] = {
    "policy weights": "an earlier update diverged (with on_nonfinite='skip' nothing applies non-finite steps, so "
                      "look at how the weights were set), or a corrupt checkpoint or model folder was loaded",
    "logits": "weights so large that the logits overflow (a learning rate far too large for this model), or a "
              "corrupt checkpoint; lower learning_rate",
    "rewards": "a reward function or wrapper returned a value too large for float32 (|r| > 3.4e38); scale or "
               "clip the reward (llm_gym.wrappers.ScaleReward / ClipReward)",
    "token_rewards": "per-token rewards overflowed float32: a step reward or the KL penalty is too large; "
                     "scale the reward or lower beta",
    "old_log_probs": "the policy's weights are not finite (a diverged earlier update, or a corrupt checkpoint "
                     "was loaded)",
    "ref_log_probs": "the reference model's weights are not finite (it is the env's model: check the model "
                     "folder, or set beta=0 to drop the KL term)",
    "values": "the value head or critic diverged; lower learning_rate or vf_coef",
    "loss": "non-finite weights (a diverged update or a corrupt checkpoint), a non-finite reference model with "
            "beta > 0, or advantages too large for float32; check the rewards' scale and lower learning_rate",
    "gradient": "an exploding update: lower learning_rate, lower max_grad_norm, or scale the rewards down",
    "updated weights": "the optimizer step itself wrote them: its state holds NaN/inf (e.g. a corrupt optimizer.pt "
                       "loaded with allow_nonfinite=True) or the learning rate is so large that the step overflowed",
}


class NonFiniteError(FloatingPointError):
    """A NaN or infinity reached the update; training stopped before applying it (``on_nonfinite="raise"``)."""


def first_nonfinite(named: dict[str, torch.Tensor | None]) -> str | None:
    """The first name whose tensor holds a NaN or an infinity (None tensors are skipped), else None."""
    for name, tensor in named.items():
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP), else the tensor itself, detached."""
    return (tensor.to_local() if hasattr(tensor, "to_local") else tensor).detach()


def all_finite(tensors: Iterable[Any]) -> bool:
    """Whether every floating-point tensor in ``tensors`` is finite, in one fused pass and one sync.

    The max-abs (infinity norm, ``torch._foreach_norm``) of a tensor is finite exactly when all its entries
    are; the norms are stacked and checked together. Non-tensors, integer tensors and empty tensors are
    skipped; a DTensor (FSDP) is checked on this rank's shard.

    >>> all_finite([torch.ones(2, 3), torch.tensor([1, 2])]), all_finite([torch.tensor([0.0, float("nan")])])
    (True, False)
    """
    local = [_local(t) for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    local = [t for t in local if t.numel() > 0]
    if not local:
        return True
    norms = torch._foreach_norm(local, math.inf)
    device = norms[0].device
    return bool(torch.stack([n.to(device=device, dtype=torch.float32) for n in norms]).isfinite().all())


def first_nonfinite_named(named: Iterable[tuple[str, Any]]) -> str | None:
    """The first name whose floating-point tensor holds a NaN or an infinity (others are skipped), else None."""
    for name, tensor in named:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not all_finite([tensor]):
            return name
    return None


def nonfinite_message(quantity: str, iteration: int, n_updates: int, detail: str = "", applied: bool = False) -> str:
    """The error text: the quantity, where it happened, the likely causes and what to do.

    Args:
        quantity: what is non-finite (a key of :data:`CAUSES`).
        iteration, n_updates: where training was.
        detail: added after the place (``" (global norm = inf)"``).
        applied: the non-finite values were written by an optimizer step that was already applied.
    """
    head = (f"Non-finite {quantity} at iteration {iteration} (after {n_updates} optimizer steps){detail}. Likely "
            f"causes: {CAUSES.get(quantity, 'see the other ranks')}.")
    if applied:
        return (f"{head} The step was applied and cannot be skipped afterwards (with either on_nonfinite mode), so "
                f"the weights are now non-finite: do not keep them (save() refuses them unless "
                f"allow_nonfinite=True). Load the last good checkpoint and lower learning_rate.")
    return (f"{head} The update was not applied: the weights and optimizer state are as before it. Pass "
            f"on_nonfinite='skip' to skip such updates instead (counted in train/nonfinite_skips).")


class NonFiniteGuard:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: what happens when a non-finite value is found.

    Reads ``self.config.on_nonfinite``, the iteration and update counters and SB3's logger; counts skips in
    ``self._nonfinite_skips``.
    """

    def _nonfinite(self, quantity: str, detail: str = "") -> None:
        """A non-finite ``quantity`` reached the update: raise, or (``on_nonfinite="skip"``) warn once and count.

        Raises:
            NonFiniteError: with ``on_nonfinite="raise"``; the message names the quantity, the iteration and
                the likely causes (:data:`CAUSES`).
        """
        message = nonfinite_message(quantity, getattr(self, "_iteration", 0), getattr(self, "_n_updates", 0),
                                    detail)
        if self.config.on_nonfinite == "raise":
            raise NonFiniteError(message)
        if not self._nonfinite_skips:
            warnings.warn(message + " Warned once; later skips are only counted.", stacklevel=3)
        self._nonfinite_skips += 1
        self.logger.record("train/nonfinite_skips", self._nonfinite_skips)

    def _check_weights_after_step(self) -> None:
        """After an optimizer step: the trainable parameters must be finite (one fused check, every rank).

        Raises:
            NonFiniteError: the step wrote a NaN or an infinity; the message names the first such parameter.
                Raised in both ``on_nonfinite`` modes: the step is already applied.
        """
        trainable = [(name, p) for name, p in self.policy.named_parameters() if p.requires_grad]
        if not any_rank(not all_finite(p for _, p in trainable)):
            return
        name = first_nonfinite_named((n, _local(p)) for n, p in trainable) or "a parameter held by another rank"
        raise NonFiniteError(nonfinite_message(
            "updated weights", getattr(self, "_iteration", 0), getattr(self, "_n_updates", 0),
            f" (the first is {name}, after this iteration's optimizer step)", applied=True))
