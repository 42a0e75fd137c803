"""Policy-gradient losses for RL on language models (PPO, GRPO, DAPO, GSPO, Dr. GRPO, CISPO).

Notation: ``N`` sequences (responses), ``T`` padded response tokens. ``mask``/``response_mask`` of
shape ``(N, T)`` is 1.0/True on real response tokens and 0/False on padding (it is treated as
binary: any nonzero entry is a real token). Log-probabilities are natural logs, so KL values are in
nats. All functions are pure torch functions; they work on any device and keep the floating dtype
of their inputs (float32 or float64).

References:
    * PPO: Schulman et al., arXiv:1707.06347 (clipped surrogate, eq. 7).
    * GRPO: DeepSeekMath, Shao et al., arXiv:2402.03300 (objective eq. 3, KL estimator eq. 4).
    * DAPO: Yu et al., arXiv:2503.14476 (clip-higher eq. 10, token-level loss eq. 8).
    * GSPO: Zheng et al., arXiv:2507.18071 (sequence ratio eq. 7, objective eq. 5, GSPO-token eq. 13).
    * Dr. GRPO: Liu et al., arXiv:2503.20783 (constant length normalisation).
    * CISPO: MiniMax-M1, arXiv:2506.13585 (clipped IS-weight objective, eq. 4-5).
    * Clipped value loss: OpenAI baselines ``ppo2`` (``vf_losses``); GAE paper arXiv:1506.02438.
    * KL estimators: J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "AGGREGATION_MODES",
    "IMPORTANCE_SAMPLING_LEVELS",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "LOSS_MODES",
    "aggregate",
    "cispo_surrogate",
    "clipped_surrogate",
    "importance_log_ratio",
    "kl_divergence",
    "policy_loss",
    "sft_loss",
    "value_loss",
]

#: Valid ``mode`` values of :func:`aggregate` (and ``loss_aggregation`` of :func:`policy_loss`).
AGGREGATION_MODES: tuple[str, ...] = (
    "seq-mean-token-mean",
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)

#: Valid ``importance_sampling_level`` values of :func:`importance_log_ratio` (TRL's name for the option).
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence", "sequence-token")

#: Valid ``estimator`` values of :func:`kl_divergence`.
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")

#: Valid ``loss_mode`` values of :func:`policy_loss`: PPO's clipped surrogate (:func:`clipped_surrogate`) or
#: MiniMax-M1's clipped IS-weight policy gradient (:func:`cispo_surrogate`).
LOSS_MODES: tuple[str, ...] = ("ppo_clip", "cispo")

#: Log-ratios are clamped to ``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]`` before ``exp`` (k3 KL, importance
#: ratio) so that ``exp`` cannot overflow (``exp(20) ~ 4.9e8``); inside the range this is exact.
LOG_RATIO_CLAMP: float = 20.0


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_2d(name: str, tensor: Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} has shape {_shape(tensor)}, expected (N, T) (2-D)")


def _check_same(name: str, tensor: Tensor, ref_name: str, ref: Tensor) -> None:
    if _shape(tensor) != _shape(ref):
        raise ValueError(
            f"{name} has shape {_shape(tensor)}, expected {_shape(ref)} (same as {ref_name}: (N, T))"
        )


def _check_advantages(advantages: Tensor, log_probs: Tensor) -> None:
    n, t = log_probs.shape
    if _shape(advantages) not in ((n,), (n, t)):
        raise ValueError(
            f"advantages has shape {_shape(advantages)}, expected ({n},) or ({n}, {t}) "
            f"((N,) or (N, T) of log_probs)"
        )


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over positions where the bool ``mask`` is True; 0 if there are none."""
    x = torch.where(mask, x, torch.zeros_like(x))  # (N, T)
    return x.sum() / mask.sum().clamp(min=1).to(x.dtype)  # ()


def aggregate(loss: Tensor, mask: Tensor, mode: str, max_len: int | None = None) -> Tensor:
    r"""Reduce a per-token loss to a scalar.

    Modes (``L_{i,t}`` the per-token loss, ``|o_i|`` the number of real tokens of sequence ``i``):

    * ``"seq-mean-token-mean"``: :math:`\frac1N \sum_i \frac1{|o_i|} \sum_t L_{i,t}`: mean over the
      tokens of each sequence, then mean over sequences (GRPO, DeepSeekMath arXiv:2402.03300 eq. 3).
    * ``"token-mean"``: :math:`\frac{1}{\sum_i |o_i|} \sum_{i,t} L_{i,t}`: every token of the batch
      weighs the same (DAPO arXiv:2503.14476 eq. 8; PPO).
    * ``"seq-mean-token-sum"``: :math:`\frac1N \sum_i \sum_t L_{i,t}`.
    * ``"seq-mean-token-sum-norm"``: :math:`\frac1N \sum_i \frac{1}{\mathrm{max\_len}} \sum_t L_{i,t}`:
      a constant normaliser instead of the length (Dr. GRPO arXiv:2503.20783).

    In the per-sequence modes a sequence with no real token contributes 0 to the sum and still
    counts in ``N`` (as in TRL). An all-zero mask gives a loss of 0 (never NaN). Padding positions
    are excluded with ``torch.where``, so NaN/inf values there do not leak into the loss or its
    gradient.

    Args:
        loss: Per-token loss, shape ``(N, T)``.
        mask: Shape ``(N, T)``, nonzero/True on real tokens.
        mode: One of :data:`AGGREGATION_MODES`.
        max_len: Normaliser of ``"seq-mean-token-sum-norm"`` (default ``T``); ignored by other modes.

    Returns:
        0-d tensor with the dtype and device of ``loss``.

    Raises:
        ValueError: If ``loss`` is not 2-D, ``mask`` does not have its shape, ``mode`` is not one of
            :data:`AGGREGATION_MODES`, or ``max_len`` is not positive.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"mode must be one of {list(AGGREGATION_MODES)}, got {mode!r}")
    _check_2d("loss", loss)
    _check_same("mask", mask, "loss", loss)
    if max_len is not None and max_len <= 0:
        raise ValueError(f"max_len must be a positive int, got {max_len}")

    m = mask.to(device=loss.device) != 0  # (N, T) bool
    masked = torch.where(m, loss, torch.zeros_like(loss))  # (N, T)
    n, t = loss.shape

    if mode == "token-mean":
        return masked.sum() / m.sum().clamp(min=1).to(loss.dtype)  # ()

    seq_sum = masked.sum(dim=1)  # (N,)
    if mode == "seq-mean-token-mean":
        seq_val = seq_sum / m.sum(dim=1).clamp(min=1).to(loss.dtype)  # (N,)
    elif mode == "seq-mean-token-sum":
        seq_val = seq_sum  # (N,)
    else:  # "seq-mean-token-sum-norm"
        seq_val = seq_sum / float(max_len if max_len is not None else t)  # (N,)
    return seq_val.sum() / max(n, 1)  # ()


def kl_divergence(log_probs: Tensor, ref_log_probs: Tensor, estimator: str = "k3") -> Tensor:
    r"""Per-token estimate of :math:`\mathrm{KL}(\pi_\theta \| \pi_{ref})` from samples of :math:`\pi_\theta`.

    Schulman's estimators, with :math:`\log r = \log \pi_\theta(o_t) - \log \pi_{ref}(o_t)`:

    * ``"k1"``: :math:`\log \frac{\pi_\theta}{\pi_{ref}}` (unbiased, high variance, can be negative).
    * ``"k2"``: :math:`\frac12 \left(\log \frac{\pi_\theta}{\pi_{ref}}\right)^2` (biased, >= 0).
    * ``"k3"``: :math:`\frac{\pi_{ref}}{\pi_\theta} - \log\frac{\pi_{ref}}{\pi_\theta} - 1`
      (unbiased, >= 0, low variance): DeepSeekMath arXiv:2402.03300 eq. 4.

    For numerical safety ``k3`` clamps :math:`\log(\pi_{ref}/\pi_\theta)` to
    ``[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20]`` before ``exp`` (exact inside the range; outside
    it the estimate saturates and its gradient is 0).

    Args:
        log_probs: Log-probabilities of the sampled tokens under the current policy, shape ``(N, T)``.
        ref_log_probs: Log-probabilities of the same tokens under the reference policy, ``(N, T)``.
        estimator: One of :data:`KL_ESTIMATORS`.

    Returns:
        Per-token KL estimate in nats, shape ``(N, T)``. Not masked: padding positions hold whatever
        the inputs give there (mask before reducing).

    Raises:
        ValueError: If ``estimator`` is unknown, ``log_probs`` is not 2-D, or ``ref_log_probs`` does
            not have its shape.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(KL_ESTIMATORS)}, got {estimator!r}")
    _check_2d("log_probs", log_probs)
    _check_same("ref_log_probs", ref_log_probs, "log_probs", log_probs)

    if estimator == "k1":
        return log_probs - ref_log_probs  # (N, T)
    if estimator == "k2":
        return 0.5 * (log_probs - ref_log_probs) ** 2  # (N, T)
    log_ref_over_pi = (ref_log_probs - log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (N, T)
    return torch.exp(log_ref_over_pi) - log_ref_over_pi - 1.0  # (N, T)


def importance_log_ratio(
    log_probs: Tensor,
    old_log_probs: Tensor,
    response_mask: Tensor | None = None,
    level: str = "token",
) -> Tensor:
    r"""Log of the importance weight of every response token, ``(N, T)``, at the requested level.

    * ``"token"`` (PPO, GRPO, DAPO): :math:`\log \rho_{i,t} = \log\pi_\theta(o_{i,t}) - \log\pi_{old}(o_{i,t})`.
    * ``"sequence"`` (GSPO arXiv:2507.18071 eq. 7): the length-normalised sequence ratio
      :math:`\log s_i = \frac{1}{|o_i|}\sum_t \log\frac{\pi_\theta(o_{i,t})}{\pi_{old}(o_{i,t})}`, the log of the
      geometric mean of the token ratios, repeated on every token of the sequence; the gradient flows
      through the mean (each token gets ``1/|o_i|`` of it).
    * ``"sequence-token"`` (GSPO-token, eq. 13-14): the same value as ``"sequence"``, but the gradient is
      that of the token's own log-prob: :math:`\mathrm{sg}[\log s_i] + \log\pi_\theta(o_{i,t}) -
      \mathrm{sg}[\log\pi_\theta(o_{i,t})]`, so per-token advantages can weight each token.

    Padding (``response_mask == 0``) is excluded from the sequence mean; a sequence with no real token
    gets a log-ratio of 0. ``old_log_probs`` is detached.

    Args:
        log_probs: ``(N, T)`` log-probabilities under the current policy (with grad).
        old_log_probs: ``(N, T)`` log-probabilities under the sampling policy.
        response_mask: ``(N, T)``, nonzero on real tokens; required for the sequence levels.
        level: One of :data:`IMPORTANCE_SAMPLING_LEVELS`.

    Returns:
        ``(N, T)`` log importance weights (not clamped; see :func:`clipped_surrogate`).

    Raises:
        ValueError: Unknown ``level``, or a sequence level without ``response_mask``.
    """
    if level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {list(IMPORTANCE_SAMPLING_LEVELS)}, got {level!r}")
    log_ratio = log_probs - old_log_probs.detach()  # (N, T)
    if level == "token":
        return log_ratio
    if response_mask is None:
        raise ValueError(f"importance_sampling_level={level!r} needs response_mask (the sequence mean skips padding)")
    m = response_mask.to(device=log_probs.device) != 0  # (N, T) bool
    masked = torch.where(m, log_ratio, torch.zeros_like(log_ratio))  # (N, T)
    seq_log_ratio = masked.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1).to(log_probs.dtype)  # (N, 1)
    if level == "sequence":
        return seq_log_ratio.expand_as(log_probs)  # (N, T)
    return seq_log_ratio.detach() + log_probs - log_probs.detach()  # (N, T)  "sequence-token"


def _surrogate_inputs(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip_range: float,
                      clip_range_high: float | None) -> tuple[Tensor, float]:
    """Checked inputs of the surrogates: ``(advantages (N, T) detached, clip_range_high)``.

    Raises:
        ValueError: wrong shapes (named) or a negative clip range.
    """
    _check_2d("log_probs", log_probs)
    _check_same("old_log_probs", old_log_probs, "log_probs", log_probs)
    _check_advantages(advantages, log_probs)
    clip_range_high = clip_range if clip_range_high is None else clip_range_high
    if clip_range < 0:
        raise ValueError(f"clip_range must be >= 0, got {clip_range}")
    if clip_range_high < 0:
        raise ValueError(f"clip_range_high must be >= 0, got {clip_range_high}")
    adv = advantages.detach().to(dtype=log_probs.dtype, device=log_probs.device)
    return (adv.unsqueeze(1) if adv.dim() == 1 else adv).expand_as(log_probs), clip_range_high  # (N, T)


def clipped_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    *,
    response_mask: Tensor | None = None,
    importance_sampling_level: str = "token",
) -> tuple[Tensor, Tensor]:
    r"""PPO's clipped surrogate objective, negated to a per-token loss.

    PPO (arXiv:1707.06347) eq. 7, with the asymmetric "clip-higher" bounds of DAPO
    (arXiv:2503.14476) eq. 10:

    .. math::
        L_t = -\min\left(\rho_t \hat A_t,\;
              \mathrm{clip}(\rho_t, 1 - \epsilon_{low}, 1 + \epsilon_{high}) \hat A_t\right),
        \qquad \rho_t = \exp(\log\pi_\theta(o_t) - \log\pi_{old}(o_t)).

    With ``importance_sampling_level="sequence"`` :math:`\rho_t` is GSPO's sequence ratio :math:`s_i`
    (arXiv:2507.18071 eq. 5 and 7): clipping then removes the whole sequence's gradient at once;
    ``"sequence-token"`` is GSPO-token (eq. 13). See :func:`importance_log_ratio`.
    The log-ratio is clamped to ``[-20, 20]`` before ``exp`` (see :data:`LOG_RATIO_CLAMP`).

    ``is_clipped`` marks tokens where the clipped term is strictly smaller than the unclipped one,
    i.e. where it is the active term and the gradient w.r.t. ``log_probs`` is cut to 0: ``A > 0``
    and ``rho > 1 + eps_high``, or ``A < 0`` and ``rho < 1 - eps_low``. Elsewhere the loss is
    ``-rho * A`` and its gradient flows through ``rho`` (also at ties).

    Args:
        log_probs: Log-probabilities of the sampled tokens under the current policy, ``(N, T)``.
        old_log_probs: Log-probabilities under the sampling (old) policy, ``(N, T)``; treated as
            constants (detached).
        advantages: ``(N, T)`` per-token, or ``(N,)`` per-sequence (broadcast over ``T``); detached.
        clip_range: :math:`\epsilon_{low}` (and :math:`\epsilon_{high}` by default), >= 0.
        clip_range_high: :math:`\epsilon_{high}`, >= 0; defaults to ``clip_range``. DAPO uses 0.28
            with ``clip_range=0.2``; GSPO 4e-4 with 3e-4.
        response_mask: ``(N, T)``; needed by the sequence levels (ignored at ``"token"``).
        importance_sampling_level: One of :data:`IMPORTANCE_SAMPLING_LEVELS`.

    Returns:
        ``(per_token_loss, is_clipped)``: float ``(N, T)`` (not masked) and bool ``(N, T)``.

    Raises:
        ValueError: If ``log_probs`` is not 2-D, ``old_log_probs`` does not have its shape,
            ``advantages`` is neither ``(N,)`` nor ``(N, T)``, a clip range is negative, or the level
            is unknown or lacks ``response_mask``.
    """
    adv, clip_range_high = _surrogate_inputs(log_probs, old_log_probs, advantages, clip_range, clip_range_high)

    log_ratio = importance_log_ratio(log_probs, old_log_probs, response_mask, importance_sampling_level)  # (N, T)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # (N, T)
    surr_unclipped = ratio * adv  # (N, T)
    surr_clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range_high) * adv  # (N, T)
    is_clipped = surr_clipped < surr_unclipped  # (N, T) bool
    per_token_loss = -torch.where(is_clipped, surr_clipped, surr_unclipped)  # (N, T)
    return per_token_loss, is_clipped


def cispo_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""CISPO's per-token loss: a REINFORCE term weighted by a clipped, stop-gradient importance ratio.

    MiniMax-M1 (arXiv:2506.13585) eq. 4-5, negated to a loss:

    .. math::
        L_t = -\,\mathrm{sg}\big[\hat\rho_t\big]\, \hat A_t \log\pi_\theta(o_t), \qquad
        \hat\rho_t = \mathrm{clip}(\rho_t, 1 - \epsilon_{low}, 1 + \epsilon_{high}), \qquad
        \rho_t = \frac{\pi_\theta(o_t)}{\pi_{old}(o_t)}.

    The clip bounds the *weight* only: the gradient w.r.t. ``log_probs[t]`` is ``-clip(rho_t) * A_t`` on every
    token, never 0, whereas :func:`clipped_surrogate` cuts the gradient of clipped tokens. MiniMax-M1 sets no
    lower bound (``clip_range=1.0`` gives ``1 - 1.0 = 0``) and tunes only :math:`\epsilon_{high}`; TRL's
    ``loss_type="cispo"`` clamps at ``epsilon_high`` (= ``1 + clip_range_high``). Token level only. The
    log-ratio is clamped to ``[-20, 20]`` before ``exp`` (:data:`LOG_RATIO_CLAMP`); as the weight is detached
    this bounds its value but never removes a gradient. The loss *value* depends on ``log_probs`` itself
    (not a ratio), so only its gradient is comparable with :func:`clipped_surrogate`'s.

    Args:
        log_probs: Log-probabilities of the sampled tokens under the current policy, ``(N, T)`` (with grad).
        old_log_probs: Log-probabilities under the sampling policy, ``(N, T)`` (detached).
        advantages: ``(N, T)`` per-token, or ``(N,)`` per-sequence (broadcast over ``T``); detached.
        clip_range: :math:`\epsilon_{low}` (and :math:`\epsilon_{high}` by default), >= 0; 1.0 or more
            removes the lower bound.
        clip_range_high: :math:`\epsilon_{high}` >= 0; defaults to ``clip_range``.

    Returns:
        ``(per_token_loss, is_clipped)``: float ``(N, T)`` (not masked) and bool ``(N, T)``, True where the
        weight was clamped (``rho`` outside ``[1 - eps_low, 1 + eps_high]``, whatever the sign of ``A``).

    Raises:
        ValueError: If ``log_probs`` is not 2-D, ``old_log_probs`` does not have its shape, ``advantages`` is
            neither ``(N,)`` nor ``(N, T)``, or a clip range is negative.

    Example:
        Ratios 0.5 and 2.0 with ``A = 1``, weight clipped to ``[0, 1.5]``: weights 0.5 and 1.5 (clamped),
        gradients ``-0.5`` and ``-1.5``.

        >>> lp = torch.log(torch.tensor([[0.5, 2.0]])).requires_grad_(True)
        >>> loss, clipped = cispo_surrogate(lp, torch.zeros(1, 2), torch.tensor([1.0]), 1.0, 0.5)
        >>> loss.sum().backward()
        >>> lp.grad, clipped
        (tensor([[-0.5000, -1.5000]]), tensor([[False,  True]]))
    """
    adv, clip_range_high = _surrogate_inputs(log_probs, old_log_probs, advantages, clip_range, clip_range_high)
    log_ratio = (log_probs - old_log_probs.detach()).detach()  # (N, T) token level
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # (N, T)
    low, high = 1.0 - clip_range, 1.0 + clip_range_high
    is_clipped = (ratio < low) | (ratio > high)  # (N, T) bool
    weight = ratio.clamp(low, high)  # (N, T) detached: sg[clip(rho)]
    per_token_loss = -weight * adv * log_probs  # (N, T)
    return per_token_loss, is_clipped


def _check_policy_tensors(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    ref_log_probs: Tensor | None,
) -> None:
    """Check the tensor shapes of :func:`policy_loss` (``ValueError`` naming the culprit)."""
    _check_2d("log_probs", log_probs)
    _check_same("old_log_probs", old_log_probs, "log_probs", log_probs)
    _check_advantages(advantages, log_probs)
    _check_same("response_mask", response_mask, "log_probs", log_probs)
    if ref_log_probs is not None:
        _check_same("ref_log_probs", ref_log_probs, "log_probs", log_probs)


def _check_policy_options(
    ref_log_probs: Tensor | None, beta: float, kl_estimator: str, loss_aggregation: str, loss_mode: str,
    importance_sampling_level: str,
) -> None:
    """Check the scalar options of :func:`policy_loss` (``ValueError`` naming the culprit)."""
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"loss_mode must be one of {list(LOSS_MODES)}, got {loss_mode!r}")
    if loss_mode == "cispo" and importance_sampling_level != "token":
        raise ValueError(
            f"loss_mode='cispo' is token level only, got importance_sampling_level={importance_sampling_level!r}"
        )
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_log_probs is None:
        raise ValueError(f"ref_log_probs is required when beta > 0 (got beta={beta})")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {list(KL_ESTIMATORS)}, got {kl_estimator!r}")
    if loss_aggregation not in AGGREGATION_MODES:
        raise ValueError(
            f"loss_aggregation must be one of {list(AGGREGATION_MODES)}, got {loss_aggregation!r}"
        )


def _policy_per_token(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    ref_log_probs: Tensor | None,
    clip_range: float,
    clip_range_high: float | None,
    beta: float,
    kl_estimator: str,
    response_mask: Tensor,
    importance_sampling_level: str,
    loss_mode: str = "ppo_clip",
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-token terms of :func:`policy_loss`.

    Returns:
        ``(per_token, surrogate, is_clipped, kl)``, each ``(N, T)``: the per-token loss
        (surrogate + ``beta`` * kl), the surrogate of ``loss_mode``, its clip mask, and the KL estimate
        (None if ``ref_log_probs`` is None).
    """
    if loss_mode == "cispo":
        surrogate, is_clipped = cispo_surrogate(
            log_probs, old_log_probs, advantages, clip_range=clip_range, clip_range_high=clip_range_high
        )  # (N, T), (N, T)
    else:
        surrogate, is_clipped = clipped_surrogate(
            log_probs, old_log_probs, advantages, clip_range=clip_range, clip_range_high=clip_range_high,
            response_mask=response_mask, importance_sampling_level=importance_sampling_level,
        )  # (N, T), (N, T)
    per_token = surrogate  # (N, T)
    kl = None
    if ref_log_probs is not None:
        kl = kl_divergence(log_probs, ref_log_probs.detach(), estimator=kl_estimator)  # (N, T)
        if beta > 0:
            per_token = per_token + beta * kl  # (N, T)
    return per_token, surrogate, is_clipped, kl


def _policy_stats(
    log_probs: Tensor,
    old_log_probs: Tensor,
    response_mask: Tensor,
    surrogate: Tensor,
    is_clipped: Tensor,
    kl: Tensor | None,
    loss_aggregation: str,
    max_len: int | None,
) -> dict[str, Tensor]:
    """The detached 0-d statistics of :func:`policy_loss` (see its Returns section)."""
    with torch.no_grad():
        m = response_mask.to(device=log_probs.device) != 0  # (N, T) bool
        log_ratio = (log_probs - old_log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (N, T)
        ratio = torch.exp(log_ratio)  # (N, T)
        stats: dict[str, Tensor] = {
            "policy_loss": aggregate(surrogate, response_mask, loss_aggregation, max_len=max_len).detach(),
        }
        if kl is not None:
            stats["kl"] = _masked_mean(kl.detach(), m)
        stats["clip_fraction"] = _masked_mean(is_clipped.to(log_probs.dtype), m)
        stats["approx_kl"] = _masked_mean((ratio - 1.0) - log_ratio, m)
        stats["ratio_mean"] = _masked_mean(ratio, m)
    return stats


def policy_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    ref_log_probs: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    loss_aggregation: str = "seq-mean-token-mean",
    max_len: int | None = None,
    importance_sampling_level: str = "token",
    loss_mode: str = "ppo_clip",
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The GRPO objective (DeepSeekMath arXiv:2402.03300 eq. 3), negated to a loss to minimise.

    Per token (:func:`clipped_surrogate` + ``beta`` * :func:`kl_divergence`, reduced with :func:`aggregate`):

    .. math::
        L_{i,t} = -\min\left(\rho_{i,t} \hat A_{i,t},
                  \mathrm{clip}(\rho_{i,t}, 1-\epsilon_{low}, 1+\epsilon_{high}) \hat A_{i,t}\right)
                  + \beta\, \hat D_{KL}[\pi_\theta \| \pi_{ref}]_{i,t}

    ``"seq-mean-token-mean"`` with k3 is exactly -eq. 3; the other presets (DAPO, Dr. GRPO, PPO, GSPO eq. 5,
    CISPO via ``loss_mode="cispo"``, :func:`cispo_surrogate`) are options of it (docs/algorithms/). With ``pi_old = pi_theta`` (one update per batch) and ``"seq-mean-token-mean"``, the gradient w.r.t.
    ``log_probs[i, t]`` is ``-(1/N)(1/|o_i|)(A_{i,t} + beta (pi_ref/pi_theta - 1))`` (DeepSeekMath A.1.6).

    Args:
        log_probs: Log-probabilities of the sampled tokens under the current policy, ``(N, T)``;
            the only input the loss is differentiated through.
        old_log_probs: Log-probabilities under the sampling policy, ``(N, T)``.
        advantages: ``(N,)`` per-sequence or ``(N, T)`` per-token advantages.
        response_mask: ``(N, T)``, nonzero/True on real response tokens.
        clip_range: :math:`\epsilon_{low}` (and :math:`\epsilon_{high}` by default).
        clip_range_high: :math:`\epsilon_{high}`; defaults to ``clip_range`` (DAPO clip-higher if larger).
        ref_log_probs: Log-probabilities under the reference policy, ``(N, T)``. Required iff
            ``beta > 0``; if given with ``beta == 0`` it is only used for the ``"kl"`` statistic.
        beta: KL penalty coefficient, >= 0.
        kl_estimator: One of :data:`KL_ESTIMATORS` (DeepSeekMath uses ``"k3"``).
        loss_aggregation: One of :data:`AGGREGATION_MODES`.
        max_len: Normaliser of ``"seq-mean-token-sum-norm"`` (default ``T``).
        importance_sampling_level: ``"token"`` (PPO/GRPO/DAPO), ``"sequence"`` (GSPO) or
            ``"sequence-token"`` (GSPO-token); see :func:`importance_log_ratio`. ``"cispo"`` needs ``"token"``.
        loss_mode: One of :data:`LOSS_MODES`: ``"ppo_clip"`` (:func:`clipped_surrogate`, default) or
            ``"cispo"`` (:func:`cispo_surrogate`). The KL term and the aggregation are the same for both.

    Returns:
        ``(loss, stats)``: the 0-d loss (differentiable w.r.t. ``log_probs``), and detached 0-d statistics:

            * ``"policy_loss"``: the surrogate part alone (clipped surrogate or CISPO term), aggregated like
              the loss.
            * ``"kl"`` (only if ``ref_log_probs`` is given): masked token mean of the ``kl_estimator``
              estimate of KL(pi_theta || pi_ref), in nats.
            * ``"clip_fraction"``: fraction of real tokens where the clipped term is active
              (``is_clipped`` of :func:`clipped_surrogate`, gradient cut), in ``[0, 1]``. At the sequence
              levels a clipped sequence counts with all its tokens. With ``"cispo"``: where the weight was
              clamped (``is_clipped`` of :func:`cispo_surrogate`; the gradient is kept).
            * ``"approx_kl"``: masked token mean of ``(rho - 1) - log rho`` with ``rho = pi_theta / pi_old``
              (log-ratio clamped to ``[-20, 20]``): the k3 estimate of KL(pi_old || pi_theta) with the samples
              drawn from pi_old (as SB3's PPO ``approx_kl``), in nats, >= 0; 0 when ``pi_theta == pi_old``.
            * ``"ratio_mean"``: masked token mean of ``rho``. Masked means over an all-zero mask are 0.

    Raises:
        ValueError: If a tensor has the wrong shape (the message names it), ``beta < 0``,
            ``beta > 0`` without ``ref_log_probs``, an option is not a valid value, or ``loss_mode="cispo"``
            is combined with a sequence ``importance_sampling_level``.
    """
    _check_policy_tensors(log_probs, old_log_probs, advantages, response_mask, ref_log_probs)
    _check_policy_options(ref_log_probs, beta, kl_estimator, loss_aggregation, loss_mode, importance_sampling_level)
    per_token, surrogate, is_clipped, kl = _policy_per_token(
        log_probs, old_log_probs, advantages, ref_log_probs, clip_range, clip_range_high, beta, kl_estimator,
        response_mask, importance_sampling_level, loss_mode,
    )  # (N, T) each; kl is None without ref_log_probs
    loss = aggregate(per_token, response_mask, loss_aggregation, max_len=max_len)  # ()
    return loss, _policy_stats(
        log_probs, old_log_probs, response_mask, surrogate, is_clipped, kl, loss_aggregation, max_len
    )


def sft_loss(
    log_probs: Tensor,
    weights: Tensor,
    response_mask: Tensor,
    loss_aggregation: str = "seq-mean-token-mean",
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Weighted negative log-likelihood: SFT (weights 1) and (Online) RFT (weights = 1 if correct, else 0).

    DeepSeekMath (arXiv:2402.03300) section 5.2.1: SFT maximises
    :math:`\frac{1}{|o|}\sum_t \log\pi_\theta(o_t)`, a gradient coefficient of 1; RFT and Online RFT the
    same on sampled responses with coefficient :math:`\mathbb{I}(o)` (1 for a correct answer, 0 otherwise).
    Per token ``L_{i,t} = -w_{i,t} log pi(o_{i,t})``, reduced with :func:`aggregate`.

    Args:
        log_probs: ``(N, T)`` log-probabilities of the response tokens (with grad).
        weights: ``(N,)`` per-sequence or ``(N, T)`` per-token weights (detached), e.g. the correctness indicator.
        response_mask: ``(N, T)``, nonzero on real tokens.
        loss_aggregation: One of :data:`AGGREGATION_MODES` (DeepSeekMath: ``"seq-mean-token-mean"``).
        max_len: Normaliser of ``"seq-mean-token-sum-norm"``.

    Returns:
        ``(loss, stats)``: the 0-d loss and ``{"policy_loss": loss.detach()}``.

    Raises:
        ValueError: Wrong shapes or an unknown aggregation mode.
    """
    _check_2d("log_probs", log_probs)
    _check_same("response_mask", response_mask, "log_probs", log_probs)
    _check_advantages(weights, log_probs)
    w = weights.detach().to(dtype=log_probs.dtype, device=log_probs.device)
    w = (w.unsqueeze(1) if w.dim() == 1 else w).expand_as(log_probs)  # (N, T)
    loss = aggregate(-w * log_probs, response_mask, loss_aggregation, max_len=max_len)  # ()
    return loss, {"policy_loss": loss.detach()}


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_range_vf: float | None = None,
    aggregation: str = "token-mean",
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""PPO's (optionally clipped) value-function loss, per token, then :func:`aggregate`.

    .. math::
        L^V_t = \tfrac12 \max\left((V_t - R_t)^2,\;
                \big(\mathrm{clip}(V_t, V^{old}_t - c, V^{old}_t + c) - R_t\big)^2\right)

    as in OpenAI baselines ``ppo2`` and TRL's PPO (``c = clip_range_vf``); ``clip_range_vf=None`` gives
    the unclipped :math:`\tfrac12 (V_t - R_t)^2`. (SB3's PPO instead takes the plain squared error of the
    clipped prediction, without the max and the 1/2.) The clipped branch keeps a new value estimate
    within ``c`` of the rollout's, in the units of the reward. PPO arXiv:1707.06347 eq. 9 adds
    ``vf_coef`` times this loss to the policy loss.

    Args:
        values: Value predictions with grad ``V_t``, shape ``(N, T)``.
        old_values: Values predicted at rollout time ``V^old_t``, ``(N, T)`` (detached).
        returns: Targets ``R_t`` (GAE returns ``A_t + V^old_t``), ``(N, T)`` (detached).
        mask: ``(N, T)``, nonzero/True on real response tokens.
        clip_range_vf: ``c >= 0`` in reward units, or None for no clipping.
        aggregation: One of :data:`AGGREGATION_MODES` (PPO: ``"token-mean"``).
        max_len: Normaliser of ``"seq-mean-token-sum-norm"``.

    Returns:
        ``(loss, stats)``: the 0-d loss (differentiable w.r.t. ``values``) and
        ``{"value_clip_fraction": ...}``, the fraction of real tokens where the clipped term is strictly
        larger (the active one, its gradient cut to 0); 0 when unclipped.

    Raises:
        ValueError: If a tensor is not ``(N, T)`` like ``values``, or ``clip_range_vf < 0``.

    Example:
        ``V = 1.5, V_old = 1.0, R = 2.0, c = 0.2``: unclipped ``(1.5 - 2)^2 = 0.25``, clipped
        ``(1.2 - 2)^2 = 0.64``, loss ``0.5 * 0.64 = 0.32``.

        >>> loss, stats = value_loss(torch.tensor([[1.5]]), torch.tensor([[1.0]]), torch.tensor([[2.0]]),
        ...                          torch.tensor([[1]]), clip_range_vf=0.2)
        >>> round(float(loss), 6), float(stats["value_clip_fraction"])
        (0.32, 1.0)
    """
    _check_2d("values", values)
    _check_same("old_values", old_values, "values", values)
    _check_same("returns", returns, "values", values)
    _check_same("mask", mask, "values", values)
    if clip_range_vf is not None and clip_range_vf < 0:
        raise ValueError(f"clip_range_vf must be >= 0 or None, got {clip_range_vf}")

    returns = returns.detach().to(values.dtype)  # (N, T)
    unclipped = (values - returns) ** 2  # (N, T)
    if clip_range_vf is None:
        per_token, is_clipped = 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)  # (N, T)
    else:
        old = old_values.detach().to(values.dtype)  # (N, T)
        values_clipped = old + (values - old).clamp(-clip_range_vf, clip_range_vf)  # (N, T)
        clipped = (values_clipped - returns) ** 2  # (N, T)
        is_clipped = clipped > unclipped  # (N, T) bool
        per_token = 0.5 * torch.maximum(unclipped, clipped)  # (N, T)
    loss = aggregate(per_token, mask, aggregation, max_len=max_len)  # ()
    m = mask.to(device=values.device) != 0  # (N, T) bool
    return loss, {"value_clip_fraction": _masked_mean(is_clipped.to(values.dtype), m).detach()}
