"""RL algorithms for language models, SB3-compatible: PPO, GRPO, DAPO, GSPO and the Online RFT baseline."""

from agents.common.base import LLMAlgorithm
from agents.common.policies import LLMActorCriticPolicy, LLMPolicy, ReferencePolicy
from agents.dapo import DAPO
from agents.grpo import GRPO
from agents.gspo import GSPO
from agents.ppo import PPO
from agents.rft import OnlineRFT

__all__ = ["DAPO", "GRPO", "GSPO", "PPO", "LLMActorCriticPolicy", "LLMAlgorithm", "LLMPolicy", "OnlineRFT",
           "ReferencePolicy"]
