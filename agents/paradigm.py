r"""DeepSeekMath's unified paradigm as code: every method's per-token gradient coefficient.

DeepSeekMath (arXiv:2402.03300) section 5.2.1, eq. 5 writes the gradient of SFT, RFT, Online RFT, PPO and
GRPO in one form,

.. math::
    \nabla_\theta J_{\mathcal{A}}(\theta) = \mathbb{E}_{(q, o) \sim \mathcal{D}}\left[\frac{1}{|o|}
    \sum_{t=1}^{|o|} GC_{\mathcal{A}}(q, o, t, \pi_{rf}) \nabla_\theta \log \pi_\theta(o_t \mid q, o_{<t})\right],

so a method is its **data source** :math:`\mathcal{D}`, its **reward function** :math:`\pi_{rf}` and its
**gradient coefficient** :math:`GC`. This module returns :math:`GC` for a batch, ``(N, T)``, for every
algorithm of the library, and :func:`token_weights` gives the normaliser that replaces :math:`1/|o|` for
each ``loss_aggregation``. Together they state exactly what each loss does: for any of the losses,

``d loss / d log_probs[i, t] == -token_weights(mask, aggregation)[i, t] * GC[i, t]``

(``tests/agents/test_paradigm.py`` checks it against autograd, on-policy and off-policy). Off-policy, the
coefficient includes the importance ratio and the clip indicator (PPO eq. 7, GSPO eq. 5); on-policy
(``old_log_probs = log_probs``) the ratio is 1, nothing is clipped and the coefficients reduce to the table
of DeepSeekMath: SFT 1, RFT/Online RFT :math:`\mathbb{I}(o)`, PPO :math:`A_t`, GRPO
:math:`A_{i,t} + \beta(\pi_{ref}/\pi_\theta - 1)`, DAPO :math:`A_{i,t}`, GSPO :math:`A_i`; RLOO and Dr. GRPO
as GRPO (with their own advantages and weights), REINFORCE++ :math:`A_t`, CISPO :math:`A_{i,t}`. CISPO alone
keeps a coefficient on clipped tokens off-policy (its clip bounds the weight, MiniMax-M1 eq. 4-5).

Shapes: ``N`` sequences, ``T`` response tokens; every ``(N, T)`` output is 0 on padding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agents.common.losses import AGGREGATION_MODES, LOG_RATIO_CLAMP, clipped_surrogate, importance_log_ratio

__all__ = ["PARADIGM", "gradient_coefficient", "token_weights"]

_GROUP_DATA = "q ~ P_sft(Q), {o_i} ~ pi_theta_old(O|q), G per prompt"
_REINFORCE_PP_COEFFICIENT = ("rho_t A_t 1[not clipped]; token-mean weights; A batch-whitened: return-to-go "
                             "sum_{s>=t} r_s, or (baseline) s_i - mean(s_group)")

#: Method -> (data source, reward function, gradient coefficient): docs/algorithms/paradigm.md's table.
PARADIGM: dict[str, dict[str, str]] = {
    "SFT": {"data": "q, o ~ P_sft(Q, O): human-written solutions", "reward": "none",
            "coefficient": "1", "class": "(loss: agents.common.losses.sft_loss)"},
    "RFT": {"data": "q ~ P_sft(Q), o ~ pi_sft(O|q): samples of the SFT model, filtered once", "reward": "rule",
            "coefficient": "I(o) (1 if the answer is correct, else 0)", "class": "(loss: sft_loss)"},
    "OnlineRFT": {"data": "q ~ P_sft(Q), o ~ pi_theta(O|q): samples of the current policy", "reward": "rule",
                  "coefficient": "I(o)", "class": "agents.OnlineRFT"},
    "PPO": {"data": "q ~ P_sft(Q), o ~ pi_theta_old(O|q), 1 per prompt", "reward": "rule or model, KL in reward",
            "coefficient": "rho_t A_t 1[not clipped] (on-policy: A_t, GAE)", "class": "agents.PPO"},
    "GRPO": {"data": "q ~ P_sft(Q), {o_i} ~ pi_theta_old(O|q), G per prompt", "reward": "rule or model",
             "coefficient": "rho_{i,t} A_{i,t} 1[not clipped] + beta (pi_ref/pi - 1)", "class": "agents.GRPO"},
    "DAPO": {"data": "as GRPO, only groups with mixed rewards (dynamic sampling)", "reward": "rule + overlong penalty",
             "coefficient": "rho_{i,t} A_{i,t} 1[not clipped, 0.2/0.28]; token-mean weights", "class": "agents.DAPO"},
    "GSPO": {"data": "as GRPO", "reward": "rule or model",
             "coefficient": "s_i A_i 1[s_i not clipped] (sequence ratio)", "class": "agents.GSPO"},
    "RLOO": {"data": _GROUP_DATA, "reward": "rule or model",
             "coefficient": "rho_{i,t} A_i 1[not clipped] + beta (pi_ref/pi - 1), A_i = r_i - mean_{j != i} r_j "
                            "(leave-one-out)", "class": "agents.RLOO"},
    "REINFORCE++": {"data": "q ~ P_sft(Q), o ~ pi_theta_old(O|q), 1 per prompt",
                    "reward": "rule or model, k1 KL in reward (per token)",
                    "coefficient": _REINFORCE_PP_COEFFICIENT, "class": "agents.ReinforcePlusPlus"},
    "REINFORCE++-baseline": {"data": _GROUP_DATA, "reward": "rule or model, KL in reward",
                             "coefficient": _REINFORCE_PP_COEFFICIENT,
                             "class": "agents.ReinforcePlusPlusBaseline"},
    "CISPO": {"data": "as GRPO", "reward": "rule or model",
              "coefficient": "sg(clip(rho_{i,t}, 1 - eps_low, 1 + eps_high)) A_{i,t}, never zeroed by the clip "
                             "(+ beta (pi_ref/pi - 1) if beta > 0); token-mean weights", "class": "agents.CISPO"},
    "Dr.GRPO": {"data": "as GRPO", "reward": "rule or model",
                "coefficient": "rho_{i,t} (r_i - mean(r_group)) 1[not clipped] (+ beta (pi_ref/pi - 1) if beta > 0); "
                               "weights 1/(G max_len)",
                "class": "agents.DrGRPO"},
}

#: Methods whose loss is :func:`~agents.common.losses.policy_loss` with the clipped surrogate, at token level.
_PPO_CLIP_METHODS = ("PPO", "GRPO", "DAPO", "RLOO", "REINFORCE++", "REINFORCE++-baseline", "Dr.GRPO")
#: Methods with ``beta`` times the k3 KL *in the loss* (PPO and REINFORCE++ put the KL in the reward instead).
_KL_IN_LOSS_METHODS = ("GRPO", "RLOO", "Dr.GRPO", "CISPO")


def token_weights(response_mask: Tensor, loss_aggregation: str, max_len: int | None = None) -> Tensor:
    """The weight ``w[i, t]`` with which :func:`~agents.common.losses.aggregate` sums token ``t`` of sequence ``i``.

    ``aggregate(L, mask, mode) == (token_weights(mask, mode) * L).sum()`` for every ``L``:
    ``seq-mean-token-mean`` ``1/(N |o_i|)`` (the paradigm's ``1/|o|``), ``token-mean`` ``1/sum_i |o_i|``,
    ``seq-mean-token-sum`` ``1/N``, ``seq-mean-token-sum-norm`` ``1/(N max_len)``; 0 on padding.

    Args:
        response_mask: ``(N, T)``, nonzero on real tokens.
        loss_aggregation: One of :data:`~agents.common.losses.AGGREGATION_MODES`.
        max_len: Normaliser of ``seq-mean-token-sum-norm`` (default ``T``).

    Returns:
        ``(N, T)`` float weights.

    Raises:
        ValueError: Unknown ``loss_aggregation``.
    """
    if loss_aggregation not in AGGREGATION_MODES:
        raise ValueError(f"loss_aggregation must be one of {list(AGGREGATION_MODES)}, got {loss_aggregation!r}")
    dtype = response_mask.dtype if response_mask.is_floating_point() else torch.get_default_dtype()
    m = (response_mask != 0).to(dtype)  # (N, T)
    n, t = m.shape
    if loss_aggregation == "token-mean":
        return m / m.sum().clamp(min=1)
    if loss_aggregation == "seq-mean-token-mean":
        return m / m.sum(-1, keepdim=True).clamp(min=1) / max(n, 1)
    if loss_aggregation == "seq-mean-token-sum":
        return m / max(n, 1)
    return m / float(max_len if max_len is not None else t) / max(n, 1)


def _inside_clamp(log_ratio: Tensor) -> Tensor:
    """Bool ``(N, T)``: where the losses' ``[-20, 20]`` clamp of a log-ratio lets the gradient through."""
    return log_ratio.abs() <= LOG_RATIO_CLAMP


def _clipped_ratio_coefficient(log_probs, old_log_probs, advantages, response_mask, clip_range, clip_range_high,
                               level: str) -> Tensor:
    """``ratio * A * 1[not clipped]`` per token (the derivative of the negated clipped surrogate w.r.t. log rho)."""
    adv = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(log_probs)  # (N, T)
    _, is_clipped = clipped_surrogate(log_probs, old_log_probs, adv, clip_range, clip_range_high,
                                      response_mask=response_mask, importance_sampling_level=level)  # (N, T)
    log_ratio = importance_log_ratio(log_probs, old_log_probs, response_mask, level)  # (N, T)
    m = (response_mask != 0).to(log_probs.dtype)  # (N, T)
    active = (~is_clipped) & _inside_clamp(log_ratio)  # (N, T): gradient not cut by the clip nor the clamp
    per_token = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)) * adv * active.to(log_probs.dtype) * m
    if level != "sequence":
        return per_token.detach()
    # d s_i / d log pi_t = s_i / |o_i|: every token of o_i gets the sequence's mean coefficient
    seq_mean = per_token.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)  # (N, 1)
    return (seq_mean * m).detach()


def _cispo_coefficient(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                       clip_range: float, clip_range_high: float | None) -> Tensor:
    """``clip(rho, 1 - eps_low, 1 + eps_high) * A`` on every real token (MiniMax-M1 eq. 4-5).

    The weight is a stop-gradient constant, so the losses' ``[-20, 20]`` clamp of the log-ratio only bounds its
    value (``exp(clamp(log rho))``) and never zeroes the coefficient: no ``_inside_clamp`` factor here.
    """
    high = clip_range if clip_range_high is None else clip_range_high
    adv = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(log_probs)  # (N, T)
    log_ratio = (log_probs - old_log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (N, T)
    weight = torch.exp(log_ratio).clamp(1.0 - clip_range, 1.0 + high)  # (N, T)
    return (weight * adv * (response_mask != 0).to(log_probs.dtype)).detach()  # (N, T)


def gradient_coefficient(
    method: str,
    response_mask: Tensor,
    *,
    log_probs: Tensor | None = None,
    old_log_probs: Tensor | None = None,
    advantages: Tensor | None = None,
    correct: Tensor | None = None,
    ref_log_probs: Tensor | None = None,
    beta: float = 0.0,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
) -> Tensor:
    r"""The per-token gradient coefficient :math:`GC(q, o, t)` of ``method`` on a batch, ``(N, T)``.

    * ``"SFT"``: 1. ``"RFT"``, ``"OnlineRFT"``: ``correct`` (the indicator :math:`\mathbb{I}(o)`).
    * ``"PPO"``, ``"DAPO"``: :math:`\rho_{t} A_{t} \mathbb{1}[\text{not clipped}]` (PPO eq. 7; DAPO eq. 10 with
      its own ``clip_range_high``); on-policy :math:`A_t`.
    * ``"GRPO"``: the same plus :math:`\beta(\pi_{ref}/\pi_\theta - 1)`, the gradient of the k3 KL
      (DeepSeekMath eq. 4 and Appendix A.1.6). ``"RLOO"`` and ``"Dr.GRPO"``: as GRPO (their advantages differ:
      leave-one-out, group mean without std; so do their weights, :func:`token_weights`).
    * ``"REINFORCE++"``, ``"REINFORCE++-baseline"``: :math:`\rho_t A_t \mathbb{1}[\text{not clipped}]`, token
      level, no KL term (it is in the reward, hence in ``A``).
    * ``"CISPO"``: :math:`\mathrm{clip}(\rho_t, 1-\epsilon_{low}, 1+\epsilon_{high}) A_t` on every real token,
      never zeroed by the clip (MiniMax-M1 eq. 4-5), plus GRPO's KL term when ``beta > 0``.
    * ``"GSPO"``: :math:`s_i \cdot \mathrm{mean}_t(A_{i,t} \mathbb{1}[s_i \text{ not clipped}])`, the same for
      every token of the sequence (GSPO eq. 5, 7 and 10); on-policy :math:`A_i`. ``"GSPO-token"`` (eq. 13-14):
      :math:`s_i A_{i,t} \mathbb{1}[\text{not clipped}]`.

    The data source and reward differ by method (:data:`PARADIGM`); pass the batch each one trains on
    (e.g. DAPO's after dynamic sampling, with truncated responses masked out if ``mask_truncated``).

    Args:
        method: A key of :data:`PARADIGM`, or ``"GSPO-token"``.
        response_mask: ``(N, T)``, nonzero on real tokens.
        log_probs: ``(N, T)`` current log-probs (policy-gradient methods).
        old_log_probs: ``(N, T)`` sampling log-probs (default ``log_probs``: on-policy).
        advantages: ``(N,)`` or ``(N, T)`` (policy-gradient methods).
        correct: ``(N,)`` 0/1 indicator (RFT, Online RFT).
        ref_log_probs: ``(N, T)`` reference log-probs (GRPO, RLOO, Dr.GRPO, CISPO with ``beta > 0``).
        beta: KL-in-loss coefficient (k3) of GRPO, RLOO, Dr.GRPO and CISPO; ignored by the other methods.
        clip_range: epsilon low. clip_range_high: epsilon high (None = ``clip_range``).

    Returns:
        ``(N, T)`` detached coefficients, 0 on padding, and 0 where a log-ratio lies outside the losses'
        ``[-20, 20]`` clamp (:data:`~agents.common.losses.LOG_RATIO_CLAMP`), where their gradient is 0 too
        (except CISPO's policy term, whose detached weight keeps the gradient there).

    Raises:
        ValueError: Unknown ``method`` or a tensor it needs is missing.
    """
    dtype = log_probs.dtype if log_probs is not None else torch.get_default_dtype()
    m = (response_mask != 0).to(dtype)  # (N, T)
    if method == "SFT":
        return m
    if method in ("RFT", "OnlineRFT"):
        if correct is None:
            raise ValueError(f"{method} needs `correct`, the (N,) indicator of a correct answer")
        return correct.to(dtype)[:, None] * m
    if method not in (*_PPO_CLIP_METHODS, "GSPO", "GSPO-token", "CISPO"):
        raise ValueError(f"Unknown method {method!r}; expected one of {[*PARADIGM, 'GSPO-token']}")
    if log_probs is None or advantages is None:
        raise ValueError(f"{method} needs log_probs and advantages")
    log_probs = log_probs.detach()
    old = log_probs if old_log_probs is None else old_log_probs.detach()
    if method == "CISPO":
        coef = _cispo_coefficient(log_probs, old, advantages.detach(), response_mask, clip_range,
                                  clip_range_high)  # (N, T)
    else:
        level = {"GSPO": "sequence", "GSPO-token": "sequence-token"}.get(method, "token")
        coef = _clipped_ratio_coefficient(log_probs, old, advantages.detach(), response_mask, clip_range,
                                          clip_range_high, level)  # (N, T)
    if method in _KL_IN_LOSS_METHODS and beta > 0:
        if ref_log_probs is None:
            raise ValueError(f"{method} with beta > 0 needs ref_log_probs")
        log_ref_over_pi = ref_log_probs.detach() - log_probs  # (N, T)
        inside = (_inside_clamp(log_ref_over_pi) * m).to(log_probs.dtype)  # (N, T)
        kl_coef = torch.exp(log_ref_over_pi.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)) - 1.0  # (N, T)
        coef = coef + beta * kl_coef * inside
    return coef.to(log_probs.dtype)
