"""llm-gym: language models as Gymnasium environments. ``import llm_gym`` registers the envs.

It also imports the subpackages :mod:`llm_gym.rewards` and :mod:`llm_gym.wrappers`, so
``llm_gym.wrappers.FormatReward`` and ``llm_gym.rewards.math_answer_reward`` work right after
``import llm_gym`` (the envs import both anyway, so this costs no extra import time).
"""

from llm_gym.envs import GroupVecEnv, SequenceEnv, TokenEnv, make_group_vec_env, prime_sequence_rollout
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv
from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.models import DEFAULT_MODEL, build_tiny_model, default_model_dir
from llm_gym.registration import ENV_IDS, MULTITURN_ENV_IDS, SEQUENCE_ENV_IDS, TOKEN_ENV_IDS, register_envs
from llm_gym.tasks import Problem, get_problems

register_envs()

# After the envs: llm_gym.wrappers imports llm_gym.envs, which imports llm_gym.wrappers (a cycle when the
# wrappers come first). By now both subpackages are loaded; this binds them as documented attributes.
from llm_gym import rewards, wrappers  # noqa: E402

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
    "rewards",
    "wrappers",
]
