"""RL algorithms for language models, SB3-compatible: PPO and GRPO (DAPO, GSPO to come)."""

from agents.common.base import LLMAlgorithm
from agents.common.policies import LLMActorCriticPolicy, LLMPolicy, ReferencePolicy
from agents.grpo import GRPO
from agents.ppo import PPO

__all__ = ["GRPO", "PPO", "LLMActorCriticPolicy", "LLMAlgorithm", "LLMPolicy", "ReferencePolicy"]
