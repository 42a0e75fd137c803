"""The containers of batched scoring: :class:`ScoredBatch` (what a scorer returns) and :class:`StepBatch`."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["ScoredBatch", "StepBatch"]


class ScoredBatch(NamedTuple):
    """``N`` scored responses, as :meth:`~llm_gym.scoring.ResponseScorer.score_batch` returns them.

    Attributes:
        rewards: ``(N,)`` float64, each response's reward after every reward layer of the env stack (what
            ``env.step`` would return for it).
        components: ``N`` dicts ``name -> value``, each row's ``info["reward_components"]``.
        infos: ``N`` step infos, each what ``env.step`` would return for the response.
    """

    rewards: np.ndarray
    components: list[dict[str, float]]
    infos: list[dict[str, Any]]


class StepBatch(NamedTuple):
    """One step of ``n`` episodes (rows), the five results of ``env.step`` stacked.

    Attributes:
        obs: ``n`` observations.
        rewards: ``(n,)`` float64.
        terminated: ``(n,)`` bool.
        truncated: ``(n,)`` bool.
        infos: ``n`` info dicts.
    """

    obs: list[Any]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict[str, Any]]

    @classmethod
    def of(cls, results: list[tuple[Any, Any, Any, Any, dict[str, Any]]]) -> StepBatch:
        """Stack ``n`` ``(obs, reward, terminated, truncated, info)`` tuples (the rewards as float64)."""
        obs, rewards, terminated, truncated, infos = zip(*results, strict=True) if results else ((),) * 5
        return cls(list(obs), np.array([float(r) for r in rewards], dtype=np.float64),
                   np.array(terminated, dtype=bool).reshape(-1), np.array(truncated, dtype=bool).reshape(-1),
                   list(infos))

    @property
    def ended(self) -> np.ndarray:
        """``(n,)`` bool, ``terminated | truncated``: the rows whose episode ends on this step."""
        return self.terminated | self.truncated

    def row(self, r: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Row ``r`` as ``env.step`` returns it: ``(obs, reward (a float), terminated, truncated, info)``."""
        return self.obs[r], float(self.rewards[r]), bool(self.terminated[r]), bool(self.truncated[r]), self.infos[r]
