"""GRPO: Group Relative Policy Optimization (DeepSeekMath, arXiv:2402.03300, section 4.1)."""

from __future__ import annotations

from agents.common.base import LLMAlgorithm


class GRPO(LLMAlgorithm):
    """GRPO with outcome or process supervision: no critic, the group's rewards are the baseline.

    For each prompt, ``group_size`` responses are sampled; the advantage of response i is its reward
    normalised within its group, ``A_i = (r_i - mean(r)) / (std(r) + eps)`` (DeepSeekMath section 4.1.2),
    the same for every token. The loss is the negated objective of DeepSeekMath eq. 3:

        L = -(1/G) sum_i (1/|o_i|) sum_t [ min(rho_t A_i, clip(rho_t, 1-eps, 1+eps) A_i) - beta * KL_t ]

    with ``rho_t = pi(o_t) / pi_old(o_t)`` and ``KL_t`` the k3 estimator of eq. 4
    (``pi_ref/pi - log(pi_ref/pi) - 1``). Its gradient coefficient (DeepSeekMath Appendix A.1.6; the
    unified paradigm of section 5.2.1, eq. 5) is ``A_i + beta * (pi_ref/pi - 1)``.

    The preset is :class:`~agents.common.config.AlgorithmConfig`'s defaults: ``beta=0.04``,
    ``clip_range=0.2``, ``loss_aggregation="seq-mean-token-mean"``, ``scale_rewards="group"``, ``eps=1e-4``
    (so a group whose rewards are all equal has zero advantage, never NaN); ``learning_rate=1e-6`` and
    ``group_size=8`` as in TRL's GRPOTrainer. ``beta=0`` skips the reference model entirely.
    ``advantage="process"`` is process supervision (section 4.1.3): the env's step rewards
    (``info["step_rewards"]``, plus the outcome at the last token) are normalised over all steps of the
    group and a token's advantage is the sum of the normalised rewards of the steps ending at or after it
    (:func:`~agents.common.advantages.process_group_normalized`). Every keyword is a field of
    :class:`~agents.common.config.AlgorithmConfig`; docs/algorithms/grpo.md has the table.
    """

    preset = {}  # noqa: RUF012 - AlgorithmConfig's defaults are GRPO's
