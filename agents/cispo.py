"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv:2506.13585, section 3.1)."""

from __future__ import annotations

from agents.grpo import GRPO


class CISPO(GRPO):
    """Group-normalised advantages with a clipped importance-sampling weight under a stop-gradient.

    MiniMax-M1 (arXiv:2506.13585) eq. 4-5: per token ``L = -sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) * A_i *
    log pi(o_t)``. Unlike PPO's clip, which zeroes the gradient of a clipped token, every token keeps the
    gradient ``clip(rho_t) * A_i``: rare "fork" tokens with large ratios still learn, at a bounded step
    (``loss_mode="cispo"``). ``clip_range=1.0`` leaves no lower bound (the paper imposes none) and
    ``clip_range_high=4.0`` caps the weight at 5, TRL's recommended ``epsilon_high`` for ``loss_type="cispo"``.
    No KL (``beta=0``) and ``token-mean`` aggregation, as the paper. On-policy (one optimizer step per rollout)
    every ratio is 1 and CISPO's gradient is REINFORCE's with GRPO advantages; it differs once a rollout feeds
    several steps (``batch_size`` < N or ``n_epochs`` > 1). docs/algorithms/cispo.md has the table.
    """

    preset = {"loss_mode": "cispo", "beta": 0.0, "loss_aggregation": "token-mean",  # noqa: RUF012
              "clip_range": 1.0, "clip_range_high": 4.0}
