"""Reward functions for LLM RL.

Every reward function is batched: ``fn(prompts, responses, answers, **problem_fields) -> list[float | None]``
(``None`` = no opinion). Use :func:`call_reward_fn` to call and validate one, :class:`CombinedReward` to
take a weighted sum of several; both take ``timeout=seconds`` so a hung verifier cannot hang training.
Length shaping (:func:`length_penalty`, :func:`overlong_penalty`) works on token counts. Process
supervision: :func:`split_steps` and process reward functions (:func:`arithmetic_step_reward`,
:func:`grounded_arithmetic_step_reward`), batched as
``fn(prompts, steps, answers, **fields) -> list[list[float | None]]``. :func:`from_trl` adapts a reward
function written for TRL's ``GRPOTrainer``. Reward models (:class:`RewardModelScorer`,
:class:`ProcessRewardModelScorer`, :func:`train_reward_model`) live in :mod:`llm_gym.reward_models`.

Modules, one job each: ``base`` (the protocol, its error and output), ``calling`` (call and validate one
function, timeouts; ``worker`` runs timed calls in a process), ``combined`` (weighted sum), ``format``,
``math``, ``length`` (outcome rewards), ``steps`` (step splitting), ``process`` (the process-reward protocol
and call), ``arithmetic`` and ``grounded`` (arithmetic step checkers), ``shepherd`` (Math-Shepherd step
labels), ``adapters`` (TRL reward functions).
"""

from __future__ import annotations

from llm_gym.reward_models import ProcessRewardModelScorer, RewardModelScorer, train_reward_model
from llm_gym.rewards.adapters import from_trl
from llm_gym.rewards.arithmetic import arithmetic_step_penalty, arithmetic_step_reward, check_arithmetic_step
from llm_gym.rewards.base import RewardFunction, RewardFunctionError, RewardOutput, reward_fn_name
from llm_gym.rewards.calling import call_reward_fn
from llm_gym.rewards.combined import CombinedReward
from llm_gym.rewards.format import boxed_format_reward, regex_format_reward
from llm_gym.rewards.grounded import classify_arithmetic_steps, grounded_arithmetic_step_reward
from llm_gym.rewards.length import length_penalty, overlong_penalty
from llm_gym.rewards.math import extract_answer, math_answer_reward
from llm_gym.rewards.process import ProcessRewardFunction, call_process_reward_fn
from llm_gym.rewards.shepherd import shepherd_step_labels
from llm_gym.rewards.steps import Step, split_steps

__all__ = [
    "CombinedReward",
    "ProcessRewardFunction",
    "ProcessRewardModelScorer",
    "RewardFunction",
    "RewardFunctionError",
    "RewardModelScorer",
    "RewardOutput",
    "Step",
    "arithmetic_step_penalty",
    "arithmetic_step_reward",
    "boxed_format_reward",
    "call_process_reward_fn",
    "call_reward_fn",
    "check_arithmetic_step",
    "classify_arithmetic_steps",
    "extract_answer",
    "from_trl",
    "grounded_arithmetic_step_reward",
    "length_penalty",
    "math_answer_reward",
    "overlong_penalty",
    "regex_format_reward",
    "reward_fn_name",
    "shepherd_step_labels",
    "split_steps",
    "train_reward_model",
]
