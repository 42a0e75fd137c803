"""The config-driven parts of one update: reward shaping, advantages and the per-micro-batch loss.

Pure functions of an :class:`~agents.common.config.AlgorithmConfig` and a
:class:`~agents.common.buffers.RolloutSamples`; :class:`~agents.common.base.LLMAlgorithm` calls them in
order (``shape_rewards`` after a rollout, ``compute_advantages`` at the start of ``train``, ``compute_loss``
on every micro-batch). Every formula lives in :mod:`agents.common.advantages` and :mod:`agents.common.losses`;
this module only picks which one the config names.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.common.advantages import (
    broadcast_to_tokens,
    group_normalized,
    leave_one_out,
    process_group_normalized,
)
from agents.common.buffers import RolloutSamples, last_token_index
from agents.common.config import AlgorithmConfig
from agents.common.losses import aggregate, policy_loss, sft_loss, value_loss
from agents.common.returns import (
    gae,
    kl_penalty_rewards,
    masked_whiten,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
)
from llm_gym.rewards.length import overlong_penalty

__all__ = ["compute_advantages", "compute_loss", "kl_reward_shaping", "length_shaping", "outcome_step_mask"]


def length_shaping(cfg: AlgorithmConfig, b: RolloutSamples, budget: int,
                   overlong_buffer: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """DAPO's overlong reward shaping (eq. 13) and overlong filtering, as buffer updates.

    Args:
        cfg: the config (``overlong_penalty_factor``, ``mask_truncated``).
        b: the stored rollout (``rewards (N,)``, ``token_rewards (N, T)``, ``response_mask (N, T)``, ``infos``).
        budget: the response budget ``max_new_tokens`` in tokens. Multi-turn episodes (rows with a
            ``response_attention_mask``) have it per turn: each turn (``info["turn_spans"]``) is shaped and
            the episode pays the sum, as the ``OverlongPenalty`` wrapper does.
        overlong_buffer: resolved ``L_cache`` in tokens (0 = no shaping).

    Returns:
        ``(updates, stats)``: new ``rewards``/``token_rewards`` (penalty added; on the last sampled token) and/or
        ``response_mask`` (truncated responses zeroed), and ``rollout/overlong_penalty`` /
        ``rollout/masked_truncated``.
    """
    updates, stats = {}, {}
    if overlong_buffer:
        if b.response_attention_mask is None:
            lengths = b.response_mask.sum(-1).cpu().numpy()  # (N,) tokens
            penalty = overlong_penalty(lengths, budget, overlong_buffer, cfg.overlong_penalty_factor)
        else:  # multi-turn: every turn has the budget; the episode pays the sum over its turns
            penalty = [overlong_penalty(np.array([e - s for s, e in info["turn_spans"]]), budget, overlong_buffer,
                                        cfg.overlong_penalty_factor).sum() for info in b.infos]
        penalty = torch.as_tensor(np.asarray(penalty), dtype=b.rewards.dtype).to(b.rewards.device)  # (N,)
        last = last_token_index(b.response_mask)  # (N,)
        token_rewards = b.token_rewards.clone()  # (N, T)
        token_rewards[torch.arange(len(last), device=last.device), last] += penalty
        updates |= {"rewards": b.rewards + penalty, "token_rewards": token_rewards}
        stats["rollout/overlong_penalty"] = float(penalty.mean())
    if cfg.mask_truncated:
        truncated = torch.tensor([bool(i.get("truncated_by_length", False)) for i in b.infos])  # (N,)
        keep = (~truncated).to(b.response_mask.device, b.response_mask.dtype)  # (N,)
        updates["response_mask"] = b.response_mask * keep[:, None]  # (N, T)
        stats["rollout/masked_truncated"] = float(truncated.float().mean())
    return updates, stats


def kl_reward_shaping(cfg: AlgorithmConfig, b: RolloutSamples,
                      log_probs: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """``kl_placement="reward"``: ``r_t = score_t - beta * KL_t`` on every real token (InstructGPT eq. 2).

    Args:
        cfg: the config (``beta``, ``kl_estimator``).
        b: the stored rollout with ``token_rewards (N, T)`` and ``ref_log_probs (N, T)`` (when ``beta > 0``).
        log_probs: ``(N, T)`` log-probs of the sampling policy (nats), or None when ``beta == 0``.

    Returns:
        ``(updates, stats)``: the penalised ``token_rewards`` and ``rewards`` (their sum, so sequence-level
        estimators see the penalty too, as TRL's RLOO), and ``rollout/kl_penalty`` (mean per token).
    """
    token_rewards, penalty = kl_penalty_rewards(b.token_rewards, log_probs, b.ref_log_probs, b.response_mask,
                                                cfg.beta, cfg.kl_estimator)  # (N, T), (N, T)
    kl_sum = penalty.sum(-1)  # (N,)
    stats = {"rollout/kl_penalty": float(penalty.sum() / b.response_mask.sum().clamp(min=1))}
    return {"token_rewards": token_rewards, "rewards": b.rewards - kl_sum}, stats


def outcome_step_mask(b: RolloutSamples) -> torch.Tensor:
    """``(N, T)`` step mask with one step, the whole response, ending on its last real token."""
    step_mask = torch.zeros_like(b.response_mask)  # (N, T)
    step_mask[torch.arange(step_mask.shape[0]), last_token_index(b.response_mask)] = 1.0
    return step_mask


def compute_advantages(cfg: AlgorithmConfig, b: RolloutSamples) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(advantages (N, T), returns (N, T) or None)`` of the rollout, by ``cfg.advantage_estimator``.

    * ``"grpo"``: outcome: :func:`group_normalized` broadcast to tokens (DeepSeekMath 4.1.2); process:
      :func:`process_group_normalized` (4.1.3).
    * ``"rloo"``: :func:`leave_one_out` broadcast (Ahmadian et al. 2024).
    * ``"reinforce_plus_plus"`` / ``"reinforce_plus_plus_baseline"``: :func:`reinforce_plus_plus` /
      :func:`reinforce_plus_plus_baseline` on the token rewards (Hu 2025).
    * ``"gae"``: :func:`gae` with the rollout's values (arXiv:1506.02438 eq. 16); returns are the critic's targets.
    * ``"rft"``: the indicator ``reward >= reward_threshold`` (DeepSeekMath 5.2.1, Online RFT).

    ``normalize_advantage`` then whitens over the real tokens of the rollout (PPO).

    Raises:
        RuntimeError: ``"gae"`` without values (no critic), or process supervision without step rewards.
    """
    est, mask = cfg.advantage_estimator, b.response_mask
    returns = None
    if est == "grpo" and cfg.advantage == "process":
        step_mask = outcome_step_mask(b) if b.step_mask is None else b.step_mask  # (N, T)
        advantages = process_group_normalized(b.token_rewards, step_mask, b.group_ids, mask,
                                              scale=cfg.scale_rewards, eps=cfg.eps,
                                              credit=cfg.process_credit)  # (N, T)
    elif est == "grpo":
        advantages = broadcast_to_tokens(group_normalized(b.rewards, b.group_ids, scale=cfg.scale_rewards,
                                                          eps=cfg.eps), mask)  # (N, T)
    elif est == "rloo":
        advantages = broadcast_to_tokens(leave_one_out(b.rewards, b.group_ids), mask)  # (N, T)
    elif est == "rft":
        advantages = broadcast_to_tokens((b.rewards >= cfg.reward_threshold).to(b.rewards.dtype), mask)
    elif est == "reinforce_plus_plus":
        advantages, returns = reinforce_plus_plus(b.token_rewards, mask, cfg.gamma)  # (N, T) x2
    elif est == "reinforce_plus_plus_baseline":
        advantages = reinforce_plus_plus_baseline(b.token_rewards, mask, b.group_ids)  # (N, T)
    else:  # "gae"
        if b.values is None:
            raise RuntimeError("advantage_estimator='gae' needs a critic: use PPO or policy='LLMActorCriticPolicy'.")
        advantages, returns = gae(b.token_rewards, b.values, mask, cfg.gamma, cfg.gae_lambda)  # (N, T) x2
    if cfg.normalize_advantage:
        advantages = masked_whiten(advantages, mask)  # (N, T)
    return advantages, returns


def compute_loss(cfg: AlgorithmConfig, micro: RolloutSamples, log_probs: torch.Tensor, old_log_probs: torch.Tensor,
                 values: torch.Tensor | None = None,
                 entropy: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one micro-batch and its statistics: ``L_policy (+ vf_coef L_V) (- ent_coef H)``.

    The policy term is :func:`~agents.common.losses.sft_loss` (``loss_mode="sft"``) or
    :func:`~agents.common.losses.policy_loss` (``"ppo_clip"``, ``"cispo"``; with the ``beta`` KL term when
    ``kl_placement="loss"``). A policy with a critic adds PPO's value loss (PPO eq. 9), and ``ent_coef > 0``
    an entropy bonus.

    Args:
        cfg: the config.
        micro: the micro-batch (``advantages``, ``response_mask``, ``ref_log_probs``, ``values``, ``returns``).
        log_probs: ``(B, T)`` current log-probs with grad (nats).
        old_log_probs: ``(B, T)`` sampling log-probs (detached).
        values: ``(B, T)`` current values with grad, or None without a critic.
        entropy: ``(B, T)`` per-token entropy (nats); needs grad when ``ent_coef > 0``.

    Raises:
        RuntimeError: ``ent_coef > 0`` without the entropy.
    """
    mask, max_len = micro.response_mask, micro.response_mask.shape[1]
    if cfg.loss_mode == "sft":
        return sft_loss(log_probs, micro.advantages, mask, cfg.loss_aggregation, max_len=max_len)
    loss, stats = policy_loss(
        log_probs, old_log_probs, micro.advantages, mask, clip_range=cfg.clip_range,
        clip_range_high=cfg.clip_range_high, ref_log_probs=micro.ref_log_probs,
        beta=cfg.beta if cfg.kl_placement == "loss" else 0.0, kl_estimator=cfg.kl_estimator,
        loss_aggregation=cfg.loss_aggregation, max_len=max_len,
        importance_sampling_level=cfg.importance_sampling_level, loss_mode=cfg.loss_mode,
    )
    if values is not None:
        vf_loss, vf_stats = value_loss(values, micro.values, micro.returns, mask, cfg.clip_range_vf,
                                       cfg.loss_aggregation, max_len=max_len)
        loss = loss + cfg.vf_coef * vf_loss
        stats = {**stats, "value_loss": vf_loss.detach(), **vf_stats}
    if cfg.ent_coef > 0:
        if entropy is None:
            raise RuntimeError("ent_coef > 0 needs the entropy with grad: the policy must return it.")
        loss = loss - cfg.ent_coef * aggregate(entropy, mask, cfg.loss_aggregation, max_len=max_len)
    return loss, stats
