"""The batched forms an env stack declares, and :func:`compose`, which reads them once from a stack.

A single-env stack (``ClipReward(LengthPenalty(RewardFunction(SequenceEnv)))``) steps one episode: each
layer calls the one inside it. A vector env steps ``N`` episodes and wants each reward function called
ONCE for all of them (the SB3 ``VecNormalize`` / Gymnasium 1.x vector-wrapper idiom: batch work lives at
the vector level). So every layer declares a batched form, and its single-env ``step`` runs that same form
with a batch of one:

- :class:`BatchedEnv` (the llm-gym envs): ``begin_step`` (per episode, no reward function called),
  ``score_pending`` (all pending steps at once) and ``finish_step`` (per episode).
- :class:`BatchedRewardWrapper` (the reward wrappers): ``rewards_batch(rewards (n,), infos, ended (n,))``.
- :class:`PerRowWrapper` (e.g. :class:`~llm_gym.wrappers.TurnLimit`): per-episode state, no reward function;
  ``post_step`` runs per row on the inner step's result.
- Pass-through layers, whose ``step`` only forwards (``gym.Wrapper``'s own ``step``; gymnasium's
  ``OrderEnforcing`` and ``PassiveEnvChecker``, whose checks the vector env makes itself).

Any other layer (a user's ``gym.Wrapper`` overriding ``step``, SB3's ``Monitor``) has no batched form:
:func:`compose` makes the outermost such layer the pipeline's *core*, stepped per row as before (it and
everything inside it run once per episode), and warns once per class.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker

__all__ = ["BatchedEnv", "BatchedRewardWrapper", "PerRowWrapper", "Pipeline", "compose", "layer_kind"]

#: Gymnasium wrappers that ``gym.make`` adds and whose ``step`` only checks: passed through by the vector env.
PASS_THROUGH: tuple[type, ...] = (OrderEnforcing, PassiveEnvChecker)

_WARNED: set[type] = set()


class BatchedEnv(gym.Env):
    """An env whose ``step`` is split so a vector env can score many episodes in one call.

    ``step(action)`` is ``finish_step(p, score_pending([p])[0])`` with ``p = begin_step(action)``: a batch of
    one. A vector env calls ``begin_step`` on each sub-env, ``score_pending`` ONCE (on one sub-env, for all
    of them: it must read only the sub-env's configuration, never its current episode) and ``finish_step``
    on each sub-env. Subclasses implement the three methods and do not override ``step``.
    """

    def begin_step(self, action: Any) -> Any:
        """Advance the episode by ``action`` without calling any reward function; return what to score."""
        raise NotImplementedError

    def score_pending(self, pending: Sequence[Any]) -> list[Any]:
        """Score ``n`` pending steps (of this env or of equal envs), each reward function called once."""
        raise NotImplementedError

    def finish_step(self, pending: Any, score: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Finish this env's pending step with its score: ``(obs, reward, terminated, truncated, info)``."""
        raise NotImplementedError

    def scoring_key(self) -> Any:
        """What ``score_pending`` depends on; envs with equal keys are scored together (default: this one only)."""
        return type(self), id(self)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """One step: :meth:`begin_step`, :meth:`score_pending` on a batch of one, :meth:`finish_step`.

        Raises:
            ValueError: ``score_pending`` did not return one score.
        """
        pending = self.begin_step(action)
        scores = self.score_pending([pending])
        if len(scores) != 1:
            raise ValueError(f"{type(self).__name__}.score_pending returned {len(scores)} scores for 1 pending "
                             f"step; it must return one per pending step.")
        return self.finish_step(pending, scores[0])


class BatchedRewardWrapper(gym.Wrapper):
    """A reward wrapper whose change to the reward is declared for a whole batch: :meth:`rewards_batch`.

    ``step`` applies ``rewards_batch`` to a batch of one; a vector env applies it once to all its rows (the
    Gymnasium ``VectorRewardWrapper`` idiom). Subclasses implement :meth:`rewards_batch` (and
    :meth:`scoring_key`, so equal wrappers of different sub-envs score together) and do not override ``step``.
    """

    def rewards_batch(self, rewards: np.ndarray, infos: list[dict[str, Any]], ended: np.ndarray
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The new ``(rewards (n,), infos)`` of ``n`` steps.

        Args:
            rewards: ``(n,)`` float64, the rewards of the env inside.
            infos: ``n`` infos (not to be mutated: return changed copies).
            ended: ``(n,)`` bool, True where the step ends its episode (terminated or truncated).
        """
        raise NotImplementedError

    def scoring_key(self) -> Any:
        """What :meth:`rewards_batch` depends on (its configuration); default: this wrapper only."""
        return type(self), id(self)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env, then :meth:`rewards_batch` on a batch of one."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        rewards, infos = checked_rewards(self, np.array([float(reward)], dtype=np.float64), [info],
                                         np.array([bool(terminated or truncated)]))
        return obs, float(rewards[0]), terminated, truncated, infos[0]


def checked_rewards(layer: BatchedRewardWrapper, rewards: np.ndarray, infos: list[dict[str, Any]],
                    ended: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``layer.rewards_batch(rewards, infos, ended)`` as ``((n,) float64, n infos)``.

    Raises:
        ValueError: it did not return ``n`` rewards and ``n`` infos (names the layer).
    """
    out = layer.rewards_batch(rewards, infos, ended)
    new_rewards, new_infos = out if isinstance(out, tuple) and len(out) == 2 else (None, None)
    new_rewards = None if new_rewards is None else np.asarray(new_rewards, dtype=np.float64).reshape(-1)
    if new_rewards is None or new_infos is None or len(new_rewards) != len(rewards) or len(new_infos) != len(infos):
        raise ValueError(f"{type(layer).__name__}.rewards_batch must return (rewards, infos) with one reward and "
                         f"one info per row ({len(rewards)} rows), got {out!r:.200}.")
    return new_rewards, list(new_infos)


class PerRowWrapper(gym.Wrapper):
    """A wrapper with per-episode state and no reward function: ``step`` is ``post_step(inner step)``.

    A vector env calls :meth:`pre_step` and :meth:`post_step` on each sub-env's own wrapper around the
    batched inner steps. Subclasses implement them and do not override ``step``.
    """

    def pre_step(self) -> None:
        """Checks before the inner step (e.g. raise when the episode already ended); default none."""

    def post_step(self, obs: Any, reward: SupportsFloat, terminated: bool, truncated: bool, info: dict[str, Any]
                  ) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """This layer's ``(obs, reward, terminated, truncated, info)`` from the inner step's."""
        raise NotImplementedError

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """:meth:`pre_step`, the inner step, then :meth:`post_step`."""
        self.pre_step()
        return self.post_step(*self.env.step(action))


def layer_kind(layer: gym.Env) -> str:
    """How a vector env steps ``layer``: ``"env"``, ``"batched"``, ``"row"``, ``"pass"`` or ``"unbatched"``.

    ``"env"``: a :class:`BatchedEnv` (not a wrapper); ``"batched"``: a :class:`BatchedRewardWrapper`;
    ``"row"``: a :class:`PerRowWrapper`; ``"pass"``: a wrapper whose ``step`` only forwards. A subclass that
    overrides ``step`` loses its batched form (its own ``step`` must run): ``"unbatched"``.
    """
    step = type(layer).step
    if not isinstance(layer, gym.Wrapper):
        return "env" if isinstance(layer, BatchedEnv) and step is BatchedEnv.step else "unbatched"
    if isinstance(layer, BatchedRewardWrapper) and step is BatchedRewardWrapper.step:
        return "batched"
    if isinstance(layer, PerRowWrapper) and step is PerRowWrapper.step:
        return "row"
    if step is gym.Wrapper.step or type(layer) in PASS_THROUGH:
        return "pass"
    return "unbatched"


class Pipeline(NamedTuple):
    """One env stack read by :func:`compose`.

    Attributes:
        core: The layer stepped per row: the base :class:`BatchedEnv` when every layer has a batched form
            (then ``core_batched``), else the outermost layer without one (its ``step`` is called).
        core_batched: Whether ``core`` is a :class:`BatchedEnv` stepped in its three parts.
        layers: The layers outside ``core`` that act on a step, innermost first: ``(kind, layer)`` with
            ``kind`` ``"batched"`` or ``"row"`` (pass-through layers are left out).
        key: Equal keys = stacks that score alike (core key, then each layer's).
    """

    core: gym.Env
    core_batched: bool
    layers: list[tuple[str, gym.Env]]
    key: tuple


def _warn_unbatched(layer: gym.Env) -> None:
    """One ``UserWarning`` per class: ``layer`` has no batched form, so it is stepped per row."""
    cls = type(layer)
    if cls in _WARNED:
        return
    _WARNED.add(cls)
    warnings.warn(
        f"{cls.__name__} has no batched form, so a vector env steps it once per episode (row): it and every "
        f"layer inside it run per row, and the reward functions inside it are called once per response "
        f"instead of once per batch. For one call per batch, make a reward wrapper a "
        f"llm_gym.scoring.BatchedRewardWrapper (implement rewards_batch, do not override step), put "
        f"episode statistics at the vector level (make_group_vec_env(..., monitor=True), not Monitor per env), "
        f"or leave such layers out.", UserWarning, stacklevel=3)


def compose(env: gym.Env) -> Pipeline:
    """Read an env stack once (at construction) into a :class:`Pipeline`.

    Args:
        env: A gymnasium env, possibly wrapped.

    Returns:
        The pipeline. A layer without a batched form (and a base env that is not a :class:`BatchedEnv`) is
        reported once per class with a ``UserWarning``.
    """
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    kinds = [layer_kind(layer) for layer in chain]
    core_at = kinds.index("unbatched") if "unbatched" in kinds else len(chain) - 1
    core, core_batched = chain[core_at], kinds[core_at] == "env"
    if not core_batched:
        _warn_unbatched(core)
    layers = [(kinds[i], chain[i]) for i in range(core_at - 1, -1, -1) if kinds[i] in ("batched", "row")]
    core_key = core.scoring_key() if core_batched else ("per-row step", type(core))
    key = (core_key, *((kind, layer.scoring_key() if kind == "batched" else type(layer)) for kind, layer in layers))
    return Pipeline(core, core_batched, layers, key)
