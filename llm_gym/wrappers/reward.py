"""Reward-shaping wrappers for llm-gym envs; each works on sequence, token and multi-turn envs.

Two kinds:

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

**Batched scoring.** Each episode-end term also computes ``n`` rows at once (:meth:`_EpisodeEndTerm.terms`;
:class:`RewardFunction` and its subclasses call their function once with all ``n``) and takes a queue of
precomputed terms (:meth:`_EpisodeEndTerm.prime_terms`), used on the episode's last step when the step's
:meth:`_EpisodeEndTerm.prime_key` matches the queue's head.
:func:`llm_gym.envs.batch_scoring.prime_sequence_rollout` uses both to score a whole sequence-level
rollout with one call per reward function while every step still returns its own reward and info.

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
- Batched scoring is single-turn only: :func:`~llm_gym.envs.batch_scoring.prime_sequence_rollout` returns
  False on multi-turn envs (nothing primed) and :meth:`_EpisodeEndTerm.prime_terms` raises, so every term is
  computed on its step. SB3's ``Monitor`` (e.g. ``make_group_vec_env(..., monitor=True)``) records the sum
  of the wrapped step rewards. :class:`~llm_gym.wrappers.ProcessReward` rejects multi-turn envs.

>>> import gymnasium as gym, llm_gym  # doctest: +SKIP
>>> env = gym.make("LLMMath-v0", format_weight=0.0)  # doctest: +SKIP
>>> env = ScaleReward(LengthPenalty(FormatReward(env, weight=0.1), coef=0.05), 2.0)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from typing import Any, SupportsFloat

import gymnasium as gym
import gymnasium.wrappers
import numpy as np

from llm_gym.envs.common import problem_fields
from llm_gym.rewards.base import RewardFunction as RewardFn
from llm_gym.rewards.base import _check_timeout, call_reward_fn, reward_fn_name
from llm_gym.rewards.format import boxed_format_reward, regex_format_reward
from llm_gym.rewards.length import length_penalty, overlong_penalty

__all__ = [
    "ClipReward",
    "FormatReward",
    "LengthPenalty",
    "OverlongPenalty",
    "RewardFunction",
    "RewardModel",
    "ScaleReward",
]


def _finite(value: Any, what: str) -> float:
    """``value`` as a float; raises ``ValueError`` naming ``what`` unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite real number, got {value!r}.")
    return float(value)


def _is_multiturn(env: gym.Env) -> bool:
    """Whether ``env`` (possibly wrapped) is a :class:`~llm_gym.envs.multiturn.MultiTurnEnv`."""
    from llm_gym.envs.multiturn import MultiTurnEnv  # lazy: importing llm_gym.envs imports this module

    return isinstance(env.unwrapped, MultiTurnEnv)


def _unique_key(components: dict[str, Any], name: str) -> str:
    """``name``, or ``name_2``, ``name_3``... for the first one not yet in ``components``."""
    key, i = name, 1
    while key in components:
        i += 1
        key = f"{name}_{i}"
    return key


class _EpisodeEndTerm(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Base of the wrappers that add a term to the reward of the step that ends an episode.

    Subclasses set ``name`` and implement :meth:`term`; ``replace=True`` makes the term the whole reward
    of that step instead of adding it (on a multi-turn env the earlier turns' rewards stay).

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        name: Key of the term in ``info["reward_components"]`` (and ``info["episode_reward_components"]``).
        replace: Replace the last step's reward with the term instead of adding it.

    Attributes:
        multi_turn: True when the base env is a :class:`~llm_gym.envs.multiturn.MultiTurnEnv` (see the
            module docstring for the multi-turn semantics).
    """

    #: ``info`` keys :meth:`term` reads; checked on the last step with a clear error.
    required_keys: tuple[str, ...] = ("response_length",)

    def __init__(self, env: gym.Env, name: str, replace: bool = False):
        gym.Wrapper.__init__(self, env)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}.")
        self.name = name
        self.replace = bool(replace)
        self.multi_turn = _is_multiturn(env)
        self._primed_terms: deque[tuple[tuple, float]] = deque()

    def term(self, info: dict[str, Any]) -> float:
        """The term for the finished response described by the last step's ``info``."""
        raise NotImplementedError

    def terms(self, infos: list[dict[str, Any]]) -> list[float]:
        """The terms of ``n`` finished responses (one ``info`` each); default: :meth:`term` per row.

        Subclasses that call a batched function override it to call the function once for all rows
        (:class:`RewardFunction`). Row ``r`` must equal ``term(infos[r])``.
        """
        return [float(self.term(info)) for info in infos]

    def prime_key(self, info: dict[str, Any]) -> tuple:
        """What the term depends on: ``(problem_id, response_text, response_length)`` of the step's ``info``.

        A primed term (:meth:`prime_terms`) is used only when the step's key equals the queued one. A
        subclass whose term reads other ``info`` keys overrides this to include them.
        """
        return info.get("problem_id"), info.get("response_text"), info.get("response_length")

    def prime_terms(self, keys: list[tuple], values: list[float]) -> None:
        """Queue precomputed terms for the next episode ends, in order (``n`` keys, ``n`` values).

        On an episode's last step the queue's head is used instead of :meth:`term` when its key equals
        :meth:`prime_key` of the step's ``info``; on a mismatch the queue is cleared and the term is
        computed as usual (priming never changes a result). ``reset`` keeps the queue.
        :func:`llm_gym.envs.batch_scoring.prime_sequence_rollout` fills it.

        Raises:
            ValueError: ``keys`` and ``values`` differ in length, or the env is multi-turn (batched scoring is
                single-turn only: a multi-turn term depends on the whole episode, so it is computed on the
                step that ends it).
        """
        if self.multi_turn:
            raise ValueError(
                f"{type(self).__name__}.prime_terms: batched scoring is single-turn only, and this env is "
                f"multi-turn ({type(self.unwrapped).__name__}). Step it without priming: the term is computed "
                f"on the step that ends each episode.")
        if len(keys) != len(values):
            raise ValueError(f"prime_terms needs one value per key, got {len(keys)} keys and {len(values)} values.")
        self._primed_terms.extend((key, float(value)) for key, value in zip(keys, values, strict=True))

    def clear_primed(self) -> None:
        """Drop this wrapper's queued terms and every queued result of the layers below it."""
        self._primed_terms.clear()
        try:
            self.env.get_wrapper_attr("clear_primed")()
        except AttributeError:
            pass

    @property
    def n_primed(self) -> int:
        """Number of queued terms of this wrapper (see :meth:`prime_terms`)."""
        return len(self._primed_terms)

    def _take_primed(self, info: dict[str, Any]) -> float | None:
        """The queued term for this ``info`` (popped), or None (the queue is cleared on a mismatch)."""
        if not self._primed_terms:
            return None
        key, value = self._primed_terms[0]
        if key == self.prime_key(info):
            self._primed_terms.popleft()
            return value
        self._primed_terms.clear()
        return None

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

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env; on the episode's last step add (or substitute) the term and record it in ``info``.

        The term is the queued one when :meth:`prime_terms` queued it for this response, else :meth:`term`.

        Raises:
            RuntimeError: The last step's info lacks a key the term needs (not an llm-gym env, or an
                episode cut short by another wrapper such as ``TimeLimit``).
        """
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            missing = [key for key in self.required_keys if key not in info]
            if missing:
                raise RuntimeError(
                    f"{type(self).__name__} needs info{missing} on the step that ends the episode, but the "
                    f"wrapped env did not provide it. Wrap an llm-gym SequenceEnv, TokenEnv or MultiTurnEnv, "
                    f"and do not put a wrapper that ends episodes mid-response (e.g. TimeLimit) inside this "
                    f"one (on a multi-turn env, limit turns with llm_gym.wrappers.TurnLimit)."
                )
            value = self._take_primed(info)
            reward, info = self.apply_term(reward, info, float(self.term(info)) if value is None else value)
        return obs, reward, terminated, truncated, info


class OverlongPenalty(_EpisodeEndTerm):
    """Add DAPO's soft overlong punishment (arXiv:2503.14476 eq. 13) to the reward of each finished response.

    On the step that ends an episode (the only step of a sequence env, the last token of a token env), the
    penalty of :func:`llm_gym.rewards.overlong_penalty` for ``info["response_length"]`` tokens is added to
    the reward and reported as ``info["reward_components"]["overlong_penalty"]``; other steps are unchanged.

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

    def term(self, info: dict[str, Any]) -> float:
        """``overlong_penalty(response_length)``, in ``[-penalty_factor, 0]``; multi-turn: summed over turns.

        Args:
            info: The last step's info (``response_length``; multi-turn: ``turn_spans``, ``(start, end)``
                token indices of each turn).
        """
        if self.multi_turn:
            lengths = [end - start for start, end in info["turn_spans"]]
            return float(overlong_penalty(lengths, self.max_length, self.overlong_buffer,
                                          self.penalty_factor).sum())
        return float(overlong_penalty([info["response_length"]], self.max_length, self.overlong_buffer,
                                      self.penalty_factor)[0])


class LengthPenalty(_EpisodeEndTerm):
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

    def term(self, info: dict[str, Any]) -> float:
        """``-coef * response_length / max_length`` (multi-turn: ``assistant_token_count`` for the length).

        Args:
            info: The last step's info.
        """
        length = info["assistant_token_count"] if self.multi_turn else info["response_length"]
        return float(length_penalty([length], self.max_length, self.coef)[0])


class RewardFunction(_EpisodeEndTerm):
    """Score each finished response with a batched reward function and add ``weight * value`` to its reward.

    On the step that ends the episode ``fn`` is called through :func:`llm_gym.rewards.call_reward_fn`
    (validated, optional ``timeout``) on a batch of one: ``[info["prompt_text"]]``,
    ``[info["response_text"]]``, ``[info["answer"]]`` plus the env's problem fields (``problem_ids``,
    ``solutions``), exactly as the env calls its own ``reward_fn``; :meth:`terms` (used by
    :func:`~llm_gym.envs.batch_scoring.prime_sequence_rollout`) calls it once for ``n`` responses. ``None`` (no opinion) counts as 0.0.
    ``weight * value`` is added to the reward, or with ``replace=True`` becomes the reward, and is
    recorded in ``info["reward_components"][name]``. With ``replace=True`` and ``weight=1`` the wrapped
    env pays what the env built with ``reward_fn=fn`` pays. (This wrapper plugs in a function satisfying
    the :class:`llm_gym.rewards.RewardFunction` protocol; same name, different module.)

    On a token env ``replace=True`` replaces the last token's reward only: rewards paid on earlier
    tokens (process rewards) stay, and step rewards the env pays on the last token are replaced too, so
    put process-reward wrappers outside this one.

    On a multi-turn env ``fn`` scores the LAST turn (``info["response_text"]``: the final answer, or the last
    turn of a truncated episode) against the episode's prompt, on the step that ends the episode, and the
    term is also added to ``info["episode_reward_components"]``. ``replace=True`` replaces that step's
    reward only: rewards of earlier turns (tool costs) stay in the return.

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        fn: A batched reward function ``fn(prompts, responses, answers, **problem_fields)`` (see
            :class:`llm_gym.rewards.RewardFunction`), e.g. a reward-model scorer.
        weight: Finite multiplier of the value.
        replace: Replace the env's reward instead of adding to it.
        name: Key in ``info["reward_components"]``; default :func:`llm_gym.rewards.reward_fn_name` of ``fn``.
        timeout: Seconds one call may take (``None`` = no limit); see :func:`llm_gym.rewards.call_reward_fn`.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: ``weight`` not finite, or ``timeout`` not ``None`` nor a finite number > 0.
        llm_gym.rewards.RewardFunctionError: From ``step``, when ``fn`` raises, times out or returns an
            invalid value (the message names it).

    Example:
        >>> def brevity(prompts, responses, answers, **fields):
        ...     return [1.0 if len(r) < 200 else 0.0 for r in responses]
        >>> env = RewardFunction(gym.make("LLMMath-v0"), brevity, weight=0.2)  # doctest: +SKIP
    """

    required_keys = ("prompt_text", "response_text", "answer", "problem_id")

    def __init__(self, env: gym.Env, fn: RewardFn, weight: float = 1.0, replace: bool = False,
                 name: str | None = None, timeout: float | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, fn=fn, weight=weight, replace=replace, name=name,
                                                 timeout=timeout)
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}: fn must be a callable reward function "
                            f"fn(prompts, responses, answers, **fields), got {type(fn).__name__}.")
        super().__init__(env, name=reward_fn_name(fn) if name is None else name, replace=replace)
        self.fn = fn
        self.weight = _finite(weight, f"{type(self).__name__} weight")
        self.timeout = _check_timeout(timeout, type(self).__name__)

    def term(self, info: dict[str, Any]) -> float:
        """``weight * fn([prompt_text], [response_text], [answer], **problem_fields)[0]``."""
        return self.terms([info])[0]

    def terms(self, infos: list[dict[str, Any]]) -> list[float]:
        """``weight * fn(prompts, responses, answers, **problem_fields)`` for ``n`` rows, ONE call of ``fn``.

        Args:
            infos: ``n`` last-step infos (``prompt_text``, ``response_text``, ``answer``, ``problem_id``).

        Returns:
            ``n`` weighted values (``None`` counts as 0.0); ``[]`` without calling ``fn`` when ``n = 0``.
        """
        if not infos:
            return []
        out = call_reward_fn(self.fn, [i["prompt_text"] for i in infos], [i["response_text"] for i in infos],
                             [i["answer"] for i in infos], timeout=self.timeout, **self._problem_fields(infos))
        return [self.weight * float(v) for v in out.values]

    def _problem_fields(self, infos: list[dict[str, Any]]) -> dict[str, list]:
        """The env's extra reward-function fields for the rows' problems (``{}`` without ``problems``)."""
        try:
            problems = self.env.get_wrapper_attr("problems")
        except AttributeError:
            return {}
        return problem_fields([problems[i["problem_id"]] for i in infos])


class RewardModel(RewardFunction):
    """Replace (or add to) the env's reward with a reward-model score of each finished response.

    The same mechanics as :class:`RewardFunction` with reward-model defaults: ``replace=True`` and the
    name ``"reward_model"``. ``scorer`` is any callable with the batched reward-function signature (for
    example an outcome reward model scoring ``prompts[i] + responses[i]``); it is called on a batch of
    one per finished response, or once per rollout when the rollout is primed
    (:func:`~llm_gym.envs.batch_scoring.prime_sequence_rollout`). The env's own components (``accuracy``...) stay in
    ``info["reward_components"]`` for logging. On a multi-turn env the scorer sees the prompt and the last
    turn, on the step that ends the episode (see :class:`RewardFunction`).

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        scorer: ``scorer(prompts, responses, answers, **problem_fields) -> N scores``.
        weight: Finite multiplier of the score.
        replace: Replace the env's reward (default) or add ``weight * score`` to it.
        name: Key in ``info["reward_components"]``.
        timeout: Seconds one call may take (``None`` = no limit).

    Raises:
        TypeError: ``scorer`` is not callable.
        ValueError: ``weight`` not finite, or an invalid ``timeout``.

    Example:
        >>> env = RewardModel(gym.make("LLMMath-v0"), my_scorer, timeout=30.0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, scorer: RewardFn, weight: float = 1.0, replace: bool = True,
                 name: str = "reward_model", timeout: float | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, scorer=scorer, weight=weight, replace=replace, name=name,
                                                 timeout=timeout)
        super().__init__(env, scorer, weight=weight, replace=replace, name=name, timeout=timeout)


class FormatReward(RewardFunction):
    """Add ``weight`` times a format reward to each finished response.

    The format reward is :func:`llm_gym.rewards.boxed_format_reward` (1.0 when the response has a complete
    ``\\boxed{...}``), or :func:`llm_gym.rewards.regex_format_reward` (1.0 when ``re.search(pattern,
    response, flags)`` matches) when ``pattern`` is given. Recorded as ``info["reward_components"][name]``
    (the weighted term). On a multi-turn env it checks the last turn, on the step that ends the episode
    (a truncated episode's last turn is a tool call or a guess, so a ``\\boxed{}`` check gives 0).

    Args:
        env: An llm-gym env (``SequenceEnv``, ``TokenEnv`` or ``MultiTurnEnv``, possibly wrapped).
        weight: Finite multiplier.
        pattern: Optional regular expression; ``None`` = the ``\\boxed{}`` check.
        flags: ``re`` flags for ``pattern`` (e.g. ``re.DOTALL``).
        name: Key in ``info["reward_components"]``.

    Raises:
        ValueError: ``weight`` not finite.
        re.error: ``pattern`` does not compile.

    Example:
        >>> env = FormatReward(gym.make("LLMMath-v0"), weight=0.1)  # doctest: +SKIP
        >>> env = FormatReward(env, 0.1, pattern=r"^<think>.*</think>", flags=re.DOTALL)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, weight: float = 1.0, pattern: str | None = None, flags: int = 0,
                 name: str = "format"):
        gym.utils.RecordConstructorArgs.__init__(self, weight=weight, pattern=pattern, flags=flags, name=name)
        fn = boxed_format_reward if pattern is None else regex_format_reward(pattern, flags)
        super().__init__(env, fn, weight=weight, replace=False, name=name)
        self.pattern, self.flags = pattern, flags


class ScaleReward(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Multiply every step's reward by ``scale`` (intermediate token rewards included).

    ``info`` is unchanged: ``info["reward_components"]`` keeps the unscaled terms. On a multi-turn env
    every turn's reward is scaled, so the episode's return is scaled by ``scale``.

    Args:
        env: Any env (an llm-gym env, possibly wrapped).
        scale: Finite multiplier (may be negative or 0).

    Raises:
        ValueError: ``scale`` not finite.

    Example:
        >>> env = ScaleReward(LengthPenalty(gym.make("LLMMath-v0"), coef=0.1), 2.0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, scale: float):
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.RewardWrapper.__init__(self, env)
        self.scale = _finite(scale, "ScaleReward scale")

    def reward(self, reward: SupportsFloat) -> float:
        """``scale * reward``."""
        return self.scale * float(reward)


class ClipReward(gymnasium.wrappers.ClipReward):
    """Clip every step's reward to ``[min_reward, max_reward]`` (intermediate token rewards included).

    Gymnasium's :class:`gymnasium.wrappers.ClipReward` with scalar bounds, checked with a ``ValueError``,
    and a Python ``float`` reward. On a token env intermediate steps pay 0.0, so a ``min_reward > 0`` (or
    ``max_reward < 0``) changes them too. On a multi-turn env each turn's reward is clipped, not the
    episode's return (three tool costs of -0.5 clipped at -1 still sum to -1.5). ``info`` is unchanged.

    Args:
        env: Any env (an llm-gym env, possibly wrapped).
        min_reward: Lower bound, or ``None`` for none.
        max_reward: Upper bound, or ``None`` for none.

    Raises:
        ValueError: Both bounds ``None``, a bound not finite, or ``min_reward > max_reward``.

    Example:
        >>> env = ClipReward(RewardModel(gym.make("LLMMath-v0"), my_scorer), -1.0, 1.0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, min_reward: float | None = None, max_reward: float | None = None):
        if min_reward is None and max_reward is None:
            raise ValueError("ClipReward needs min_reward or max_reward (or both); got neither.")
        low = None if min_reward is None else _finite(min_reward, "ClipReward min_reward")
        high = None if max_reward is None else _finite(max_reward, "ClipReward max_reward")
        if low is not None and high is not None and low > high:
            raise ValueError(f"ClipReward: min_reward={low:g} is larger than max_reward={high:g}; swap them.")
        super().__init__(env, low, high)
        self.min_reward, self.max_reward = low, high

    def reward(self, reward: SupportsFloat) -> float:
        """``reward`` clipped to ``[min_reward, max_reward]``."""
        return float(np.clip(float(reward), self.min_reward, self.max_reward))
