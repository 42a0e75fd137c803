"""RLOO: REINFORCE Leave-One-Out (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019)."""

from __future__ import annotations

from agents.grpo import GRPO


class RLOO(GRPO):
    """GRPO's loop with the leave-one-out baseline: ``A_i = r_i - mean_{j != i} r_j`` within the group.

    Each response is compared to the mean reward of the *other* ``G - 1`` responses to its prompt
    (Ahmadian et al. 2024, section 3.2, eq. 6), an unbiased baseline that needs no critic and no std
    (``advantage_estimator="rloo"``; equal to ``G/(G-1)`` times GRPO's centred reward). The rest is GRPO's
    preset: token ratio clipped at 0.2, the k3 KL in the loss with ``beta=0.04`` (TRL's RLOOTrainer puts a
    k1 KL in the reward instead: ``kl_placement="reward", kl_estimator="k1"``), ``seq-mean-token-mean``.
    docs/algorithms/rloo.md has the table.
    """

    preset = {"advantage_estimator": "rloo"}  # noqa: RUF012
