"""llm-gym: language models as Gymnasium environments. ``import llm_gym`` registers the envs.

It registers llm-gym's envs (:mod:`llm_gym.registration`), then those of installed packages that declare
``llm_gym.envs`` entry points (:mod:`llm_gym.plugins`).

It also imports the subpackages :mod:`llm_gym.rewards`, :mod:`llm_gym.scoring` and :mod:`llm_gym.wrappers`,
so ``llm_gym.wrappers.FormatReward`` and ``llm_gym.rewards.math_answer_reward`` work right after
``import llm_gym``.
"""

from llm_gym import rewards, scoring, wrappers
from llm_gym.envs import GroupVecEnv, SequenceEnv, SequenceVecEnv, TokenEnv, make_group_vec_env
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv
from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.models import DEFAULT_MODEL, build_tiny_model, default_model_dir
from llm_gym.plugins import load_plugins, plugin_env_ids
from llm_gym.registration import (
    ENV_IDS,
    EXTRA_ENV_IDS,
    MULTITURN_ENV_IDS,
    SEQUENCE_ENV_IDS,
    TOKEN_ENV_IDS,
    register_envs,
)
from llm_gym.scoring import ResponseScorer, ScoredBatch
from llm_gym.tasks import Problem, get_problems

register_envs()
load_plugins()  # third-party envs declared as `llm_gym.envs` entry points (llm_gym.plugins)

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_MODEL",
    "ENV_IDS",
    "EXTRA_ENV_IDS",
    "GroupVecEnv",
    "GuessNumberEnv",
    "LanguageModel",
    "MULTITURN_ENV_IDS",
    "MultiTurnEnv",
    "Problem",
    "ResponseScorer",
    "SEQUENCE_ENV_IDS",
    "ScoredBatch",
    "SequenceEnv",
    "SequenceVecEnv",
    "TOKEN_ENV_IDS",
    "TokenEnv",
    "ToolMathEnv",
    "build_tiny_model",
    "default_model_dir",
    "get_language_model",
    "get_problems",
    "load_plugins",
    "make_group_vec_env",
    "plugin_env_ids",
    "rewards",
    "scoring",
    "wrappers",
]
