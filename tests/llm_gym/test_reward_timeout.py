"""Per-call reward timeout: a hung verifier raises RewardFunctionError instead of hanging training.

Timed calls of picklable functions run in a worker process that is killed on timeout
(:mod:`llm_gym.rewards.worker`); unpicklable ones fall back to a thread, with a warning.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
import warnings

import numpy as np
import pytest

from llm_gym.rewards import (
    CombinedReward,
    RewardFunctionError,
    boxed_format_reward,
    call_reward_fn,
    math_answer_reward,
)
from llm_gym.rewards import calling as reward_calling
from llm_gym.rewards import math as math_reward

BATCH = (["q1", "q2", "q3"], [r"so \boxed{42}", "The answer is 0.5", "no idea"], ["42", "1/2", "7"])


def sleepy_verifier(prompts, responses, answers, **fields):
    time.sleep(5.0)
    return [1.0] * len(responses)


def fast_reward(prompts, responses, answers, **fields):
    return [0.5 * len(r) for r in responses]


def catastrophic_backtracking(prompts, responses, answers, **fields):
    """Blocks inside one `re.match` call, which holds the GIL (2**60 steps): a thread timeout cannot stop it."""
    re.match(r"(a+)+$", "a" * 60 + "b")
    return [0.0] * len(responses)


def worker_probe(prompts, responses, answers, **fields):
    """[1.0 if math-verify's own limits are on here (main thread) else 0.0, this process id, 0.0]."""
    limits_on = (threading.current_thread() is threading.main_thread()
                 and math_reward._parse_kwargs() == {} and math_reward._verify_kwargs() == {})
    return [float(limits_on), float(os.getpid()), 0.0]


def dies(prompts, responses, answers, **fields):
    os._exit(3)


def warm_worker() -> float:
    """Make sure a worker process is up (start-up is not counted against the timeout); return its pid."""
    return call_reward_fn(worker_probe, *BATCH, timeout=5.0).values[1]


def test_hung_function_raises_naming_it_well_before_it_returns() -> None:
    warm_worker()
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=r"'sleepy_verifier' did not return within timeout=0\.2 s") as err:
        call_reward_fn(sleepy_verifier, *BATCH, timeout=0.2)
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert "faster" in message and "raise the timeout" in message and "worker process running it was killed" in message


def test_gil_holding_c_call_is_stopped_and_the_worker_replaced() -> None:
    old_pid = warm_worker()
    start = time.monotonic()
    with pytest.raises(RewardFunctionError,
                       match=r"'catastrophic_backtracking' did not return within timeout=0\.5 s.*killed"):
        call_reward_fn(catastrophic_backtracking, *BATCH, timeout=0.5)
    assert time.monotonic() - start < 2.0  # the limit plus well under a second (measured: ~0.55 s)
    assert call_reward_fn(fast_reward, *BATCH, timeout=5.0).values.tolist() == [6.5, 8.5, 3.5]
    assert warm_worker() != old_pid  # a new worker process


def test_math_verify_limits_stay_on_in_the_worker() -> None:
    limits_on, pid, _ = call_reward_fn(worker_probe, *BATCH, timeout=5.0).values
    assert pid != os.getpid()  # ran in the worker process...
    assert limits_on == 1.0  # ...in its main thread, where math_answer_reward keeps math-verify's time limits
    assert call_reward_fn(worker_probe, *BATCH).values[0] == 1.0  # (as in this test's main thread)


def test_a_dying_worker_is_reported_and_replaced() -> None:
    with pytest.raises(RewardFunctionError, match=r"'dies': the worker process .* ended during the call"):
        call_reward_fn(dies, *BATCH, timeout=5.0)
    assert call_reward_fn(fast_reward, *BATCH, timeout=5.0).values.tolist() == [6.5, 8.5, 3.5]


def test_unpicklable_lambda_falls_back_to_a_thread_and_warns_once() -> None:
    reward_calling._WARNED_THREAD_FALLBACK.discard("<lambda>")
    threads = []
    fn = lambda p, r, a, **kw: threads.append(threading.current_thread()) or [1.0] * len(r)  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"'<lambda>' cannot run in a worker process .* cannot be pickled"
                                            r".*background thread.*not stopped in time"):
        assert call_reward_fn(fn, *BATCH, timeout=5.0).values.tolist() == [1.0, 1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        call_reward_fn(fn, *BATCH, timeout=5.0)
    assert all(t is not threading.current_thread() and t.daemon for t in threads)


class TinyRewardModel:
    """Picklable, but holds a torch model: it must not be copied to a process on every call."""

    def __init__(self) -> None:
        import torch

        self.model = torch.nn.Linear(2, 1)

    def __call__(self, prompts, responses, answers, **fields):
        return [float(threading.current_thread() is threading.main_thread())] * len(responses)


def test_callable_holding_a_torch_model_runs_in_a_thread() -> None:
    reward_calling._WARNED_THREAD_FALLBACK.discard("TinyRewardModel")
    with pytest.warns(RuntimeWarning, match="holds a torch model"):
        out = call_reward_fn(TinyRewardModel(), *BATCH, timeout=5.0)
    assert out.values.tolist() == [0.0, 0.0, 0.0]  # ran, in a worker thread of this process


def test_timed_out_call_does_not_block_the_next_ones() -> None:
    release = threading.Event()

    def stuck(prompts, responses, answers, **fields):
        release.wait(10.0)
        return [0.0] * len(responses)

    try:
        for _ in range(2):
            with pytest.raises(RewardFunctionError, match="'stuck' did not return"):
                call_reward_fn(stuck, *BATCH, timeout=0.05)
        # The stuck threads are still running; a fast call with a timeout still gets its own thread.
        assert call_reward_fn(fast_reward, *BATCH, timeout=1.0).values.tolist() == [6.5, 8.5, 3.5]
        stuck_threads = [t for t in threading.enumerate() if t.name == "reward-fn-stuck"]
        assert len(stuck_threads) == 2 and all(t.daemon for t in stuck_threads)
    finally:
        release.set()


def test_fast_function_with_timeout_matches_no_timeout_and_runs_in_a_worker_thread() -> None:
    threads = []

    def where(prompts, responses, answers, **fields):
        threads.append(threading.current_thread())
        return fast_reward(prompts, responses, answers)

    plain = call_reward_fn(where, *BATCH, extra=[1, 2, 3])
    timed = call_reward_fn(where, *BATCH, timeout=5.0, extra=[1, 2, 3])
    assert np.array_equal(plain.values, timed.values) and np.array_equal(plain.has_opinion, timed.has_opinion)
    assert threads[0] is threading.current_thread()  # timeout=None: called directly
    assert threads[1] is not threading.current_thread() and threads[1].daemon


def test_problem_fields_and_none_pass_through_the_worker_thread() -> None:
    def fn(prompts, responses, answers, bonus=None, **fields):
        return [None if b is None else float(b) for b in bonus]

    out = call_reward_fn(fn, *BATCH, timeout=2.0, bonus=[1, None, 3])
    assert out.values.tolist() == [1.0, 0.0, 3.0] and out.has_opinion.tolist() == [True, False, True]


def test_combined_reward_passes_timeout_to_every_component() -> None:
    combined = CombinedReward({"fast": fast_reward, "slow": sleepy_verifier}, weights={"slow": 0.5}, timeout=0.2)
    assert combined.timeout == 0.2 and "timeout=0.2" in repr(combined)
    warm_worker()
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match="'sleepy_verifier' did not return within timeout=0.2"):
        combined.compute(*BATCH)
    assert time.monotonic() - start < 2.0

    ok = CombinedReward({"fast": fast_reward, "format": boxed_format_reward}, timeout=5.0)
    no_timeout = CombinedReward({"fast": fast_reward, "format": boxed_format_reward})
    assert ok(*BATCH) == no_timeout(*BATCH) == [7.5, 8.5, 3.5]
    assert no_timeout.timeout is None


def test_math_answer_reward_in_a_worker_thread_gives_the_same_result() -> None:
    prompts, responses, answers = BATCH
    responses = [*responses, r"\boxed{\frac{1}{2}}", "8 + 4", "x = 12 apples"]
    answers = [*answers, "0.5", "12", "12"]
    prompts = [*prompts, "", "", ""]
    expected = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert math_answer_reward(prompts, responses, answers) == expected
    out = call_reward_fn(math_answer_reward, prompts, responses, answers, timeout=30.0)
    assert out.values.tolist() == expected
    combined = CombinedReward({"accuracy": math_answer_reward}, timeout=30.0)
    assert combined(prompts, responses, answers) == expected


def _raises(p, r, a, **kw):
    return [1.0 / 0.0]


def _wrong_length(p, r, a, **kw):
    return [1.0]


def _nan(p, r, a, **kw):
    return [0.0, float("nan"), 0.0]


def _inf(p, r, a, **kw):
    return [float("inf"), 0.0, 0.0]


def _not_a_list(p, r, a, **kw):
    return 1.0


def _string_item(p, r, a, **kw):
    return [0.0, "1", 0.0]


def _raises_timeout_error(p, r, a, **kw):
    raise TimeoutError("the function's own timeout")


@pytest.mark.parametrize(
    ("fn", "fragment"),
    [
        (_raises, "raised ZeroDivisionError"),
        (_wrong_length, "wrong number of values: expected 3, got 1"),
        (_nan, "non-finite value nan at index 1"),
        (_inf, "non-finite value inf at index 0"),
        (_not_a_list, "returned float"),
        (_string_item, "(type str) at index 1"),
        (_raises_timeout_error, "raised TimeoutError: the function's own timeout"),  # not our timeout
    ],
)
def test_validation_errors_still_name_the_function_with_a_timeout(fn, fragment) -> None:
    with pytest.raises(RewardFunctionError) as err:
        call_reward_fn(fn, *BATCH, timeout=5.0)
    assert repr(fn.__name__) in str(err.value) and fragment in str(err.value)
    if fn is _raises:
        assert isinstance(err.value.__cause__, ZeroDivisionError)  # the original exception is chained


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), True, "5"])
def test_invalid_timeout_raises_value_error(timeout) -> None:
    with pytest.raises(ValueError, match="timeout must be None .* or a finite number of seconds > 0"):
        call_reward_fn(fast_reward, *BATCH, timeout=timeout)
    with pytest.raises(ValueError, match="CombinedReward: timeout"):
        CombinedReward({"fast": fast_reward}, timeout=timeout)


BENCH_RESPONSES = [r"so \boxed{42}", "The answer is 0.5", "no idea", r"\boxed{\frac{1}{2}}", "8 + 4",
                   "x = 12 apples", r"The answer is $\frac{3}{4}$.", "answer: -7"] * 4
BENCH_ANSWERS = ["42", "1/2", "7", "0.5", "12", "12", "0.75", "-7"] * 4


@pytest.mark.slow
def test_measure_timeout_overhead(repeats: int = 31) -> None:
    """Per-call overhead of timeout=30 (worker process) vs None, math_answer_reward on 32 responses.

    Run: ``nice -n 19 .venv/bin/python -m pytest tests/llm_gym/test_reward_timeout.py -m slow -s -k overhead``.
    Both sides are warmed first (math-verify caches full), so the figure is the steady-state overhead.
    """
    args = ([""] * 32, BENCH_RESPONSES, BENCH_ANSWERS)
    expected = call_reward_fn(math_answer_reward, *args).values.tolist()
    assert call_reward_fn(math_answer_reward, *args, timeout=30.0).values.tolist() == expected
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):  # interleaved, so both sides see the same machine load
        for key, timeout in (("off", None), ("on", 30.0)):
            start = time.perf_counter()
            call_reward_fn(math_answer_reward, *args, timeout=timeout)
            times[key].append(time.perf_counter() - start)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"\nmath_answer_reward, 32 responses, median of {repeats}: timeout off {off * 1e3:.2f} ms, "
          f"on {on * 1e3:.2f} ms, ratio {on / off:.2f}, overhead {(on - off) * 1e3:.2f} ms/call; "
          f"load average {os.getloadavg()[0]:.2f}")


def test_remote_error_survives_a_pickle_round_trip():
    """The worker sends RemoteError back through a pipe: it must unpickle with its type name and message."""
    import pickle

    from llm_gym.rewards.worker import RemoteError

    err = pickle.loads(pickle.dumps(RemoteError("WeirdError", "boom")))
    assert isinstance(err, RemoteError) and err.remote_type_name == "WeirdError" and str(err) == "boom"
