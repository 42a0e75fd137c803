"""RL algorithms for language models, SB3-compatible: every one a preset of one engine (``AlgorithmConfig``).

PPO, GRPO, DAPO, GSPO, RLOO, REINFORCE++ (and its baseline variant), CISPO, Dr. GRPO and the Online RFT
baseline. ``ALGORITHMS`` maps each ``scripts/train.py --algo`` name to its class.
"""

from agents.cispo import CISPO
from agents.common.base import LLMAlgorithm
from agents.common.checkpoint import CheckpointError
from agents.common.config import AlgorithmConfig
from agents.common.guards import NonFiniteError
from agents.common.policies import LLMActorCriticPolicy, LLMPolicy, ReferencePolicy
from agents.dapo import DAPO
from agents.dr_grpo import DrGRPO
from agents.grpo import GRPO
from agents.gspo import GSPO
from agents.ppo import PPO
from agents.reinforce_pp import ReinforcePlusPlus, ReinforcePlusPlusBaseline
from agents.rft import OnlineRFT
from agents.rloo import RLOO

#: ``--algo`` name -> preset class (scripts/train.py, docs/algorithms/).
ALGORITHMS: dict[str, type[LLMAlgorithm]] = {
    "grpo": GRPO, "dapo": DAPO, "gspo": GSPO, "ppo": PPO, "rloo": RLOO, "reinforce_pp": ReinforcePlusPlus,
    "reinforce_pp_baseline": ReinforcePlusPlusBaseline, "cispo": CISPO, "drgrpo": DrGRPO, "rft": OnlineRFT,
}

__all__ = ["ALGORITHMS", "CISPO", "DAPO", "GRPO", "GSPO", "PPO", "RLOO", "AlgorithmConfig", "CheckpointError", "DrGRPO",
           "LLMActorCriticPolicy", "LLMAlgorithm", "LLMPolicy", "NonFiniteError", "OnlineRFT", "ReferencePolicy", "ReinforcePlusPlus",
           "ReinforcePlusPlusBaseline"]
