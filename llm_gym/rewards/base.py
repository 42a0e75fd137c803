"""Reward-function protocol, validation and combination.

A reward function is *batched*: it scores ``N`` responses at once and returns one value per
response. ``None`` means "no opinion" for that sample (for instance a code-execution reward asked
to score a math problem).

>>> def length_reward(prompts, responses, answers, **kw):
...     return [min(len(r), 10) / 10 for r in responses]
>>> out = call_reward_fn(length_reward, ["p", "p"], ["hi", "hello world"], ["", ""])
>>> out.values.tolist(), out.has_opinion.tolist()
([0.2, 1.0], [True, True])
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CombinedReward",
    "RewardFunction",
    "RewardFunctionError",
    "RewardOutput",
    "call_reward_fn",
    "reward_fn_name",
]


@runtime_checkable
class RewardFunction(Protocol):
    """Protocol every reward function satisfies.

    A reward function receives parallel lists of length ``N`` and returns one score per response.

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

    def __call__(
        self,
        prompts: list[str],
        responses: list[str],
        answers: list[str],
        **problem_fields: Any,
    ) -> Sequence[float | None]: ...


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


def _is_torch_tensor(obj: Any) -> bool:
    # Avoid importing torch just for an isinstance check: if torch is not loaded, obj can't be a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _reward_items(raw: Any, name: str, n: int) -> list[Any]:
    """Turn a reward function's return value into a list of ``n`` raw items.

    Raises:
        RewardFunctionError: If ``raw`` is not a list/tuple/1-D array/1-D tensor of length ``n``.
    """
    if isinstance(raw, np.ndarray) or _is_torch_tensor(raw):
        shape = tuple(raw.shape)
        if len(shape) != 1:
            raise RewardFunctionError(
                f"Reward function {name!r} returned an array of shape {shape}; it must return a 1-D "
                f"array/list of shape ({n},), one value per response."
            )
        items = raw.detach().cpu().tolist() if _is_torch_tensor(raw) else raw.tolist()
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise RewardFunctionError(
            f"Reward function {name!r} returned {type(raw).__name__}; it must return a list (or tuple, "
            f"1-D np.ndarray or 1-D torch.Tensor) of {n} floats or None, one value per response."
        )

    if len(items) != n:
        raise RewardFunctionError(
            f"Reward function {name!r} returned the wrong number of values: expected {n}, got "
            f"{len(items)}. It must return one value per response (use None for 'no opinion')."
        )
    return items


def _validated_output(items: list[Any], name: str, n: int) -> RewardOutput:
    """Check each of the ``n`` items is a finite real or ``None`` and pack them into arrays.

    Raises:
        RewardFunctionError: On an item that is not a real number or ``None``, or is not finite.
    """
    values = np.zeros(n, dtype=np.float64)
    has_opinion = np.ones(n, dtype=bool)
    for i, item in enumerate(items):
        if item is None:
            has_opinion[i] = False
            continue
        if isinstance(item, (bool, np.bool_)):
            values[i] = float(item)
            continue
        if not isinstance(item, numbers.Real):
            raise RewardFunctionError(
                f"Reward function {name!r} returned {item!r} (type {type(item).__name__}) at index {i}; "
                f"every element must be a real number (int/float/bool) or None."
            )
        value = float(item)
        if not math.isfinite(value):
            raise RewardFunctionError(
                f"Reward function {name!r} returned a non-finite value {value!r} at index {i}; rewards "
                f"must be finite. Return None for 'no opinion' instead of NaN, and clip infinities."
            )
        values[i] = value
    return RewardOutput(values=values, has_opinion=has_opinion)


def call_reward_fn(
    fn: RewardFunction,
    prompts: Sequence[str],
    responses: Sequence[str],
    answers: Sequence[str],
    **problem_fields: Any,
) -> RewardOutput:
    """Call a reward function on a batch and validate what it returns.

    Accepted return values: a ``list``/``tuple``, a 1-D ``np.ndarray`` or a 1-D ``torch.Tensor`` with
    exactly one entry per response. Each entry must be a finite real number or ``None``. ``bool``
    values are accepted and count as ``1.0``/``0.0``.

    Args:
        fn: The reward function (see :class:`RewardFunction`).
        prompts: ``N`` prompts.
        responses: ``N`` responses.
        answers: ``N`` gold answers.
        **problem_fields: Extra per-problem fields, passed through unchanged.

    Returns:
        A :class:`RewardOutput` with ``values`` (``(N,)`` float64, ``None`` -> ``0.0``) and
        ``has_opinion`` (``(N,)`` bool, ``False`` where ``None`` was returned).

    Raises:
        ValueError: If ``prompts``, ``responses`` and ``answers`` have different lengths (caller bug).
        RewardFunctionError: If ``fn`` raises, returns a non-sequence, returns the wrong number of
            values, or returns an element that is not a finite real number or ``None``. The message
            names the function and the index/value at fault.

    >>> out = call_reward_fn(lambda p, r, a, **kw: [1, None, True], ["", "", ""], ["a", "b", "c"], ["", "", ""])
    >>> out.values.tolist(), out.has_opinion.tolist()
    ([1.0, 0.0, 1.0], [True, False, True])
    """
    n = len(responses)
    if len(prompts) != n or len(answers) != n:
        raise ValueError(
            f"call_reward_fn: prompts, responses and answers must have the same length, got "
            f"len(prompts)={len(prompts)}, len(responses)={n}, len(answers)={len(answers)}."
        )
    name = reward_fn_name(fn)
    try:
        raw = fn(list(prompts), list(responses), list(answers), **problem_fields)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise RewardFunctionError(
            f"Reward function {name!r} raised {type(exc).__name__}: {exc}. Fix the function so it does "
            f"not raise on this batch (return None for samples it cannot score)."
        ) from exc

    items = _reward_items(raw, name, n)
    return _validated_output(items, name, n)


class CombinedReward:
    """Weighted sum of several named reward functions.

    ``CombinedReward`` is itself a :class:`RewardFunction`. Each component is validated with
    :func:`call_reward_fn`; a component's ``None`` contributes ``0.0`` to the total.

    Args:
        components: Mapping ``name -> reward function``; must be non-empty. Names are used as keys
            in :meth:`compute` for per-component logging.
        weights: Optional mapping ``name -> weight`` (finite real). Missing names default to ``1.0``.

    Raises:
        ValueError: If ``components`` is empty, a component is not callable, ``weights`` has a key
            that is not a component name, or a weight is not a finite real number.

    Attributes:
        name: Always ``"combined"``.
        components: The component functions (a copy of the mapping given).
        weights: The full weight mapping, one entry per component.

    >>> correct = lambda p, r, a, **kw: [float(x == y) for x, y in zip(r, a)]
    >>> short = lambda p, r, a, **kw: [float(len(x) < 3) for x in r]
    >>> combined = CombinedReward({"correct": correct, "short": short}, weights={"short": 0.5})
    >>> combined(["q", "q"], ["42", "4242"], ["42", "4242"])
    [1.5, 1.0]
    """

    name = "combined"

    def __init__(
        self,
        components: Mapping[str, RewardFunction],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not components:
            raise ValueError("CombinedReward needs at least one component reward function, got none.")
        for key, fn in components.items():
            if not callable(fn):
                raise ValueError(
                    f"CombinedReward component {key!r} is not callable (got {type(fn).__name__}); "
                    f"pass reward functions fn(prompts, responses, answers, **fields)."
                )
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(components))
        if unknown:
            raise ValueError(
                f"CombinedReward weights have unknown keys {unknown}; valid component names are "
                f"{sorted(components)}."
            )
        for key, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
                raise ValueError(
                    f"CombinedReward weight for {key!r} must be a finite real number, got {w!r}."
                )
        self.components: dict[str, RewardFunction] = dict(components)
        self.weights: dict[str, float] = {key: float(weights.get(key, 1.0)) for key in self.components}

    def compute_outputs(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        answers: Sequence[str],
        **problem_fields: Any,
    ) -> tuple[np.ndarray, dict[str, RewardOutput]]:
        """Compute the weighted total and the full validated output of every component.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.
            answers: ``N`` gold answers.
            **problem_fields: Passed to every component.

        Returns:
            ``(total, outputs)``: ``total`` is ``(N,)`` float64; ``outputs`` maps component name to its
            unweighted :class:`RewardOutput` (values and ``has_opinion`` mask).

        Raises:
            RewardFunctionError: If any component fails validation.
        """
        total = np.zeros(len(responses), dtype=np.float64)
        outputs: dict[str, RewardOutput] = {}
        for key, fn in self.components.items():
            out = call_reward_fn(fn, prompts, responses, answers, **problem_fields)
            outputs[key] = out
            total += self.weights[key] * out.values
        return total, outputs

    def compute(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        answers: Sequence[str],
        **problem_fields: Any,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Compute the weighted total and the unweighted per-component values.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.
            answers: ``N`` gold answers.
            **problem_fields: Passed to every component.

        Returns:
            ``(total, components)``: ``total`` is ``(N,)`` float64, the weighted sum; ``components`` maps
            each component name to its unweighted ``(N,)`` float64 values (``None`` -> ``0.0``; use
            :meth:`compute_outputs` for the ``has_opinion`` masks).

        Raises:
            RewardFunctionError: If any component fails validation.
        """
        total, outputs = self.compute_outputs(prompts, responses, answers, **problem_fields)
        return total, {key: out.values for key, out in outputs.items()}

    def __call__(
        self,
        prompts: list[str],
        responses: list[str],
        answers: list[str],
        **problem_fields: Any,
    ) -> list[float]:
        """Return the weighted sum of the components, one float per response (never ``None``)."""
        total, _ = self.compute_outputs(prompts, responses, answers, **problem_fields)
        return total.tolist()

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{key}={reward_fn_name(fn)}*{self.weights[key]:g}" for key, fn in self.components.items()
        )
        return f"CombinedReward({parts})"
