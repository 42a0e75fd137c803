"""Model setup: the env checks, the policy and reference model, and data parallelism (DDP or FSDP).

:class:`ModelSetup` is the part of :class:`~agents.common.base.LLMAlgorithm` that builds what a run trains
from ``model.config`` and the env: it checks that the env fits the rollout, builds the policy (and the
reference model when ``beta > 0``) on the env's language model, and wraps the policy for data parallelism
under torchrun / accelerate (DDP, or FSDP2 with ``fsdp=True``; docs/scaling.md). Attaching another env
(:meth:`ModelSetup.set_env`) runs the same checks.
"""

from __future__ import annotations

import warnings

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from torch.nn.parallel import DistributedDataParallel

from agents.common.buffers import GroupRolloutBuffer
from agents.common.checkpoint import check_env_spaces
from agents.common.config import CheckedSchedule
from agents.common.distributed import is_distributed, rank
from agents.common.fsdp import fsdp_requested, shard_module
from agents.common.policies import LLMActorCriticPolicy, ReferencePolicy
from agents.common.precision import make_grad_scaler
from agents.common.turns import is_multi_turn
from llm_gym.envs.vector import group_vec_env_like, sequence_vec_env_like
from llm_gym.lm import LanguageModel, get_language_model

__all__ = ["ModelSetup", "batched_multi_turn"]


def batched_multi_turn(env, n_envs: int, verbose: int):
    """A single multi-turn env made with ``gym.make`` as a ``GroupVecEnv`` of ``n_envs`` copies, else ``env``.

    A multi-turn rollout samples the turns of all active episodes in one batch, one sub-env per episode;
    ``GRPO("LLMPolicy", gym.make("LLMToolMath-v0"))`` gets that batching without building the vector env
    (:func:`llm_gym.envs.vector.group_vec_env_like`). A VecEnv, a non-multi-turn env, or an env with wrappers
    of its own is returned unchanged (its episodes then run one at a time, with a warning). A single
    sequence-level env becomes a :class:`~llm_gym.envs.vector.SequenceVecEnv` of ``n_envs`` rows over it
    (:func:`llm_gym.envs.vector.sequence_vec_env_like`), so a rollout is scored in one call per reward function.

    Args:
        env: a gymnasium env, a VecEnv, an env id or None.
        n_envs: ``n_prompts * group_size``, the episodes of one rollout.
        verbose: SB3's verbosity; 1 prints when the env is batched.
    """
    if isinstance(env, str) or isinstance(env, VecEnv) or env is None or n_envs <= 1:
        return env
    if not is_multi_turn(env.observation_space):  # a sequence env serves all N rows: one scoring call per rollout
        return sequence_vec_env_like(env, n_envs) or env
    vec_env = group_vec_env_like(env, n_envs)
    if vec_env is None:
        warnings.warn("A single multi-turn env with wrappers of its own runs its episodes one at a time; for "
                      f"batched turns pass llm_gym.make_group_vec_env(env_id, n_envs={n_envs}, ...) with the "
                      "wrappers applied in a wrapper_class.", stacklevel=4)
        return env
    if verbose >= 1:
        print(f"Multi-turn env: {n_envs} copies in a GroupVecEnv (one per episode of a rollout).")
    return vec_env


class ModelSetup:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: env checks, policy, reference model, DDP/FSDP.

    Reads ``self.config`` and SB3's ``env``, ``n_envs``, ``policy_class``, ``policy_kwargs``, ``device`` and
    ``seed``; sets ``policy``, ``ref_policy``, ``lm``, ``model_name_or_path``, ``rollout_buffer`` and the
    private state of a run (grad scaler, DDP wrapper, problem sampler). An override of SB3's ``_wrap_env``
    (how an env given to the constructor, :meth:`set_env` or ``load`` is wrapped) belongs beside
    :meth:`set_env`, in this mixin.
    """

    @property
    def action_space_len(self) -> int:
        """Response budget ``T`` in tokens: the action length (sequence level) or the env's ``max_new_tokens``."""
        if isinstance(self.action_space, spaces.Discrete):
            return int(self.env.get_attr("max_new_tokens")[0])
        return int(self.action_space.shape[0])

    def _check_env(self) -> None:
        """Env-dependent checks; resolves ``overlong_buffer=None`` in ``config`` to 20 % of the budget (DAPO).

        Raises:
            ValueError: a token-level or multi-turn VecEnv that is not a ``GroupVecEnv``, a sub-env count that
                does not divide ``n_prompts * group_size``, or ``overlong_buffer`` over the budget.
        """
        if self.env is None:
            return
        waves = isinstance(self.action_space, spaces.Discrete) or is_multi_turn(self.observation_space)
        if waves and self.n_envs > 1 and not hasattr(self.env, "reset_groups"):
            raise ValueError("Token-level and multi-turn envs with several sub-envs need llm_gym.make_group_vec_env "
                             "(a DummyVecEnv auto-resets finished sub-envs mid-wave); or pass a single env.")
        if self.rollout_size % self.n_envs:
            raise ValueError(f"n_prompts*group_size={self.rollout_size} must be a multiple of the number of envs "
                             f"({self.n_envs}).")
        budget, overlong_buffer = self.action_space_len, self.config.overlong_buffer
        if overlong_buffer is None:
            overlong_buffer = round(0.2 * budget)
        if overlong_buffer > budget:
            raise ValueError(f"overlong_buffer={overlong_buffer} must be in [0, max_new_tokens={budget}]")
        if overlong_buffer != self.config.overlong_buffer:
            self.config = self.config.replace(overlong_buffer=overlong_buffer)

    def _setup_model(self) -> None:
        """SB3's hook: check the env, then build the policy, the reference model and the data-parallel wrapper.

        Raises:
            ValueError: no env and no saved model path (the tokenizer and weights come from one of them), or
                an env that does not fit (:meth:`_check_env`).
        """
        self._adopt_loose_fields()  # SB3's own load writes saved fields into __dict__
        self._check_env()
        self._setup_lr_schedule()
        self.set_random_seed(None if self.seed is None else self.seed + rank())  # each rank its own draws
        lm = self._language_model()
        self.model_name_or_path = lm.name_or_path
        self.lm = lm
        cfg = self.config
        policy_kwargs = {"temperature": cfg.temperature, "top_p": cfg.top_p, "mixed_precision": cfg.mixed_precision,
                         "gradient_checkpointing": cfg.gradient_checkpointing, "peft_config": self.peft_config,
                         **self.policy_kwargs}
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, lm=lm,
                                        **policy_kwargs).to(self.device)
        if isinstance(self.policy, LLMActorCriticPolicy):
            self.policy.entropy_grad = cfg.ent_coef > 0
        self.ref_policy = None
        if cfg.beta > 0:
            self.ref_policy = ReferencePolicy(lm, cfg.temperature, cfg.mixed_precision,
                                              policy_model=self.policy.model).to(self.device)
        self._scaler = make_grad_scaler(cfg.mixed_precision, self.device)
        self._setup_data_parallel()
        self.rollout_buffer = GroupRolloutBuffer(self.device)
        if not hasattr(self, "_problem_rng"):  # restored by load(): a resumed run continues the draws
            self._problem_rng = np.random.default_rng(None if self.seed is None else self.seed + rank())
        self._rollout_stats: dict[str, float] = {}
        self._nonfinite_skips = getattr(self, "_nonfinite_skips", 0)

    def _setup_lr_schedule(self) -> None:
        """SB3's schedule of ``config.learning_rate``, with every value checked when it is read.

        A constant rate is checked by the config; a schedule (a callable) could return a negative rate (gradient
        ascent) or NaN at any point of a run, so each value SB3 reads is checked (:class:`CheckedSchedule`).
        """
        rate = self.config.learning_rate  # checked before SB3's FloatSchedule casts it (float(True) is 1.0)
        self.lr_schedule = FloatSchedule(CheckedSchedule(rate) if callable(rate) else float(rate))

    def _language_model(self) -> LanguageModel:
        """The env's model handle, else the one at the saved ``model_name_or_path``.

        Raises:
            ValueError: neither an env nor a saved model path.
        """
        if self.env is not None:
            return self.env.get_attr("lm")[0]
        if self.model_name_or_path is not None:
            return get_language_model(self.model_name_or_path)
        raise ValueError("An env (or a saved model path) is needed: the tokenizer and weights come from it.")

    def _setup_data_parallel(self) -> None:
        """Under several processes: shard the policy (and its own reference copy) with FSDP, or wrap it in DDP."""
        self._ddp = None  # the policy wrapped for data parallelism: gradients all-reduced in backward
        if is_distributed() and fsdp_requested(self.config.fsdp):  # sharded: parameters, gradients, optimizer state
            shard_module(self.policy, forward_methods=("evaluate_actions", "predict_values"))
            if self.ref_policy is not None and self.ref_policy.model is not None:  # its own copy: sharded too
                shard_module(self.ref_policy, forward_methods=("log_probs",))
            self.policy.optimizer = self.policy.make_optimizer(self.lr_schedule)  # over the shards
        elif is_distributed():
            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.policy, device_ids=device_ids, gradient_as_bucket_view=True)

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
        env = batched_multi_turn(maybe_make_env(env, self.verbose), self.rollout_size, self.verbose)
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
