"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al., arXiv:2503.14476)."""

from __future__ import annotations

import torch

from agents.common.base import Rollout
from agents.common.buffers import GroupRolloutBuffer
from agents.grpo import GRPO
from llm_gym.rewards.length import overlong_penalty


class DAPO(GRPO):
    """GRPO with DAPO's four changes, each a switch (DAPO arXiv:2503.14476, objective eq. 8).

    1. **Clip-higher** (section 3.1, eq. 10): ``clip_range=0.2`` below, ``clip_range_high=0.28`` above, so
       low-probability tokens with a positive advantage can grow more before the clip cuts their gradient.
    2. **Dynamic sampling** (section 3.2, eq. 11): groups whose rewards are all equal (all right or all
       wrong, zero advantage) are dropped and new prompts are sampled until the batch holds ``n_prompts``
       groups with mixed rewards, at most ``max_sampling_rounds`` rounds per iteration (then a warning, and
       training on what was found). Logged as ``rollout/dropped_groups``, ``rollout/sampling_rounds`` and
       ``rollout/generated_sequences``. The filter reads the env's reward, before the overlong penalty.
    3. **Token-level policy-gradient loss** (section 3.3, eq. 8): ``loss_aggregation="token-mean"``, every
       token of the batch weighs the same, so long responses are not down-weighted.
    4. **Overlong reward shaping** (section 3.4, eq. 13): ``overlong_buffer`` tokens before
       ``max_new_tokens`` the reward starts to drop linearly, reaching ``-overlong_penalty_factor`` at the
       budget (:func:`llm_gym.rewards.overlong_penalty`; also a wrapper, :class:`llm_gym.wrappers.OverlongPenalty`).
       ``overlong_buffer=None`` uses 20 % of the budget (DAPO: 4096 of 20480); ``0`` turns the shaping off.
       ``mask_truncated=True`` is DAPO's *overlong filtering* instead: the loss of responses cut by the
       budget is masked (their tokens leave the loss and its token count; they still count in the
       group's reward statistics).

    No KL term by default (``beta=0``, section 2.3: the policy is expected to move far from the initial
    model in long-CoT RL). Other defaults are GRPO's; every argument is documented on
    :class:`~agents.common.base.LLMAlgorithm`.

    Raises:
        ValueError: ``overlong_buffer`` outside ``[0, max_new_tokens]``, ``overlong_penalty_factor < 0``,
            ``max_sampling_rounds < 1``, or ``dynamic_sampling`` with ``group_size < 2``.
    """

    def __init__(self, policy, env, *args, clip_range: float = 0.2, clip_range_high: float | None = 0.28,
                 beta: float = 0.0, loss_aggregation: str = "token-mean", dynamic_sampling: bool = True,
                 max_sampling_rounds: int = 4, overlong_buffer: int | None = None,
                 overlong_penalty_factor: float = 1.0, mask_truncated: bool = False, **kwargs):
        self.dynamic_sampling, self.max_sampling_rounds = bool(dynamic_sampling), int(max_sampling_rounds)
        self.overlong_buffer, self.overlong_penalty_factor = overlong_buffer, float(overlong_penalty_factor)
        self.mask_truncated = bool(mask_truncated)
        super().__init__(policy, env, *args, clip_range=clip_range, clip_range_high=clip_range_high, beta=beta,
                         loss_aggregation=loss_aggregation, **kwargs)

    def _check_config(self) -> None:
        super()._check_config()
        if self.max_sampling_rounds < 1:
            raise ValueError(f"max_sampling_rounds must be >= 1, got {self.max_sampling_rounds}")
        if self.dynamic_sampling and self.group_size < 2:
            raise ValueError("dynamic_sampling needs group_size >= 2: a group of one response never has mixed "
                             "rewards. Raise group_size or pass dynamic_sampling=False.")
        if self.env is not None:
            if self.overlong_buffer is None:
                self.overlong_buffer = round(0.2 * self.action_space_len)
            overlong_penalty([0], self.action_space_len, self.overlong_buffer, self.overlong_penalty_factor)

    def _post_rollout(self, buffer: GroupRolloutBuffer, rollout: Rollout) -> None:
        """Add the overlong penalty to the rewards; with ``mask_truncated``, take truncated responses out of the loss."""
        s = buffer.samples
        if self.overlong_buffer:
            lengths = s.response_mask.sum(-1).cpu().numpy()  # (N,) tokens
            penalty = torch.as_tensor(overlong_penalty(lengths, self.action_space_len, self.overlong_buffer,
                                                       self.overlong_penalty_factor), dtype=s.rewards.dtype)
            buffer.update(rewards=s.rewards + penalty.to(s.rewards.device))  # (N,)
            self._rollout_stats["rollout/overlong_penalty"] = float(penalty.mean())
        if self.mask_truncated:
            truncated = torch.tensor([bool(i.get("truncated_by_length", False)) for i in rollout.infos])  # (N,)
            keep = (~truncated).to(s.response_mask.device, s.response_mask.dtype)
            buffer.update(response_mask=s.response_mask * keep[:, None])  # (N, T)
            self._rollout_stats["rollout/masked_truncated"] = float(truncated.float().mean())
