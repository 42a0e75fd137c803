"""Every reward the library wraps (from_trl, CombinedReward, the wrappers' terms) keeps its timeout.

A timed call runs in a worker process that is killed when it overruns (llm_gym.rewards.worker); a wrapper
the library builds around a user's module-level function must pickle, so the call does not fall back to a
thread, where a hang inside one C call that holds the GIL is not stopped. The hangs below hold the GIL for
about 10 s (one catastrophic-backtracking ``re.match``): run in a thread they overrun the 1 s limit by that
much; in a worker they end at the limit.
"""

from __future__ import annotations

import pickle
import re
import time

import numpy as np
import pytest
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

from llm_gym.rewards import (
    CombinedReward,
    RewardFunctionError,
    call_reward_fn,
    from_trl,
    regex_format_reward,
)
from llm_gym.rewards import calling as reward_calling
from llm_gym.wrappers import RewardFunction

BATCH = (["q"], ["a response"], ["7"])
LIMIT = 1.0
SLACK = 3.0  # the limit plus this: killing and reporting take well under a second
GIL_HANG = "a" * 27 + "b"  # (a+)+$ backtracks 2**27 times in one C call: ~10 s holding the GIL


def trl_gil_hang(completions, **kwargs):
    """A TRL-style reward stuck in one C call that holds the GIL."""
    re.match(r"(a+)+$", GIL_HANG)
    return [0.0] * len(completions)


def gil_hang(prompts, responses, answers, **fields):
    re.match(r"(a+)+$", GIL_HANG)
    return [0.0] * len(responses)


def trl_ids_length(completions, completion_ids, **kwargs):
    return [float(len(ids)) for ids in completion_ids]


def fast(prompts, responses, answers, **fields):
    return [1.0] * len(responses)


def warm_worker() -> None:
    """Start a worker process first: start-up is not counted against a timeout."""
    call_reward_fn(fast, *BATCH, timeout=30.0)


def assert_stopped_in_time(call, name: str) -> None:
    warm_worker()
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=rf"{re.escape(name)}.*did not return within timeout=1 s"):
        call()
    assert time.monotonic() - start < LIMIT + SLACK


def test_from_trl_hang_is_stopped_in_time() -> None:
    fn = from_trl(trl_gil_hang)
    assert_stopped_in_time(lambda: call_reward_fn(fn, *BATCH, timeout=LIMIT), "'trl_gil_hang'")


def test_from_trl_hang_is_stopped_through_the_env_reward_timeout(make_env) -> None:
    env = make_env(max_new_tokens=12, reward_fn=from_trl(trl_gil_hang), reward_timeout=LIMIT)
    env.reset(options={"problem_id": 0})
    assert_stopped_in_time(lambda: env.step(encode_action(env, "42")), "'trl_gil_hang'")


@pytest.mark.parametrize("component", [from_trl(trl_gil_hang), regex_format_reward(r"(a+)+$")])
def test_combined_reward_component_hang_is_stopped_in_time(component) -> None:
    combined = CombinedReward({"ok": fast, "hang": component}, timeout=LIMIT)
    responses = [GIL_HANG]
    assert_stopped_in_time(lambda: combined(BATCH[0], responses, BATCH[2]), "")


def test_combined_reward_called_with_a_timeout_is_stopped_in_time() -> None:
    combined = CombinedReward({"ok": fast, "trl": from_trl(trl_gil_hang)})  # no timeout of its own
    assert_stopped_in_time(lambda: call_reward_fn(combined, *BATCH, timeout=LIMIT), "'combined'")


@pytest.mark.parametrize("fn", [from_trl(trl_gil_hang), regex_format_reward(r"(a+)+$"), gil_hang,
                                CombinedReward({"trl": from_trl(trl_gil_hang)})])
def test_reward_function_wrapper_term_hang_is_stopped_in_time(make_env, fn) -> None:
    env = RewardFunction(make_env(max_new_tokens=12), fn, timeout=LIMIT)
    env.reset(options={"problem_id": 0})
    text = "aaaa"  # the regex term reads the response: its hang needs the long input, the others do not
    if "regex" in getattr(fn, "__name__", ""):
        env = RewardFunction(make_env(max_new_tokens=len(GIL_HANG) + 1), fn, timeout=LIMIT)
        env.reset(options={"problem_id": 0})
        text = GIL_HANG
    assert_stopped_in_time(lambda: env.step(encode_action(env, text)), "")


def test_the_tokenizer_stays_here_and_the_ids_travel(tiny_lm) -> None:
    fn = from_trl(trl_ids_length, tokenizer=tiny_lm)
    responses = ["ab", "abcd", ""]
    plain = call_reward_fn(fn, ["p"] * 3, responses, [""] * 3)
    timed = call_reward_fn(fn, ["p"] * 3, responses, [""] * 3, timeout=30.0)
    assert plain.values.tolist() == timed.values.tolist() == [2.0, 4.0, 0.0]
    shipped = fn.for_worker((["p"] * 3, responses, [""] * 3), {})
    assert b"tokenizer" not in pickle.dumps(shipped) and shipped.__name__ == "trl_ids_length"
    pickle.loads(pickle.dumps(fn))  # the adapter itself pickles too


def test_an_unpicklable_function_warns_once_that_its_timeout_cannot_be_enforced() -> None:
    fn = from_trl(lambda completions, **kw: [1.0] * len(completions), name="inline_trl")
    reward_calling._WARNED_THREAD_FALLBACK.discard("inline_trl")
    with pytest.warns(RuntimeWarning, match=r"'inline_trl' cannot run in a worker process \(so its timeout cannot "
                                            r"be enforced\).*define the function at module level") as record:
        assert call_reward_fn(fn, *BATCH, timeout=5.0).values.tolist() == [1.0]
        call_reward_fn(fn, *BATCH, timeout=5.0)
    assert len([w for w in record if "inline_trl" in str(w.message)]) == 1
    assert np.isfinite(call_reward_fn(fn, *BATCH).values).all()  # no timeout: called directly, no warning
