"""TurnLimit: gymnasium's ``TimeLimit`` for multi-turn llm-gym envs, counting assistant turns."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import gymnasium.wrappers
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.monitor import Monitor

from llm_gym.envs.multiturn import is_multi_turn
from llm_gym.scoring import PerRowWrapper
from llm_gym.validation import check_int
from llm_gym.wrappers.terms import EpisodeEndTerm

__all__ = ["TurnLimit"]


def _check_below(env: gym.Env) -> None:
    """Raise ``ValueError`` when a layer of ``env`` would miss the episode ends that TurnLimit adds."""
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, (EpisodeEndTerm, Monitor)):
            name = type(layer).__name__
            raise ValueError(
                f"TurnLimit must sit inside {name}, not around it: a {name} below TurnLimit does not see the "
                f"episodes TurnLimit truncates (no term added, no episode recorded). Apply TurnLimit(env, "
                f"max_turns) first, then the reward wrappers, then Monitor.")
        layer = layer.env


class TurnLimit(PerRowWrapper, gymnasium.wrappers.TimeLimit):
    """Truncate a multi-turn episode after ``max_turns`` assistant turns, like gymnasium's ``TimeLimit``.

    One step of a :class:`~llm_gym.envs.multiturn.MultiTurnEnv` is one assistant turn, so this is
    :class:`gymnasium.wrappers.TimeLimit` counting ``info["turns"]``, with the info of the env's own
    ``max_turns`` truncation. When the turn that reaches the limit neither terminates nor ends the episode
    in the env, the step returns ``truncated=True`` and ``info`` gets ``truncated_by_turns=True``,
    ``accuracy=0.0`` (no final answer) and ``episode_reward_components`` (each component of
    ``info["reward_components"]`` summed over the episode's steps, as the env sums them). A turn that
    terminates at the limit stays ``terminated`` (``truncated=False``, unlike ``TimeLimit``), and an episode
    the env ends itself passes through unchanged, so a ``TurnLimit`` at or above the env's ``max_turns``
    changes nothing. Rewards are never changed.

    Differences from building the env with ``max_turns=n``: the env does not know about the limit, so its
    reply to the last turn is already in the terminal observation (masked out by ``assistant_mask``) and in
    ``info["env_message"]``, and its context budget is still sized for its own ``max_turns``.

    Place it right around the env: reward wrappers (:class:`~llm_gym.wrappers.RewardFunction`,
    :class:`~llm_gym.wrappers.LengthPenalty`, ...) and SB3's ``Monitor`` go outside it, so they see the
    episode end (the constructor rejects them inside). Stepping again after the limit raises, as the env
    does after its own end. ``env.spec`` records the wrapper (``gym.make(env.spec)`` rebuilds it), not
    ``max_episode_steps``.

    Args:
        env: A :class:`~llm_gym.envs.multiturn.MultiTurnEnv` (``"LLMToolMath-v0"``,
            ``"LLMGuessNumber-v0"``), possibly wrapped.
        max_turns: Most assistant turns per episode, an integer >= 1.

    Raises:
        ValueError: ``env`` is not multi-turn (use ``gymnasium.wrappers.TimeLimit``), ``max_turns`` is not an
            integer >= 1, or a reward wrapper or ``Monitor`` sits inside (below) it.

    Example:
        >>> env = LengthPenalty(TurnLimit(gym.make("LLMToolMath-v0"), max_turns=2), coef=0.1)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, max_turns: int):
        gym.utils.RecordConstructorArgs.__init__(self, max_turns=max_turns)
        if not is_multi_turn(env.observation_space):
            raise ValueError(
                f"TurnLimit counts the assistant turns of a multi-turn env (MultiTurnEnv: LLMToolMath-v0, "
                f"LLMGuessNumber-v0), got {type(env.unwrapped).__name__}. Use "
                f"gymnasium.wrappers.TimeLimit(env, max_episode_steps) for other envs.")
        limit = check_int("max_turns", max_turns, minimum=1, owner="TurnLimit")
        _check_below(env)
        super().__init__(env, max_episode_steps=limit)
        self._totals: dict[str, float] = {}
        self._ended = False

    @property
    def max_turns(self) -> int:
        """The effective limit: the smaller of this wrapper's ``max_turns`` and the env's (turns)."""
        return min(self._max_episode_steps, int(self.env.get_wrapper_attr("max_turns")))

    @property
    def spec(self) -> EnvSpec | None:
        """The env's spec with this wrapper in ``additional_wrappers`` (``Wrapper.spec``, not TimeLimit's)."""
        return gym.Wrapper.spec.fget(self)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the turn count (see :meth:`gymnasium.Env.reset`)."""
        self._totals, self._ended = {}, False
        return super().reset(seed=seed, options=options)

    def pre_step(self) -> None:
        """Refuse a step after this wrapper ended the episode (``step`` runs it before the env's step).

        Raises:
            RuntimeError: ``step`` after this wrapper ended the episode, before ``reset``.
        """
        if self._ended:
            raise RuntimeError(
                f"TurnLimit: the episode was truncated after {self._max_episode_steps} turns; call reset() "
                f"before step().")

    def post_step(self, obs: Any, reward: SupportsFloat, terminated: bool, truncated: bool, info: dict[str, Any]
                  ) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Count the turn; truncate when it is the ``max_turns``-th and the env did not end the episode.

        ``step(action)`` is ``post_step(*env.step(action))`` (after :meth:`pre_step`); a vector env calls it
        on each sub-env's own wrapper.

        Returns:
            ``(obs, reward, terminated, truncated, info)``; see the class docstring for the limit's info.
        """
        self._elapsed_steps += 1
        for name, value in info.get("reward_components", {}).items():
            self._totals[name] = self._totals.get(name, 0.0) + float(value)
        if not (terminated or truncated) and info.get("turns", self._elapsed_steps) >= self._max_episode_steps:
            truncated = True
            info = {**info, "truncated_by_turns": True, "accuracy": 0.0,
                    "episode_reward_components": dict(self._totals)}
        self._ended = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info
