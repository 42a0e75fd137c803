"""Reward-function protocol, validation and combination.

A reward function is *batched*: it scores ``N`` responses at once and returns one value per
response. ``None`` means "no opinion" for that sample (for instance a code-execution reward asked
to score a math problem).

>>> def length_reward(prompts, responses, answers, **kw):
...     return [min(len(r), 10) / 10 for r in responses]
>>> out = call_reward_fn(length_reward, ["p", "p"], ["hi", "hello world"], ["", ""])
>>> out.values.tolist(), out.has_opinion.tolist()
([0.2, 1.0], [True, True])

A hung verifier must not hang training: ``call_reward_fn(..., timeout=seconds)`` (and
``CombinedReward(..., timeout=seconds)``) runs the function in a worker thread and raises
:class:`RewardFunctionError` when it has not returned in time (see :func:`call_reward_fn`).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import math
import numbers
import sys
import threading
import weakref
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
        value = validated_value(item, f"Reward function {name!r}", f"at index {i}")
        if value is None:
            has_opinion[i] = False
        else:
            values[i] = value
    return RewardOutput(values=values, has_opinion=has_opinion)


def validated_value(item: Any, who: str, where: str) -> float | None:
    """One reward value as a float (``bool`` -> 0/1), or None for "no opinion".

    Shared by outcome and process rewards; ``who`` (e.g. ``"Reward function 'f'"``) and ``where`` (e.g.
    ``"at index 3"``) make the message name the function and the place.

    Raises:
        RewardFunctionError: ``item`` is not a real number or None, or is NaN/inf.
    """
    if item is None:
        return None
    if isinstance(item, (bool, np.bool_)):
        return float(item)
    if not isinstance(item, numbers.Real):
        raise RewardFunctionError(
            f"{who} returned {item!r} (type {type(item).__name__}) {where}; every value must be a real "
            f"number (int/float/bool) or None."
        )
    value = float(item)
    if not math.isfinite(value):
        raise RewardFunctionError(
            f"{who} returned a non-finite value {value!r} {where}; rewards must be finite. Return None for "
            f"'no opinion' instead of NaN, and clip infinities."
        )
    return value


class _RewardTimeout(Exception):
    """Internal: the worker thread running a reward function did not finish within the timeout."""


#: Worker threads of calls that timed out and are still running (they cannot be killed); see
#: :func:`call_reward_fn`. A ``WeakSet`` so finished threads drop out once collected.
_TIMED_OUT_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def _check_timeout(timeout: Any, owner: str) -> float | None:
    """Return ``timeout`` as a float (or ``None``).

    Raises:
        ValueError: ``timeout`` is not ``None`` nor a finite real number > 0.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not (
            math.isfinite(float(timeout)) and float(timeout) > 0):
        raise ValueError(f"{owner}: timeout must be None (no limit) or a finite number of seconds > 0, "
                         f"got {timeout!r}.")
    return float(timeout)


def _call_in_thread(fn: Any, args: tuple, kwargs: dict[str, Any], timeout: float, name: str) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh daemon thread and wait at most ``timeout`` seconds.

    A fresh single-use thread per call (not a pool) means a call that never returns cannot block later
    calls, and a daemon thread cannot block interpreter exit (``ThreadPoolExecutor`` workers are joined at
    exit). The caller's ``contextvars`` are copied into the thread.

    Returns:
        What ``fn`` returned.

    Raises:
        _RewardTimeout: ``fn`` did not return within ``timeout`` seconds (it keeps running).
        Exception: whatever ``fn`` raised, re-raised in the calling thread.
    """
    future: concurrent.futures.Future = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            future.set_exception(exc)

    thread = threading.Thread(target=target, name=f"reward-fn-{name}", daemon=True)
    thread.start()
    done, _ = concurrent.futures.wait([future], timeout=timeout)
    if not done:
        _TIMED_OUT_THREADS.add(thread)
        raise _RewardTimeout
    return future.result()


def _timeout_message(name: str, timeout: float) -> str:
    stuck = sum(t.is_alive() for t in list(_TIMED_OUT_THREADS))
    return (f"Reward function {name!r} did not return within timeout={timeout:g} s. Make the function faster "
            f"(or make it return None for samples it cannot score quickly), or raise the timeout. The call "
            f"keeps running in a background daemon thread that cannot be stopped ({stuck} such thread(s) "
            f"still running).")


def call_reward_fn(
    fn: RewardFunction,
    prompts: Sequence[str],
    responses: Sequence[str],
    answers: Sequence[str],
    *,
    timeout: float | None = None,
    **problem_fields: Any,
) -> RewardOutput:
    """Call a reward function on a batch and validate what it returns.

    Accepted return values: a ``list``/``tuple``, a 1-D ``np.ndarray`` or a 1-D ``torch.Tensor`` with
    exactly one entry per response. Each entry must be a finite real number or ``None``. ``bool``
    values are accepted and count as ``1.0``/``0.0``.

    **Timeout.** With ``timeout=None`` (the default) ``fn`` runs directly in the calling thread, with no
    overhead. With ``timeout=seconds`` it runs in a fresh daemon thread and, if it has not returned after
    ``timeout`` seconds of wall-clock time, :class:`RewardFunctionError` is raised in the calling thread.
    Python cannot kill a thread: the timed-out call **keeps running in the background** until it returns
    (it cannot block later calls, each of which gets its own thread, nor interpreter exit, the thread is
    a daemon). A function that hangs on every call therefore leaves one thread per call; the error says
    how many are still running. In the worker thread ``contextvars`` are copied from the caller, but
    thread-local state (e.g. ``torch.no_grad()``) is not inherited and ``signal``-based timeouts do not
    work (:func:`~llm_gym.rewards.math_answer_reward` turns math-verify's own timeouts off there).

    Args:
        fn: The reward function (see :class:`RewardFunction`).
        prompts: ``N`` prompts.
        responses: ``N`` responses.
        answers: ``N`` gold answers.
        timeout: Seconds ``fn`` may take (finite, > 0), or ``None`` for no limit. Keyword-only, so a
            problem field cannot be called ``timeout``.
        **problem_fields: Extra per-problem fields, passed through unchanged.

    Returns:
        A :class:`RewardOutput` with ``values`` (``(N,)`` float64, ``None`` -> ``0.0``) and
        ``has_opinion`` (``(N,)`` bool, ``False`` where ``None`` was returned).

    Raises:
        ValueError: If ``prompts``, ``responses`` and ``answers`` have different lengths (caller bug), or
            ``timeout`` is not ``None`` nor a finite number > 0.
        RewardFunctionError: If ``fn`` raises, takes longer than ``timeout`` seconds, returns a
            non-sequence, returns the wrong number of values, or returns an element that is not a finite
            real number or ``None``. The message names the function and the index/value at fault.

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
    timeout = _check_timeout(timeout, "call_reward_fn")
    name = reward_fn_name(fn)
    raw = invoke_reward_fn(fn, (list(prompts), list(responses), list(answers)), problem_fields, timeout, name)
    items = _reward_items(raw, name, n)
    return _validated_output(items, name, n)


def invoke_reward_fn(fn: Any, args: tuple, problem_fields: dict[str, Any], timeout: float | None, name: str,
                     kind: str = "Reward function", unit: str = "samples") -> Any:
    """Call ``fn(*args, **problem_fields)`` (in a worker thread when ``timeout`` is set) and return its raw output.

    Shared by :func:`call_reward_fn` and :func:`~llm_gym.rewards.process.call_process_reward_fn`.

    Raises:
        RewardFunctionError: ``fn`` raised (chained) or ran longer than ``timeout`` seconds; the message names
            it (``kind`` and ``name``) and says how to fix it.
    """
    try:
        if timeout is None:
            return fn(*args, **problem_fields)
        return _call_in_thread(fn, args, problem_fields, timeout, name)
    except _RewardTimeout:
        raise RewardFunctionError(_timeout_message(name, timeout)) from None
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise RewardFunctionError(
            f"{kind} {name!r} raised {type(exc).__name__}: {exc}. Fix the function so it does not raise on "
            f"this batch (return None for {unit} it cannot score)."
        ) from exc


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
        self.timeout: float | None = _check_timeout(timeout, "CombinedReward")

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
            RewardFunctionError: If any component fails validation or exceeds ``timeout``.
        """
        total = np.zeros(len(responses), dtype=np.float64)
        outputs: dict[str, RewardOutput] = {}
        for key, fn in self.components.items():
            out = call_reward_fn(fn, prompts, responses, answers, timeout=self.timeout, **problem_fields)
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
