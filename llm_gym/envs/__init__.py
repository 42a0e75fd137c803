"""Environments: sequence level (one step = one response), token level (one step = one token), multi-turn
(one step = one assistant turn), vector env."""

from llm_gym.envs.batch_scoring import prime_sequence_rollout
from llm_gym.envs.common import DEFAULT_PROMPT_TEMPLATE, LLMEnvBase
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv, TurnResult
from llm_gym.envs.sequence import SequenceEnv
from llm_gym.envs.token import TokenEnv
from llm_gym.envs.vector import GroupVecEnv, make_group_vec_env

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "GroupVecEnv", "GuessNumberEnv", "LLMEnvBase", "MultiTurnEnv",
           "SequenceEnv", "TokenEnv", "ToolMathEnv", "TurnResult", "make_group_vec_env",
           "prime_sequence_rollout"]
