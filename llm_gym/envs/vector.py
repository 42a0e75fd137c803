"""Vector envs that score once per vector step: :class:`GroupVecEnv` (waves) and :class:`SequenceVecEnv`.

Both call a :class:`~llm_gym.scoring.ResponseScorer` ONCE per vector step, so each reward function, reward
model, process reward function and episode-end term sees all the rows whose episodes end on that step in
one call (the ``VecNormalize`` idiom: batch work at the vector level), and keep SB3 ``Monitor``'s episode
statistics themselves (``monitor=True``).

:class:`GroupVecEnv`: N llm-gym envs sharing one model handle, reset in groups, stepped in synchronous waves.
Differences from SB3's ``DummyVecEnv``:

- **No automatic reset.** A sub-env whose episode ended is not stepped again and is not reset: until
  the next ``reset()`` / ``reset_groups()`` of the whole vector env, ``step`` returns its terminal
  observation, reward 0.0, ``done=False`` and ``info={"waiting": True}`` for it (the action given for it
  is ignored). The step where its episode ends returns ``done=True`` with ``info["terminal_observation"]``
  as in SB3. Reason: a token-level policy samples all N sequences as one batch with one KV cache; the
  batch (a *wave*) ends when every sequence has ended, and the next wave starts on problems the
  algorithm chooses (G consecutive sub-envs on one problem for group sampling), not on whatever an
  automatic reset would draw. :attr:`GroupVecEnv.active` tells which sequences still run and
  :attr:`GroupVecEnv.all_done` when the wave is over.
- **One model handle.** All sub-envs must hold the same :class:`~llm_gym.lm.LanguageModel` object
  (``get_language_model`` caches handles, so the same ``model=`` argument is enough).
- **One scorer per group of equal sub-envs.** At construction the sub-envs' stacks are read once
  (:func:`~llm_gym.scoring.compose`); sub-envs whose stacks score alike (same reward functions, wrappers,
  problems) share a scorer, so a step calls each function once for all of them.
- :meth:`GroupVecEnv.reset_groups` resets sub-env i on ``problem_ids[i]``.

:class:`SequenceVecEnv`: N rows of one-step sequence episodes over ONE env stack (a sequence-level episode
is a pure function of the problem and the response), as ``DummyVecEnv`` with automatic resets. It is what
the algorithms build from a single ``SequenceEnv`` (:func:`sequence_vec_env_like`), so a rollout of N
responses is scored in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from llm_gym.envs.sequence import SequenceEnv, check_action
from llm_gym.envs.vec_base import RowVecEnv
from llm_gym.scoring import ResponseScorer, compose

__all__ = ["GroupVecEnv", "SequenceVecEnv", "group_vec_env_like", "make_group_vec_env", "sequence_vec_env_like"]


class GroupVecEnv(RowVecEnv):
    """A batched, group-aware vector env over N llm-gym envs that share one model handle.

    See the module docstring for the wave semantics (no automatic reset). A step begins every active
    sub-env's step (:meth:`~llm_gym.scoring.BatchedEnv.begin_step`), scores them with one call per reward
    function per group of equal sub-envs (:meth:`~llm_gym.scoring.ResponseScorer.step`), and finishes them;
    a sub-env layer without a batched form is stepped per row (with a one-time warning).

    Args:
        env_fns: N callables, each returning a new env (optionally wrapped).
        monitor: Keep SB3 ``Monitor``'s episode statistics (``info["episode"]``) at the vector level, for
            sub-envs without a ``Monitor`` of their own.

    Attributes:
        scorers: One :class:`~llm_gym.scoring.ResponseScorer` per group of sub-envs that score alike.
        groups: The sub-env indices of each scorer's group.

    Raises:
        ValueError: no env, the same instance returned twice, or sub-envs holding different
            ``LanguageModel`` handles.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], monitor: bool = False):
        if not env_fns:
            raise ValueError("GroupVecEnv needs at least one env_fn.")
        envs = [fn() for fn in env_fns]
        if len({id(env.unwrapped) for env in envs}) != len(envs):
            raise ValueError("The env_fns returned the same env instance more than once: each must build a new env.")
        handles = {id(env.unwrapped.lm) for env in envs if hasattr(env.unwrapped, "lm")}
        if len(handles) > 1:
            raise ValueError(
                f"The {len(envs)} sub-envs hold {len(handles)} different LanguageModel handles; they must "
                f"share one. Build them with the same model= (get_language_model caches handles) or pass the "
                f"handle itself as model=."
            )
        super().__init__(envs, monitor)
        self.groups = _groups(envs)
        self.scorers = [ResponseScorer([envs[i] for i in group]) for group in self.groups]
        self._active = np.zeros(self.num_envs, dtype=bool)

    @property
    def active(self) -> np.ndarray:
        """``(N,)`` bool, True while sub-env i's episode runs (a copy)."""
        return self._active.copy()

    @property
    def all_done(self) -> bool:
        """True when no sub-env's episode runs (the wave is over, or no reset happened yet)."""
        return not self._active.any()

    def reset(self) -> VecEnvObs:
        """Reset every sub-env (with the seeds and options set by :meth:`seed` / :meth:`set_options`).

        Returns:
            The observations, a dict of ``(N, *shape)`` arrays. Every sub-env becomes active.
        """
        obs = super().reset()
        self._active[:] = True
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        """Step the active sub-envs; finished ones return their terminal obs, 0.0, False, ``{"waiting": True}``.

        Returns:
            ``(obs, rewards (N,), dones (N,), infos)``.

        Raises:
            RuntimeError: ``step`` before the first ``reset`` / ``reset_groups``.
        """
        if not self._started:
            raise RuntimeError("Call reset() or reset_groups() before step().")
        results: dict[int, tuple] = {}
        for group, scorer in zip(self.groups, self.scorers, strict=True):
            rows = [s for s, i in enumerate(group) if self._active[i]]  # indices into the group's stacks
            if rows:
                batch = scorer.step(rows, [self.actions[group[s]] for s in rows])
                results |= {group[s]: batch.row(r) for r, s in enumerate(rows)}
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            if not self._active[i]:
                infos.append({"waiting": True})
                continue
            infos.append(self._record(i, results[i], rewards, dones))
            self._active[i] = not dones[i]
        return self._obs_from_buf(), rewards, dones, deepcopy(infos)


def _groups(envs: Sequence[gym.Env]) -> list[list[int]]:
    """The indices of the envs whose stacks score alike (equal :func:`~llm_gym.scoring.compose` keys), in order."""
    keys = [compose(env).key for env in envs]
    groups: list[list[int]] = []
    for i, key in enumerate(keys):
        for group in groups:
            if keys[group[0]] == key:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


class SequenceVecEnv(RowVecEnv, DummyVecEnv):
    """N rows of one-step sequence episodes over one env stack, scored with one call per vector step.

    A sequence-level episode is a pure function of its problem and response, so one
    :class:`~llm_gym.envs.sequence.SequenceEnv` stack serves every row: a reset of row ``i`` resets the
    stack (through all its wrappers) and records the row's problem and prompt; a step scores the ``N``
    responses with the stack's :class:`~llm_gym.scoring.ResponseScorer` (each reward function, reward model,
    process reward function and episode-end term called once), exactly as ``N`` separate ``env.step`` calls
    would. As in SB3's ``DummyVecEnv``, a row is reset automatically after its episode ends (without
    options: the env draws a problem), with ``info["terminal_observation"]``; with ``monitor=True`` the
    vector env adds ``Monitor``'s ``info["episode"]``. ``envs`` lists the one stack ``N`` times. It stands
    for one env (:attr:`steps_of_one_env`): the algorithms report its rows to callbacks as ``N`` steps of a
    single env, as SB3 does (``CheckpointCallback(save_freq)`` and ``EvalCallback(eval_freq)`` count
    responses). It is a ``DummyVecEnv`` (every method is :class:`~llm_gym.envs.vec_base.RowVecEnv`'s), so SB3
    tools that compare env types (``EvalCallback``) see what they saw for a single env.

    Args:
        env: A sequence-level llm-gym env, possibly wrapped, whose every layer has a batched form.
        n_envs: N, the rows (``n_prompts * group_size`` for one rollout per step).
        monitor: Keep SB3 ``Monitor``'s episode statistics at the vector level.

    Raises:
        ValueError: ``n_envs < 1``, not a ``SequenceEnv``, or a layer without batched form (use SB3's
            ``DummyVecEnv``, which steps it per row).
    """

    steps_of_one_env = True

    def __init__(self, env: gym.Env, n_envs: int, monitor: bool = True):
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"SequenceVecEnv: n_envs must be an integer >= 1, got {n_envs!r}.")
        if not isinstance(env.unwrapped, SequenceEnv):
            raise ValueError(f"SequenceVecEnv serves one-step episodes of a SequenceEnv, got "
                             f"{type(env.unwrapped).__name__}; use make_group_vec_env for other envs.")
        self.scorer = ResponseScorer.from_env(env)
        if self.scorer.base is None or any(kind == "row" for kind, _ in self.scorer.pipelines[0].layers):
            raise ValueError("SequenceVecEnv: a layer of the env stack has no batched form, so it must be stepped "
                             "per row; use SB3's DummyVecEnv (or make_group_vec_env) for this env.")
        super().__init__([env] * int(n_envs), monitor)
        self.problem_ids = np.zeros(self.num_envs, dtype=np.int64)

    def _reset_row(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        super()._reset_row(i, seed, options)
        self.problem_ids[i] = self.envs[i].unwrapped.problem_id

    def step_wait(self) -> VecEnvStepReturn:
        """Score the N responses in one call, then reset every row (its episode ended).

        Returns:
            ``(obs, rewards (N,), dones (N,) all True, infos)``; each info has ``terminal_observation``.

        Raises:
            RuntimeError: ``step`` before the first ``reset``.
            ValueError: an action of the wrong shape or with a token id outside the vocabulary.
            RewardFunctionError: a reward function failed (names it).
        """
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        base = self.scorer.base
        ids = np.stack([check_action(a, base.max_new_tokens, base.lm.vocab_size) for a in self.actions])
        scored = self.scorer.score_batch(self.problem_ids, ids)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos = []
        for i in range(self.num_envs):
            obs = {key: self.buf_obs[key][i].copy() for key in self.keys}  # the prompt, as SequenceEnv.step
            infos.append(self._record(i, (obs, float(scored.rewards[i]), True, False, scored.infos[i]), rewards,
                                      dones))
            self._reset_row(i)
        return self._obs_from_buf(), rewards, dones, deepcopy(infos)


def make_group_vec_env(env_id: str, n_envs: int, monitor: bool = True,
                       wrapper_class: Callable[..., gym.Env] | None = None, wrapper_kwargs: dict | None = None,
                       **env_kwargs: Any) -> GroupVecEnv:
    """Build a :class:`GroupVecEnv` of ``n_envs`` ``gym.make(env_id, **env_kwargs)`` envs on one handle.

    The first env is built with ``env_kwargs``; the others get its ``LanguageModel`` as ``model=``, so
    the tokenizer (and weights, once loaded) exist once.

    Args:
        env_id: a registered id, e.g. ``"LLMMathToken-v0"`` or ``"LLMMath-v0"``.
        n_envs: N, the number of sub-envs (``n_prompts x group_size`` for one wave).
        monitor: keep SB3 ``Monitor``'s episode statistics (episode return and length in ``info["episode"]``),
            at the vector level.
        wrapper_class: applied to each sub-env as ``wrapper_class(env, **wrapper_kwargs)``, as in SB3's
            ``make_vec_env``; e.g. ``llm_gym.wrappers.TurnLimit``.
        wrapper_kwargs: keyword arguments of ``wrapper_class``.
        **env_kwargs: passed to ``gym.make``.

    Returns:
        The vector env (not reset yet).

    Raises:
        ValueError: ``n_envs < 1``.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}.")
    first = gym.make(env_id, **env_kwargs)
    shared = {**env_kwargs, "model": first.unwrapped.lm}

    def _wrap(env: gym.Env) -> gym.Env:
        return env if wrapper_class is None else wrapper_class(env, **(wrapper_kwargs or {}))

    env_fns: list[Callable[[], gym.Env]] = [lambda: _wrap(first)]
    env_fns += [lambda: _wrap(gym.make(env_id, **shared)) for _ in range(n_envs - 1)]
    return GroupVecEnv(env_fns, monitor=monitor)


#: Wrappers ``gym.make`` adds by itself: an env wrapped only in these is rebuilt exactly from its spec.
_MAKE_WRAPPERS = (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)


def group_vec_env_like(env: gym.Env, n_envs: int, monitor: bool = True) -> GroupVecEnv | None:
    """A :class:`GroupVecEnv` of ``n_envs`` copies of ``env`` (``env`` itself is the first), or None.

    Multi-turn rollouts sample the next turn of every episode in one batch, which needs one sub-env per
    episode. A user who passes one env made with ``gym.make(env_id, **kwargs)`` gets the same result as
    :func:`make_group_vec_env` ``(env_id, n_envs, **kwargs)``: the other copies are built from ``env.spec``
    with ``env``'s model handle, wrappers that record their arguments (llm-gym's and gymnasium's, e.g.
    ``TurnLimit``) included. When ``env`` has no spec (built from the class) or carries a wrapper the spec
    cannot rebuild (e.g. SB3's ``Monitor``), None is returned and the caller keeps the single env.

    Args:
        env: a gymnasium env (not a VecEnv).
        n_envs: sub-envs wanted, >= 1.
        monitor: keep SB3 ``Monitor``'s episode statistics at the vector level.

    Returns:
        The vector env (not reset), or None.
    """
    try:
        spec = env.spec  # with the wrappers that record their arguments (gymnasium's additional_wrappers)
    except Exception:  # noqa: BLE001 - a wrapper that cannot be described: no spec
        spec = None
    if spec is None or n_envs < 1:
        return None
    model = env.unwrapped.lm

    def _copy() -> gym.Env:
        return gym.make(spec, model=model)

    try:
        if n_envs > 1 and _wrapper_chain(_copy()) != _wrapper_chain(env):  # a wrapper the spec did not rebuild
            return None
    except ValueError:  # gymnasium: a wrapper that does not record its arguments cannot be recreated
        return None
    env_fns: list[Callable[[], gym.Env]] = [lambda: env]
    env_fns += [_copy for _ in range(n_envs - 1)]
    return GroupVecEnv(env_fns, monitor=monitor)


def sequence_vec_env_like(env: gym.Env, n_envs: int, monitor: bool = True) -> SequenceVecEnv | None:
    """The :class:`SequenceVecEnv` of ``n_envs`` rows over ``env``, or None when ``env`` cannot serve one.

    What an algorithm trains a single sequence-level env through: one vector step scores a whole rollout of
    ``n_envs = n_prompts * group_size`` responses with one call per reward function. None (the caller keeps
    the single env, stepped per response through SB3's ``Monitor`` + ``DummyVecEnv`` as before) when ``env``
    is not a ``SequenceEnv`` or one of its layers has no batched form (reported once by a ``UserWarning``).

    Args:
        env: a gymnasium env (not a VecEnv).
        n_envs: rows wanted, >= 1.
        monitor: keep SB3 ``Monitor``'s episode statistics at the vector level.
    """
    if n_envs < 1 or not isinstance(getattr(env, "unwrapped", None), SequenceEnv):
        return None
    pipeline = compose(env)
    if not pipeline.core_batched or any(kind == "row" for kind, _ in pipeline.layers):
        return None
    return SequenceVecEnv(env, n_envs, monitor=monitor)


def _wrapper_chain(env: gym.Env) -> list[type]:
    """The classes of ``env``'s wrappers, outermost first, without the ones ``gym.make`` adds itself."""
    chain = []
    while isinstance(env, gym.Wrapper):
        if not isinstance(env, _MAKE_WRAPPERS):
            chain.append(type(env))
        env = env.env
    return chain
