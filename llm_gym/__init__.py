"""llm-gym: language models as Gymnasium environments. ``import llm_gym`` registers the envs."""

from llm_gym.envs import GroupVecEnv, SequenceEnv, TokenEnv, make_group_vec_env, prime_sequence_rollout
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv
from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.models import DEFAULT_MODEL, build_tiny_model, default_model_dir
from llm_gym.registration import ENV_IDS, MULTITURN_ENV_IDS, SEQUENCE_ENV_IDS, TOKEN_ENV_IDS, register_envs
from llm_gym.tasks import Problem, get_problems

register_envs()

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_MODEL",
    "ENV_IDS",
    "GroupVecEnv",
    "GuessNumberEnv",
    "LanguageModel",
    "MULTITURN_ENV_IDS",
    "MultiTurnEnv",
    "Problem",
    "SEQUENCE_ENV_IDS",
    "SequenceEnv",
    "TOKEN_ENV_IDS",
    "TokenEnv",
    "ToolMathEnv",
    "build_tiny_model",
    "default_model_dir",
    "get_language_model",
    "get_problems",
    "make_group_vec_env",
    "prime_sequence_rollout",
]
