"""Process reward functions: the protocol (one value per step of every response) and a validated call.

Responses are split into steps by :func:`~llm_gym.rewards.steps.split_steps`; a *process reward function*
scores the steps of a batch of responses, one value per step:

>>> def one_per_step(prompts, steps, answers, **problem_fields):
...     return [[1.0] * len(response_steps) for response_steps in steps]
>>> call_process_reward_fn(one_per_step, ["p"], [["3 + 4 = 7", "so 7"]], ["7"])
[[1.0, 1.0]]

The envs turn ``(end_index, reward)`` pairs into ``info["step_rewards"]`` (see
:meth:`llm_gym.envs.common.LLMEnvBase.process_rewards`). Built-in process rewards: the arithmetic rule
checkers (:mod:`llm_gym.rewards.arithmetic`, :mod:`llm_gym.rewards.grounded`) and the process reward model
(:class:`~llm_gym.reward_models.ProcessRewardModelScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from llm_gym.rewards.base import RewardFunctionError, reward_fn_name
from llm_gym.rewards.calling import check_batch_lengths, check_timeout, invoke_reward_fn, validated_value

__all__ = ["ProcessRewardFunction", "call_process_reward_fn"]


@runtime_checkable
class ProcessRewardFunction(Protocol):
    """Protocol of a process reward function: one value per step of every response, batched (:meth:`__call__`)."""

    def __call__(
        self,
        prompts: list[str],
        steps: list[list[str]],
        answers: list[str],
        **problem_fields: Any,
    ) -> Sequence[Sequence[float | None]]:
        """Score every step of ``N`` responses.

        Args:
            prompts: The ``N`` prompts (rendered as text).
            steps: ``N`` lists of step texts (see :func:`split_steps`), one list per response.
            answers: The ``N`` gold answers.
            **problem_fields: Extra per-problem columns (lists of length ``N``), e.g. ``solutions``;
                functions must accept and ignore unknown fields.

        Returns:
            ``N`` sequences, the i-th with one value per step of response i: a finite real number, or
            ``None`` for no opinion (no reward at that step). To be *causal* (the token env pays step
            rewards while the response is generated), step k's value must depend on steps ``0..k`` only.
        """


def _sequence_items(raw: Any) -> list[Any] | None:
    """``raw`` as a list if it is a list, tuple, 1-D array or 1-D tensor, else None."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if hasattr(raw, "tolist") and hasattr(raw, "shape") and len(tuple(raw.shape)) == 1:
        return list(raw.tolist())
    return None


def _validated_steps(raw: Any, name: str, steps: list[list[str]]) -> list[list[float | None]]:
    """Check ``raw`` holds one list per response with one finite value or None per step."""
    outer = _sequence_items(raw)
    if outer is None or len(outer) != len(steps):
        got = f"{len(outer)} lists" if outer is not None else type(raw).__name__
        raise RewardFunctionError(
            f"Process reward function {name!r} returned {got}; it must return a list of {len(steps)} lists, "
            f"one per response, each with one value per step (None for 'no opinion')."
        )
    result = []
    for i, (values, response_steps) in enumerate(zip(outer, steps, strict=True)):
        inner = _sequence_items(values)
        if inner is None or len(inner) != len(response_steps):
            got = f"{len(inner)} values" if inner is not None else type(values).__name__
            raise RewardFunctionError(
                f"Process reward function {name!r} returned {got} for response {i}, which has "
                f"{len(response_steps)} steps; return one value per step (None for 'no opinion')."
            )
        result.append([validated_value(item, f"Process reward function {name!r}", f"for step {k} of response {i}")
                       for k, item in enumerate(inner)])
    return result


def call_process_reward_fn(
    fn: ProcessRewardFunction,
    prompts: Sequence[str],
    steps: Sequence[Sequence[str]],
    answers: Sequence[str],
    *,
    timeout: float | None = None,
    **problem_fields: Any,
) -> list[list[float | None]]:
    """Call a process reward function on a batch and validate what it returns.

    Args:
        fn: The process reward function (see :class:`ProcessRewardFunction`).
        prompts: ``N`` prompts.
        steps: ``N`` lists of step texts.
        answers: ``N`` gold answers.
        timeout: Seconds ``fn`` may take (finite, > 0), or ``None`` for no limit; as in
            :func:`llm_gym.rewards.call_reward_fn` (a timed-out call keeps running in a daemon thread).
        **problem_fields: Extra per-problem fields, passed through unchanged.

    Returns:
        ``N`` lists, the i-th with one ``float`` or ``None`` per step of response i (``bool`` -> 0/1).

    Raises:
        ValueError: ``prompts``, ``steps`` and ``answers`` differ in length (caller bug), or a bad
            ``timeout``.
        RewardFunctionError: ``fn`` raises, times out, returns the wrong number of lists or of values in
            a list, or a value that is not a finite real number or ``None``. The message names ``fn``.

    >>> call_process_reward_fn(lambda p, s, a, **kw: [[True, None]], ["p"], [["a", "b"]], ["7"])
    [[1.0, None]]
    """
    check_batch_lengths("call_process_reward_fn", prompts, steps, answers, "steps")
    timeout = check_timeout(timeout, "call_process_reward_fn")
    name = reward_fn_name(fn)
    step_lists = [list(s) for s in steps]
    args = (list(prompts), [list(s) for s in step_lists], list(answers))
    raw = invoke_reward_fn(fn, args, problem_fields, timeout, name, kind="Process reward function", unit="steps")
    return _validated_steps(raw, name, step_lists)
