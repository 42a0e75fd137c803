"""Environments: sequence level (one step = one response)."""

from llm_gym.envs.sequence import DEFAULT_PROMPT_TEMPLATE, SequenceEnv

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "SequenceEnv"]
