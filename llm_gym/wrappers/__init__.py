"""Gymnasium wrappers that reshape llm-gym rewards; they work on sequence and token envs alike.

Episode-end terms (added to, or replacing, the reward of the step that ends the response and recorded in
``info["reward_components"]``): :class:`RewardFunction`, :class:`RewardModel`, :class:`FormatReward`,
:class:`LengthPenalty`, :class:`OverlongPenalty`. Per-step transforms: :class:`ScaleReward`,
:class:`ClipReward`. See :mod:`llm_gym.wrappers.reward`. Process supervision: :class:`ProcessReward`
(step rewards in ``info["step_rewards"]``, :mod:`llm_gym.wrappers.process`).
"""

from llm_gym.wrappers.process import ProcessReward
from llm_gym.wrappers.reward import (
    ClipReward,
    FormatReward,
    LengthPenalty,
    OverlongPenalty,
    RewardFunction,
    RewardModel,
    ScaleReward,
)

__all__ = [
    "ClipReward",
    "FormatReward",
    "LengthPenalty",
    "OverlongPenalty",
    "ProcessReward",
    "RewardFunction",
    "RewardModel",
    "ScaleReward",
]
