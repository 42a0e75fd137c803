"""Reward functions as episode-end terms: :class:`RewardFunction`, :class:`RewardModel`, :class:`FormatReward`.

Each calls a batched reward function ``fn(prompts, responses, answers, **problem_fields)`` ONCE for all the
responses that end on a step (one on a single env's step, every finished row of a vector env's step) and adds
``weight * value`` to their rewards (see :class:`~llm_gym.wrappers.terms.EpisodeEndTerm`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from llm_gym.envs.problems import problem_fields
from llm_gym.rewards.base import RewardFunction as RewardFn
from llm_gym.rewards.base import reward_fn_name
from llm_gym.rewards.calling import call_reward_fn, check_timeout
from llm_gym.rewards.format import boxed_format_reward, regex_format_reward
from llm_gym.wrappers.terms import EpisodeEndTerm, finite

__all__ = ["FormatReward", "RewardFunction", "RewardModel"]


class RewardFunction(EpisodeEndTerm):
    """Score each finished response with a batched reward function and add ``weight * value`` to its reward.

    On the step that ends the episode ``fn`` is called through :func:`llm_gym.rewards.call_reward_fn`
    (validated, optional ``timeout``) on a batch of one: ``[info["prompt_text"]]``,
    ``[info["response_text"]]``, ``[info["answer"]]`` plus the env's keyword arguments (``problem_ids``,
    ``solutions``, every extra column of the problem, ``trainer_state``), exactly as the env calls its own
    ``reward_fn`` (without ``completion_ids``: the wrapper sees the step's info, not the sampled ids); a vector env calls it once for all the
    responses that end on a vector step (:meth:`terms`). ``None`` (no opinion) counts as 0.0.
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
        self.weight = finite(weight, f"{type(self).__name__} weight")
        self.timeout = check_timeout(timeout, type(self).__name__)
        try:
            self._problems = env.get_wrapper_attr("problems")  # read once: the env's problem list
        except AttributeError:
            self._problems = None
        try:  # the env's own keyword arguments (problem fields and trainer_state), as its reward_fn gets them
            self._reward_kwargs = env.get_wrapper_attr("reward_kwargs")
        except AttributeError:
            self._reward_kwargs = None

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

    def scoring_key(self) -> tuple:
        """The base key plus ``(fn, weight, timeout)`` (the function by identity)."""
        return (*super().scoring_key(), self.fn, self.weight, self.timeout)

    def _problem_fields(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        """The env's reward-function keywords for the rows' problems: its problem fields and ``trainer_state``,
        as the env's own ``reward_fn`` gets them (``{}`` for an env with neither ``reward_kwargs`` nor
        ``problems``)."""
        if self._reward_kwargs is not None:
            return self._reward_kwargs([i["problem_id"] for i in infos])
        if self._problems is None:
            return {}
        return problem_fields([self._problems[i["problem_id"]] for i in infos])


class RewardModel(RewardFunction):
    """Replace (or add to) the env's reward with a reward-model score of each finished response.

    The same mechanics as :class:`RewardFunction` with reward-model defaults: ``replace=True`` and the
    name ``"reward_model"``. ``scorer`` is any callable with the batched reward-function signature (for
    example an outcome reward model scoring ``prompts[i] + responses[i]``); it is called on a batch of
    one on a single env's step, and once for all finished responses on a vector env's step (a whole
    sequence-level rollout). The env's own components (``accuracy``...) stay in
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

    def scoring_key(self) -> tuple:
        """The base key with ``(pattern, flags)`` in place of the function (a new one per wrapper)."""
        key = super().scoring_key()
        return (*key[:-3], (self.pattern, self.flags), *key[-2:])
