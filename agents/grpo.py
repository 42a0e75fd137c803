"""GRPO: Group Relative Policy Optimization (DeepSeekMath, arXiv:2402.03300, section 4.1)."""

from __future__ import annotations

import torch

from agents.common.advantages import broadcast_to_tokens, group_normalized, process_group_normalized
from agents.common.base import LLMAlgorithm
from agents.common.buffers import RolloutSamples
from agents.common.losses import policy_loss

#: Valid ``advantage`` values: outcome supervision (section 4.1.2) or process supervision (section 4.1.3).
ADVANTAGE_MODES: tuple[str, ...] = ("outcome", "process")


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
    equal has zero advantage (no NaN). ``advantage="process"`` is process supervision (section 4.1.3): the
    env's step rewards (``info["step_rewards"]``, plus the outcome at the last token) are normalised over
    all steps of the group and a token's advantage is the sum of the normalised rewards of the steps ending
    at or after it (:func:`~agents.common.advantages.process_group_normalized`). Every other argument is documented on
    :class:`~agents.common.base.LLMAlgorithm`.
    """

    def __init__(self, policy, env, *args, eps: float = 1e-4, advantage: str = "outcome", **kwargs):
        self.eps = float(eps)
        if advantage not in ADVANTAGE_MODES:
            raise ValueError(f"advantage must be one of {ADVANTAGE_MODES}, got {advantage!r}")
        self.advantage = advantage
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

    def _token_advantages(self, b: RolloutSamples) -> torch.Tensor:
        """``(N, T)`` advantages: outcome (broadcast) or process (DeepSeekMath section 4.1.3).

        Raises:
            RuntimeError: ``advantage="process"`` but the env has no process reward function.
        """
        if self.advantage == "outcome":
            return broadcast_to_tokens(self._sequence_advantages(b), b.response_mask)
        step_mask = b.step_mask
        if step_mask is None:  # no step scored in this rollout: the outcome at the last token is the only step
            if not self._env_has_process_reward():
                raise RuntimeError("advantage='process' needs step rewards: build the env with "
                                   "process_reward_fn=... (e.g. llm_gym.rewards.arithmetic_step_reward) or wrap it "
                                   "in llm_gym.wrappers.ProcessReward.")
            step_mask = torch.zeros_like(b.response_mask)  # (N, T)
            last = (b.response_mask.sum(-1).long() - 1).clamp(min=0)  # (N,)
            step_mask[torch.arange(step_mask.shape[0]), last] = 1.0
        return process_group_normalized(b.token_rewards, step_mask, b.group_ids, b.response_mask,
                                        scale=self.scale_rewards, eps=self.eps)

    def _env_has_process_reward(self) -> bool:
        """Whether the env scores steps (``process_reward_fn`` set on the llm-gym env)."""
        try:
            return self.env.get_attr("process_reward_fn")[0] is not None
        except AttributeError:
            return False

    def train(self) -> None:
        """Group-normalised advantages, then ``n_epochs`` of clipped-surrogate minibatch steps."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        b = self.rollout_buffer.samples
        self.rollout_buffer.update(advantages=self._token_advantages(b))  # (N, T)
        all_stats = []
        for _ in range(self.n_epochs):
            for mb in self.rollout_buffer.get(self.batch_size):
                all_stats.append(self._gradient_step(mb, self._loss))
        self._record_train_stats(all_stats)
