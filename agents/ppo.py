"""PPO with a learned critic for language models (PPO arXiv:1707.06347, GAE arXiv:1506.02438, InstructGPT)."""

from __future__ import annotations

from typing import ClassVar

from agents.common.base import LLMAlgorithm
from agents.common.policies import LLMActorCriticPolicy


class PPO(LLMAlgorithm):
    """PPO for language models: clipped surrogate, clipped value loss, GAE on a KL-penalised token reward.

    One response per prompt (``group_size=1``); a value head ``V(s_t)`` on the policy's trunk
    (:class:`~agents.common.policies.LLMActorCriticPolicy`, ``V(s_t)`` = value of the state before response
    token t; ``policy_kwargs={"separate_critic": True}`` gives the critic its own trunk). Per rollout:

    1. reward (InstructGPT arXiv:2203.02155 eq. 2, DeepSeekMath arXiv:2402.03300 eq. 2), every real token:
       ``r_t = score_t - beta * (log pi_old(o_t) - log pi_ref(o_t))``, the score being the outcome reward on
       the last token (``kl_placement="reward"``, ``kl_estimator="k1"``, ``beta=0.05`` as TRL's ``kl_coef``);
    2. advantages and returns by GAE (arXiv:1506.02438 eq. 16, ``gamma=1``, ``gae_lambda=0.95``) with the
       rollout's values, then whitened over the batch's real tokens (``normalize_advantage=True``);
    3. ``n_epochs=4`` (TRL's ``num_ppo_epochs``) of minibatch steps on ``L = L_clip + vf_coef * L_V -
       ent_coef * H`` (PPO eq. 9; ``vf_coef=0.1``, ``clip_range_vf=0.2`` as TRL, ``ent_coef=0``), with the
       clipped surrogate of eq. 7 and token-mean aggregation; the epochs stop early when a minibatch's
       ``approx_kl`` exceeds ``1.5 * target_kl`` (as SB3).

    ``n_prompts=16``: sixteen sequences per rollout on 2 CPU cores. The gradient coefficient (DeepSeekMath
    section 5.2.1, Appendix A.1.5) is the GAE advantage ``A_t``. docs/algorithms/ppo.md has the table.
    """

    policy_aliases: ClassVar[dict[str, type]] = {
        "LLMPolicy": LLMActorCriticPolicy,
        "LLMActorCriticPolicy": LLMActorCriticPolicy,
    }
    policy: LLMActorCriticPolicy
    preset = {"n_prompts": 16, "group_size": 1, "n_epochs": 4, "beta": 0.05, "kl_placement": "reward",  # noqa: RUF012
              "kl_estimator": "k1", "loss_aggregation": "token-mean", "advantage_estimator": "gae",
              "normalize_advantage": True}
