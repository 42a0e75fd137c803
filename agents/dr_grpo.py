"""Dr. GRPO: GRPO done right (Liu et al., "Understanding R1-Zero-Like Training", arXiv:2503.20783)."""

from __future__ import annotations

from agents.grpo import GRPO


class DrGRPO(GRPO):
    """GRPO without its two length and difficulty biases (arXiv:2503.20783, section 3.1, eq. 3).

    The advantage is the group-centred reward, not divided by the group's std (``scale_rewards="none"``),
    so easy and hard questions weigh the same; and the loss sums token terms and divides by a constant,
    ``N * max_len`` (``loss_aggregation="seq-mean-token-sum-norm"``), so long wrong answers are not
    favoured by ``1/|o_i|``. ``max_len`` is the response budget ``T`` (TRL's ``max_completion_length``).
    No KL (``beta=0``): the paper's own runs (sail-sg/understand-r1-zero, ``--beta 0``) and TRL's default.
    Other defaults are GRPO's. docs/algorithms/dr_grpo.md has the table.
    """

    preset = {"scale_rewards": "none", "loss_aggregation": "seq-mean-token-sum-norm", "beta": 0.0}  # noqa: RUF012
