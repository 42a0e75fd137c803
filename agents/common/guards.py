"""Non-finite guard: a NaN or infinity in rewards, log-probs, the loss or the gradient stops training loudly.

Training never applies an optimizer step computed from a non-finite quantity. With ``on_nonfinite="raise"``
(the default) :class:`NonFiniteError` names the quantity, the iteration and the likely causes; the weights and
the optimizer state are those before the step. With ``"skip"`` the step (or the whole rollout, for rewards
and log-probs) is skipped, a warning is issued once, and ``train/nonfinite_skips`` counts the skips.
"""

from __future__ import annotations

import torch

__all__ = ["CAUSES", "NONFINITE_MODES", "NonFiniteError", "first_nonfinite"]

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
}


class NonFiniteError(FloatingPointError):
    """A NaN or infinity reached the update; training stopped before applying it (``on_nonfinite="raise"``)."""


def first_nonfinite(named: dict[str, torch.Tensor | None]) -> str | None:
    """The first name whose tensor holds a NaN or an infinity (None tensors are skipped), else None."""
    for name, tensor in named.items():
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def nonfinite_message(quantity: str, iteration: int, n_updates: int, detail: str = "") -> str:
    """The error text: the quantity, where it happened, the likely causes and what to do."""
    return (f"Non-finite {quantity} at iteration {iteration} (after {n_updates} optimizer steps){detail}. Likely "
            f"causes: {CAUSES[quantity]}. The update was not applied: the weights and optimizer state are as "
            f"before it. Pass on_nonfinite='skip' to skip such updates instead (counted in "
            f"train/nonfinite_skips).")
