"""Multi-turn environments: one step = one assistant turn, token in / token out.

:class:`MultiTurnEnv` keeps the exact token ids of a conversation: the prompt, every turn the policy
sampled (appended as they are, never decoded and re-encoded) and every message the env inserts (the
only text the env tokenizes). ``assistant_mask`` marks the sampled tokens, so an algorithm gives a
gradient to them and to nothing else. A subclass decides what the env answers to a turn
(:meth:`MultiTurnEnv.respond`):

* :class:`ToolMathEnv` (``"LLMToolMath-v0"``): the model calls a calculator with ``<calc>EXPR</calc>``,
  the env sends the result back; a turn without a call is the final answer, scored like
  :class:`~llm_gym.envs.sequence.SequenceEnv`.
* :class:`GuessNumberEnv` (``"LLMGuessNumber-v0"``): guess a secret integer, the env answers
  ``higher`` / ``lower``; a correct guess ends the episode with reward 1.
"""

from llm_gym.envs.multiturn.base import MultiTurnEnv, TurnResult, is_multi_turn
from llm_gym.envs.multiturn.guess_number import GUESS_QUESTION, GuessNumberEnv
from llm_gym.envs.multiturn.tool_math import TOOL_PROMPT_TEMPLATE, ToolMathEnv

__all__ = [
    "GUESS_QUESTION",
    "TOOL_PROMPT_TEMPLATE",
    "GuessNumberEnv",
    "MultiTurnEnv",
    "ToolMathEnv",
    "TurnResult",
    "is_multi_turn",
]
