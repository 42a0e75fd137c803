"""Curriculum: raise a task's difficulty when the rolling accuracy passes a threshold.

:class:`Curriculum` watches ``info["accuracy"]`` of the episodes that end and, once the mean over the last
``window`` episodes reaches ``threshold``, moves the env to its next difficulty level: reasoning-gym's own
curriculum for ``LLMReasoningGym-v0`` (:meth:`~llm_gym.envs.reasoning_gym.ReasoningGymTask.set_curriculum_level`),
the arithmetic levels 1-4 for an arithmetic env (``LLMMath-v0``, ``LLMMathToken-v0``, ``task="arithmetic"``).
Every ended episode's info carries ``curriculum_level``, which the algorithms log as ``curriculum/level``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.scoring import BatchedRewardWrapper
from llm_gym.tasks import get_problems
from llm_gym.tasks.arithmetic import LEVELS
from llm_gym.validation import check_int, check_real

__all__ = ["Curriculum", "CurriculumState", "env_levels"]


class CurriculumState:
    """The level and the rolling accuracies of a curriculum, shared by every copy of its :class:`Curriculum`.

    A vector env's sub-envs are copies of one env stack; they must move to a level together (a group of G
    responses is sampled on problem ``k`` of every copy). So the copies share this object: ``copy.deepcopy``
    returns it as it is (gymnasium rebuilds wrappers from a deep copy of ``env.spec``), and a vector env
    scores all its rows with the first copy's wrapper, which updates it.

    Attributes:
        level: The level the envs move to at their next ``reset``.
        recent: The accuracies of the last ``window`` episodes ended at ``level``.
    """

    def __init__(self, level: int, window: int):
        self.level = level
        self.recent: deque[float] = deque(maxlen=window)

    def __deepcopy__(self, memo: dict) -> CurriculumState:
        return self

    def __repr__(self) -> str:
        return f"CurriculumState(level={self.level}, recent={len(self.recent)})"


def env_levels(base: gym.Env) -> tuple[Sequence[int], Callable[[int], None], int]:
    """``(levels, set_level, current)`` of an env with difficulty levels.

    An env with ``curriculum_levels`` and ``set_curriculum_level`` (``LLMReasoningGym-v0``) uses them (its level
    before the first: the first). An arithmetic env (``task="arithmetic"``) has the levels 1-4; ``set_level(L)``
    gives it the arithmetic problems of level ``L`` (the task's default count, its split and seed), and its
    current level is the lowest of its problems'.

    Raises:
        ValueError: the env has no levels (names the envs that have them).
    """
    if callable(getattr(base, "set_curriculum_level", None)) and len(getattr(base, "curriculum_levels", ())):
        levels = base.curriculum_levels
        current = base.curriculum_level if getattr(base, "curriculum_level", None) is not None else levels[0]
        return levels, base.set_curriculum_level, current
    if getattr(base, "task", None) == "arithmetic" and callable(getattr(base, "set_problems", None)):
        def set_level(level: int) -> None:
            base.set_problems(get_problems("arithmetic", split=base.split, seed=base.problem_seed, difficulty=level))

        return LEVELS, set_level, min(p.difficulty or LEVELS[0] for p in base.problems)
    raise ValueError(
        f"Curriculum needs an env with difficulty levels: LLMReasoningGym-v0 on a task with a reasoning-gym "
        f"curriculum, or an arithmetic env (LLMMath-v0, LLMMathToken-v0, task='arithmetic'); got "
        f"{type(base).__name__} (task={getattr(base, 'task', None)!r}).")


class Curriculum(BatchedRewardWrapper, gym.utils.RecordConstructorArgs):
    """Raise the env's difficulty level when the accuracy over the last ``window`` episodes reaches ``threshold``.

    On each step, the episodes that end add their ``info["accuracy"]`` to a rolling window; when the window is
    full and its mean is ``>= threshold``, the level goes up by one (up to the last) and the window empties. The
    env moves to the new level at its next ``reset`` (never during an episode), so every episode is scored
    against the problems it was prompted with. Every ended episode's info gets ``curriculum_level`` (the level
    it was played at), logged by the algorithms as ``curriculum/level``. Rewards are never changed.

    Levels: reasoning-gym's ``BaseCurriculum`` global level (0, 1, ...) for ``LLMReasoningGym-v0``, whose
    datasets then take the curriculum's config at that level (level 0 is the curriculum's easiest, not the
    dataset's default config); the arithmetic levels 1-4 for an arithmetic env (start: its lowest level).

    Batched form: :meth:`rewards_batch` (a vector env calls it once for all its rows). Copies of the wrapper share
    one :class:`CurriculumState` (a vector env built from the env's spec, or ``state=`` given to each), so a
    vector env's sub-envs change level together.

    Args:
        env: ``LLMReasoningGym-v0`` / ``LLMReasoningGymToken-v0`` or an arithmetic env, possibly wrapped.
        threshold: Accuracy in [0, 1] the rolling mean must reach.
        window: K, the episodes in the rolling mean, an integer >= 1.
        start_level: The first level; None = the env's current level (reasoning-gym: 0).
        state: A :class:`CurriculumState` to share with other copies (e.g. the ``wrapper_kwargs`` of
            ``make_group_vec_env``); None = a new one.

    Raises:
        ValueError: an env without levels, a threshold outside [0, 1], a bad ``window`` or ``start_level``.

    Example:
        >>> env = Curriculum(gym.make("LLMReasoningGym-v0", task="leg_counting"), threshold=0.8)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, threshold: float = 0.8, window: int = 64, start_level: int | None = None,
                 state: CurriculumState | None = None):
        levels, self._set_level, current = env_levels(env.unwrapped)
        self.levels = tuple(levels)
        self.threshold = check_real("threshold", threshold, minimum=0, maximum=1, owner="Curriculum")
        window = check_int("window", window, minimum=1, owner="Curriculum")
        if start_level is not None and start_level not in self.levels:
            raise ValueError(f"Curriculum: start_level must be one of the env's levels {list(self.levels)}, got "
                             f"{start_level!r}.")
        self.state = state if state is not None else CurriculumState(
            current if start_level is None else start_level, window)
        gym.utils.RecordConstructorArgs.__init__(self, threshold=threshold, window=window, start_level=start_level,
                                                 state=self.state)
        gym.Wrapper.__init__(self, env)
        self.window = window
        self._applied: int | None = None
        self._apply()

    @property
    def level(self) -> int:
        """The current level (the one the next ``reset`` plays at)."""
        return self.state.level

    def _apply(self) -> None:
        """Move the env to the shared level if it is not there yet."""
        if self._applied != self.state.level:
            self._set_level(self.state.level)
            self._applied = self.state.level

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Move the env to the current level (if it changed), then reset it; the info gets ``curriculum_level``."""
        self._apply()
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "curriculum_level": self._applied}

    def rewards_batch(self, rewards: np.ndarray, infos: list[dict[str, Any]], ended: np.ndarray
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Record the ended episodes' accuracies and raise the level when due; rewards unchanged.

        Args:
            rewards: ``(n,)`` float64.
            infos: ``n`` infos.
            ended: ``(n,)`` bool.

        Returns:
            ``(rewards, infos)``, each ended row's info with ``curriculum_level``.
        """
        state, out = self.state, []
        for info, end in zip(infos, ended, strict=True):
            if not end:
                out.append(info)
                continue
            out.append({**info, "curriculum_level": self._applied})
            if self._applied == state.level and "accuracy" in info:  # not episodes of a level already left
                state.recent.append(float(info["accuracy"]))
        full = len(state.recent) == state.recent.maxlen
        if full and np.mean(state.recent) >= self.threshold and state.level != self.levels[-1]:
            state.level = self.levels[self.levels.index(state.level) + 1]
            state.recent.clear()
        return rewards, out

    def scoring_key(self) -> tuple:
        """``(Curriculum, the shared state, threshold)``: copies sharing a state score together."""
        return type(self), id(self.state), self.threshold
