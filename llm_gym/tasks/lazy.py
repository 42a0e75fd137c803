"""Problems made on demand: :class:`ProblemSequence`, a read-only sequence whose problem ``k`` is built when read.

A procedural task (reasoning-gym's datasets) defines problem ``k`` as a pure function of ``k``, so an env can
draw from millions of problems without holding them: ``len``, indexing and equality are all an env needs
(``env.problems[k]``, ``env.n_problems``, the scoring key of :class:`~llm_gym.envs.scoring.ResponseScoring`).
:func:`~llm_gym.envs.problems.load_problems` passes a :class:`ProblemSequence` through as it is, and the env
renders its prompts on demand too (:class:`~llm_gym.envs.problems.PromptSequence`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from llm_gym.tasks.problem import Problem

__all__ = ["ProblemSequence"]


class ProblemSequence(Sequence[Problem]):
    """A read-only sequence of ``n`` problems, problem ``k`` built on demand by :meth:`make` (cached, bounded).

    Subclasses implement :meth:`__len__`, :meth:`make` (a pure function of ``k``) and :meth:`key` (two sequences
    with equal keys hold the same problems; ``==`` and ``hash`` use it, never the problems themselves).
    Iterating, ``in`` and ``index`` read every problem: avoid them on a large sequence.

    Attributes:
        cache_size: How many recently read problems are kept (an env reads problem ``k`` at reset, scoring and
            logging).
    """

    cache_size = 1024

    def __len__(self) -> int:
        raise NotImplementedError

    def make(self, k: int) -> Problem:
        """Problem ``k`` (``0 <= k < len(self)``), built from scratch."""
        raise NotImplementedError

    def key(self) -> tuple:
        """What defines the problems (equal keys = equal problems)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, k: int) -> Problem: ...

    @overload
    def __getitem__(self, k: slice) -> list[Problem]: ...

    def __getitem__(self, k: int | slice) -> Problem | list[Problem]:
        """Problem ``k`` (negative indices count from the end); a slice gives a list.

        Raises:
            IndexError: ``k`` outside ``-n .. n - 1``.
            TypeError: ``k`` is not an integer or a slice.
        """
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, got {type(k).__name__}")
        n = len(self)
        index = int(k) + n if k < 0 else int(k)
        if not 0 <= index < n:
            raise IndexError(f"problem index {int(k)} is outside 0..{n - 1}")
        cache = self.__dict__.setdefault("_cache", OrderedDict())
        if index in cache:
            cache.move_to_end(index)
            return cache[index]
        problem = cache[index] = self.make(index)
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return problem

    def __iter__(self) -> Iterator[Problem]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other.key() == self.key()

    def __hash__(self) -> int:
        return hash((type(self), self.key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, key={self.key()!r:.200})"
