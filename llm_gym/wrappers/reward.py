"""Reward-shaping wrappers for llm-gym envs; each works on sequence, token and multi-turn envs.

Two kinds (episode-end terms in :mod:`llm_gym.wrappers.terms` and :mod:`llm_gym.wrappers.functions`,
per-step transforms in :mod:`llm_gym.wrappers.transforms`; this module gathers them):

- **Episode-end terms** (:class:`RewardFunction`, :class:`RewardModel`, :class:`FormatReward`,
  :class:`LengthPenalty`, :class:`OverlongPenalty`): on the step that ends the episode (the only step of a
  :class:`~llm_gym.envs.sequence.SequenceEnv`, the last token of a :class:`~llm_gym.envs.token.TokenEnv`)
  they compute a term from that step's info (``prompt_text``, ``response_text``, ``answer``,
  ``response_length``...), add it to the reward (or replace the reward with it) and record it in a copy
  of ``info["reward_components"]`` under their ``name`` (logged as ``rollout/reward/<name>``). Other steps
  pass through unchanged. Additive terms commute with each other.
- **Per-step transforms** (:class:`ScaleReward`, :class:`ClipReward`): applied to every step's reward,
  intermediate token rewards included; they leave ``info`` alone. They do not commute with the additive
  terms: ``ScaleReward(LengthPenalty(env, c), s)`` pays ``s * (r + p)``, ``LengthPenalty(ScaleReward(env,
  s), c)`` pays ``s * r + p``.

``info["reward_components"]`` holds each term as it was added at its wrapper's level, so the components
sum to the reward only when no per-step transform or ``replace=True`` sits outside them. A name already
in the dict (e.g. two ``FormatReward`` wrappers) gets a suffix: ``format``, ``format_2``, ...

**Batched scoring.** Every wrapper declares its batched form (:class:`~llm_gym.scoring.BatchedRewardWrapper`:
``rewards_batch(rewards (n,), infos, ended (n,))``; an episode-end term computes the terms of all the rows
that end with ONE call, :meth:`EpisodeEndTerm.terms`, and :class:`RewardFunction` and its subclasses call
their function once with all of them). ``step`` is that form on a batch of one; a vector env
(:class:`~llm_gym.envs.vector.GroupVecEnv`, :class:`~llm_gym.envs.vector.SequenceVecEnv`) runs it once per
vector step through a :class:`~llm_gym.scoring.ResponseScorer`, so single-env and vector steps run the same
code and give the same numbers.

**Multi-turn episodes** (:class:`~llm_gym.envs.multiturn.MultiTurnEnv`: one step = one assistant turn):

- An episode-end term is added on the step that ends the episode, whether the env terminated it (a final
  turn) or truncated it (``max_turns``, the context budget, :class:`~llm_gym.wrappers.TurnLimit`). It scores
  the LAST turn as the response: ``info["response_text"]`` is that turn's text (the final answer, or the
  last tool call / guess of a truncated episode) and ``info["prompt_text"]`` the episode's first prompt.
  Intermediate turns pass through unchanged (their tool costs stay).
- :class:`LengthPenalty` charges the episode's assistant tokens (``info["assistant_token_count"]``, every
  sampled token of every turn, EOS included; env messages are free), at the same per-token price as on a
  single-turn env. :class:`OverlongPenalty` applies DAPO's penalty to EVERY turn against ``max_new_tokens``
  (each turn has that budget, and a turn cut at the budget mid-episode is as incomplete as a final one)
  and adds the sum over the turns (lengths from ``info["turn_spans"]``).
- The term is also added to ``info["episode_reward_components"]`` (same key as in
  ``info["reward_components"]``), so the episode's totals hold every term its steps recorded (they sum to
  the return under the same conditions as a step's components: no per-step transform or ``replace=True``
  outside, and unit weights in the env's own reward). :class:`ScaleReward` / :class:`ClipReward` act on every
  turn's reward (the clip bounds each turn's reward, not the episode's return).
- In a vector env the terms of all the episodes that end on the same vector step are computed in one
  call. The episode statistics (``make_group_vec_env(..., monitor=True)``, SB3 ``Monitor``'s numbers)
  record the sum of the wrapped step rewards. :class:`~llm_gym.wrappers.ProcessReward` rejects multi-turn
  envs.

>>> import gymnasium as gym, llm_gym  # doctest: +SKIP
>>> env = gym.make("LLMMath-v0", format_weight=0.0)  # doctest: +SKIP
>>> env = ScaleReward(LengthPenalty(FormatReward(env, weight=0.1), coef=0.05), 2.0)  # doctest: +SKIP
"""

from llm_gym.wrappers.functions import FormatReward, RewardFunction, RewardModel
from llm_gym.wrappers.terms import EpisodeEndTerm, LengthPenalty, OverlongPenalty
from llm_gym.wrappers.transforms import ClipReward, ScaleReward

__all__ = [
    "ClipReward",
    "EpisodeEndTerm",
    "FormatReward",
    "LengthPenalty",
    "OverlongPenalty",
    "RewardFunction",
    "RewardModel",
    "ScaleReward",
]
