"""Token-level returns and advantages: GAE (critic), REINFORCE++ (batch-whitened returns), KL-penalty rewards.

* **Generalized Advantage Estimation** (GAE, arXiv:1506.02438 eq. 16) with a learned value function,
  per token (:func:`gae`), as used by PPO for language models, on the KL-penalised per-token reward of
  :func:`kl_penalty_rewards`, optionally whitened (:func:`masked_whiten`).
* **REINFORCE++** (Hu 2025, arXiv:2501.03262): the reward-to-go of the KL-penalised per-token reward,
  whitened over the whole batch (:func:`reinforce_plus_plus`), or the group-centred sequence score whitened
  over the batch (:func:`reinforce_plus_plus_baseline`).

The group baselines (GRPO, RLOO, process supervision) are in :mod:`agents.common.advantages`. Notation:
``N`` sequences, ``T`` padded response tokens; ``response_mask (N, T)`` is nonzero on real tokens. Pure torch
functions; they preserve the floating dtype of their inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agents.common.advantages import broadcast_to_tokens, group_centred
from agents.common.losses import KL_ESTIMATORS, kl_divergence
from agents.common.shapes import as_float, check_shape, shape_of

__all__ = ["gae", "kl_penalty_rewards", "masked_whiten", "reinforce_plus_plus", "reinforce_plus_plus_baseline"]


def gae(
    token_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float = 1.0,
    gae_lambda: float = 0.95,
) -> tuple[Tensor, Tensor]:
    r"""Generalized Advantage Estimation over response tokens.

    GAE (Schulman et al., arXiv:1506.02438 eq. 16), computed by the backward recursion

    .. math::
        \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad
        \hat A_t = \delta_t + \gamma \lambda \hat A_{t+1}, \qquad
        R_t = \hat A_t + V_t,

    where ``t`` runs over the real tokens of one sequence. Each sequence is one episode that ends at
    its last real token: the value after it is 0 and ``A_hat`` after it is 0, so sequences may end
    before ``T``. Padding positions (mask 0) get advantage 0 and return 0 and are *skipped* by the
    recursion (their reward and value are ignored; a masked position inside a sequence is bridged,
    the next real token is used as ``t + 1``, as in verl). The loop runs backwards over ``T`` and is
    vectorised over ``N``.

    No gradient flows through the result: inputs are detached (advantages and returns are targets).

    Args:
        token_rewards: Per-token rewards ``r_t``, shape ``(N, T)`` (e.g. the outcome reward on the
            last token minus a per-token KL penalty).
        values: Value estimates ``V(s_t)``, shape ``(N, T)``, in the units of the reward.
        response_mask: Shape ``(N, T)``, nonzero/True on real response tokens, 0/False on padding.
        gamma: Discount factor, in ``[0, 1]``.
        gae_lambda: GAE ``lambda``, in ``[0, 1]`` (0: one-step TD, 1: Monte Carlo return minus value).

    Returns:
        ``(advantages, returns)``, both shape ``(N, T)`` with the floating dtype of ``token_rewards``;
        ``returns = advantages + values`` on real tokens, both 0 on padding.

    Raises:
        ValueError: If ``token_rewards`` is not 2-D, ``values`` or ``response_mask`` does not have
            its shape, or ``gamma``/``gae_lambda`` is outside ``[0, 1]``.
    """
    if token_rewards.dim() != 2:
        raise ValueError(f"token_rewards has shape {shape_of(token_rewards)}, expected (N, T) (2-D)")
    expected = shape_of(token_rewards)
    check_shape("values", values, expected, "same as token_rewards: (N, T)")
    check_shape("response_mask", response_mask, expected, "same as token_rewards: (N, T)")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda}")

    rewards = as_float(token_rewards).detach()  # (N, T)
    values = values.detach().to(dtype=rewards.dtype, device=rewards.device)  # (N, T)
    mask = response_mask.to(device=rewards.device) != 0  # (N, T) bool

    n, t_len = rewards.shape
    advantages = torch.zeros_like(rewards)  # (N, T)
    next_value = rewards.new_zeros(n)  # (N,) V_{t+1}; 0 after the last real token
    next_adv = rewards.new_zeros(n)  # (N,) A_{t+1}; 0 after the last real token
    for t in range(t_len - 1, -1, -1):
        m = mask[:, t]  # (N,) bool
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (N,)
        adv_t = delta + gamma * gae_lambda * next_adv  # (N,)
        advantages[:, t] = torch.where(m, adv_t, torch.zeros_like(adv_t))
        # Padding positions leave the carried state untouched.
        next_value = torch.where(m, values[:, t], next_value)  # (N,)
        next_adv = torch.where(m, adv_t, next_adv)  # (N,)

    returns = torch.where(mask, advantages + values, torch.zeros_like(advantages))  # (N, T)
    return advantages, returns


def kl_penalty_rewards(
    rewards: Tensor,
    log_probs: Tensor | None,
    ref_log_probs: Tensor | None,
    response_mask: Tensor,
    beta: float,
    kl_estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    r"""PPO's per-token reward for language models: the score minus a per-token KL penalty.

    InstructGPT (arXiv:2203.02155 eq. 2) and DeepSeekMath (arXiv:2402.03300 eq. 2):

    .. math::
        r_t = r_\varphi(q, o_{\le t}) - \beta \log\frac{\pi_{old}(o_t \mid q, o_{<t})}{\pi_{ref}(o_t \mid q, o_{<t})}

    where the score :math:`r_\varphi` is the outcome reward on the last real token (0 elsewhere) or any
    per-token (process) reward, and the log-ratio is the ``"k1"`` estimator of :func:`kl_divergence`
    (another estimator may be chosen) evaluated with the log-probs of the rollout policy.

    Args:
        rewards: ``(N,)`` outcome rewards (put on each sequence's last real token) or ``(N, T)`` per-token
            rewards (used as given, 0 on padding).
        log_probs: ``(N, T)`` log-probs (nats) of the response tokens under the rollout policy; may be None
            when ``beta == 0``.
        ref_log_probs: ``(N, T)`` log-probs under the reference policy; may be None when ``beta == 0``.
        response_mask: ``(N, T)``, nonzero/True on real response tokens. A sequence without real tokens
            gets no reward.
        beta: KL coefficient, >= 0 (0: the score alone).
        kl_estimator: One of :data:`~agents.common.losses.KL_ESTIMATORS` (PPO: ``"k1"``).

    Returns:
        ``(token_rewards, kl_penalty)``, both ``(N, T)`` float, 0 on padding, detached:
        ``token_rewards = score - kl_penalty`` and ``kl_penalty = beta * KL_t`` (nats times beta).

    Raises:
        ValueError: bad shapes, ``beta < 0``, ``beta > 0`` without log-probs, or an unknown estimator.

    Example:
        One sequence of 2 real tokens and 1 pad, outcome 1.0, ``beta = 0.5``, log-ratios 0.2 and -0.4:

        >>> r, pen = kl_penalty_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -2.0, 0.0]]),
        ...                             torch.tensor([[-1.2, -1.6, 0.0]]), torch.tensor([[1, 1, 0]]), beta=0.5)
        >>> [round(x, 6) for x in r[0].tolist()]
        [-0.1, 1.2, 0.0]
    """
    if response_mask.dim() != 2 or response_mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"response_mask has shape {shape_of(response_mask)}, expected ({rewards.shape[0]}, T)")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {list(KL_ESTIMATORS)}, got {kl_estimator!r}")
    mask = response_mask.to(device=rewards.device) != 0  # (N, T) bool
    rewards = as_float(rewards).detach()
    if rewards.dim() == 1:
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)  # (T,)
        last = (mask * positions).argmax(dim=1)  # (N,) index of the last real token
        score = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)  # (N, T)
        score[torch.arange(len(rewards), device=rewards.device), last] = rewards
    else:
        check_shape("rewards", rewards, shape_of(mask), "(N,) or (N, T) like response_mask")
        score = rewards  # (N, T)
    score = torch.where(mask, score, torch.zeros_like(score))  # (N, T)
    penalty = torch.zeros_like(score)  # (N, T)
    if beta > 0:
        if log_probs is None or ref_log_probs is None:
            raise ValueError(f"log_probs and ref_log_probs are required when beta > 0 (got beta={beta})")
        check_shape("log_probs", log_probs, shape_of(mask), "(N, T) like response_mask")
        kl = kl_divergence(log_probs.detach().to(score.dtype), ref_log_probs.detach().to(score.dtype),
                           kl_estimator)  # (N, T)
        penalty = torch.where(mask, beta * kl, penalty)  # (N, T)
    return score - penalty, penalty  # (N, T), (N, T)


def masked_whiten(x: Tensor, response_mask: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Normalise ``x`` to mean 0, std 1 over the real tokens: :math:`(x - \mu) / (\sigma + \epsilon)`.

    PPO's advantage normalisation (SB3 ``normalize_advantage``, TRL ``masked_whiten``), with the mean and
    the unbiased std taken over the real tokens of the whole batch only.

    Args:
        x: ``(N, T)`` values (e.g. GAE advantages).
        response_mask: ``(N, T)``, nonzero/True on real tokens.
        eps: Added to the std.

    Returns:
        ``(N, T)`` whitened values, 0 on padding. With fewer than 2 real tokens the std is taken as 0.

    Raises:
        ValueError: If ``response_mask`` does not have the shape of ``x``.

    Example:
        >>> masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
        tensor([[-0.7071,  0.7071,  0.0000]])
    """
    check_shape("response_mask", response_mask, shape_of(x), "same as x: (N, T)")
    x = as_float(x).detach()  # (N, T)
    mask = response_mask.to(device=x.device) != 0  # (N, T) bool
    count = mask.sum().to(x.dtype)  # ()
    mean = torch.where(mask, x, torch.zeros_like(x)).sum() / count.clamp(min=1)  # ()
    centred = torch.where(mask, x - mean, torch.zeros_like(x))  # (N, T)
    var = (centred**2).sum() / (count - 1).clamp(min=1)  # () unbiased
    return centred / (var.sqrt() + eps)  # (N, T)


def _check_returns_inputs(token_rewards: Tensor, response_mask: Tensor) -> None:
    if token_rewards.dim() != 2:
        raise ValueError(f"token_rewards has shape {shape_of(token_rewards)}, expected (N, T) (2-D)")
    check_shape("response_mask", response_mask, shape_of(token_rewards), "same as token_rewards: (N, T)")


def reinforce_plus_plus(
    token_rewards: Tensor,
    response_mask: Tensor,
    gamma: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""REINFORCE++ advantages: the per-token reward-to-go, whitened over every real token of the batch.

    REINFORCE++ (Hu et al., arXiv:2501.03262, section 3): the per-token reward already holds the outcome
    score on the last token minus the per-token KL penalty, :math:`r_t = \mathbb{I}(t = |o|)\, r(q, o) -
    \beta\, \mathrm{KL}_t` (build it with :func:`kl_penalty_rewards`, k1 in the paper). The return is

    .. math:: G_t = \sum_{s \ge t} \gamma^{s - t} r_s, \qquad
              \hat A_t = \frac{G_t - \mathrm{mean}(G)}{\mathrm{std}(G)},

    where the mean and std run over all real tokens of the batch ("global advantage normalization",
    :func:`masked_whiten`; the paper's replacement for a critic or a per-prompt baseline). With ``gamma = 1``
    and an outcome reward, :math:`G_t = r(q, o) - \beta \sum_{s \ge t} \mathrm{KL}_s`. As in
    :func:`gae`, padding positions are skipped by the recursion (a masked position inside a sequence is
    bridged) and get 0; each sequence ends at its last real token.

    Args:
        token_rewards: Per-token rewards ``r_t`` (KL penalty included), shape ``(N, T)``, in reward units.
        response_mask: ``(N, T)``, nonzero/True on real response tokens.
        gamma: Discount factor in ``[0, 1]`` (REINFORCE++: 1.0).

    Returns:
        ``(advantages, returns)``, both ``(N, T)`` with the floating dtype of ``token_rewards``, 0 on padding,
        detached: whitened (unitless) advantages and the returns ``G_t`` in reward units.

    Raises:
        ValueError: If ``token_rewards`` is not 2-D, ``response_mask`` does not have its shape, or ``gamma``
            is outside ``[0, 1]``.

    Example:
        Rewards ``[0, 0, 1]`` (gamma 1): returns ``[1, 1, 1]``; a second sequence ``[0, -1]`` + padding:
        ``[-1, -1]``. Mean 0.2, unbiased std ``sqrt(4.8 / 4)``.

        >>> adv, ret = reinforce_plus_plus(torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 5.0]]),
        ...                                torch.tensor([[1, 1, 1], [1, 1, 0]]))
        >>> ret
        tensor([[ 1.,  1.,  1.],
                [-1., -1.,  0.]])
        >>> adv
        tensor([[ 0.7303,  0.7303,  0.7303],
                [-1.0954, -1.0954,  0.0000]])
    """
    _check_returns_inputs(token_rewards, response_mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    rewards = as_float(token_rewards).detach()  # (N, T)
    mask = response_mask.to(device=rewards.device) != 0  # (N, T) bool

    returns = torch.zeros_like(rewards)  # (N, T)
    next_return = rewards.new_zeros(rewards.shape[0])  # (N,) G_{t+1}; 0 after the last real token
    for t in range(rewards.shape[1] - 1, -1, -1):
        m = mask[:, t]  # (N,) bool
        g_t = rewards[:, t] + gamma * next_return  # (N,)
        returns[:, t] = torch.where(m, g_t, torch.zeros_like(g_t))
        next_return = torch.where(m, g_t, next_return)  # (N,) padding leaves the carried return untouched
    return masked_whiten(returns, mask), returns  # (N, T), (N, T)


def reinforce_plus_plus_baseline(
    token_rewards: Tensor,
    response_mask: Tensor,
    group_ids: Tensor,
) -> Tensor:
    r"""REINFORCE++-baseline advantages: group-centred sequence scores, whitened over the batch's real tokens.

    REINFORCE++ w/ baseline (Hu et al., arXiv:2501.03262, section 3; verl's
    ``reinforce_plus_plus_baseline`` estimator): with ``G`` responses per prompt, the score of a response is
    the sum of its per-token rewards (outcome reward minus the summed KL penalty, if the caller put one in
    ``token_rewards``), the group mean is subtracted (as in Dr. GRPO, no std), the result is given to every
    real token, and the token values are whitened over the whole batch:

    .. math::
        s_i = \sum_t r_{i,t}, \qquad \tilde A_i = s_i - \mathrm{mean}_{j \in group(i)}(s_j), \qquad
        \hat A_{i,t} = \frac{\tilde A_i - \mathrm{mean}(\tilde A)}{\mathrm{std}(\tilde A)}

    (mean and unbiased std over all real tokens, :func:`masked_whiten`). Groups need not be contiguous.
    A group of size 1 has :math:`\tilde A_i = 0` (verl instead leaves its score uncentred).

    Args:
        token_rewards: ``(N, T)`` per-token rewards in reward units; padding entries are ignored.
        response_mask: ``(N, T)``, nonzero/True on real response tokens.
        group_ids: ``(N,)`` integer group (prompt) id of each response.

    Returns:
        ``(N, T)`` whitened advantages (unitless), dtype of ``token_rewards`` (float), 0 on padding, detached.

    Raises:
        ValueError: If ``token_rewards`` is not 2-D, ``response_mask`` does not have its shape, or
            ``group_ids`` is not an integer ``(N,)`` tensor.

    Example:
        One group, scores 1 (3 tokens) and 0 (1 token): centred ``+-0.5``; the 4 token values
        ``[0.5, 0.5, 0.5, -0.5]`` have mean 0.25 and unbiased std 0.5.

        >>> reinforce_plus_plus_baseline(torch.tensor([[0.0, 0.0, 1.0], [0.0, 9.0, 9.0]]),
        ...                              torch.tensor([[1, 1, 1], [1, 0, 0]]), torch.tensor([0, 0]))
        tensor([[ 0.5000,  0.5000,  0.5000],
                [-1.5000,  0.0000,  0.0000]])
    """
    _check_returns_inputs(token_rewards, response_mask)
    rewards = as_float(token_rewards).detach()  # (N, T)
    mask = response_mask.to(device=rewards.device) != 0  # (N, T) bool
    check_shape("group_ids", group_ids, (rewards.shape[0],), "one group id per response")
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    scores = torch.where(mask, rewards, torch.zeros_like(rewards)).sum(-1)  # (N,)
    if scores.shape[0] == 0:
        return rewards.clone()  # (0, T)
    centred = group_centred(scores, group_ids)[0]  # (N,)
    return masked_whiten(broadcast_to_tokens(centred, mask), mask)  # (N, T)
