"""Episode-end terms: :class:`EpisodeEndTerm` (the base), :class:`LengthPenalty` and :class:`OverlongPenalty`.

An episode-end term is added to (or replaces) the reward of the step that ends an episode and is recorded in
``info["reward_components"]``; see :mod:`llm_gym.wrappers.reward` for the semantics on sequence, token and
multi-turn envs. Each term declares its batched form (:meth:`EpisodeEndTerm.terms`, one call for ``n``
finished responses); ``step`` runs it on a batch of one and a vector env once per vector step.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from llm_gym.envs.multiturn import is_multi_turn
from llm_gym.rewards.length import length_penalty, overlong_penalty
from llm_gym.scoring import BatchedRewardWrapper

__all__ = ["EpisodeEndTerm", "LengthPenalty", "OverlongPenalty", "finite"]


def finite(value: Any, what: str) -> float:
    """``value`` as a float; raises ``ValueError`` naming ``what`` unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite real number, got {value!r}.")
    return float(value)


def _unique_key(components: dict[str, Any], name: str) -> str:
    """``name``, or ``name_2``, ``name_3``... for the first one not yet in ``components``."""
    key, i = name, 1
    while key in components:
        i += 1
        key = f"{name}_{i}"
    return key


class EpisodeEndTerm(BatchedRewardWrapper, gym.utils.RecordConstructorArgs):
    """Base of the wrappers that add a term to the reward of the step that ends an episode.

    Subclasses set ``name`` and implement :meth:`term` (one finished response) and/or :meth:`terms` (``n``
    at once; the default calls :meth:`term` per row), and :meth:`scoring_key`. ``replace=True`` makes the
    term the whole reward of that step instead of adding it (on a multi-turn env the earlier turns' rewards
    stay). The batched form, :meth:`rewards_batch`, calls :meth:`terms` once for every row whose episode
    ends; ``step`` is that form on a batch of one.

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        name: Key of the term in ``info["reward_components"]`` (and ``info["episode_reward_components"]``).
        replace: Replace the last step's reward with the term instead of adding it.

    Attributes:
        multi_turn: True when the env is multi-turn (:func:`~llm_gym.envs.multiturn.is_multi_turn`; see
            :mod:`llm_gym.wrappers.reward` for the multi-turn semantics).
    """

    #: ``info`` keys :meth:`term` reads; checked on the last step with a clear error.
    required_keys: tuple[str, ...] = ("response_length",)

    def __init__(self, env: gym.Env, name: str, replace: bool = False):
        gym.Wrapper.__init__(self, env)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}.")
        self.name = name
        self.replace = bool(replace)
        self.multi_turn = is_multi_turn(env.observation_space)

    def term(self, info: dict[str, Any]) -> float:
        """The term for the finished response described by the last step's ``info``."""
        return self.terms([info])[0]

    def terms(self, infos: list[dict[str, Any]]) -> list[float]:
        """The terms of ``n`` finished responses (one last-step ``info`` each); default: :meth:`term` per row.

        Subclasses that call a batched function override it to call the function once for all rows
        (:class:`~llm_gym.wrappers.RewardFunction`). Row ``r`` must equal ``term(infos[r])``.
        """
        if type(self).term is EpisodeEndTerm.term:
            raise NotImplementedError(f"{type(self).__name__} must implement term(info) or terms(infos).")
        return [float(self.term(info)) for info in infos]

    def scoring_key(self) -> tuple:
        """The term's configuration: equal keys = wrappers of different sub-envs that score alike."""
        return type(self), self.name, self.replace, self.multi_turn, self.required_keys

    def apply_term(self, reward: SupportsFloat, info: dict[str, Any], value: float
                   ) -> tuple[float, dict[str, Any]]:
        """``(reward, info)`` of the episode's last step with the term ``value`` added (or substituted).

        ``info`` is not mutated: the result holds a copy of ``info["reward_components"]`` with the term
        under :attr:`name` (suffixed when the name is taken in it or in ``info["episode_reward_components"]``),
        and, when ``info`` has ``episode_reward_components`` (multi-turn envs), a copy of that with the term
        under the same key.
        """
        value = float(value)
        reward = value if self.replace else float(reward) + value
        components = dict(info.get("reward_components", {}))
        episode = info.get("episode_reward_components")
        key = _unique_key({**components, **(episode or {})}, self.name)
        components[key] = value
        out = {**info, "reward_components": components}
        if episode is not None:
            out["episode_reward_components"] = {**episode, key: value}
        return reward, out

    def rewards_batch(self, rewards: np.ndarray, infos: list[dict[str, Any]], ended: np.ndarray
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Add (or substitute) the term on every row whose episode ends: :meth:`terms` called ONCE for them.

        Args:
            rewards: ``(n,)`` float64.
            infos: ``n`` infos.
            ended: ``(n,)`` bool; other rows pass through unchanged.

        Returns:
            ``(rewards (n,), infos)`` with the term applied (:meth:`apply_term`) on the ending rows.

        Raises:
            RuntimeError: an ending row's info lacks a key the term needs (not an llm-gym env, or an episode
                cut short by another wrapper such as ``TimeLimit``).
            ValueError: :meth:`terms` returned a number of values other than the ending rows.
        """
        rows = np.flatnonzero(ended)
        rewards, infos = np.array(rewards, dtype=np.float64), list(infos)
        if not len(rows):
            return rewards, infos
        for r in rows:
            self._check_keys(infos[r])
        values = list(self.terms([infos[r] for r in rows]))
        if len(values) != len(rows):
            raise ValueError(f"{type(self).__name__}.terms returned {len(values)} values for {len(rows)} finished "
                             f"responses; it must return one value per info it is given.")
        for r, value in zip(rows, values, strict=True):
            rewards[r], infos[r] = self.apply_term(rewards[r], infos[r], float(value))
        return rewards, infos

    def _check_keys(self, info: dict[str, Any]) -> None:
        missing = [key for key in self.required_keys if key not in info]
        if missing:
            raise RuntimeError(
                f"{type(self).__name__} needs info{missing} on the step that ends the episode, but the "
                f"wrapped env did not provide it. Wrap an llm-gym SequenceEnv, TokenEnv or MultiTurnEnv, "
                f"and do not put a wrapper that ends episodes mid-response (e.g. TimeLimit) inside this "
                f"one (on a multi-turn env, limit turns with llm_gym.wrappers.TurnLimit)."
            )


class OverlongPenalty(EpisodeEndTerm):
    """Add DAPO's soft overlong punishment (arXiv:2503.14476 eq. 13) to the reward of each finished response.

    On the step that ends an episode (the only step of a sequence env, the last token of a token env), the
    penalty of :func:`llm_gym.rewards.overlong_penalty` for ``info["response_length"]`` tokens is added to
    the reward and reported as ``info["reward_components"]["overlong_penalty"]``; other steps are unchanged.
    The algorithms' ``overlong_buffer`` shaping calls the same function.

    Multi-turn env: every turn is a response with its own ``max_new_tokens`` budget, so the term is the SUM
    over the episode's turns of ``overlong_penalty(turn length)`` (turn lengths in tokens from
    ``info["turn_spans"]``), in ``[-penalty_factor * turns, 0]``, added on the step that ends the episode.
    Penalising only the last turn would let intermediate turns (tool calls) run into the budget for free;
    a one-turn episode pays exactly the single-turn penalty.

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        overlong_buffer: ``L_cache`` in tokens; default 20 % of ``max_new_tokens`` (DAPO: 4096 of 20480).
        penalty_factor: Penalty at ``max_new_tokens`` tokens is ``-penalty_factor`` (per turn on a
            multi-turn env).

    Raises:
        ValueError: ``overlong_buffer`` outside ``[0, max_new_tokens]`` or ``penalty_factor < 0``.

    Example:
        >>> env = OverlongPenalty(gym.make("LLMMath-v0"), overlong_buffer=16)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, overlong_buffer: int | None = None, penalty_factor: float = 1.0):
        gym.utils.RecordConstructorArgs.__init__(self, overlong_buffer=overlong_buffer,
                                                 penalty_factor=penalty_factor)
        super().__init__(env, name="overlong_penalty")
        self.max_length = int(env.get_wrapper_attr("max_new_tokens"))
        self.overlong_buffer = round(0.2 * self.max_length) if overlong_buffer is None else int(overlong_buffer)
        self.penalty_factor = float(penalty_factor)
        overlong_penalty([0], self.max_length, self.overlong_buffer, self.penalty_factor)  # validates
        if self.multi_turn:
            self.required_keys = ("turn_spans",)

    def scoring_key(self) -> tuple:
        """The base key plus ``(max_length, overlong_buffer, penalty_factor)``."""
        return (*super().scoring_key(), self.max_length, self.overlong_buffer, self.penalty_factor)

    def terms(self, infos: list[dict[str, Any]]) -> list[float]:
        """``overlong_penalty`` of ``n`` finished responses in ONE call, each in ``[-penalty_factor, 0]``.

        Args:
            infos: ``n`` last-step infos (``response_length``; multi-turn: ``turn_spans``, ``(start, end)``
                token indices of each turn, whose penalties are summed per episode).

        Returns:
            ``n`` terms.
        """
        if not self.multi_turn:
            lengths = [info["response_length"] for info in infos]
            return [float(v) for v in overlong_penalty(lengths, self.max_length, self.overlong_buffer,
                                                       self.penalty_factor)]
        turns = [[end - start for start, end in info["turn_spans"]] for info in infos]
        values = overlong_penalty([n for row in turns for n in row], self.max_length, self.overlong_buffer,
                                  self.penalty_factor)
        bounds = np.cumsum([0] + [len(row) for row in turns])
        return [float(values[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class LengthPenalty(EpisodeEndTerm):
    """Add a linear per-token cost ``-coef * response_length / max_length`` to each finished response.

    The term is :func:`llm_gym.rewards.length_penalty` of ``info["response_length"]`` (tokens, EOS
    included), added on the step that ends the episode and reported as
    ``info["reward_components"][name]``.

    Multi-turn env: the length is the episode's assistant tokens, ``info["assistant_token_count"]`` (every
    sampled token of every turn; env messages are not the policy's and cost nothing), so the episode pays
    ``-coef * assistant_tokens / max_length`` once, on its last step. The default normaliser stays
    ``max_new_tokens``: a token costs the same as in a single-turn episode whatever ``max_turns`` is, and
    the term is in ``[-coef * max_turns, 0]``.

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        coef: Penalty at ``max_length`` tokens, a finite number >= 0.
        max_length: Normaliser in tokens; default the env's ``max_new_tokens`` (so the term is in
            ``[-coef, 0]`` for one response).
        name: Key in ``info["reward_components"]``.

    Raises:
        ValueError: ``coef`` negative or not finite, or ``max_length < 1``.

    Example:
        >>> env = LengthPenalty(gym.make("LLMMath-v0"), coef=0.1)  # 64 tokens cost 0.1  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, coef: float, max_length: int | None = None, name: str = "length_penalty"):
        gym.utils.RecordConstructorArgs.__init__(self, coef=coef, max_length=max_length, name=name)
        super().__init__(env, name=name)
        self.max_length = int(env.get_wrapper_attr("max_new_tokens") if max_length is None else max_length)
        length_penalty([0], self.max_length, coef)  # validates
        self.coef = float(coef)
        if self.multi_turn:
            self.required_keys = ("assistant_token_count",)

    def scoring_key(self) -> tuple:
        """The base key plus ``(max_length, coef)``."""
        return (*super().scoring_key(), self.max_length, self.coef)

    def terms(self, infos: list[dict[str, Any]]) -> list[float]:
        """``-coef * length / max_length`` of ``n`` finished responses in ONE call of ``length_penalty``.

        Args:
            infos: ``n`` last-step infos (``response_length``; multi-turn: ``assistant_token_count``).

        Returns:
            ``n`` terms.
        """
        key = "assistant_token_count" if self.multi_turn else "response_length"
        return [float(v) for v in length_penalty([info[key] for info in infos], self.max_length, self.coef)]
