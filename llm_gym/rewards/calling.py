"""Calling a reward function: validate what it returns, and stop it when it runs over its timeout.

>>> def length_reward(prompts, responses, answers, **kw):
...     return [min(len(r), 10) / 10 for r in responses]
>>> out = call_reward_fn(length_reward, ["p", "p"], ["hi", "hello world"], ["", ""])
>>> out.values.tolist(), out.has_opinion.tolist()
([0.2, 1.0], [True, True])

A hung verifier must not hang training: ``call_reward_fn(..., timeout=seconds)`` (and
``CombinedReward(..., timeout=seconds)``) runs the function in a worker process
(:mod:`llm_gym.rewards.worker`), kills that process when the function has not returned in time and raises
:class:`~llm_gym.rewards.base.RewardFunctionError` (see :func:`call_reward_fn`). A function that cannot be
sent to a worker process runs in a daemon thread instead. :func:`invoke_reward_fn` is that runtime, shared
with :func:`~llm_gym.rewards.process.call_process_reward_fn`; :func:`validated_value` checks one value.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import math
import numbers
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm_gym.rewards import worker
from llm_gym.rewards.base import RewardFunction, RewardFunctionError, RewardOutput, reward_fn_name

__all__ = [
    "call_reward_fn",
    "check_timeout",
    "invoke_reward_fn",
    "validated_value",
]


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
    ``"at index 3"``) make the message name the function and the place. Every value either validates or
    raises :class:`RewardFunctionError`: an int too large for a float (``10**400``), a value whose
    conversion fails, NaN and infinities included.

    Raises:
        RewardFunctionError: ``item`` is not a real number or None, does not fit in a float, or is NaN/inf.
    """
    if item is None:
        return None
    if isinstance(item, (bool, np.bool_)):
        return float(item)
    if not isinstance(item, numbers.Real):
        raise RewardFunctionError(
            f"{who} returned {_shown(item)} {where}; every value must be a real number (int/float/bool) or None."
        )
    try:
        if isinstance(item, np.generic):
            with np.errstate(over="ignore", invalid="ignore"):  # a np.longdouble beyond float64 -> inf, below
                value = float(item)
        else:
            value = float(item)
    except OverflowError:
        raise RewardFunctionError(
            f"{who} returned {_shown(item)} {where}, too large for a float (beyond 1.8e308); rewards must be "
            f"finite floats: scale or clip the value."
        ) from None
    except Exception as exc:  # noqa: BLE001 - a numbers.Real whose __float__ fails: named, not raw
        raise RewardFunctionError(
            f"{who} returned {_shown(item)} {where}, which cannot be converted to a float ({type(exc).__name__}: "
            f"{exc}); return Python floats (or None)."
        ) from exc
    if not math.isfinite(value):
        raise RewardFunctionError(
            f"{who} returned a non-finite value {value!r} {where}; rewards must be finite. Return None for "
            f"'no opinion' instead of NaN, and clip infinities."
        )
    return value


def _shown(item: Any, limit: int = 80) -> str:
    """``item`` for an error message: its repr cut to ``limit`` characters and its type; never raises.

    An int too long to print (Python refuses over 4,300 digits) is described by its size.
    """
    kind = type(item).__name__
    if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        bits = int(item).bit_length()
        if bits > 256:
            return f"an integer of about {int(bits * math.log10(2)) + 1} digits (type {kind})"
    try:
        text = repr(item)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real problem
        return f"a value of type {kind}"
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} (type {kind})"


class _RewardTimeout(Exception):
    """Internal: the worker thread running a reward function did not finish within the timeout."""


#: Worker threads of calls that timed out and are still running (they cannot be killed); see
#: :func:`call_reward_fn`. A ``WeakSet`` so finished threads drop out once collected.
_TIMED_OUT_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def check_timeout(timeout: Any, owner: str) -> float | None:
    """Validate a ``timeout=`` argument (of a reward call, :class:`~llm_gym.rewards.CombinedReward`, a wrapper).

    Args:
        timeout: Seconds a reward call may take, or ``None`` for no limit.
        owner: Who takes the argument, named in the error message (e.g. ``"CombinedReward"``).

    Returns:
        ``timeout`` as a float, or ``None``.

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
    """Warn (once per function name) that a timed call runs in a thread, where its timeout is not enforced."""
    if name in _WARNED_THREAD_FALLBACK:
        return
    _WARNED_THREAD_FALLBACK.add(name)
    warnings.warn(
        f"Reward function {name!r} cannot run in a worker process (so its timeout cannot be enforced): {reason}. "
        f"It runs in a background thread instead, which cannot be killed: a call that hangs is not stopped "
        f"in time (nor ever, inside one C function that holds the GIL, such as a regex or a huge integer), a "
        f"timed-out call keeps running, and math-verify's own time limits are off. To fix it, define the "
        f"function at module level (a def in an importable module, not a lambda nor a function nested in "
        f"another; a functools.partial of one works) with picklable arguments; for from_trl, define the TRL "
        f"function so. (Expected for reward models, which stay in this process; warned once per function.)",
        RuntimeWarning,
        stacklevel=5,
    )


def _call_timed(fn: Any, args: tuple, kwargs: dict[str, Any], timeout: float, name: str) -> tuple[Any, bool]:
    """Run a timed call in a worker process, or in a thread when it cannot be sent there.

    A reward object with a ``for_worker(args, kwargs)`` method (:class:`~llm_gym.rewards.adapters.TRLReward`,
    :class:`~llm_gym.rewards.CombinedReward`) sends the callable that method returns instead of itself (e.g.
    without a tokenizer, with the token ids computed here).

    Returns:
        ``(value, in_process)``.

    Raises:
        worker.WorkerTimeout, _RewardTimeout: Over time (process killed / thread left running).
        worker.WorkerDied: The worker process ended during the call.
        Exception: Whatever ``fn`` (or its ``for_worker``) raised.
    """
    for_worker = getattr(fn, "for_worker", None)
    shipped = for_worker(args, kwargs) if callable(for_worker) else fn
    try:
        return worker.run_in_worker(shipped, args, kwargs, timeout), True
    except worker.NotShippable as exc:
        _warn_thread_fallback(name, exc.reason)
    return _call_in_thread(fn, args, kwargs, timeout, name), False


def check_batch_lengths(caller: str, prompts: Sequence, items: Sequence, answers: Sequence, items_name: str) -> int:
    """``n = len(items)``, after checking that ``prompts`` and ``answers`` have ``n`` entries too.

    Raises:
        ValueError: the lengths differ (names ``caller`` and every length).
    """
    n = len(items)
    if len(prompts) != n or len(answers) != n:
        raise ValueError(f"{caller}: prompts, {items_name} and answers must have the same length, got "
                         f"len(prompts)={len(prompts)}, len({items_name})={n}, len(answers)={len(answers)}.")
    return n


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
    n = check_batch_lengths("call_reward_fn", prompts, responses, answers, "responses")
    timeout = check_timeout(timeout, "call_reward_fn")
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
        if timeout is None or worker.in_worker():
            return fn(*args, **problem_fields)
        return _call_timed(fn, args, problem_fields, timeout, name)[0]
    except _RewardTimeout:
        raise RewardFunctionError(_timeout_message(kind, name, timeout, in_process=False)) from None
    except worker.WorkerTimeout:
        raise RewardFunctionError(_timeout_message(kind, name, timeout, in_process=True)) from None
    except worker.WorkerDied as exc:
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
