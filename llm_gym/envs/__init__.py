"""Environments: sequence level (one step = one response), token level (one step = one token), multi-turn
(one step = one assistant turn), and vector envs that score each batch in one call."""

from llm_gym.envs.common import DEFAULT_PROMPT_TEMPLATE, LLMEnvBase
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv, TurnResult, is_multi_turn
from llm_gym.envs.sequence import SequenceEnv
from llm_gym.envs.token import TokenEnv
from llm_gym.envs.vector import (
    GroupVecEnv,
    SequenceVecEnv,
    group_vec_env_like,
    make_group_vec_env,
    sequence_vec_env_like,
)

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "GroupVecEnv", "GuessNumberEnv", "LLMEnvBase", "MultiTurnEnv",
           "SequenceEnv", "SequenceVecEnv", "TokenEnv", "ToolMathEnv", "TurnResult", "group_vec_env_like",
           "is_multi_turn", "make_group_vec_env", "sequence_vec_env_like"]
