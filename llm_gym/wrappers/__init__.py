"""Gymnasium wrappers that reshape llm-gym rewards (sequence, token and multi-turn envs) or limit turns.

Episode-end terms (added to, or replacing, the reward of the step that ends the response and recorded in
``info["reward_components"]``): :class:`RewardFunction`, :class:`RewardModel`, :class:`FormatReward`,
:class:`LengthPenalty`, :class:`OverlongPenalty`. Per-step transforms: :class:`ScaleReward`,
:class:`ClipReward`. See :mod:`llm_gym.wrappers.reward`. Process supervision: :class:`ProcessReward`
(step rewards in ``info["step_rewards"]``, :mod:`llm_gym.wrappers.process`; single-turn envs only).
Multi-turn episodes: :class:`TurnLimit` truncates after ``max_turns`` assistant turns
(:mod:`llm_gym.wrappers.turns`); the reward wrappers' multi-turn semantics are in
:mod:`llm_gym.wrappers.reward`.
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
from llm_gym.wrappers.turns import TurnLimit

__all__ = [
    "ClipReward",
    "FormatReward",
    "LengthPenalty",
    "OverlongPenalty",
    "ProcessReward",
    "RewardFunction",
    "RewardModel",
    "ScaleReward",
    "TurnLimit",
]
