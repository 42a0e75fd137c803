"""The policy update: advantages, then epochs of minibatch gradient steps with micro-batch accumulation.

:class:`PolicyUpdate` is the one ``train()`` of every algorithm (SB3's ``train``, CleanRL's "optimizing the
policy" block). It reads straight down: advantages of the stored rollout
(:func:`~agents.common.objective.compute_advantages`), then ``n_epochs`` passes of minibatches; each
minibatch is one optimizer step whose gradient is accumulated over micro-batches of the config's loss
(:func:`~agents.common.objective.compute_loss`), clipped, and applied unless ``target_kl`` stops the epoch
or a non-finite value skips it.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch
from stable_baselines3.common.utils import explained_variance

from agents.common.buffers import RolloutSamples, length_grouped_order, micro_batch_weight, micro_batches
from agents.common.distributed import (
    all_gather_rows,
    all_reduce_sum,
    any_rank,
    is_distributed,
    mean_over_ranks,
    rank,
    world_size,
)
from agents.common.fsdp import is_sharded
from agents.common.objective import compute_advantages, compute_loss

__all__ = ["PolicyUpdate"]

#: Step outcomes that mean the optimizer step was not applied (not counted in ``train/n_updates``).
NOT_APPLIED: frozenset[str] = frozenset({"early_stop", "nonfinite_skip", "grad_scale_skip"})


class PolicyUpdate:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: the one ``train()`` shared by every preset.

    Reads ``self.config``, ``self.policy`` (and its optimizer), ``self.rollout_buffer`` and the grad scaler
    and DDP wrapper of the setup; records the ``train/*`` metrics (docs/metrics.md).
    """

    def train(self) -> None:
        """Update the policy on the stored rollout: advantages, then ``n_epochs`` of minibatch gradient steps.

        The group filter (dynamic sampling) already ran during collection; an epoch stops early when a
        minibatch's ``approx_kl`` exceeds ``1.5 * target_kl`` (SB3's rule).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        b = self.rollout_buffer.samples
        b_advantages, b_returns = self._advantages(b)  # (N, T), (N, T) or None
        self.rollout_buffer.update(advantages=b_advantages, **({} if b_returns is None else {"returns": b_returns}))
        all_stats = []
        for epoch in range(self.config.n_epochs):
            for mb in self.rollout_buffer.get(self.config.batch_size):
                all_stats.append(self._gradient_step(mb))
                if "early_stop" in all_stats[-1]:
                    break
            if all_stats and "early_stop" in all_stats[-1]:
                if self.verbose >= 1:
                    print(f"Early stopping at epoch {epoch}: approx_kl {all_stats[-1]['approx_kl']:.4f}")
                break
        self._record_train_stats(all_stats)
        if b.values is not None and b_returns is not None:
            mask = b.response_mask.bool()  # (N, T)
            ev = explained_variance(b.values[mask].cpu().numpy(), b_returns[mask].cpu().numpy())
            self.logger.record("train/explained_variance", float(ev))

    def _advantages(self, b: RolloutSamples) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:func:`~agents.common.objective.compute_advantages` (a preset may override this one hook).

        Raises:
            RuntimeError: process supervision (``advantage="process"``) on an env without a process reward.
        """
        if self.config.advantage == "process" and b.step_mask is None and not self._env_has_process_reward():
            raise RuntimeError("advantage='process' needs step rewards: build the env with process_reward_fn=... "
                               "(e.g. llm_gym.rewards.arithmetic_step_reward) or wrap it in "
                               "llm_gym.wrappers.ProcessReward.")
        if not is_distributed():
            return compute_advantages(self.config, b)
        # Batch statistics (whitening, batch std, REINFORCE++) over every rank's rows, then this rank's share.
        advantages, returns = compute_advantages(self.config, all_gather_rows(b._replace(infos=None)))
        rows = slice(rank() * b.n_sequences, (rank() + 1) * b.n_sequences)
        return advantages[rows], None if returns is None else returns[rows]

    def _env_has_process_reward(self) -> bool:
        """Whether the env scores steps (``process_reward_fn`` set on the llm-gym env)."""
        try:
            return self.env.get_attr("process_reward_fn")[0] is not None
        except AttributeError:
            return False

    def _loss(self, micro: RolloutSamples, log_probs: torch.Tensor, old_log_probs: torch.Tensor,
              values: torch.Tensor | None = None, entropy: torch.Tensor | None = None):
        """The micro-batch loss of the config: :func:`~agents.common.objective.compute_loss`."""
        return compute_loss(self.config, micro, log_probs, old_log_probs, values, entropy)

    def _gradient_step(self, mb: RolloutSamples) -> dict[str, float]:
        """One optimizer step on a minibatch, accumulating gradients over micro-batches.

        Each micro-batch loss is re-weighted (:func:`~agents.common.buffers.micro_batch_weight`) so the
        accumulated gradient equals the gradient of the loss aggregated over the whole minibatch (over every
        rank's minibatch with data parallelism: DDP all-reduces the gradients in the last backward). With
        ``target_kl`` set and ``approx_kl > 1.5 * target_kl`` (mean over ranks) the step is not applied
        (``"early_stop"``). fp16 scales the loss and skips a step whose gradient overflowed.

        Raises:
            NonFiniteError: a non-finite loss or gradient (``on_nonfinite="raise"``; the step is not applied), or
                weights made non-finite by the step itself (either mode).
        """
        optimizer, target_kl = self.policy.optimizer, self.config.target_kl
        optimizer.zero_grad(set_to_none=True)
        stats = self._accumulate_gradients(mb.index(length_grouped_order(mb)))
        if "nonfinite_skip" in stats:
            return stats
        approx_kl = all_reduce_sum(stats.get("approx_kl", 0.0)) / world_size()
        if target_kl is not None and approx_kl > 1.5 * target_kl:
            optimizer.zero_grad(set_to_none=True)
            stats["early_stop"] = 1.0
            return stats
        self._scaler.unscale_(optimizer)  # no-op unless fp16
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor, already reduced over the shards
            grad_norm = grad_norm.full_tensor()
        if not bool(torch.isfinite(grad_norm)):  # the same on every rank: the gradients are all-reduced
            if self._scaler.is_enabled():  # fp16 overflow: the scaler skips the step and lowers the scale
                self._scaler.step(optimizer)
                self._scaler.update()
                optimizer.zero_grad(set_to_none=True)
                return {"grad_scale_skip": 1.0}
            optimizer.zero_grad(set_to_none=True)
            self._nonfinite("gradient", f" (global norm = {float(grad_norm)})")
            return {"nonfinite_skip": 1.0}
        self._scaler.step(optimizer)  # optimizer.step() unless fp16
        self._scaler.update()
        self._check_weights_after_step()  # a step from finite values can still write NaN/inf (NonFiniteGuard)
        stats["grad_norm"] = float(grad_norm)
        return stats

    def _accumulate_gradients(self, mb: RolloutSamples) -> dict[str, float]:
        """Forward and backward every micro-batch of ``mb`` (DDP syncs only on the last); the step's stats."""
        stats: dict[str, float] = defaultdict(float)
        aggregation = self.config.loss_aggregation
        micros = list(micro_batches(mb, self.config.micro_batch_size))
        token_mean = aggregation == "token-mean"
        total = all_reduce_sum(mb.response_mask.sum() if token_mean else mb.n_sequences)  # over every rank
        forward = self.policy.evaluate_actions if self._ddp is None else self._ddp  # FSDP hooks evaluate_actions
        sharded = is_sharded(self.policy)
        for i, micro in enumerate(micros):
            last = i == len(micros) - 1
            if sharded:  # FSDP: reduce-scatter the gradients only in the last backward
                self.policy.set_requires_gradient_sync(last)
            with contextlib.nullcontext() if self._ddp is None or last else self._ddp.no_sync():
                log_probs, entropy, values = forward(micro)  # evaluate_actions
                old = log_probs.detach() if micro.old_log_probs is None else micro.old_log_probs
                loss, micro_stats = self._loss(micro, log_probs, old, values, entropy)
                if any_rank(not bool(torch.isfinite(loss))):  # every rank skips together
                    self.policy.optimizer.zero_grad(set_to_none=True)
                    self._nonfinite("loss", f" (loss = {float(loss)})")
                    return {"nonfinite_skip": 1.0}
                weight = micro_batch_weight(micro.response_mask, mb.response_mask, aggregation,
                                            world_size=world_size(), minibatch_total=total)
                self._scaler.scale(loss * weight).backward()
            tokens = micro.response_mask.sum().clamp(min=1)
            micro_stats["entropy"] = (entropy.detach() * micro.response_mask).sum() / tokens
            token_share = float(micro.response_mask.sum() / mb.response_mask.sum().clamp(min=1))
            stats["loss"] += float(loss.detach()) * weight
            for key, value in micro_stats.items():
                stats[key] += float(value) * (weight if key == "policy_loss" else token_share)
        return stats

    def _record_train_stats(self, all_stats: list[dict[str, float]]) -> None:
        """Log the mean of each step statistic over the applied steps and ranks, and count the applied steps."""
        local = {key: float(np.mean([s[key] for s in all_stats if key in s]))
                 for key in {k for s in all_stats for k in s} - NOT_APPLIED}
        self._train_stats = {f"train/{key}": value for key, value in mean_over_ranks(local).items()}
        for key, value in self._train_stats.items():
            self.logger.record(key, value)
        self._n_updates += sum(not NOT_APPLIED & s.keys() for s in all_stats)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
