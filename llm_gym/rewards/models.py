"""Former home of the reward models, kept so ``from llm_gym.rewards.models import ...`` keeps working.

The code lives in :mod:`llm_gym.reward_models` (scorers, training, backbone, samples); import from there.
"""

from llm_gym.reward_models import *  # noqa: F403
from llm_gym.reward_models import __all__  # noqa: F401
