"""Online RFT: rejection-sampling fine-tuning on the current policy's own correct samples (DeepSeekMath 5.2.1)."""

from __future__ import annotations

import torch

from agents.common.buffers import RolloutSamples
from agents.common.losses import sft_loss
from agents.grpo import GRPO


class OnlineRFT(GRPO):
    """Online rejection-sampling fine-tuning: the unified paradigm's row with coefficient ``I(o)``.

    DeepSeekMath (arXiv:2402.03300) section 5.2.1: sample ``group_size`` responses per question from the
    *current* policy, keep the correct ones and maximise their log-likelihood,
    ``L = -(1/N) sum_i I(o_i) (1/|o_i|) sum_t log pi(o_{i,t})`` (:func:`~agents.common.losses.sft_loss`).
    A response counts as correct when its reward is at least ``reward_threshold`` (default 1.0, the math
    reward of a right answer). No ratio, no clipping, no reference model (``beta=0``). It is a baseline:
    unlike GRPO it never pushes down wrong answers. Other arguments as :class:`~agents.grpo.GRPO`.
    """

    def __init__(self, policy, env, *args, reward_threshold: float = 1.0, beta: float = 0.0, **kwargs):
        self.reward_threshold = float(reward_threshold)
        super().__init__(policy, env, *args, beta=beta, **kwargs)

    def _sequence_advantages(self, b: RolloutSamples) -> torch.Tensor:
        """``(N,)`` gradient coefficients: 1.0 for a correct response, 0.0 otherwise."""
        return (b.rewards >= self.reward_threshold).to(b.rewards.dtype)

    def _loss(self, micro: RolloutSamples, log_probs: torch.Tensor, old_log_probs: torch.Tensor, values=None,
              entropy=None):
        return sft_loss(log_probs, micro.advantages, micro.response_mask, self.loss_aggregation,
                        max_len=micro.response_mask.shape[1])
