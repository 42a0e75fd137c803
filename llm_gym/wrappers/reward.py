"""Reward-shaping wrappers for llm-gym envs (sequence and token level)."""

from __future__ import annotations

import gymnasium as gym

from llm_gym.rewards.length import overlong_penalty

__all__ = ["OverlongPenalty"]


class OverlongPenalty(gym.Wrapper):
    """Add DAPO's soft overlong punishment (arXiv:2503.14476 eq. 13) to the reward of each finished response.

    On the step that ends an episode (the only step of a sequence env, the last token of a token env), the
    penalty of :func:`llm_gym.rewards.overlong_penalty` for ``info["response_length"]`` tokens is added to
    the reward and reported as ``info["reward_components"]["overlong_penalty"]``; other steps are unchanged.

    Args:
        env: An llm-gym env (``SequenceEnv`` or ``TokenEnv``, possibly wrapped).
        overlong_buffer: ``L_cache`` in tokens; default 20 % of ``max_new_tokens`` (DAPO: 4096 of 20480).
        penalty_factor: Penalty at ``max_new_tokens`` tokens is ``-penalty_factor``.

    Raises:
        ValueError: ``overlong_buffer`` outside ``[0, max_new_tokens]`` or ``penalty_factor < 0``.

    Example:
        >>> env = OverlongPenalty(gym.make("LLMMath-v0"), overlong_buffer=16)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, overlong_buffer: int | None = None, penalty_factor: float = 1.0):
        super().__init__(env)
        self.max_length = int(env.get_wrapper_attr("max_new_tokens"))
        self.overlong_buffer = round(0.2 * self.max_length) if overlong_buffer is None else int(overlong_buffer)
        self.penalty_factor = float(penalty_factor)
        overlong_penalty([0], self.max_length, self.overlong_buffer, self.penalty_factor)  # validates

    def step(self, action):
        """Step the env; on the episode's last step add the penalty to the reward and to ``info``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            penalty = float(overlong_penalty([info["response_length"]], self.max_length, self.overlong_buffer,
                                             self.penalty_factor)[0])
            reward = float(reward) + penalty
            info = {**info, "reward_components": {**info.get("reward_components", {}), "overlong_penalty": penalty}}
        return obs, reward, terminated, truncated, info
