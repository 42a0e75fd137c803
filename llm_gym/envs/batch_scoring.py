"""Batched reward scoring of a sequence-level rollout: each reward function called once for all N responses.

A sequence-level rollout steps N responses through a vector env, one ``env.step`` per response and
sub-env, so every reward function (and a reward model) would be called N times with a batch of one.
:func:`prime_sequence_rollout` scores the whole rollout first, layer by layer of the sub-envs' wrapper
stacks, with ONE call per reward function (the base env's :meth:`~llm_gym.envs.common.LLMEnvBase.score_batch`,
each episode-end wrapper's :meth:`~llm_gym.wrappers.reward._EpisodeEndTerm.terms`), and queues every row's
result in the layer that will step it. The envs are then stepped as usual: each layer uses its queued
result when the step's problem and response match and computes normally otherwise, so SB3's ``Monitor``,
the wrappers and ``info`` are exactly as without priming, and correctness never depends on it.

>>> problem_ids = np.repeat(draws, group_size)                      # doctest: +SKIP
>>> prime_sequence_rollout(vec_env, problem_ids, gen.response_ids.numpy())  # doctest: +SKIP
>>> for chunk ...: vec_env.set_options(...); vec_env.reset(); vec_env.step(response_ids[rows])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker
from stable_baselines3.common.monitor import Monitor

from llm_gym.envs.common import LLMEnvBase
from llm_gym.envs.sequence import SequenceEnv, _check_action
from llm_gym.rewards.base import CombinedReward
from llm_gym.wrappers.process import ProcessReward
from llm_gym.wrappers.reward import ClipReward, FormatReward, ScaleReward, _EpisodeEndTerm

__all__ = ["TRANSPARENT_WRAPPERS", "prime_sequence_rollout"]


#: Wrappers that change neither a step's reward nor the info the layers above read (``Monitor`` adds
#: ``info["episode"]``; ``ProcessReward`` only configures the base env). Matched by exact type.
TRANSPARENT_WRAPPERS: tuple[type, ...] = (Monitor, OrderEnforcing, PassiveEnvChecker, ProcessReward)


def _chain(env: gym.Env) -> list[gym.Env]:
    """The layers of a wrapper stack from the unwrapped env outward."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers[::-1]


def _kind(layer: gym.Env) -> str | None:
    """``"term"``, ``"transform"``, ``"transparent"``, or None for a layer this module does not understand."""
    if type(layer) in TRANSPARENT_WRAPPERS:
        return "transparent"
    if isinstance(layer, _EpisodeEndTerm) and type(layer).step is _EpisodeEndTerm.step:
        return "term"
    if isinstance(layer, (ScaleReward, ClipReward)) and type(layer).step is gym.RewardWrapper.step:
        return "transform"
    return None


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as a bool; False when the comparison raises or is ambiguous (arrays)."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an incomparable configuration is a different one
        return False


def _same_reward(a: CombinedReward, b: CombinedReward) -> bool:
    """The same reward: one object, or CombinedRewards of the same functions, weights and timeout."""
    if a is b:
        return True
    if type(a) is not type(b) or not isinstance(a, CombinedReward) or list(a.components) != list(b.components):
        return False
    return (all(a.components[k] is b.components[k] for k in a.components) and a.weights == b.weights
            and a.timeout == b.timeout)


def _same_base(a: LLMEnvBase, b: LLMEnvBase, problem_ids: np.ndarray) -> bool:
    """Whether ``a`` scores the rows of ``problem_ids`` exactly as ``b`` would."""
    if a is b:
        return True
    same = (type(a) is type(b) and a.lm is b.lm and a.max_new_tokens == b.max_new_tokens
            and _same_reward(a.reward, b.reward) and a.process_reward_fn is b.process_reward_fn
            and a.step_delimiter == b.step_delimiter and a.reward_timeout == b.reward_timeout
            and a.n_problems == b.n_problems)
    return same and all(a.prompts[k] == b.prompts[k] and a.problems[k] == b.problems[k]
                        for k in np.unique(problem_ids))


def _config(layer: gym.Env) -> dict[str, Any]:
    """A wrapper's public attributes, without ``env`` and callables it derives from the others.

    (``_saved_kwargs`` cannot be used: gymnasium deep-copies them, so a shared reward function is a copy.)
    """
    derived = {"env"} | ({"func"} if isinstance(layer, ClipReward) else set()) | (
        {"fn"} if isinstance(layer, FormatReward) else set())  # from (min, max) and (pattern, flags)
    return {k: v for k, v in vars(layer).items() if not k.startswith("_") and k not in derived}


def _same_layer(a: gym.Env, b: gym.Env) -> bool:
    """The same object, or the same wrapper class with equal configuration (functions compared by identity)."""
    return a is b or (type(a) is type(b) and _equal(_config(a), _config(b)))


def _checked_rows(base: SequenceEnv, problem_ids: Any, response_ids: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(problem_ids (N,), response_ids (N, T) int64)`` checked as ``step`` checks them, or None if invalid.

    Raises:
        ValueError: ``response_ids`` is not 2-D with one row per problem id (a caller bug).
    """
    pids = np.asarray(problem_ids).reshape(-1)
    ids = np.asarray(response_ids)
    if ids.ndim != 2 or ids.shape[0] != pids.shape[0]:
        raise ValueError(f"prime_sequence_rollout needs (N, T) response ids with N = len(problem_ids) = "
                         f"{pids.shape[0]}, got shape {ids.shape}.")
    try:
        rows = [_check_action(row, base.max_new_tokens, base.lm.vocab_size) for row in ids]
    except ValueError:
        return None  # the step will raise its usual error
    if not np.issubdtype(pids.dtype, np.integer) or np.any((pids < 0) | (pids >= base.n_problems)):
        return None
    empty = np.zeros((0, base.max_new_tokens), dtype=np.int64)
    return pids.astype(np.int64), np.stack(rows) if rows else empty


def _clear(chains: list[list[gym.Env]]) -> None:
    """Empty every queue of the understood layers of every sub-env."""
    for chain in chains:
        for layer in chain:
            if isinstance(layer, (LLMEnvBase, _EpisodeEndTerm)):
                queue = layer._primed if isinstance(layer, LLMEnvBase) else layer._primed_terms
                queue.clear()


def _prime_base(chains: list[list[gym.Env]], owners: np.ndarray, pids: np.ndarray, ids: np.ndarray
                ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Score every row once with sub-env 0's base env and queue each sub-env's rows in its base env."""
    rewards, infos = chains[0][0].score_batch(pids, ids)
    for i, chain in enumerate(chains):
        rows = np.flatnonzero(owners == i)
        chain[0].prime_scores(pids[rows], ids[rows], rewards[rows], [infos[r] for r in rows])
    return rewards, infos


def _prime_term(layers: list[_EpisodeEndTerm], owners: np.ndarray, rewards: np.ndarray,
                infos: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One ``terms`` call of sub-env 0's wrapper for every row; queue each sub-env's rows; apply the terms.

    Raises:
        ValueError: ``terms`` returned a number of values other than the number of rows.
    """
    layer = layers[0]
    values = [float(v) for v in layer.terms(infos)]
    if len(values) != len(infos):
        raise ValueError(f"{type(layer).__name__}.terms returned {len(values)} values for {len(infos)} rows.")
    keys = [layer.prime_key(info) for info in infos]
    for i, wrapper in enumerate(layers):
        rows = np.flatnonzero(owners == i)
        wrapper.prime_terms([keys[r] for r in rows], [values[r] for r in rows])
    applied = [layer.apply_term(reward, info, value) for reward, info, value in zip(rewards, infos, values, strict=True)]
    return np.array([reward for reward, _ in applied], dtype=np.float64), [info for _, info in applied]


def _prime_layers(chains: list[list[gym.Env]], owners: np.ndarray, pids: np.ndarray, ids: np.ndarray) -> None:
    """Prime the base env, then every understood wrapper outward, until the first one not understood."""
    rewards, infos = _prime_base(chains, owners, pids, ids)
    for depth in range(1, len(chains[0])):
        layers = [chain[depth] for chain in chains]
        kind = _kind(layers[0])
        if kind is None or (kind != "transparent" and not all(_same_layer(layers[0], o) for o in layers[1:])):
            return  # this layer and the ones outside it compute per step, as without priming
        if kind == "term":
            rewards, infos = _prime_term(layers, owners, rewards, infos)
        elif kind == "transform":
            rewards = np.array([layers[0].reward(r) for r in rewards], dtype=np.float64)


def prime_sequence_rollout(vec_env: Any, problem_ids: np.ndarray, response_ids: np.ndarray) -> bool:
    """Score a sequence-level rollout with each reward function called once and queue the results.

    Row ``r`` will be stepped on sub-env ``r % num_envs``, rows in order (chunks of ``num_envs`` rows reset
    to their problems, then ``vec_env.step(response_ids[chunk])``). Each sub-env's wrapper stack is walked
    from the unwrapped env outward and every layer understood here is computed ONCE for all N rows, with
    sub-env 0's objects, and primed in every sub-env with its rows:

    - the base env, a :class:`~llm_gym.envs.sequence.SequenceEnv`: :meth:`~llm_gym.envs.common.LLMEnvBase.score_batch`
      then :meth:`~llm_gym.envs.common.LLMEnvBase.prime_scores`;
    - episode-end wrappers (:class:`~llm_gym.wrappers.RewardFunction`, ``RewardModel``, ``FormatReward``,
      ``LengthPenalty``, ``OverlongPenalty``): ``terms`` then ``prime_terms``;
    - :class:`~llm_gym.wrappers.ScaleReward` / :class:`~llm_gym.wrappers.ClipReward`: applied to the running
      rewards (nothing to queue);
    - SB3's ``Monitor``, gymnasium's ``OrderEnforcing`` and ``PassiveEnvChecker``, and
      :class:`~llm_gym.wrappers.ProcessReward`: nothing to do.

    The walk stops at the first other layer, or a term or transform configured differently across sub-envs:
    it and the layers outside it compute per step as without priming (still correct). Queues left over
    from an earlier call are dropped first. A queued result is used only when the step's problem and
    response match it, so priming rows that are then stepped differently costs time, never correctness.

    Args:
        vec_env: An SB3 ``VecEnv`` with ``.envs`` (``DummyVecEnv``, :class:`~llm_gym.envs.vector.GroupVecEnv`,
            or a ``VecEnvWrapper`` around one).
        problem_ids: ``(N,)`` int, the problem each row's sub-env will be reset to.
        response_ids: ``(N, T)`` int64 actions, right-padded as ``SequenceEnv`` takes them.

    Returns:
        True when at least the base envs were primed; False (nothing primed) for a vec env without ``.envs``
        (``SubprocVecEnv``), token-level envs, sub-envs whose wrapper stacks differ in layer types or whose
        base envs score differently (another reward, process function, model handle or problem set), or
        rows that ``step`` would reject (it then raises its usual error).

    Raises:
        ValueError: ``response_ids`` is not ``(N, T)`` with ``N = len(problem_ids)``.
        RewardFunctionError: a reward function failed (as ``step`` would); nothing stays primed.
    """
    envs = getattr(vec_env, "envs", None)
    if not envs:
        return False
    chains = [_chain(env) for env in envs]
    base = chains[0][0]
    if not isinstance(base, SequenceEnv) or any([type(x) for x in c] != [type(x) for x in chains[0]] for c in chains):
        return False
    checked = _checked_rows(base, problem_ids, response_ids)
    if checked is None:
        return False
    pids, ids = checked
    owners = np.arange(pids.shape[0]) % len(chains)
    if not all(_same_base(base, chain[0], pids[owners == i]) for i, chain in enumerate(chains)):
        return False
    _clear(chains)
    try:
        _prime_layers(chains, owners, pids, ids)
    except BaseException:
        _clear(chains)
        raise
    return True
