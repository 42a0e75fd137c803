"""REINFORCE++ (Hu 2025, arXiv:2501.03262): REINFORCE with PPO's tricks and global advantage normalisation."""

from __future__ import annotations

from agents.grpo import GRPO


class ReinforcePlusPlus(GRPO):
    """REINFORCE++: the KL in the reward, returns normalised over the whole batch, PPO's clip; no critic.

    Per token (arXiv:2501.03262 section 3): ``r_t = 1[t = last] r(q, o) - beta * KL_t`` with the k1
    estimator of the sampling policy against the reference (``kl_placement="reward"``, ``kl_estimator="k1"``;
    ``"k2"`` also works), the return ``G_t = sum_{s >= t} gamma^(s-t) r_s`` (``gamma=1``), and the advantage
    ``G_t`` whitened over every real token of the batch (global batch normalisation,
    ``advantage_estimator="reinforce_plus_plus"``). The loss is PPO's clipped surrogate (0.2) with
    ``token-mean`` aggregation. ``beta=0.01`` (OpenRLHF's ``init_kl_coef`` for REINFORCE++).
    """

    preset = {"advantage_estimator": "reinforce_plus_plus", "kl_placement": "reward",  # noqa: RUF012
              "kl_estimator": "k1", "beta": 0.01, "loss_aggregation": "token-mean"}


class ReinforcePlusPlusBaseline(ReinforcePlusPlus):
    """REINFORCE++-baseline: the group's mean reward is subtracted from each response's score first.

    arXiv:2501.03262 (REINFORCE++-baseline): ``A_i = score_i - mean_group(score)``, then whitened over the
    batch's real tokens (``advantage_estimator="reinforce_plus_plus_baseline"``); the score includes the
    summed KL penalty. Other defaults are :class:`ReinforcePlusPlus`'s. docs/algorithms/reinforce_pp.md.
    """

    preset = {"advantage_estimator": "reinforce_plus_plus_baseline"}  # noqa: RUF012
