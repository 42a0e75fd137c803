"""Per-call reward timeout: a hung verifier raises RewardFunctionError instead of hanging training."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from llm_gym.rewards import (
    CombinedReward,
    RewardFunctionError,
    boxed_format_reward,
    call_reward_fn,
    math_answer_reward,
)

BATCH = (["q1", "q2", "q3"], [r"so \boxed{42}", "The answer is 0.5", "no idea"], ["42", "1/2", "7"])


def sleepy_verifier(prompts, responses, answers, **fields):
    time.sleep(5.0)
    return [1.0] * len(responses)


def fast_reward(prompts, responses, answers, **fields):
    return [0.5 * len(r) for r in responses]


def test_hung_function_raises_naming_it_well_before_it_returns() -> None:
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=r"'sleepy_verifier' did not return within timeout=0\.2 s") as err:
        call_reward_fn(sleepy_verifier, *BATCH, timeout=0.2)
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert "faster" in message and "raise the timeout" in message and "background" in message


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
