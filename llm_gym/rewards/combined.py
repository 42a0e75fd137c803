"""A weighted sum of named reward functions, itself a reward function, with per-component outputs for logging."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llm_gym.rewards.base import RewardFunction, RewardFunctionError, RewardOutput, reward_fn_name
from llm_gym.rewards.calling import call_reward_fn, check_timeout

__all__ = ["CombinedReward"]


class CombinedReward:
    """Weighted sum of several named reward functions.

    ``CombinedReward`` is itself a :class:`RewardFunction`. Each component is validated with
    :func:`call_reward_fn`; a component's ``None`` contributes ``0.0`` to the total.

    Args:
        components: Mapping ``name -> reward function``; must be non-empty. Names are used as keys
            in :meth:`compute` for per-component logging.
        weights: Optional mapping ``name -> weight`` (finite real). Missing names default to ``1.0``.
        timeout: Seconds each component call may take, passed to every :func:`call_reward_fn` (so a
            batch may take up to ``len(components) * timeout``); ``None`` (default) = no limit, the
            components run in the calling thread.

    Raises:
        ValueError: If ``components`` is empty, a component is not callable, ``weights`` has a key
            that is not a component name, a weight is not a finite real number, or ``timeout`` is not
            ``None`` nor a finite number > 0.

    Attributes:
        name: Always ``"combined"``.
        components: The component functions (a copy of the mapping given).
        weights: The full weight mapping, one entry per component.
        timeout: The per-call timeout in seconds, or ``None``.

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
        timeout: float | None = None,
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
        self.timeout: float | None = check_timeout(timeout, "CombinedReward")

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
            RewardFunctionError: If any component fails validation or exceeds ``timeout``, or the weighted sum
                overflows to inf (finite values times weights; the message names the components).
        """
        total = np.zeros(len(responses), dtype=np.float64)
        outputs: dict[str, RewardOutput] = {}
        for key, fn in self.components.items():
            out = call_reward_fn(fn, prompts, responses, answers, timeout=self.timeout, **problem_fields)
            outputs[key] = out
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is raised below, naming the terms
                total += self.weights[key] * out.values
        self._check_finite(total, outputs)
        return total, outputs

    def _check_finite(self, total: np.ndarray, outputs: dict[str, RewardOutput]) -> None:
        """Raise when finite components times their weights sum to inf/NaN (a float64 overflow).

        Raises:
            RewardFunctionError: naming the first non-finite row and every component's weight and value there.
        """
        bad = np.flatnonzero(~np.isfinite(total))
        if not len(bad):
            return
        r = int(bad[0])
        terms = ", ".join(f"{key} = {self.weights[key]:g} x {float(out.values[r])!r}" for key, out in outputs.items())
        raise RewardFunctionError(
            f"CombinedReward: the weighted sum of the components is {float(total[r])!r} at index {r} ({len(bad)} of "
            f"{len(total)} responses): {terms}. Each component returned a finite value but the weighted sum "
            f"overflows a float; scale the components (or their weights) down."
        )

    def for_worker(self, args: tuple, kwargs: dict[str, Any]) -> CombinedReward:
        """What a worker process runs for ``self(*args, **kwargs)``: each component's own ``for_worker`` form.

        Used when this ``CombinedReward`` is itself called with a timeout (e.g. inside a ``RewardFunction``
        wrapper): a :class:`~llm_gym.rewards.adapters.TRLReward` component then sends its token ids, not its
        tokenizer. Components without ``for_worker`` are sent as they are.

        Returns:
            A ``CombinedReward`` with the same weights and no timeout (the outer call is timed).
        """
        shipped = {key: fn.for_worker(args, kwargs) if callable(getattr(fn, "for_worker", None)) else fn
                   for key, fn in self.components.items()}
        return CombinedReward(shipped, self.weights)

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
            RewardFunctionError: If any component fails validation or exceeds ``timeout``.
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
        timeout = "" if self.timeout is None else f", timeout={self.timeout:g}"
        return f"CombinedReward({parts}{timeout})"
