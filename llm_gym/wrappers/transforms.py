"""Per-step transforms: :class:`ScaleReward` and :class:`ClipReward` act on every step's reward.

Each declares its batched form (``rewards_batch``: the same arithmetic on a ``(n,)`` float64 array), which
``step`` runs on a batch of one and a vector env once per vector step.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import gymnasium.wrappers
import numpy as np

from llm_gym.scoring import BatchedRewardWrapper
from llm_gym.wrappers.terms import finite

__all__ = ["ClipReward", "ScaleReward"]


class ScaleReward(BatchedRewardWrapper, gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Multiply every step's reward by ``scale`` (intermediate token rewards included).

    ``info`` is unchanged: ``info["reward_components"]`` keeps the unscaled terms. On a multi-turn env
    every turn's reward is scaled, so the episode's return is scaled by ``scale``.

    Args:
        env: Any env (an llm-gym env, possibly wrapped).
        scale: Finite multiplier (may be negative or 0).

    Raises:
        ValueError: ``scale`` not finite.

    Example:
        >>> env = ScaleReward(LengthPenalty(gym.make("LLMMath-v0"), coef=0.1), 2.0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, scale: float):
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.Wrapper.__init__(self, env)
        self.scale = finite(scale, "ScaleReward scale")

    def reward(self, reward: SupportsFloat) -> float:
        """``scale * reward`` for one reward."""
        return self.scale * float(reward)

    def rewards_batch(self, rewards: np.ndarray, infos: list[dict[str, Any]], ended: np.ndarray
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``scale * rewards`` for every row, ``(n,)`` float64; ``infos`` unchanged."""
        return self.scale * np.asarray(rewards, dtype=np.float64), infos

    def scoring_key(self) -> tuple:
        """``(ScaleReward, scale)``."""
        return type(self), self.scale


class ClipReward(BatchedRewardWrapper, gymnasium.wrappers.ClipReward):
    """Clip every step's reward to ``[min_reward, max_reward]`` (intermediate token rewards included).

    Gymnasium's :class:`gymnasium.wrappers.ClipReward` with scalar bounds, checked with a ``ValueError``,
    and a Python ``float`` reward. On a token env intermediate steps pay 0.0, so a ``min_reward > 0`` (or
    ``max_reward < 0``) changes them too. On a multi-turn env each turn's reward is clipped, not the
    episode's return (three tool costs of -0.5 clipped at -1 still sum to -1.5). ``info`` is unchanged.

    Args:
        env: Any env (an llm-gym env, possibly wrapped).
        min_reward: Lower bound, or ``None`` for none.
        max_reward: Upper bound, or ``None`` for none.

    Raises:
        ValueError: Both bounds ``None``, a bound not finite, or ``min_reward > max_reward``.

    Example:
        >>> env = ClipReward(RewardModel(gym.make("LLMMath-v0"), my_scorer), -1.0, 1.0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, min_reward: float | None = None, max_reward: float | None = None):
        if min_reward is None and max_reward is None:
            raise ValueError("ClipReward needs min_reward or max_reward (or both); got neither.")
        low = None if min_reward is None else finite(min_reward, "ClipReward min_reward")
        high = None if max_reward is None else finite(max_reward, "ClipReward max_reward")
        if low is not None and high is not None and low > high:
            raise ValueError(f"ClipReward: min_reward={low:g} is larger than max_reward={high:g}; swap them.")
        super().__init__(env, low, high)
        self.min_reward, self.max_reward = low, high

    def reward(self, reward: SupportsFloat) -> float:
        """``reward`` clipped to ``[min_reward, max_reward]`` for one reward."""
        return float(np.clip(float(reward), self.min_reward, self.max_reward))

    def rewards_batch(self, rewards: np.ndarray, infos: list[dict[str, Any]], ended: np.ndarray
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Every row's reward clipped to ``[min_reward, max_reward]``, ``(n,)`` float64; ``infos`` unchanged."""
        return np.clip(np.asarray(rewards, dtype=np.float64), self.min_reward, self.max_reward), infos

    def scoring_key(self) -> tuple:
        """``(ClipReward, min_reward, max_reward)``."""
        return type(self), self.min_reward, self.max_reward
