"""Learned rewards: outcome and process reward models, their training, backbones and labelled samples.

- :mod:`~llm_gym.reward_models.scorers`: :class:`RewardModelScorer` (outcome, one score per response) and
  :class:`ProcessRewardModelScorer` (one score per step), both batched reward functions;
- :mod:`~llm_gym.reward_models.training`: :func:`train_reward_model`, :func:`evaluate_reward_model`,
  :func:`binary_metrics`;
- :mod:`~llm_gym.reward_models.backbone`: backbone lookup (:func:`resolve_backbone`, the MiniLM encoder),
  loading and atomic saving of model folders, a tiny test backbone;
- :mod:`~llm_gym.reward_models.samples`: pair encoding (prompt truncated first), step ends, labelled-sample
  JSONL files.

The scorers and :func:`train_reward_model` are also exported by :mod:`llm_gym.rewards`.

>>> scorer = RewardModelScorer("outputs/reward_model")                      # doctest: +SKIP
>>> scorer(["What is 2 + 3?"], ["2 + 3 = 5. \\boxed{5}"], ["5"])           # doctest: +SKIP
[0.93]
"""

from __future__ import annotations

from llm_gym.reward_models.backbone import (
    ID2LABEL,
    METADATA_FILE,
    MINILM_ALIASES,
    MINILM_INSTALL_HINT,
    POLICY_ALIASES,
    build_tiny_reward_backbone,
    minilm_backbone_dir,
    resolve_backbone,
    save_reward_model,
)
from llm_gym.reward_models.samples import (
    KINDS,
    encode_pairs,
    read_labelled_samples,
    step_end_positions,
    step_spans,
    write_labelled_samples,
)
from llm_gym.reward_models.scorers import ClassifierScorer, ProcessRewardModelScorer, RewardModelScorer
from llm_gym.reward_models.training import (
    IGNORE_INDEX,
    binary_metrics,
    evaluate_reward_model,
    train_reward_model,
)

__all__ = [
    "ID2LABEL",
    "IGNORE_INDEX",
    "KINDS",
    "METADATA_FILE",
    "MINILM_ALIASES",
    "MINILM_INSTALL_HINT",
    "POLICY_ALIASES",
    "ClassifierScorer",
    "ProcessRewardModelScorer",
    "RewardModelScorer",
    "binary_metrics",
    "build_tiny_reward_backbone",
    "encode_pairs",
    "evaluate_reward_model",
    "minilm_backbone_dir",
    "read_labelled_samples",
    "resolve_backbone",
    "save_reward_model",
    "step_end_positions",
    "step_spans",
    "train_reward_model",
    "write_labelled_samples",
]
