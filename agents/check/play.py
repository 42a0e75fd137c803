"""Playing scripted episodes on any llm-gym env, for the checks: a text (or token ids) per turn, whatever the level.

One loop serves the three env families through their public API (``reset``, ``step``, the spaces): a sequence
env takes the whole response in one step, a multi-turn env one turn per step until the episode ends, a token
env one token per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["MAX_STEPS", "Episode", "encode_turn", "is_token_env", "play", "real_ids", "sample_turn", "visible_ids"]

#: Most steps of one scripted episode (a guard against an env that never ends).
MAX_STEPS = 4096

#: A turn: the text to say, or token ids (a sampled turn), given the turn index and the observation.
Turn = Callable[[int, dict[str, np.ndarray]], "str | np.ndarray"]


@dataclass
class Episode:
    """A played episode.

    Attributes:
        reward: The return (sum of the step rewards).
        rewards: Each step's reward.
        infos: Each step's info.
        observations: The reset observation, then each step's.
        actions: Each step's action (a ``(T,)`` array, or a token id).
    """

    reward: float = 0.0
    rewards: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, np.ndarray]] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)


def is_token_env(env: gym.Env) -> bool:
    """True for a token-level env (``Discrete`` action: one token per step)."""
    return isinstance(env.action_space, spaces.Discrete)


def encode_turn(lm: Any, turn: str | np.ndarray, max_new_tokens: int) -> np.ndarray:
    """A turn as a ``(T,)`` int64 action: the text's tokens then EOS, right-padded with the pad id.

    A text longer than ``T - 1`` tokens is cut to ``T`` tokens (no EOS: a response cut by the budget). Token ids
    (a sampled turn) are used as they are, padded.

    Args:
        lm: The env's :class:`~llm_gym.lm.LanguageModel` (tokenizer, EOS and pad ids).
        turn: The text, or ``(n,)`` token ids.
        max_new_tokens: ``T``.
    """
    if isinstance(turn, str):
        ids = lm.tokenizer(turn, add_special_tokens=False)["input_ids"]
        ids = ids[:max_new_tokens] if len(ids) >= max_new_tokens else [*ids, lm.eos_token_id]
    else:
        ids = [int(i) for i in np.asarray(turn).reshape(-1)[:max_new_tokens]]
    action = np.full(max_new_tokens, lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids
    return action


def real_ids(lm: Any, action: np.ndarray) -> np.ndarray:
    """The tokens of a ``(T,)`` action that the env takes as the turn: up to the first EOS (included), or up to
    the last non-pad token without EOS (:meth:`~llm_gym.lm.LanguageModel.response_mask`)."""
    import torch

    mask = lm.response_mask(torch.as_tensor(np.asarray(action)[None]))[0].numpy().astype(bool)
    return np.asarray(action)[mask]


def visible_ids(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The observation's tokens without padding: ``input_ids`` where ``attention_mask`` is 1, in order."""
    return np.asarray(obs["input_ids"])[np.asarray(obs["attention_mask"]).astype(bool)]


def sample_turn(lm: Any, obs: dict[str, np.ndarray], max_new_tokens: int, seed: int = 0) -> np.ndarray:
    """One turn sampled from the env's model on the observation (temperature 1), as a ``(T,)`` action."""
    import torch

    torch.manual_seed(seed)
    ids = torch.as_tensor(np.asarray(obs["input_ids"])[None])
    mask = torch.as_tensor(np.asarray(obs["attention_mask"])[None])
    return lm.generate(ids, mask, max_new_tokens, do_sample=True).response_ids[0].numpy().astype(np.int64)


def play(env: gym.Env, turns: str | Sequence[str] | Turn, problem_id: int, seed: int = 0) -> Episode:
    """Play one episode of ``env`` on ``problem_id`` with scripted turns, until it terminates or truncates.

    Args:
        env: An llm-gym env (wrapped or not; its ``unwrapped`` has ``lm`` and ``max_new_tokens``).
        turns: One text for every turn; a list of texts (turn ``i`` says ``turns[i]``, the last one repeats); or
            ``fn(turn_index, obs)`` returning a text or token ids. A token env gets the turn's tokens one by one
            (one turn: its episode is one response).
        problem_id: The problem (``reset(options={"problem_id": k})``).
        seed: The reset seed.

    Returns:
        The :class:`Episode`.

    Raises:
        RuntimeError: the episode did not end within :data:`MAX_STEPS` steps.
    """
    base = env.unwrapped
    lm, budget = base.lm, base.max_new_tokens
    if isinstance(turns, str):
        turns = [turns]
    pick = turns if callable(turns) else (lambda i, obs: turns[min(i, len(turns) - 1)])
    obs, _ = env.reset(seed=seed, options={"problem_id": problem_id})
    episode = Episode(observations=[obs])
    queue: list[int] = []
    for step in range(MAX_STEPS):
        if is_token_env(env):
            if not queue:
                queue = [int(t) for t in real_ids(lm, encode_turn(lm, pick(0, obs), budget))] or [lm.eos_token_id]
            action: Any = queue.pop(0) if queue else lm.eos_token_id
        else:
            action = encode_turn(lm, pick(step, obs), budget)
        obs, reward, terminated, truncated, info = env.step(action)
        episode.actions.append(action)
        episode.observations.append(obs)
        episode.rewards.append(float(reward))
        episode.infos.append(info)
        if terminated or truncated:
            episode.reward = float(np.sum(episode.rewards))
            return episode
    raise RuntimeError(f"{type(base).__name__}: an episode did not end within {MAX_STEPS} steps.")
