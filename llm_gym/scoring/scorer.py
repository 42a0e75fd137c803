"""ResponseScorer: scores a batch of responses (or steps a batch of episodes) with one call per reward function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.scoring.batch import ScoredBatch, StepBatch
from llm_gym.scoring.layers import Pipeline, checked_rewards, compose

__all__ = ["ResponseScorer"]


class ResponseScorer:
    """The scoring of one env stack (or of several equal stacks), composed once from their layers.

    It calls each reward function, reward model, process reward function and episode-end term ONCE per
    batch: the base env's batched form scores every row (``score_batch`` / ``score_pending``), then each
    reward wrapper's ``rewards_batch`` runs once on all rows, innermost first (see
    :mod:`llm_gym.scoring.layers`). Row ``r`` gets exactly what ``env.step`` of its stack returns, because
    each layer's single-env ``step`` is the same batched form on a batch of one.

    A vector env holds one scorer per group of equal sub-envs (:class:`~llm_gym.envs.vector.GroupVecEnv`);
    a single env is a group of one. Per-row layers (:class:`~llm_gym.scoring.PerRowWrapper`) and a core
    without a batched form run on each row's own stack.

    Args:
        envs: One env stack, or several whose :func:`~llm_gym.scoring.compose` keys are equal (the first
            one's base env and reward wrappers score for all).

    Raises:
        ValueError: no env, or stacks that score differently (their keys differ).

    Example:
        >>> scorer = ResponseScorer([LengthPenalty(gym.make("LLMMath-v0"), coef=0.1)])  # doctest: +SKIP
        >>> batch = scorer.score_batch([3, 3, 7], response_ids)  # (3, T) ids: one call per reward function
        >>> batch.rewards, batch.components[0]  # doctest: +SKIP
    """

    def __init__(self, envs: Sequence[gym.Env]):
        if not envs:
            raise ValueError("ResponseScorer needs at least one env stack.")
        self.pipelines: list[Pipeline] = [compose(env) for env in envs]
        if any(p.key != self.pipelines[0].key for p in self.pipelines[1:]):
            raise ValueError("ResponseScorer: the env stacks score differently (other reward functions, wrappers or "
                             "problems); give each its own scorer (GroupVecEnv groups its sub-envs this way).")
        self._head = self.pipelines[0]

    @classmethod
    def from_env(cls, env: gym.Env) -> ResponseScorer:
        """The scorer of one env stack."""
        return cls([env])

    @property
    def base(self) -> Any | None:
        """The base env that scores (the first stack's), or None when a layer without batched form is the core."""
        return self._head.core if self._head.core_batched else None

    def score_batch(self, problem_ids: Sequence[int], response_ids: np.ndarray) -> ScoredBatch:
        """Score ``N`` finished responses of a sequence-level stack: one call per reward function.

        A pure function of its arguments (no episode is stepped). Row ``r`` equals what ``env.step`` of the
        stack returns for ``response_ids[r]`` after a reset on ``problem_ids[r]``.

        Args:
            problem_ids: ``N`` problem indices.
            response_ids: ``(N, T)`` int ids, each right-padded like a ``SequenceEnv`` action.

        Returns:
            A :class:`ScoredBatch`: ``rewards (N,)`` float64, ``components`` and ``infos``.

        Raises:
            ValueError: the stack cannot score without stepping (a layer without batched form, a per-row layer,
                or a base env without ``score_batch``), or bad shapes / problem ids.
            RewardFunctionError: a reward function failed (names it).
        """
        base = self.base
        if base is None or not hasattr(base, "score_batch") or any(k == "row" for k, _ in self._head.layers):
            raise ValueError("score_batch needs a sequence-level stack whose every layer has a batched form (no "
                             "per-row layer such as TurnLimit, no wrapper that overrides step); step such a stack "
                             "through a vector env instead.")
        rewards, infos = base.score_batch(problem_ids, response_ids)
        n = len(infos)
        batch = self.apply_layers(StepBatch([None] * n, rewards, np.ones(n, bool), np.zeros(n, bool), infos),
                                  [0] * n)
        return ScoredBatch(batch.rewards, [dict(i.get("reward_components", {})) for i in batch.infos], batch.infos)

    def step(self, stacks: Sequence[int], actions: Sequence[Any]) -> StepBatch:
        """Step one episode of each of ``stacks`` (indices of this scorer's env stacks) with its action.

        Each stack's core begins its step (or, without batched form, steps), the base env scores every
        pending step at once, each core finishes its step, and the layers act outward
        (:meth:`apply_layers`).

        Args:
            stacks: ``n`` indices into the ``envs`` this scorer was built with, each at most once.
            actions: ``n`` actions, as each env takes them.

        Returns:
            The ``n`` step results.

        Raises:
            ValueError: the base env returned a number of scores other than the pending steps.
            Whatever a stack's ``step`` raises (a step before reset, a bad action, a reward function error).
        """
        for s in stacks:
            for kind, layer in reversed(self.pipelines[s].layers):  # outermost first, as nested steps check
                if kind == "row":
                    layer.pre_step()
        if self._head.core_batched:
            pending = [self.pipelines[s].core.begin_step(a) for s, a in zip(stacks, actions, strict=True)]
            scores = self._head.core.score_pending(pending) if pending else []
            if len(scores) != len(pending):
                raise ValueError(f"{type(self._head.core).__name__}.score_pending returned {len(scores)} scores for "
                                 f"{len(pending)} pending steps; it must return one per pending step.")
            results = [self.pipelines[s].core.finish_step(p, score)
                       for s, p, score in zip(stacks, pending, scores, strict=True)]
        else:
            results = [self.pipelines[s].core.step(a) for s, a in zip(stacks, actions, strict=True)]
        return self.apply_layers(StepBatch.of(results), stacks)

    def apply_layers(self, batch: StepBatch, stacks: Sequence[int]) -> StepBatch:
        """The layers outside the core, innermost first, on the core's results of rows ``stacks``.

        A reward wrapper's ``rewards_batch`` runs once for all rows (the first stack's wrapper); a per-row
        layer's ``post_step`` runs on each row's own stack.
        """
        for depth, (kind, head_layer) in enumerate(self._head.layers):
            if kind == "batched":
                rewards, infos = checked_rewards(head_layer, batch.rewards, batch.infos, batch.ended)
                batch = batch._replace(rewards=rewards, infos=infos)
            else:
                rows = [self.pipelines[s].layers[depth][1].post_step(*batch.row(r)) for r, s in enumerate(stacks)]
                batch = StepBatch.of(rows)
        return batch
