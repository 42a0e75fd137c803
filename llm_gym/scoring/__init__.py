"""Batched scoring: one call per reward function for a whole batch of responses.

:class:`ResponseScorer` is composed once from an env stack (:func:`compose` reads the batched form each
layer declares: :class:`BatchedEnv`, :class:`BatchedRewardWrapper`, :class:`PerRowWrapper`) and scores
``N`` responses with each reward function, reward model, process reward function and episode-end term
called once (:meth:`ResponseScorer.score_batch`, a :class:`ScoredBatch`). Vector envs
(:class:`~llm_gym.envs.vector.GroupVecEnv`) call it once per vector step; a single env's ``step`` runs
the same batched forms on a batch of one.
"""

from llm_gym.scoring.batch import ScoredBatch, StepBatch
from llm_gym.scoring.layers import (
           BatchedEnv,
           BatchedRewardWrapper,
           PerRowWrapper,
           Pipeline,
           compose,
           layer_kind,
)
from llm_gym.scoring.scorer import ResponseScorer

__all__ = ["BatchedEnv", "BatchedRewardWrapper", "PerRowWrapper", "Pipeline", "ResponseScorer", "ScoredBatch",
           "StepBatch", "compose", "layer_kind"]
