"""What a reward function is: the batched protocol, its error, its validated output and its name.

A reward function is *batched*: it scores ``N`` responses at once and returns one value per
response. ``None`` means "no opinion" for that sample (for instance a code-execution reward asked
to score a math problem). :func:`~llm_gym.rewards.calling.call_reward_fn` calls one and validates what it
returns (:class:`RewardOutput`, or :class:`RewardFunctionError`);
:class:`~llm_gym.rewards.combined.CombinedReward` takes a weighted sum of several.

>>> def length_reward(prompts, responses, answers, **kw):
...     return [min(len(r), 10) / 10 for r in responses]
>>> isinstance(length_reward, RewardFunction), reward_fn_name(length_reward)
(True, 'length_reward')
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "RewardFunction",
    "RewardFunctionError",
    "RewardOutput",
    "reward_fn_name",
]


@runtime_checkable
class RewardFunction(Protocol):
    """Protocol every reward function satisfies.

    A reward function receives parallel lists of length ``N`` and returns one score per response
    (see :meth:`__call__`).
    """

    def __call__(
        self,
        prompts: list[str],
        responses: list[str],
        answers: list[str],
        **problem_fields: Any,
    ) -> Sequence[float | None]:
        """Score ``N`` responses.

        Args:
            prompts: The ``N`` prompts (already rendered as text).
            responses: The ``N`` generated responses.
            answers: The ``N`` reference (gold) answers; may be empty strings when not applicable.
            **problem_fields: Extra per-problem columns (each typically a list of length ``N``),
                e.g. ``test_cases`` for a code task. Functions must accept and ignore unknown fields.

        Returns:
            A list (or tuple, 1-D ``np.ndarray`` or 1-D ``torch.Tensor``) of ``N`` values, each a real
            number (``bool`` counts as 0/1) or ``None`` for "no opinion".
        """


class RewardFunctionError(ValueError):
    """A reward function raised, or returned something that is not ``N`` finite numbers / ``None``.

    The message always names the offending function (see :func:`reward_fn_name`) and says how to fix it.
    """


class RewardOutput(NamedTuple):
    """Validated output of one reward function on a batch.

    Attributes:
        values: ``np.ndarray`` of shape ``(N,)``, dtype float64. ``None`` entries are stored as ``0.0``.
        has_opinion: ``np.ndarray`` of shape ``(N,)``, dtype bool; ``False`` where the function returned
            ``None``.
    """

    values: np.ndarray
    has_opinion: np.ndarray


def reward_fn_name(fn: Any) -> str:
    """Return a human-readable name for a reward function.

    Resolution order: ``functools.partial`` is unwrapped to the underlying callable; then a string
    ``name`` attribute; then ``__name__`` (functions, methods, lambdas -> ``"<lambda>"``); otherwise the
    class name of the callable object.

    Args:
        fn: Any callable (or object) used as a reward function.

    Returns:
        The name as a string.

    >>> import functools
    >>> def my_reward(p, r, a, **kw): return [1.0] * len(r)
    >>> reward_fn_name(functools.partial(my_reward))
    'my_reward'
    """
    if isinstance(fn, functools.partial):
        return reward_fn_name(fn.func)
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    dunder = getattr(fn, "__name__", None)
    if isinstance(dunder, str) and dunder:
        return dunder
    return type(fn).__name__
