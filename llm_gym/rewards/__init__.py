"""Reward functions for LLM RL.

Every reward function is batched: ``fn(prompts, responses, answers, **problem_fields) -> list[float | None]``
(``None`` = no opinion). Use :func:`call_reward_fn` to call and validate one, :class:`CombinedReward` to
take a weighted sum of several.
"""

from __future__ import annotations

from llm_gym.rewards.base import (
    CombinedReward,
    RewardFunction,
    RewardFunctionError,
    RewardOutput,
    call_reward_fn,
    reward_fn_name,
)
from llm_gym.rewards.format import boxed_format_reward, regex_format_reward
from llm_gym.rewards.length import overlong_penalty
from llm_gym.rewards.math import extract_answer, math_answer_reward

__all__ = [
    "CombinedReward",
    "RewardFunction",
    "RewardFunctionError",
    "RewardOutput",
    "boxed_format_reward",
    "call_reward_fn",
    "extract_answer",
    "math_answer_reward",
    "overlong_penalty",
    "regex_format_reward",
    "reward_fn_name",
]
