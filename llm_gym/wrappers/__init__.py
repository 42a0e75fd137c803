"""Gymnasium wrappers that reshape llm-gym rewards (sequence, token and multi-turn envs) or limit turns.

Episode-end terms (added to, or replacing, the reward of the step that ends the response and recorded in
``info["reward_components"]``): :class:`RewardFunction`, :class:`RewardModel`, :class:`FormatReward`,
:class:`LengthPenalty`, :class:`OverlongPenalty` (base: :class:`EpisodeEndTerm`). Per-step transforms:
:class:`ScaleReward`, :class:`ClipReward`. See :mod:`llm_gym.wrappers.reward`. Each declares a batched form,
so a vector env scores all its rows with one call per reward function (:mod:`llm_gym.scoring`). Process supervision: :class:`ProcessReward`
(step rewards in ``info["step_rewards"]``, :mod:`llm_gym.wrappers.process`; single-turn envs only).
Multi-turn episodes: :class:`TurnLimit` truncates after ``max_turns`` assistant turns
(:mod:`llm_gym.wrappers.turns`); the reward wrappers' multi-turn semantics are in
:mod:`llm_gym.wrappers.reward`. Difficulty: :class:`Curriculum` raises the task's level when the rolling
accuracy passes a threshold (:mod:`llm_gym.wrappers.curriculum`).
"""

from llm_gym.wrappers.curriculum import Curriculum, CurriculumState
from llm_gym.wrappers.functions import FormatReward, RewardFunction, RewardModel
from llm_gym.wrappers.process import ProcessReward
from llm_gym.wrappers.terms import EpisodeEndTerm, LengthPenalty, OverlongPenalty
from llm_gym.wrappers.transforms import ClipReward, ScaleReward
from llm_gym.wrappers.turns import TurnLimit

__all__ = [
    "ClipReward",
    "Curriculum",
    "CurriculumState",
    "EpisodeEndTerm",
    "FormatReward",
    "LengthPenalty",
    "OverlongPenalty",
    "ProcessReward",
    "RewardFunction",
    "RewardModel",
    "ScaleReward",
    "TurnLimit",
]
