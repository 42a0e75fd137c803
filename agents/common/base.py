"""LLMAlgorithm: the one learn loop and the one ``train()`` shared by every algorithm.

An iteration reads straight down: collect ``n_prompts x group_size`` responses (the group filter of dynamic
sampling included, :mod:`agents.common.rollout`), store them, compute the old and reference log-probs once,
shape the rewards (KL in the reward, overlong shaping), then :meth:`LLMAlgorithm.train`: advantages, then
epochs of minibatch gradient steps. What differs between algorithms is only the config
(:class:`~agents.common.config.AlgorithmConfig`): each algorithm class is a ``preset`` of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm, maybe_make_env
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import explained_variance, safe_mean
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from torch.nn.parallel import DistributedDataParallel

from agents.common.buffers import (
    GroupRolloutBuffer,
    RolloutSamples,
    length_grouped_order,
    micro_batch_weight,
    micro_batches,
)
from agents.common.checkpoint import (
    PickledCheckpointError,
    algorithm_state,
    build_from_checkpoint,
    check_env_spaces,
    read_checkpoint,
    saved_class,
    write_checkpoint,
)
from agents.common.config import AlgorithmConfig
from agents.common.distributed import (
    all_gather_rows,
    all_reduce_sum,
    any_rank,
    init_distributed,
    is_distributed,
    is_main_process,
    mean_over_ranks,
    rank,
    world_size,
)
from agents.common.doctor import make_doctor
from agents.common.fsdp import fsdp_requested, gathered, is_sharded, shard_module
from agents.common.guards import NonFiniteError, first_nonfinite, nonfinite_message
from agents.common.objective import compute_advantages, compute_loss, kl_reward_shaping, length_shaping
from agents.common.policies import LLMActorCriticPolicy, LLMPolicy, ReferencePolicy, loss_masked
from agents.common.precision import make_grad_scaler
from agents.common.rollout import RolloutCollector, rollout_metrics, step_reward_tensors
from agents.common.turns import is_multi_turn, turn_metrics
from llm_gym.envs.vector import group_vec_env_like
from llm_gym.lm import get_language_model

#: Constructor keywords that are not config fields (SB3's ``BaseAlgorithm`` arguments), with their defaults.
SB3_ARGUMENTS: dict[str, Any] = {"policy_kwargs": None, "tensorboard_log": None, "verbose": 0, "seed": None,
                                 "device": "auto", "stats_window_size": 100, "doctor": True,
                                 "peft_config": None, "_init_setup_model": True}


def unsort(parts: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor | None:
    """The rows of ``torch.cat(parts)`` (computed in ``order``) put back in the original order; None if empty."""
    if not parts:
        return None
    rows = torch.cat(parts)
    out = torch.empty_like(rows)
    out[order] = rows
    return out


def _batched_multi_turn(env, n_envs: int, verbose: int):
    """A single multi-turn env made with ``gym.make`` as a ``GroupVecEnv`` of ``n_envs`` copies, else ``env``.

    A multi-turn rollout samples the turns of all active episodes in one batch, one sub-env per episode;
    ``GRPO("LLMPolicy", gym.make("LLMToolMath-v0"))`` gets that batching without building the vector env
    (:func:`llm_gym.envs.vector.group_vec_env_like`). A VecEnv, a non-multi-turn env, or an env with wrappers
    of its own is returned unchanged (its episodes then run one at a time).
    """
    if isinstance(env, str) or isinstance(env, VecEnv) or env is None or n_envs <= 1:
        return env
    if not is_multi_turn(env.observation_space):
        return env
    vec_env = group_vec_env_like(env, n_envs)
    if vec_env is None:
        warnings.warn("A single multi-turn env with wrappers of its own runs its episodes one at a time; for "
                      f"batched turns pass llm_gym.make_group_vec_env(env_id, n_envs={n_envs}, ...) with the "
                      "wrappers applied in a wrapper_class.", stacklevel=4)
        return env
    if verbose >= 1:
        print(f"Multi-turn env: {n_envs} copies in a GroupVecEnv (one per episode of a rollout).")
    return vec_env


def _generated_init(cls: type[LLMAlgorithm]):
    """An ``__init__`` whose explicit keyword parameters are the config fields with ``cls``'s preset defaults.

    Like ``dataclasses`` does for a dataclass, the constructor is generated from one source (the config and
    the preset), so the signature, ``help()`` and the docs tables always agree.
    """
    names = AlgorithmConfig.field_names()
    params = ", ".join([*(f"{n}=_d.{n}" for n in names), *(f"{k}=_sb3[{k!r}]" for k in SB3_ARGUMENTS)])
    src = (f"def __init__(self, policy, env, *, {params}):\n"
           f"    _init(self, policy, env, _Config({', '.join(f'{n}={n}' for n in names)}), "
           f"{', '.join(f'{k}={k}' for k in SB3_ARGUMENTS)})\n")
    namespace = {"_d": cls.default_config(), "_sb3": SB3_ARGUMENTS, "_Config": AlgorithmConfig,
                 "_init": LLMAlgorithm._init}
    exec(src, namespace)  # noqa: S102 - generated from the dataclass's field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__name__}.__init__"
    init.__doc__ = f"Build {cls.__name__}; every keyword is a field of AlgorithmConfig (defaults: the preset)."
    return init


class LLMAlgorithm(RolloutCollector, BaseAlgorithm):
    """Base class of the RL-for-LLM algorithms, in SB3's ``BaseAlgorithm`` idiom.

    One timestep is one env step: a whole response at sequence level, one token at token level. One
    iteration samples ``n_prompts`` problems, ``group_size`` responses each (``N = n_prompts * group_size``),
    then trains. Subclasses are presets: a class docstring, ``preset`` (the config fields they change) and
    ``policy_aliases``; the constructor is generated with an explicit keyword for every field of
    :class:`~agents.common.config.AlgorithmConfig` (each documented there), plus SB3's ``policy_kwargs``,
    ``tensorboard_log``, ``verbose``, ``seed``, ``device``, ``stats_window_size``, ``doctor`` (the training
    doctor: True, False, a ``DoctorConfig`` or a ``TrainingDoctor``; docs/troubleshooting.md) and
    ``peft_config`` (TRL's name: a ``peft.LoraConfig`` trains LoRA adapters only, and the reference model is
    the base model with the adapters disabled; docs/scaling.md). ``model.config`` is the typed view of the
    current values.

    The two positional arguments of the (generated) constructor ``__init__(policy, env, *, ...)``:

    * ``policy``: ``"LLMPolicy"`` (``"LLMActorCriticPolicy"``: with a value head) or a policy class.
    * ``env``: an llm-gym env (or a VecEnv of them); its model handle provides tokenizer and initial weights.

    Raises:
        ValueError: an invalid field (the message names it), or an env that does not fit the sizes.
        TypeError: an unknown keyword.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"LLMPolicy": LLMPolicy, "LLMActorCriticPolicy": LLMActorCriticPolicy}
    policy: LLMPolicy
    #: The config fields this algorithm changes from :class:`AlgorithmConfig`'s defaults (GRPO's).
    preset: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.default_config().validate()
        cls.__init__ = _generated_init(cls)

    @classmethod
    def default_config(cls) -> AlgorithmConfig:
        """The preset: :class:`AlgorithmConfig` with ``preset`` applied along the class hierarchy."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged |= getattr(klass, "preset", {}) if issubclass(klass, LLMAlgorithm) else {}
        return AlgorithmConfig(**merged)

    def _init(self, policy, env, config: AlgorithmConfig, policy_kwargs, tensorboard_log, verbose, seed, device,
              stats_window_size, doctor, peft_config, _init_setup_model) -> None:
        self._check_preset(config.validate())
        env = _batched_multi_turn(env, config.n_prompts * config.group_size, verbose)
        if init_distributed() and not is_main_process():  # rank 0 logs; the others stay quiet
            tensorboard_log, verbose, doctor = None, 0, False
        super().__init__(policy, env, config.learning_rate, policy_kwargs=policy_kwargs,
                         stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, verbose=verbose,
                         device=device, support_multi_env=True, seed=seed,
                         supported_action_spaces=(spaces.Box, spaces.Discrete))
        for name, value in config.to_dict().items():
            setattr(self, name, value)
        self.model_name_or_path: str | None = None
        self.peft_config = peft_config
        self.doctor = make_doctor(doctor)
        if _init_setup_model:
            self._setup_model()

    def _check_preset(self, config: AlgorithmConfig) -> None:
        """Hook: a preset's own constraints on the config (e.g. GSPO's ratio level). No-op here.

        Raises:
            ValueError: a field the preset does not support.
        """

    @property
    def config(self) -> AlgorithmConfig:
        """The current hyperparameters as an :class:`AlgorithmConfig` (read from the attributes)."""
        return AlgorithmConfig(**{name: getattr(self, name) for name in AlgorithmConfig.field_names()})

    @property
    def rollout_size(self) -> int:
        """Sequences per rollout, ``N = n_prompts * group_size``."""
        return self.n_prompts * self.group_size

    def _check_env(self) -> None:
        """Env-dependent checks; resolves ``overlong_buffer=None`` to 20 % of the budget (DAPO)."""
        if self.env is None:
            return
        waves = isinstance(self.action_space, spaces.Discrete) or is_multi_turn(self.observation_space)
        if waves and self.n_envs > 1 and not hasattr(self.env, "reset_groups"):
            raise ValueError("Token-level and multi-turn envs with several sub-envs need llm_gym.make_group_vec_env "
                             "(a DummyVecEnv auto-resets finished sub-envs mid-wave); or pass a single env.")
        if self.rollout_size % self.n_envs:
            raise ValueError(f"n_prompts*group_size={self.rollout_size} must be a multiple of the number of envs "
                             f"({self.n_envs}).")
        if self.overlong_buffer is None:
            self.overlong_buffer = round(0.2 * self.action_space_len)
        if self.overlong_buffer > self.action_space_len:
            raise ValueError(f"overlong_buffer={self.overlong_buffer} must be in [0, max_new_tokens="
                             f"{self.action_space_len}]")

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._check_env()
        self._setup_lr_schedule()
        self.set_random_seed(None if self.seed is None else self.seed + rank())  # each rank its own draws
        if self.env is not None:
            lm = self.env.get_attr("lm")[0]
        elif self.model_name_or_path is not None:
            lm = get_language_model(self.model_name_or_path)
        else:
            raise ValueError("An env (or a saved model path) is needed: the tokenizer and weights come from it.")
        self.model_name_or_path = lm.name_or_path
        self.lm = lm
        policy_kwargs = {"temperature": self.temperature, "top_p": self.top_p, "mixed_precision": self.mixed_precision,
                         "gradient_checkpointing": self.gradient_checkpointing, "peft_config": self.peft_config,
                         **self.policy_kwargs}
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, lm=lm,
                                        **policy_kwargs).to(self.device)
        if isinstance(self.policy, LLMActorCriticPolicy):
            self.policy.entropy_grad = self.ent_coef > 0
        self.ref_policy = None
        if self.beta > 0:
            self.ref_policy = ReferencePolicy(lm, self.temperature, self.mixed_precision,
                                              policy_model=self.policy.model).to(self.device)
        self._scaler = make_grad_scaler(self.mixed_precision, self.device)
        self._ddp = None  # the policy wrapped for data parallelism: gradients all-reduced in backward
        if is_distributed() and fsdp_requested(self.fsdp):  # sharded: parameters, gradients, optimizer state
            shard_module(self.policy, forward_methods=("evaluate_actions", "predict_values"))
            if self.ref_policy is not None and self.ref_policy.model is not None:  # its own copy: sharded too
                shard_module(self.ref_policy, forward_methods=("log_probs",))
            self.policy.optimizer = self.policy.make_optimizer(self.lr_schedule)  # over the shards
        elif is_distributed():
            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.policy, device_ids=device_ids, gradient_as_bucket_view=True)
        self.rollout_buffer = GroupRolloutBuffer(self.device)
        if not hasattr(self, "_problem_rng"):  # restored by load(): a resumed run continues the draws
            self._problem_rng = np.random.default_rng(None if self.seed is None else self.seed + rank())
        self._rollout_stats: dict[str, float] = {}
        self._nonfinite_skips = getattr(self, "_nonfinite_skips", 0)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "lm", "ref_policy", "_rollout_stats", "_iteration",
                "doctor", "_train_stats", "_scaler", "peft_config", "_ddp"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []  # SB3-format saves only (trust_pickle); see save()

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
    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: GroupRolloutBuffer) -> bool:
        """Sample ``N`` responses (G per prompt), step them through ``env``, fill and prepare the buffer.

        With ``dynamic_sampling`` an iteration where no group had mixed rewards leaves the buffer empty (and
        ``train`` is skipped).

        Returns:
            False when a callback asked to stop training.
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
        if is_distributed():  # the episode stats of every rank; then this rank's share of the rollout
            self._update_info_buffer(generated.infos, np.ones(generated.n_sequences, dtype=bool))
            per_rank = rollout.n_sequences // self.group_size // world_size() * self.group_size  # whole groups
            rollout = rollout.take(np.arange(rank() * per_rank, (rank() + 1) * per_rank))
        all_group_ids = np.repeat(np.arange(generated.n_sequences // self.group_size), self.group_size)
        self.generated_tokens = getattr(self, "generated_tokens", 0) + int(generated.response_mask.sum())
        self._rollout_stats = rollout_metrics(generated.rewards.numpy(), all_group_ids, generated.infos,
                                              generated.response_mask, gen_seconds)
        if is_multi_turn(self.observation_space):
            self._rollout_stats |= turn_metrics(generated.infos, float(np.mean(self._turn_seconds)))
        if self.dynamic_sampling:
            self._rollout_stats |= {"rollout/sampling_rounds": generated.n_sequences / self.rollout_size,
                                    "rollout/generated_sequences": float(generated.n_sequences),
                                    "rollout/dropped_groups": float(self._dropped_groups)}
        rollout_buffer.reset()
        if rollout.n_sequences > 0:
            n_groups = rollout.n_sequences // self.group_size  # group ids unique over ranks
            group_ids = np.repeat(np.arange(n_groups) + rank() * n_groups, self.group_size)
            rollout_buffer.add(step_reward_tensors(rollout)._replace(group_ids=torch.as_tensor(group_ids)))
            self._prepare_rollout(rollout_buffer)
            s = rollout_buffer.samples
            bad = first_nonfinite({"rewards": s.rewards, "token_rewards": s.token_rewards,
                                   "old_log_probs": s.old_log_probs, "ref_log_probs": s.ref_log_probs,
                                   "values": s.values})
            if any_rank(bad is not None):  # every rank skips together
                self._nonfinite(bad or "rewards or log-probs (on another rank)")
                rollout_buffer.reset()  # skip: no update on this rollout
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @torch.no_grad()
    def _prepare_rollout(self, buffer: GroupRolloutBuffer) -> None:
        """Once per rollout, in micro-batches, without grad: the old log-probs (only when several optimizer
        steps use the rollout), the reference log-probs (``beta > 0``) and the critic's values (one forward
        with the old log-probs); then the reward shaping of the config (KL in the reward, overlong shaping)."""
        order = length_grouped_order(buffer.samples)  # (N,) micro-batches of similar lengths: less padding
        s = buffer.samples.index(order)
        has_critic = isinstance(self.policy, LLMActorCriticPolicy)
        kl_in_reward = self.kl_placement == "reward" and self.beta > 0
        need_forward = not self._one_step_per_rollout or has_critic or kl_in_reward
        old, values, ref = [], [], []
        shared_ref = self.ref_policy is not None and self.ref_policy.model is None  # LoRA: adapters off
        with gathered(self.policy) if shared_ref else contextlib.nullcontext():  # FSDP: see fsdp.gathered
            for mb in micro_batches(s, self.micro_batch_size):
                self._prepare_forwards(mb, need_forward, has_critic and not kl_in_reward, old, values, ref)
        b_log_probs = unsort(old, order)  # (N, T): pi_old's log-probs, when computed
        buffer.update(old_log_probs=None if self._one_step_per_rollout else b_log_probs,
                      ref_log_probs=unsort(ref, order), values=unsort(values, order))
        if self.kl_placement == "reward":
            updates, stats = kl_reward_shaping(self.config, buffer.samples, b_log_probs)
            buffer.update(**updates)
            self._rollout_stats |= stats
        updates, stats = length_shaping(self.config, buffer.samples, self.action_space_len, self.overlong_buffer)
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

    # ------------------------------------------------------------------ optimisation
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
        for epoch in range(self.n_epochs):
            for mb in self.rollout_buffer.get(self.batch_size):
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
        if self.advantage == "process" and b.step_mask is None and not self._env_has_process_reward():
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
        """
        optimizer = self.policy.optimizer
        optimizer.zero_grad(set_to_none=True)
        stats = self._accumulate_gradients(mb.index(length_grouped_order(mb)))
        if "nonfinite_skip" in stats:
            return stats
        approx_kl = all_reduce_sum(stats.get("approx_kl", 0.0)) / world_size()
        if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
            optimizer.zero_grad(set_to_none=True)
            stats["early_stop"] = 1.0
            return stats
        self._scaler.unscale_(optimizer)  # no-op unless fp16
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
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
        stats["grad_norm"] = float(grad_norm)
        return stats

    def _accumulate_gradients(self, mb: RolloutSamples) -> dict[str, float]:
        """Forward and backward every micro-batch of ``mb`` (DDP syncs only on the last); the step's stats."""
        stats: dict[str, float] = defaultdict(float)
        micros = list(micro_batches(mb, self.micro_batch_size))
        token_mean = self.loss_aggregation == "token-mean"
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
                weight = micro_batch_weight(micro.response_mask, mb.response_mask, self.loss_aggregation,
                                            world_size=world_size(), minibatch_total=total)
                self._scaler.scale(loss * weight).backward()
            tokens = micro.response_mask.sum().clamp(min=1)
            micro_stats["entropy"] = (entropy.detach() * micro.response_mask).sum() / tokens
            token_share = float(micro.response_mask.sum() / mb.response_mask.sum().clamp(min=1))
            stats["loss"] += float(loss.detach()) * weight
            for key, value in micro_stats.items():
                stats[key] += float(value) * (weight if key == "policy_loss" else token_share)
        return stats

    def _nonfinite(self, quantity: str, detail: str = "") -> None:
        """A non-finite ``quantity`` reached the update: raise, or (``on_nonfinite="skip"``) warn once and count.

        Raises:
            NonFiniteError: with ``on_nonfinite="raise"``; the message names the quantity, the iteration and
                the likely causes (:data:`agents.common.guards.CAUSES`).
        """
        message = nonfinite_message(quantity, getattr(self, "_iteration", 0), getattr(self, "_n_updates", 0),
                                    detail)
        if self.on_nonfinite == "raise":
            raise NonFiniteError(message)
        if not self._nonfinite_skips:
            warnings.warn(message + " Warned once; later skips are only counted.", stacklevel=3)
        self._nonfinite_skips += 1
        self.logger.record("train/nonfinite_skips", self._nonfinite_skips)

    def _record_train_stats(self, all_stats: list[dict[str, float]]) -> None:
        not_applied = {"early_stop", "nonfinite_skip", "grad_scale_skip"}
        local = {key: float(np.mean([s[key] for s in all_stats if key in s]))
                 for key in {k for s in all_stats for k in s} - not_applied}
        self._train_stats = {f"train/{key}": value for key, value in mean_over_ranks(local).items()}
        for key, value in self._train_stats.items():
            self.logger.record(key, value)
        self._n_updates += sum(not not_applied & s.keys() for s in all_stats)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

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
                                                      tb_log_name or type(self).__name__,
                                                      progress_bar and is_main_process())
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._iteration = iteration + 1
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self._train_stats = {}
            if len(self.rollout_buffer):  # empty when dynamic sampling found no informative group
                self.train()
            self._consult_doctor(iteration)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self

    def _consult_doctor(self, iteration: int) -> None:
        """Give the iteration's metrics to the training doctor (warnings once each; docs/troubleshooting.md)."""
        metrics = {**self._rollout_stats, **self._train_stats}
        if len(self.ep_info_buffer) > 0:
            metrics["rollout/ep_rew_mean"] = safe_mean([ep["r"] for ep in self.ep_info_buffer])
        self.doctor.update(metrics, iteration)

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
        for key, value in self.doctor.counters.items():
            self.logger.record(key, value)
        self.logger.dump(step=self.num_timesteps)

    def save(self, path: str | os.PathLike, exclude=None, include=None) -> None:
        """Save a plain-data checkpoint (:mod:`agents.common.checkpoint`), written atomically.

        The zip holds the config and counters as JSON and the weights, optimizer state and RNG states as
        tensors, everything exact resume needs; nothing in it is pickled. It is written to ``<path>.tmp`` and
        renamed over ``path``, so a crash or Ctrl-C mid-save never corrupts an existing checkpoint; a stale
        ``.tmp`` left by a killed save is replaced. The reference model is not saved (it is the env's model).
        ``exclude`` / ``include`` (SB3's) are not supported: every field is needed to resume.

        Raises:
            TypeError: ``policy_kwargs`` that are not JSON data, or ``exclude`` / ``include`` given.
        """
        if exclude or include:
            raise TypeError("llm-gym checkpoints always hold the whole state (exact resume); drop exclude/include.")
        state = algorithm_state(self)  # under FSDP every rank takes part in gathering the full tensors
        if not is_main_process():  # data parallel: the weights are the same on every rank; rank 0 writes
            return
        target = Path(path)
        if target.suffix == "":
            target = target.with_suffix(".zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)  # a stale file from a killed save
        try:
            write_checkpoint(tmp, *state)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def set_env(self, env, force_reset: bool = True) -> None:
        """Attach ``env`` to train or predict on, e.g. after ``load(path)`` without an env.

        Unlike SB3's ``set_env``, the number of sub-envs need not equal the previous env's (a model loaded
        without an env has none): any count the rollout allows is accepted, as in the constructor. A single
        multi-turn env is batched into ``n_prompts * group_size`` copies, as in the constructor.

        Args:
            env: a gymnasium env, a VecEnv of them, or a registered env id.
            force_reset: start the next ``learn()`` from a fresh ``reset()`` (SB3's argument).

        Raises:
            ValueError: the env's spaces differ from the model's, or its sub-env count does not divide
                ``n_prompts * group_size`` (or a token-level VecEnv is not a ``GroupVecEnv``); the model
                keeps its previous env then.
        """
        env = _batched_multi_turn(maybe_make_env(env, self.verbose), self.rollout_size, self.verbose)
        env = self._wrap_env(env, self.verbose)
        check_env_spaces(env, self.observation_space, self.action_space, owner="the model")
        previous = (self.env, getattr(self, "n_envs", None))
        self.env, self.n_envs = env, env.num_envs
        try:
            self._check_env()
        except ValueError:
            self.env, self.n_envs = previous
            raise
        self._vec_normalize_env = unwrap_vec_normalize(env)
        if force_reset:
            self._last_obs = None

    @classmethod
    def load(cls, path: str | os.PathLike, env=None, device: str = "auto", custom_objects: dict | None = None,
             print_system_info: bool = False, force_reset: bool = True, trust_pickle: bool = False, **kwargs):
        """Load a checkpoint written by :meth:`save`: the same weights, optimizer state, counters and RNG states.

        ``learn(M, reset_num_timesteps=False)`` afterwards continues exactly as the saved run would have (bit
        for bit on the same machine, constant learning rate). ``LLMAlgorithm.load`` returns the saved class.

        Args:
            path: the zip (``.zip`` is added when the name has no suffix).
            env: the env to train or predict on; its spaces must equal the saved ones (unless replaced through
                ``custom_objects``). The model is built with the saved hyperparameters before the env is
                attached, so any env the run trained on fits (its sub-env count divides the saved
                ``n_prompts * group_size``). None: the recorded ``model_name_or_path`` gives the model; attach
                an env later with :meth:`set_env`.
            device: where to put the policy.
            custom_objects: replacements for saved values: ``observation_space``, ``action_space``,
                ``policy_class``, ``policy_kwargs``, ``learning_rate`` (needed when a schedule was used).
            print_system_info: SB3's argument, used only for an SB3-format zip (``trust_pickle=True``).
            force_reset: SB3's argument, used only for an SB3-format zip; a plain-data checkpoint always resets
                the env.
            trust_pickle: also load an SB3-format zip, which unpickles objects and can run code: only for a
                file you trust.

        Raises:
            ValueError: the checkpoint holds another algorithm (names both classes), the env's spaces differ,
                or the file is not a checkpoint. PickledCheckpointError (a ValueError): a pickled SB3 zip
                without ``trust_pickle=True``. FileNotFoundError: no such file.
        """
        target = Path(path)
        if not target.exists() and target.suffix == "":
            target = target.with_suffix(".zip")
        try:
            meta, tensors = read_checkpoint(target)
        except PickledCheckpointError:
            if not trust_pickle:
                raise
            return BaseAlgorithm.load.__func__(cls, target, env=env, device=device, custom_objects=custom_objects,
                                               print_system_info=print_system_info, force_reset=force_reset,
                                               **kwargs)
        klass = saved_class(cls, LLMAlgorithm, meta["algorithm"], target)
        return build_from_checkpoint(klass, meta, tensors, env, device, custom_objects or {})


LLMAlgorithm.__init__ = _generated_init(LLMAlgorithm)
