"""Rollout preparation: store one iteration's rollout and compute what every update on it needs, once.

:class:`RolloutPreparation` is the part of :class:`~agents.common.base.LLMAlgorithm` between sampling and
training. :meth:`~RolloutPreparation.collect_rollouts` gets the rows from the collector
(:mod:`agents.common.rollout`, the group filter of dynamic sampling included), takes this rank's share,
records the ``rollout/*`` metrics and fills the buffer; :meth:`~RolloutPreparation._prepare_rollout` then
computes, without grad and in micro-batches, the old log-probs (only when several optimizer steps use the
rollout), the reference log-probs (``beta > 0``) and the critic's values, and applies the config's reward
shaping (KL in the reward, DAPO's overlong shaping).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.common.buffers import GroupRolloutBuffer, RolloutSamples, length_grouped_order, micro_batches
from agents.common.distributed import any_rank, is_distributed, rank, world_size
from agents.common.fsdp import gathered
from agents.common.guards import NonFiniteError, first_nonfinite
from agents.common.objective import kl_reward_shaping, length_shaping
from agents.common.policies import LLMActorCriticPolicy, loss_masked
from agents.common.rollout import rollout_metrics, step_reward_tensors
from agents.common.turns import is_multi_turn, turn_metrics

__all__ = ["RolloutPreparation", "unsort"]


def unsort(parts: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor | None:
    """The rows of ``torch.cat(parts)`` (computed in ``order``) put back in the original order; None if empty.

    >>> unsort([torch.tensor([20, 10]), torch.tensor([30])], torch.tensor([1, 0, 2]))
    tensor([10, 20, 30])
    """
    if not parts:
        return None
    rows = torch.cat(parts)
    out = torch.empty_like(rows)
    out[order] = rows
    return out


class RolloutPreparation:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: the rollout stored and prepared for the update.

    Reads ``self.config``, ``self.policy``, ``self.ref_policy``, ``self.action_space_len`` and the
    collector's ``_collect_groups``; sets ``self._rollout_stats`` and ``self.generated_tokens``.
    """

    @property
    def _one_step_per_rollout(self) -> bool:
        """True when each rollout gets exactly one optimizer step: then pi_old = pi exactly."""
        return self.config.n_epochs == 1 and (self.config.batch_size or self.rollout_size) >= self.rollout_size

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: GroupRolloutBuffer) -> bool:
        """Sample ``N`` responses (G per prompt), step them through ``env``, fill and prepare the buffer.

        With ``dynamic_sampling`` an iteration where no group had mixed rewards leaves the buffer empty (and
        ``train`` is skipped).

        Returns:
            False when a callback asked to stop training.

        Raises:
            NonFiniteError: the policy's weights or logits are not finite (skipping cannot recover).
        """
        callback.on_rollout_start()
        if any(not bool(torch.isfinite(p).all()) for p in self.policy.parameters()):
            self._nonfinite("policy weights", " (checked before sampling: generate cannot sample from them)")
            raise NonFiniteError("The policy weights are not finite; skipping cannot recover from that.")
        self._turn_seconds = []  # multi-turn: seconds of each batched turn
        try:
            collected = self._collect_groups(env, callback)
        except RuntimeError as exc:  # torch's sampler on NaN/inf probabilities (finite but huge weights)
            if "probability tensor contains" not in str(exc):
                raise
            self._nonfinite("logits", " (sampling found NaN/inf probabilities)")
            raise NonFiniteError("The policy's logits are not finite; skipping cannot recover from that.") from exc
        if collected is None:
            return False
        rollout, generated, gen_seconds = collected  # with several ranks: every rank's rows
        self._record_rollout(rollout, generated, gen_seconds)
        rollout_buffer.reset()
        if is_distributed():  # this rank's share of the rollout: whole groups
            g = self.config.group_size
            per_rank = rollout.n_sequences // g // world_size() * g
            rollout = rollout.take(np.arange(rank() * per_rank, (rank() + 1) * per_rank))
        if rollout.n_sequences > 0:
            self._store(rollout, rollout_buffer)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _record_rollout(self, rollout: RolloutSamples, generated: RolloutSamples, gen_seconds: float) -> None:
        """The ``rollout/*`` metrics of everything generated this iteration (every rank's rows)."""
        g = self.config.group_size
        if is_distributed():  # the episode stats of every rank
            self._update_info_buffer(generated.infos, np.ones(generated.n_sequences, dtype=bool))
        all_group_ids = np.repeat(np.arange(generated.n_sequences // g), g)
        self.generated_tokens = getattr(self, "generated_tokens", 0) + int(generated.response_mask.sum())
        self._rollout_stats = rollout_metrics(generated.rewards.numpy(), all_group_ids, generated.infos,
                                              generated.response_mask, gen_seconds)
        if is_multi_turn(self.observation_space):
            self._rollout_stats |= turn_metrics(generated.infos, float(np.mean(self._turn_seconds)))
        if self.config.dynamic_sampling:
            self._rollout_stats |= {"rollout/sampling_rounds": generated.n_sequences / self.rollout_size,
                                    "rollout/generated_sequences": float(generated.n_sequences),
                                    "rollout/dropped_groups": float(self._dropped_groups)}

    def _store(self, rollout: RolloutSamples, rollout_buffer: GroupRolloutBuffer) -> None:
        """Add this rank's rows to the buffer (group ids unique over ranks) and prepare them; a rollout with a
        non-finite reward or log-prob is skipped on every rank (or raises, :meth:`_nonfinite`)."""
        g = self.config.group_size
        n_groups = rollout.n_sequences // g  # group ids unique over ranks
        group_ids = np.repeat(np.arange(n_groups) + rank() * n_groups, g)
        rollout_buffer.add(step_reward_tensors(rollout)._replace(group_ids=torch.as_tensor(group_ids)))
        self._prepare_rollout(rollout_buffer)
        s = rollout_buffer.samples
        bad = first_nonfinite({"rewards": s.rewards, "token_rewards": s.token_rewards,
                               "old_log_probs": s.old_log_probs, "ref_log_probs": s.ref_log_probs,
                               "values": s.values})
        if any_rank(bad is not None):  # every rank skips together
            self._nonfinite(bad or "rewards or log-probs (on another rank)")
            rollout_buffer.reset()  # skip: no update on this rollout

    @torch.no_grad()
    def _prepare_rollout(self, buffer: GroupRolloutBuffer) -> None:
        """Once per rollout, in micro-batches, without grad: the old log-probs (only when several optimizer
        steps use the rollout), the reference log-probs (``beta > 0``) and the critic's values (one forward
        with the old log-probs); then the reward shaping of the config (KL in the reward, overlong shaping)."""
        cfg = self.config
        order = length_grouped_order(buffer.samples)  # (N,) micro-batches of similar lengths: less padding
        s = buffer.samples.index(order)
        has_critic = isinstance(self.policy, LLMActorCriticPolicy)
        kl_in_reward = cfg.kl_placement == "reward" and cfg.beta > 0
        need_forward = not self._one_step_per_rollout or has_critic or kl_in_reward
        old, values, ref = [], [], []
        shared_ref = self.ref_policy is not None and self.ref_policy.model is None  # LoRA: adapters off
        with gathered(self.policy) if shared_ref else contextlib.nullcontext():  # FSDP: see fsdp.gathered
            for mb in micro_batches(s, cfg.micro_batch_size):
                self._prepare_forwards(mb, need_forward, has_critic and not kl_in_reward, old, values, ref)
        b_log_probs = unsort(old, order)  # (N, T): pi_old's log-probs, when computed
        buffer.update(old_log_probs=None if self._one_step_per_rollout else b_log_probs,
                      ref_log_probs=unsort(ref, order), values=unsort(values, order))
        if cfg.kl_placement == "reward":
            updates, stats = kl_reward_shaping(cfg, buffer.samples, b_log_probs)
            buffer.update(**updates)
            self._rollout_stats |= stats
        updates, stats = length_shaping(cfg, buffer.samples, self.action_space_len, cfg.overlong_buffer)
        buffer.update(**updates)
        self._rollout_stats |= stats

    def _prepare_forwards(self, mb: RolloutSamples, need_forward: bool, values_only: bool, old: list,
                          values: list, ref: list) -> None:
        """One micro-batch of :meth:`_prepare_rollout`: appends its old log-probs, values and reference
        log-probs ``(B, T)`` to the lists."""
        if need_forward:
            if values_only and self._one_step_per_rollout:
                values.append(self.policy.predict_values(mb))  # no LM head needed
            else:
                log_probs, _, mb_values = self.policy.evaluate_actions(mb)  # (B, T) x2
                old.append(log_probs)
                if mb_values is not None:
                    values.append(mb_values)
        if self.ref_policy is not None:
            ref_log_probs = self.ref_policy.log_probs(mb.prompt_ids, mb.prompt_mask, mb.response_ids,
                                                      mb.attention_mask)  # (B, T)
            ref.append(loss_masked(ref_log_probs, mb))
