"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al., arXiv:2503.14476)."""

from __future__ import annotations

from agents.grpo import GRPO


class DAPO(GRPO):
    """GRPO with DAPO's four changes, each a config switch (DAPO arXiv:2503.14476, objective eq. 8).

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
    model in long-CoT RL). Other defaults are GRPO's; docs/algorithms/dapo.md has the table.
    """

    preset = {"clip_range_high": 0.28, "beta": 0.0, "loss_aggregation": "token-mean",  # noqa: RUF012
              "dynamic_sampling": True, "max_sampling_rounds": 4, "overlong_buffer": None}
