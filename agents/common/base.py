"""LLMAlgorithm: the learn loop shared by every algorithm (rollout, logging, save/load, callbacks).

A training iteration reads straight down: collect ``n_prompts x group_size`` responses (group-aware
resets, one batched ``generate`` with the KV cache), score them through the env, compute the old and
reference log-probs once, then the subclass's ``train()`` runs epochs of minibatches.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import VecEnv

from agents.common.advantages import GROUP_SCALES, informative_groups
from agents.common.buffers import GroupRolloutBuffer, RolloutSamples, micro_batches
from agents.common.losses import AGGREGATION_MODES, KL_ESTIMATORS
from agents.common.policies import LLMPolicy, ReferencePolicy
from llm_gym.decoding import decode_step, prefill, sample_tokens
from llm_gym.lm import get_language_model


class LLMAlgorithm(BaseAlgorithm):
    """Base class of the RL-for-LLM algorithms, in SB3's ``BaseAlgorithm`` idiom.

    One timestep is one env step: a whole response at sequence level. One iteration samples
    ``n_prompts`` problems, ``group_size`` responses each (``N = n_prompts * group_size``), then trains.

    Args:
        policy: ``"LLMPolicy"`` or a policy class.
        env: an llm-gym env (or its id); its model handle provides tokenizer and initial weights.
        learning_rate: optimizer step size (float or SB3 schedule).
        n_prompts: prompts per rollout.
        group_size: responses per prompt ``G``.
        batch_size: sequences per optimizer step (None = the whole rollout, one step per epoch).
        micro_batch_size: sequences per forward/backward (gradient accumulation).
        n_epochs: passes over each rollout.
        clip_range: epsilon (lower clip bound ``1 - clip_range``), PPO eq. 7.
        clip_range_high: upper epsilon (None = ``clip_range``; DAPO clip-higher).
        beta: KL coefficient (0 disables the reference model and its memory).
        kl_estimator: ``"k1" | "k2" | "k3"``.
        loss_aggregation: one of ``agents.common.losses.AGGREGATION_MODES``.
        scale_rewards: advantage scaling ``"group" | "batch" | "none"``.
        temperature: sampling temperature (also used for the log-probs).
        top_p: nucleus sampling (1.0 = off).
        max_grad_norm: gradient clipping (L2 norm).
        policy_kwargs: extra policy arguments (e.g. ``optimizer_kwargs``).
        tensorboard_log: TensorBoard folder (None = no TensorBoard).
        verbose: 0 silent, 1 log table to stdout.
        seed: seeds Python, NumPy, torch and the env.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.

    Raises:
        ValueError: invalid sizes or names (each message names the argument).
    """

    policy_aliases = {"LLMPolicy": LLMPolicy}  # noqa: RUF012
    policy: LLMPolicy
    #: DAPO's dynamic sampling (off here; see :meth:`_collect_groups`) and its cap on rounds per iteration.
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 1
    #: Ratio level of the clipped surrogate: "token", or GSPO's "sequence" / "sequence-token".
    importance_sampling_level: str = "token"

    def __init__(
        self,
        policy: str | type[LLMPolicy],
        env,
        learning_rate: float = 1e-6,
        n_prompts: int = 4,
        group_size: int = 8,
        batch_size: int | None = None,
        micro_batch_size: int = 8,
        n_epochs: int = 1,
        clip_range: float = 0.2,
        clip_range_high: float | None = None,
        beta: float = 0.04,
        kl_estimator: str = "k3",
        loss_aggregation: str = "seq-mean-token-mean",
        scale_rewards: str = "group",
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_grad_norm: float = 1.0,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: str = "auto",
        stats_window_size: int = 100,
        _init_setup_model: bool = True,
    ):
        super().__init__(policy, env, learning_rate, policy_kwargs=policy_kwargs, stats_window_size=stats_window_size,
                         tensorboard_log=tensorboard_log, verbose=verbose, device=device, support_multi_env=True,
                         seed=seed, supported_action_spaces=(spaces.Box, spaces.Discrete))
        self.n_prompts, self.group_size = int(n_prompts), int(group_size)
        self.batch_size = batch_size
        self.micro_batch_size = int(micro_batch_size)
        self.n_epochs = int(n_epochs)
        self.clip_range, self.clip_range_high = float(clip_range), clip_range_high
        self.beta, self.kl_estimator = float(beta), kl_estimator
        self.loss_aggregation, self.scale_rewards = loss_aggregation, scale_rewards
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.max_grad_norm = float(max_grad_norm)
        self.model_name_or_path: str | None = None
        self._check_config()
        if _init_setup_model:
            self._setup_model()

    @property
    def rollout_size(self) -> int:
        """Sequences per rollout, ``N = n_prompts * group_size``."""
        return self.n_prompts * self.group_size

    def _check_config(self) -> None:
        for name in ("n_prompts", "group_size", "micro_batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and not 1 <= self.batch_size <= self.rollout_size:
            raise ValueError(f"batch_size={self.batch_size} must be in 1..n_prompts*group_size={self.rollout_size}")
        for name, valid in (("kl_estimator", KL_ESTIMATORS), ("scale_rewards", GROUP_SCALES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.beta < 0 or self.clip_range <= 0 or (self.clip_range_high is not None and self.clip_range_high <= 0):
            raise ValueError(f"Need beta >= 0 and clip ranges > 0, got beta={self.beta}, "
                             f"clip_range={self.clip_range}, clip_range_high={self.clip_range_high}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"Need temperature > 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.loss_aggregation not in AGGREGATION_MODES:
            raise ValueError(f"loss_aggregation must be one of {AGGREGATION_MODES}, got {self.loss_aggregation!r}")
        if (self.env is not None and isinstance(self.action_space, spaces.Discrete) and self.n_envs > 1
                and not hasattr(self.env, "reset_groups")):
            raise ValueError("Token-level envs with several sub-envs need llm_gym.make_group_vec_env (a DummyVecEnv "
                             "auto-resets finished sub-envs mid-wave); or pass a single env.")
        if self.env is not None and self.rollout_size % self.n_envs:
            raise ValueError(f"n_prompts*group_size={self.rollout_size} must be a multiple of the number of envs "
                             f"({self.n_envs}).")

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.env is not None:
            lm = self.env.get_attr("lm")[0]
        elif self.model_name_or_path is not None:
            lm = get_language_model(self.model_name_or_path)
        else:
            raise ValueError("An env (or a saved model path) is needed: the tokenizer and weights come from it.")
        self.model_name_or_path = lm.name_or_path
        self.lm = lm
        policy_kwargs = {"temperature": self.temperature, "top_p": self.top_p, **self.policy_kwargs}
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, lm=lm,
                                        **policy_kwargs).to(self.device)
        self.ref_policy = ReferencePolicy(lm, self.temperature).to(self.device) if self.beta > 0 else None
        self.rollout_buffer = GroupRolloutBuffer(self.device)
        if not hasattr(self, "_problem_rng"):  # restored by load(): a resumed run continues the draws
            self._problem_rng = np.random.default_rng(self.seed)
        self._rollout_stats: dict[str, float] = {}

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "lm", "ref_policy", "_rollout_stats"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    @property
    def action_space_len(self) -> int:
        """Response budget ``T`` in tokens: the action length (sequence level) or the env's ``max_new_tokens``."""
        if isinstance(self.action_space, spaces.Discrete):
            return int(self.env.get_attr("max_new_tokens")[0])
        return int(self.action_space.shape[0])

    @property
    def _one_step_per_rollout(self) -> bool:
        """True when each rollout gets exactly one optimizer step: then pi_old = pi exactly."""
        return self.n_epochs == 1 and (self.batch_size or self.rollout_size) >= self.rollout_size

    # ------------------------------------------------------------------ rollout
    def _sample_problems(self) -> np.ndarray:
        """Problem index of each of the N sequences: ``n_prompts`` draws, each repeated ``group_size`` times."""
        n_problems = self.env.get_attr("n_problems")[0]
        draws = self._problem_rng.integers(n_problems, size=self.n_prompts)
        return np.repeat(draws, self.group_size)

    def _reset_to(self, env: VecEnv, problem_ids: np.ndarray) -> dict[str, np.ndarray]:
        env.set_options([{"problem_id": int(k)} for k in problem_ids])
        return env.reset()

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: GroupRolloutBuffer) -> bool:
        """Sample ``N`` responses (G per prompt), step them through ``env`` and fill the buffer.

        Sequence-level envs get one batched ``generate``; token-level envs (``Discrete`` actions) are
        stepped token by token with the KV cache as the policy's recurrent state. Both give the same buffer.
        With ``dynamic_sampling`` (DAPO) rounds are drawn until ``n_prompts`` groups have mixed rewards
        (:meth:`_collect_groups`); an iteration where none did leaves the buffer empty and ``train`` is skipped.

        Returns:
            False when a callback asked to stop training.
        """
        callback.on_rollout_start()
        collected = self._collect_groups(env, callback)
        if collected is None:
            return False
        rollout, generated = collected
        all_group_ids = np.repeat(np.arange(generated.rewards.shape[0] // self.group_size), self.group_size)
        self.generated_tokens = getattr(self, "generated_tokens", 0) + int(generated.response_mask.sum())
        self._rollout_stats = rollout_metrics(generated.rewards.numpy(), all_group_ids, generated.infos,
                                              generated.response_mask, generated.seconds)
        if self.dynamic_sampling:
            self._rollout_stats |= {"rollout/sampling_rounds": generated.rewards.shape[0] / self.rollout_size,
                                    "rollout/generated_sequences": float(generated.rewards.shape[0]),
                                    "rollout/dropped_groups": float(self._dropped_groups)}
        rollout_buffer.reset()
        if rollout.rewards.shape[0] > 0:
            group_ids = np.repeat(np.arange(rollout.rewards.shape[0] // self.group_size), self.group_size)
            rewards, token_rewards, step_mask = step_reward_tensors(rollout)
            rollout_buffer.add(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask,
                               rewards, torch.as_tensor(group_ids), token_rewards=token_rewards, step_mask=step_mask)
            self._compute_rollout_log_probs(rollout_buffer)
            self._post_rollout(rollout_buffer, rollout)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _collect_round(self, env: VecEnv, callback: BaseCallback) -> Rollout | None:
        """Draw ``n_prompts`` problems and sample ``group_size`` responses each (``N`` rows, None if stopped)."""
        problem_ids = self._sample_problems()  # (N,)
        start = time.perf_counter()
        if isinstance(self.action_space, spaces.Discrete):
            rollout = self._collect_tokens(env, callback, problem_ids)
            return None if rollout is None else rollout._replace(seconds=time.perf_counter() - start)
        return self._collect_sequences(env, callback, problem_ids)

    def _collect_groups(self, env: VecEnv, callback: BaseCallback) -> tuple[Rollout, Rollout] | None:
        """The training rollout and everything generated for it: ``(rollout, generated)``.

        Without dynamic sampling both are one round. With it (DAPO arXiv:2503.14476 section 3.2, eq. 11),
        rounds of ``n_prompts`` groups are drawn and only groups whose rewards are not all equal are kept,
        until ``n_prompts`` are kept (the surplus of the last round is dropped) or ``max_sampling_rounds``
        rounds were drawn; then a ``UserWarning`` says how many were found and training uses those.
        """
        kept, generated = [], []
        for _ in range(self.max_sampling_rounds if self.dynamic_sampling else 1):
            rollout = self._collect_round(env, callback)
            if rollout is None:
                return None
            generated.append(rollout)
            if not self.dynamic_sampling:
                return rollout, rollout
            rows = np.flatnonzero(informative_groups(rollout.rewards.numpy(), self.group_size))
            kept.append(rollout.take(rows))
            if sum(r.rewards.shape[0] for r in kept) >= self.rollout_size:
                break
        else:
            n_found = sum(r.rewards.shape[0] for r in kept) // self.group_size
            warnings.warn(f"Dynamic sampling: only {n_found} of n_prompts={self.n_prompts} groups had mixed rewards "
                          f"after max_sampling_rounds={self.max_sampling_rounds} rounds "
                          f"({self.max_sampling_rounds * self.rollout_size} responses); training on those "
                          f"{n_found}. Raise max_sampling_rounds or use problems the policy sometimes solves.",
                          stacklevel=2)
        all_rows = Rollout.concat(generated)
        self._dropped_groups = int(np.sum(~informative_groups(all_rows.rewards.numpy(), self.group_size))
                                   ) // self.group_size
        return Rollout.concat(kept).take(np.arange(self.rollout_size)), all_rows

    def _step_callbacks(self, callback: BaseCallback, infos, dones, n_steps: int, local_vars: dict) -> bool:
        self.num_timesteps += n_steps
        self._update_info_buffer(infos, dones)
        callback.update_locals(local_vars)
        return callback.on_step()

    def _collect_sequences(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> Rollout | None:
        """Sequence level: reset every chunk of ``num_envs`` to its problems, one ``generate`` for all N,
        then step each chunk with its responses (a reset is deterministic given ``problem_id``)."""
        chunks = np.split(problem_ids, len(problem_ids) // env.num_envs)
        obs = [self._reset_to(env, chunk) for chunk in chunks]
        b_prompt_ids = torch.as_tensor(np.concatenate([o["input_ids"] for o in obs]))  # (N, L)
        b_prompt_mask = torch.as_tensor(np.concatenate([o["attention_mask"] for o in obs]))  # (N, L)
        start = time.perf_counter()
        gen = self.policy.generate(b_prompt_ids, b_prompt_mask)
        gen_seconds = time.perf_counter() - start
        b_rewards, infos = np.zeros(len(problem_ids), dtype=np.float32), []
        for c, chunk in enumerate(chunks):
            if len(chunks) > 1:
                self._reset_to(env, chunk)
            rows = slice(c * env.num_envs, (c + 1) * env.num_envs)
            _, rewards, dones, step_infos = env.step(gen.response_ids[rows].numpy())
            b_rewards[rows], infos = rewards, infos + list(step_infos)
            if not self._step_callbacks(callback, step_infos, dones, env.num_envs, locals()):
                return None
        return Rollout(b_prompt_ids, b_prompt_mask, gen.response_ids, gen.response_mask, torch.as_tensor(b_rewards),
                       None, infos, gen_seconds)

    def _collect_tokens(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> Rollout | None:
        """Token level: waves of ``num_envs`` sequences, each decoded token by token (KV cache, no prefix
        recomputation) and stepped through the env until every sequence of the wave has ended."""
        waves = []
        for chunk in np.split(problem_ids, len(problem_ids) // env.num_envs):
            wave = self._token_wave(env, callback, chunk)
            if wave is None:
                return None
            waves.append(wave)
        fields = [torch.cat([w[i] for w in waves]) for i in range(5)]
        token_rewards = fields[4]
        return Rollout(*fields[:4], token_rewards.sum(-1), token_rewards, [i for w in waves for i in w[5]], 0.0)

    def _token_wave(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray):
        n, lm = env.num_envs, self.lm
        T, L = self.action_space_len, env.get_attr("max_prompt_length")[0]
        obs = self._reset_to(env, problem_ids)
        prompt_ids = torch.as_tensor(obs["input_ids"][:, :L])  # (n, L)
        prompt_mask = torch.as_tensor(obs["attention_mask"][:, :L])  # (n, L)
        response = torch.full((n, T), lm.pad_token_id, dtype=torch.long)  # (n, T)
        token_rewards = torch.zeros((n, T))  # (n, T)
        active, final_infos = torch.ones(n, dtype=torch.bool), [{} for _ in range(n)]
        state = prefill(self.policy.model, prompt_ids, prompt_mask)
        for t in range(T):
            tokens = sample_tokens(state.logits, self.temperature, self.top_p).cpu()
            tokens = torch.where(active, tokens, torch.full_like(tokens, lm.pad_token_id))  # as generate does
            _, rewards, dones, infos = env.step(tokens.numpy())
            response[active, t] = tokens[active]
            token_rewards[active, t] = torch.as_tensor(rewards, dtype=torch.float32)[active]
            for i in np.flatnonzero(dones):
                final_infos[i] = infos[i]
            if not self._step_callbacks(callback, infos, dones, int(active.sum()), locals()):
                return None
            active &= ~torch.as_tensor(dones)
            if not active.any():
                break
            state = decode_step(self.policy.model, state, tokens)
        return prompt_ids, prompt_mask, response, lm.response_mask(response), token_rewards, final_infos

    @torch.no_grad()
    def _compute_rollout_log_probs(self, buffer: GroupRolloutBuffer) -> None:
        """Old log-probs (only if several optimizer steps use this rollout) and reference log-probs (beta > 0),
        once per rollout, in micro-batches, without grad. A policy with a critic gives its values from the same
        forward pass (stored as ``values``), so PPO does not run the trunk again."""
        s = buffer.samples
        old, values, ref = [], [], []
        for mb in micro_batches(s, self.micro_batch_size):
            if not self._one_step_per_rollout:
                log_probs, _, mb_values = self.policy.evaluate_actions(mb)
                old.append(log_probs)
                if mb_values is not None:
                    values.append(mb_values)
            if self.ref_policy is not None:
                ref.append(self.ref_policy.log_probs(mb.prompt_ids, mb.prompt_mask, mb.response_ids,
                                                     mb.response_mask))
        buffer.update(old_log_probs=torch.cat(old) if old else None, ref_log_probs=torch.cat(ref) if ref else None,
                      values=torch.cat(values) if values else None)

    def _post_rollout(self, buffer: GroupRolloutBuffer, rollout: Rollout) -> None:
        """Hook after a rollout is stored and its log-probs computed (PPO's KL rewards, DAPO's reward shaping).

        ``rollout`` is what was stored, with each sequence's final ``info``. No-op here."""

    # ------------------------------------------------------------------ optimisation
    def _gradient_step(self, mb: RolloutSamples, loss_fn) -> dict[str, float]:
        """One optimizer step on a minibatch, accumulating gradients over micro-batches.

        ``loss_fn(micro, log_probs, old_log_probs, values, entropy) -> (loss, stats)`` gives the micro-batch loss
        over the micro-batch; it is re-weighted so the accumulated gradient equals the gradient of the
        loss aggregated over the whole minibatch (``micro_batch_weight``).
        """
        optimizer = self.policy.optimizer
        optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = defaultdict(float)
        for micro in micro_batches(mb, self.micro_batch_size):
            log_probs, entropy, values = self.policy.evaluate_actions(micro)
            old = log_probs.detach() if micro.old_log_probs is None else micro.old_log_probs
            loss, micro_stats = loss_fn(micro, log_probs, old, values, entropy)
            weight = micro_batch_weight(micro.response_mask, mb.response_mask, self.loss_aggregation)
            (loss * weight).backward()
            tokens = micro.response_mask.sum().clamp(min=1)
            micro_stats["entropy"] = (entropy.detach() * micro.response_mask).sum() / tokens
            token_share = float(micro.response_mask.sum() / mb.response_mask.sum().clamp(min=1))
            stats["loss"] += float(loss.detach()) * weight
            for key, value in micro_stats.items():
                stats[key] += float(value) * (weight if key == "policy_loss" else token_share)
        if self._stop_before_step(stats):  # e.g. PPO's target_kl: this minibatch's update is not applied
            optimizer.zero_grad(set_to_none=True)
            stats["early_stop"] = 1.0
            return stats
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        optimizer.step()
        stats["grad_norm"] = float(grad_norm)
        return stats

    def _stop_before_step(self, stats: dict[str, float]) -> bool:
        """Hook: True skips the optimizer step of the minibatch just evaluated (and ends ``train``)."""
        return False

    def _record_train_stats(self, all_stats: list[dict[str, float]]) -> None:
        for key in {k for s in all_stats for k in s} - {"early_stop"}:
            self.logger.record(f"train/{key}", float(np.mean([s[key] for s in all_stats if key in s])))
        self._n_updates += sum("early_stop" not in s for s in all_stats)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def train(self) -> None:
        """Update the policy on the stored rollout (implemented by each algorithm)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ loop
    def learn(self, total_timesteps: int, callback=None, log_interval: int = 1, tb_log_name: str | None = None,
              reset_num_timesteps: bool = True, progress_bar: bool = False):
        """Train for ``total_timesteps`` env steps (responses at sequence level), SB3's ``learn``.

        Args:
            total_timesteps: env steps to collect (rounded up to whole rollouts of ``N``).
            callback: SB3 callback(s) (``CheckpointCallback``, ``EvalCallback``, ``CallbackList``...).
            log_interval: dump logs every this many iterations.
            tb_log_name: TensorBoard run name (default: the class name).
            reset_num_timesteps: start the timestep counter (and a new TensorBoard run) from 0.
            progress_bar: show a tqdm/rich progress bar.
        """
        iteration = 0
        self._n_updates = getattr(self, "_n_updates", 0)
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps,
                                                      tb_log_name or type(self).__name__, progress_bar)
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if len(self.rollout_buffer):  # empty when dynamic sampling found no informative group
                self.train()
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self

    def dump_logs(self, iteration: int = 0) -> None:
        """Record the rollout and time metrics (docs/metrics.md) and write every logger output."""
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        if len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
        for key, value in self._rollout_stats.items():
            self.logger.record(key, value)
        self.logger.record("time/iterations", iteration, exclude="tensorboard")
        self.logger.record("time/fps", (self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def save(self, path: str | os.PathLike, exclude=None, include=None) -> None:
        """SB3 ``save`` (zip with hyperparameters, policy and optimizer state), written atomically.

        The zip is written to ``<path>.tmp`` and renamed over ``path``, so a crash or Ctrl-C mid-save
        never corrupts an existing checkpoint. The reference model is not saved (it is the env's model).
        """
        target = Path(path)
        if target.suffix == "":
            target = target.with_suffix(".zip")
        tmp = target.with_name(target.name + ".tmp")
        try:
            super().save(tmp, exclude=exclude, include=include)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class Rollout(NamedTuple):
    """One rollout as collected, before it enters the buffer (``N`` sequences)."""

    prompt_ids: torch.Tensor  # (N, L)
    prompt_mask: torch.Tensor  # (N, L)
    response_ids: torch.Tensor  # (N, T)
    response_mask: torch.Tensor  # (N, T)
    rewards: torch.Tensor  # (N,) episode return
    token_rewards: torch.Tensor | None  # (N, T) per-token rewards (token level), None: outcome on the last token
    infos: list[dict]  # the final step's info of each sequence
    seconds: float  # generation (sequence level) or rollout (token level) wall time

    def take(self, rows: np.ndarray) -> Rollout:
        """The rollout restricted to ``rows`` (int indices; out-of-range ones are ignored, as slicing does)."""
        rows = rows[rows < self.rewards.shape[0]]
        idx = torch.as_tensor(rows, dtype=torch.long)
        pick = [None if f is None else f[idx] for f in self[:6]]
        return Rollout(*pick, [self.infos[i] for i in rows], self.seconds)

    @staticmethod
    def concat(rollouts: list[Rollout]) -> Rollout:
        """Rows of several rollouts one after the other (times add up)."""
        fields = [None if rollouts[0][i] is None else torch.cat([r[i] for r in rollouts]) for i in range(6)]
        return Rollout(*fields, [i for r in rollouts for i in r.infos], sum(r.seconds for r in rollouts))


def step_reward_tensors(rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(rewards (N,), token_rewards (N, T) or None, step_mask (N, T) or None)`` for the buffer.

    Without process supervision (no ``info["step_rewards"]``) the rollout's rewards pass through. With it, every
    step reward ``(token_index, reward)`` is placed at its token and the outcome reward at the last token (the
    token env already paid them there), the step mask marks those tokens, and ``rewards`` is the return
    ``token_rewards.sum(-1)`` at both levels.
    """
    if not any(info.get("step_rewards") for info in rollout.infos):
        return rollout.rewards, rollout.token_rewards, None
    n, t = rollout.response_mask.shape
    rows = torch.arange(n)
    last = (rollout.response_mask.sum(-1).long() - 1).clamp(min=0)  # (N,)
    step_mask = torch.zeros((n, t))  # (N, T)
    step_mask[rows, last] = 1.0
    token_rewards = rollout.token_rewards
    if token_rewards is None:  # sequence level: the env reward is the outcome, step rewards are in info
        token_rewards = torch.zeros((n, t))  # (N, T)
        token_rewards[rows, last] = rollout.rewards.float()
    else:
        token_rewards = token_rewards.clone()
    for i, info in enumerate(rollout.infos):
        for index, reward in info.get("step_rewards", ()):
            step_mask[i, index] = 1.0
            if rollout.token_rewards is None:
                token_rewards[i, index] += float(reward)
    return token_rewards.sum(-1), token_rewards, step_mask


def micro_batch_weight(micro_mask: torch.Tensor, mb_mask: torch.Tensor, mode: str) -> float:
    """Weight of a micro-batch loss so that summed weighted gradients equal the minibatch loss gradient.

    ``token-mean`` divides by all tokens of the minibatch: weight = tokens(micro) / tokens(minibatch).
    The per-sequence modes average over sequences: weight = rows(micro) / rows(minibatch).
    """
    if mode == "token-mean":
        return float(micro_mask.sum() / mb_mask.sum().clamp(min=1))
    return micro_mask.shape[0] / mb_mask.shape[0]


def rollout_metrics(rewards: np.ndarray, group_ids: np.ndarray, infos: list[dict], response_mask: torch.Tensor,
                    gen_seconds: float) -> dict[str, float]:
    """The ``rollout/*`` and ``time/tokens_per_second`` metrics of one rollout (docs/metrics.md)."""
    lengths = response_mask.sum(-1).float()
    group_std = np.array([rewards[group_ids == g].std(ddof=1) if (group_ids == g).sum() > 1 else 0.0
                          for g in np.unique(group_ids)])
    stats = {
        "rollout/accuracy": float(np.mean([i.get("accuracy", np.nan) for i in infos])),
        "rollout/response_length": float(lengths.mean()),
        "rollout/truncated_fraction": float(np.mean([i.get("truncated_by_length", False) for i in infos])),
        "rollout/reward_std": float(group_std.mean()),
        "rollout/zero_std_groups": float(np.mean(group_std < 1e-8)),
        "time/tokens_per_second": float(lengths.sum()) / max(gen_seconds, 1e-9),
    }
    components = defaultdict(list)
    for info in infos:
        for name, value in info.get("reward_components", {}).items():
            components[name].append(value)
    stats |= {f"rollout/reward/{name}": float(np.mean(v)) for name, v in components.items()}
    if any(info.get("step_rewards") for info in infos):  # process supervision
        steps = [[r for _, r in info.get("step_rewards", ())] for info in infos]
        stats["rollout/step_reward_sum"] = float(np.mean([sum(s) for s in steps]))
        stats["rollout/scored_steps"] = float(np.mean([len(s) for s in steps]))
    return stats
