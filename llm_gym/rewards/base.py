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
``CombinedReward(..., timeout=seconds)``) runs the function in a worker process
(:mod:`llm_gym.rewards.worker`), kills that process when the function has not returned in time and raises
:class:`RewardFunctionError` (see :func:`call_reward_fn`).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import math
import numbers
import sys
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from llm_gym.rewards import worker as _worker

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


def _timeout_message(kind: str, name: str, timeout: float, in_process: bool) -> str:
    advice = (f"{kind} {name!r} did not return within timeout={timeout:g} s. Make the function faster "
              f"(or make it return None for samples it cannot score quickly), or raise the timeout.")
    if in_process:
        return f"{advice} The worker process running it was killed; a new one is starting for the next call."
    stuck = sum(t.is_alive() for t in list(_TIMED_OUT_THREADS))
    return (f"{advice} The call keeps running in a background daemon thread that cannot be stopped ({stuck} "
            f"such thread(s) still running).")


#: Names of reward functions already warned about running in a thread instead of a worker process.
_WARNED_THREAD_FALLBACK: set[str] = set()


def _warn_thread_fallback(name: str, reason: str) -> None:
    if name in _WARNED_THREAD_FALLBACK:
        return
    _WARNED_THREAD_FALLBACK.add(name)
    warnings.warn(
        f"Reward function {name!r} cannot run in a worker process for its timeout: {reason}. It runs in a "
        f"background thread instead, where the timeout is weaker: a call stuck inside one C function that "
        f"holds the GIL (a regex, a huge integer) is not stopped in time, a timed-out call keeps running, "
        f"and math-verify's own time limits are off. For a timeout that holds, pass a module-level function "
        f"(or a functools.partial of one) with picklable arguments. (Expected for reward models; warned once "
        f"per function.)",
        RuntimeWarning,
        stacklevel=5,
    )


def _call_timed(fn: Any, args: tuple, kwargs: dict[str, Any], timeout: float, name: str) -> tuple[Any, bool]:
    """Run a timed call in a worker process, or in a thread when it cannot be sent there.

    Returns:
        ``(value, in_process)``.

    Raises:
        _worker.WorkerTimeout, _RewardTimeout: Over time (process killed / thread left running).
        _worker.WorkerDied: The worker process ended during the call.
        Exception: Whatever ``fn`` raised.
    """
    try:
        return _worker.run_in_worker(fn, args, kwargs, timeout), True
    except _worker.NotShippable as exc:
        _warn_thread_fallback(name, exc.reason)
    return _call_in_thread(fn, args, kwargs, timeout, name), False


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
    overhead. With ``timeout=seconds`` it runs in a persistent worker process (:mod:`llm_gym.rewards.worker`,
    "spawn" start method, started on the first timed call and reused). If it has not returned after
    ``timeout`` seconds of wall-clock time, the worker is killed, which stops it even inside a C call that
    holds the GIL, :class:`RewardFunctionError` is raised, and a replacement worker starts in the
    background. Start-up (about 3 s: the worker imports ``llm_gym``) and loading the function's module are
    not counted against ``timeout``. In the worker ``fn`` runs in the main thread, so ``signal``-based
    limits such as math-verify's keep working. ``fn``, its arguments and its return value travel by
    :mod:`pickle`; state that ``fn`` changes in the worker (caches, counters) stays there.

    **Thread fallback.** A function that cannot be pickled (a lambda, a closure, a bound method of an
    unpicklable object) or that holds a torch model (e.g. a ``RewardModelScorer``) runs as before in a
    fresh daemon thread, with a :class:`RuntimeWarning` once per function name. Python cannot kill a
    thread: a timed-out call there **keeps running in the background** (it cannot block later calls nor
    interpreter exit), a call stuck in one GIL-holding C call is not stopped in time, and math-verify's own
    timeouts are off (:func:`~llm_gym.rewards.math_answer_reward` disables them outside the main thread).

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
        RewardFunctionError: If ``fn`` raises, takes longer than ``timeout`` seconds (or its worker process
            dies), returns a non-sequence, returns the wrong number of values, or returns an element that is not a finite
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
    """Call ``fn(*args, **problem_fields)`` and return its raw output.

    With ``timeout`` set the call runs in a worker process (a thread when ``fn`` cannot be pickled; see
    :func:`call_reward_fn`). Inside a worker process nested timed calls run directly: the outer call is
    already timed. Shared by :func:`call_reward_fn` and
    :func:`~llm_gym.rewards.process.call_process_reward_fn`.

    Raises:
        RewardFunctionError: ``fn`` raised (chained) or ran longer than ``timeout`` seconds, or its worker
            process died; the message names it (``kind`` and ``name``) and says how to fix it.
    """
    try:
        if timeout is None or _worker.in_worker():
            return fn(*args, **problem_fields)
        return _call_timed(fn, args, problem_fields, timeout, name)[0]
    except _RewardTimeout:
        raise RewardFunctionError(_timeout_message(kind, name, timeout, in_process=False)) from None
    except _worker.WorkerTimeout:
        raise RewardFunctionError(_timeout_message(kind, name, timeout, in_process=True)) from None
    except _worker.WorkerDied as exc:
        raise RewardFunctionError(
            f"{kind} {name!r}: the worker process running it with timeout={timeout:g} s ended during the call "
            f"({exc}); a new one is started for the next call. A crash (segfault, out of memory, os._exit) in "
            f"the function ends it; a worker that cannot start usually means the main script lacks an "
            f"`if __name__ == \"__main__\":` guard (the 'spawn' start method re-imports it)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        type_name = getattr(exc, "remote_type_name", type(exc).__name__)
        raise RewardFunctionError(
            f"{kind} {name!r} raised {type_name}: {exc}. Fix the function so it does not raise on "
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
