"""GRPO: Group Relative Policy Optimization (DeepSeekMath, arXiv:2402.03300, section 4.1)."""

from __future__ import annotations

import torch

from agents.common.advantages import broadcast_to_tokens, group_normalized
from agents.common.base import LLMAlgorithm
from agents.common.buffers import RolloutSamples
from agents.common.losses import policy_loss


class GRPO(LLMAlgorithm):
    """GRPO with outcome supervision: no critic, the group's rewards are the baseline.

    For each prompt, ``group_size`` responses are sampled; the advantage of response i is its reward
    normalised within its group, ``A_i = (r_i - mean(r)) / (std(r) + eps)`` (DeepSeekMath section 4.1.2),
    the same for every token. The loss is the negated objective of DeepSeekMath eq. 3:

        L = -(1/G) sum_i (1/|o_i|) sum_t [ min(rho_t A_i, clip(rho_t, 1-eps, 1+eps) A_i) - beta * KL_t ]

    with ``rho_t = pi(o_t) / pi_old(o_t)`` and ``KL_t`` the k3 estimator of eq. 4
    (``pi_ref/pi - log(pi_ref/pi) - 1``). Its gradient coefficient (DeepSeekMath Appendix A.1.6; the
    unified paradigm of section 5.2.1, eq. 5) is ``A_i + beta * (pi_ref/pi - 1)``.

    Defaults follow the paper where it gives them: ``beta=0.04``, ``clip_range=0.2``,
    ``loss_aggregation="seq-mean-token-mean"``, ``scale_rewards="group"``; ``learning_rate=1e-6`` and
    ``group_size=8`` as in TRL's GRPOTrainer. ``beta=0`` skips the reference model entirely.
    Extra argument ``eps`` (1e-4) is the advantage denominator's epsilon, so a group whose rewards are all
    equal has zero advantage (no NaN). Every other argument is documented on
    :class:`~agents.common.base.LLMAlgorithm`.
    """

    def __init__(self, policy, env, *args, eps: float = 1e-4, **kwargs):
        self.eps = float(eps)
        super().__init__(policy, env, *args, **kwargs)

    def _loss(self, micro: RolloutSamples, log_probs: torch.Tensor, old_log_probs: torch.Tensor, values=None,
              entropy=None):
        return policy_loss(
            log_probs, old_log_probs, micro.advantages, micro.response_mask,
            clip_range=self.clip_range, clip_range_high=self.clip_range_high,
            ref_log_probs=micro.ref_log_probs, beta=self.beta, kl_estimator=self.kl_estimator,
            loss_aggregation=self.loss_aggregation, max_len=micro.response_mask.shape[1],
            importance_sampling_level=self.importance_sampling_level,
        )

    def _sequence_advantages(self, b: RolloutSamples) -> torch.Tensor:
        """``(N,)`` advantages: rewards normalised within their group (DeepSeekMath section 4.1.2)."""
        return group_normalized(b.rewards, b.group_ids, scale=self.scale_rewards, eps=self.eps)

    def train(self) -> None:
        """Group-normalised advantages, then ``n_epochs`` of clipped-surrogate minibatch steps."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        b = self.rollout_buffer.samples
        b_advantages = self._sequence_advantages(b)  # (N,)
        self.rollout_buffer.update(advantages=broadcast_to_tokens(b_advantages, b.response_mask))  # (N, T)
        all_stats = []
        for _ in range(self.n_epochs):
            for mb in self.rollout_buffer.get(self.batch_size):
                all_stats.append(self._gradient_step(mb, self._loss))
        self._record_train_stats(all_stats)
