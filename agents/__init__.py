"""RL algorithms for language models, SB3-compatible: GRPO (PPO, DAPO, GSPO to come)."""

from agents.common.base import LLMAlgorithm
from agents.common.policies import LLMPolicy, ReferencePolicy
from agents.grpo import GRPO

__all__ = ["GRPO", "LLMAlgorithm", "LLMPolicy", "ReferencePolicy"]
