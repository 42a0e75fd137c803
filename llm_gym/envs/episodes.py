"""Episode statistics kept by a vector env: SB3 ``Monitor``'s bookkeeping, once for all sub-envs.

SB3 wraps each env in ``Monitor``, which adds ``info["episode"] = {"r", "l", "t"}`` on the step that ends an
episode. A vector env that scores all its rows at once keeps these statistics itself (as SB3's
``VecMonitor`` does) so no per-env layer has to be stepped. The numbers are Monitor's exactly: the return
is the Python sum of the float step rewards (not a float32 accumulator, which ``VecMonitor`` uses), rounded
to 6 decimals.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["EpisodeStats"]


class EpisodeStats:
    """SB3 ``Monitor``'s episode bookkeeping for ``n`` rows of a vector env.

    Args:
        n: Number of rows (sub-envs).

    Attributes:
        t_start: Wall time at construction (``info["episode"]["t"]`` counts from it).
        episode_returns: Every finished episode's return, in the order the episodes ended.
        episode_lengths: Their lengths in steps.
        episode_times: Their end times, seconds since ``t_start``.
        total_steps: Steps recorded over all rows.
    """

    def __init__(self, n: int):
        self.t_start = time.time()
        self._rewards: list[list[float]] = [[] for _ in range(n)]
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []
        self.episode_times: list[float] = []
        self.total_steps = 0

    def reset(self, row: int) -> None:
        """A new episode starts on ``row``."""
        self._rewards[row] = []

    def step(self, row: int, reward: float, done: bool, info: dict[str, Any]) -> None:
        """Record one step of ``row``; when ``done``, set ``info["episode"]`` as ``Monitor`` does.

        Args:
            row: The sub-env.
            reward: The step's reward (the float the env stack returned, before any float32 cast).
            done: Whether the step ends the episode (terminated or truncated).
            info: The step's info, updated in place.
        """
        self._rewards[row].append(float(reward))
        if done:
            ep_rew, ep_len = sum(self._rewards[row]), len(self._rewards[row])
            ep_info = {"r": round(ep_rew, 6), "l": ep_len, "t": round(time.time() - self.t_start, 6)}
            self.episode_returns.append(ep_rew)
            self.episode_lengths.append(ep_len)
            self.episode_times.append(time.time() - self.t_start)
            info["episode"] = ep_info
        self.total_steps += 1

    def get_episode_rewards(self) -> list[float]:
        """The returns of the finished episodes (``Monitor.get_episode_rewards``)."""
        return self.episode_returns

    def get_episode_lengths(self) -> list[int]:
        """The lengths of the finished episodes (``Monitor.get_episode_lengths``)."""
        return self.episode_lengths
