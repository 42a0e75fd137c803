"""GSPO: Group Sequence Policy Optimization (Zheng et al., arXiv:2507.18071)."""

from __future__ import annotations

from agents.common.config import AlgorithmConfig
from agents.grpo import GRPO


class GSPO(GRPO):
    """GRPO with a sequence-level importance ratio, clipped per sequence (GSPO arXiv:2507.18071, eq. 5-7).

    The ratio of response i is the geometric mean of its token ratios (eq. 7):

        s_i = (pi(o_i) / pi_old(o_i)) ** (1/|o_i|) = exp((1/|o_i|) sum_t log(pi(o_{i,t}) / pi_old(o_{i,t})))

    and the objective (eq. 5) is ``(1/G) sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)`` with
    the group-normalised ``A_i`` of GRPO. Clipping acts on whole sequences: when ``s_i`` leaves the range on
    the side the advantage's sign points to, every token of ``o_i`` loses its gradient. With ``pi_old = pi``
    the gradient equals GRPO's with ``beta=0`` (eq. 10-11); they differ once a rollout feeds several steps.

    Defaults: ``clip_range=3e-4`` and ``clip_range_high=4e-4``, the left and right ranges of the paper's
    experiments (section 5.1); they are small because ``s_i`` averages the log-ratios over the tokens.
    ``beta=0`` (no KL term, as in the paper), ``loss_aggregation="seq-mean-token-mean"`` (a per-sequence
    loss, eq. 5). ``importance_sampling_level="sequence-token"`` is GSPO-token (eq. 13-14): the same ratio
    value per token but per-token gradients, for per-token advantages (with sequence advantages it has the
    same gradient as GSPO). The GSPO paper splits each rollout into 4 minibatches (``batch_size = N / 4``);
    with ``n_epochs=1`` and ``batch_size=None`` no token is ever clipped.

    Raises:
        ValueError: ``importance_sampling_level`` is not ``"sequence"`` or ``"sequence-token"``.
    """

    preset = {"clip_range": 3e-4, "clip_range_high": 4e-4, "beta": 0.0,  # noqa: RUF012
              "importance_sampling_level": "sequence"}

    def _check_preset(self, config: AlgorithmConfig) -> None:
        if config.importance_sampling_level not in ("sequence", "sequence-token"):
            raise ValueError(f"GSPO's importance_sampling_level must be 'sequence' or 'sequence-token', got "
                             f"{config.importance_sampling_level!r} (token-level ratios are GRPO)")
