"""Online RFT: rejection-sampling fine-tuning on the current policy's own correct samples (DeepSeekMath 5.2.1)."""

from __future__ import annotations

from agents.grpo import GRPO


class OnlineRFT(GRPO):
    """Online rejection-sampling fine-tuning: the unified paradigm's row with coefficient ``I(o)``.

    DeepSeekMath (arXiv:2402.03300) section 5.2.1: sample ``group_size`` responses per question from the
    *current* policy, keep the correct ones and maximise their log-likelihood,
    ``L = -(1/N) sum_i I(o_i) (1/|o_i|) sum_t log pi(o_{i,t})`` (:func:`~agents.common.losses.sft_loss`).
    A response counts as correct when its reward is at least ``reward_threshold`` (default 1.0, the math
    reward of a right answer): ``advantage_estimator="rft"``, ``loss_mode="sft"``. No ratio, no clipping,
    no reference model (``beta=0``). It is a baseline: unlike GRPO it never pushes down wrong answers.
    """

    preset = {"advantage_estimator": "rft", "loss_mode": "sft", "beta": 0.0}  # noqa: RUF012
