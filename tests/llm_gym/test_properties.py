"""Property-based tests (Hypothesis): random and hostile inputs never make llm-gym fail badly.

- Every registered env, built on the tiny model: valid actions step; invalid ones (wrong shape,
  out-of-vocabulary ids, floats with fractions, NaN, strings, bools, None) raise ``ValueError`` and leave the
  episode as it was - never another exception.
- Every built-in reward function on random and hostile text (huge, unbalanced braces, deep nesting, NUL bytes,
  unicode): a list of the right length with finite floats (or None where documented), or the documented
  ``ValueError``, within a time bound per call.

Examples are few (``max_examples``) so the file runs in seconds; the hostile strategies reach 100k characters.
The model-backed scorers (``RewardModelScorer``, ``ProcessRewardModelScorer``) need a trained reward model and
are covered by ``test_reward_models.py``.
"""

from __future__ import annotations

import math
import re
import time

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import llm_gym
from llm_gym.rewards import (
    CombinedReward,
    arithmetic_step_penalty,
    arithmetic_step_reward,
    boxed_format_reward,
    call_reward_fn,
    extract_answer,
    length_penalty,
    math_answer_reward,
    overlong_penalty,
    regex_format_reward,
)
from llm_gym.rewards.arithmetic import check_arithmetic_step
from llm_gym.rewards.format import boxed_contents

#: Seconds one reward call may take on up to 100k characters (they take milliseconds; the margin is for a
#: loaded 2-core machine).
TIME_LIMIT = 2.0
MAX_CHARS = 100_000

# No example database (no .hypothesis folder), no deadline (timing is asserted explicitly, with a margin), no
# shrinking of huge hostile strings (the failing example is reported as drawn).
COMMON = {"database": None, "deadline": None, "phases": (Phase.explicit, Phase.generate),
          "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                    HealthCheck.data_too_large, HealthCheck.large_base_example]}
ENV_SETTINGS = settings(max_examples=25, **COMMON)
TEXT_SETTINGS = settings(max_examples=40, **COMMON)


# --------------------------------------------------------------------------------------------- envs


@pytest.fixture(scope="module")
def envs(tiny_model_dir):
    """Every registered env id, built once on the tiny model (short responses, 5 problems)."""
    built = {env_id: gym.make(env_id, model=str(tiny_model_dir), device="cpu", n_problems=5, max_new_tokens=8,
                              max_prompt_length=None)  # character-level prompts are longer
             for env_id in llm_gym.ENV_IDS}
    yield built
    for env in built.values():
        env.close()


def _sequence_envs(envs):
    return [envs[i] for i in llm_gym.SEQUENCE_ENV_IDS]


def _token_envs(envs):
    return [envs[i] for i in llm_gym.TOKEN_ENV_IDS]


@st.composite
def valid_response(draw, T: int, V: int):
    """A valid SequenceEnv action: T ids in the vocabulary, as an int array of any width, a list, or whole floats."""
    ids = draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T))
    kind = draw(st.sampled_from(["int64", "int32", "uint16", "list", "float64"]))
    return ids if kind == "list" else np.asarray(ids, dtype=kind)


@st.composite
def invalid_response(draw, T: int, V: int):
    """An invalid SequenceEnv action and what is wrong with it."""
    ids = np.asarray(draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T)), dtype=np.int64)
    kind = draw(st.sampled_from(["shape", "vocabulary", "fraction", "non-finite", "dtype"]))
    if kind == "shape":
        shape = draw(st.sampled_from([(T - 1,), (T + 1,), (0,), (1, T), (T, 1), ()]))
        return np.resize(ids, shape), kind
    position = draw(st.integers(0, T - 1))
    if kind == "vocabulary":
        ids[position] = draw(st.one_of(st.integers(-(2**62), -1), st.integers(V, 2**62)))
        return ids, kind
    if kind in ("fraction", "non-finite"):
        floats = ids.astype(np.float64)
        floats[position] = (ids[position] + draw(st.floats(0.001, 0.999)) if kind == "fraction"
                            else draw(st.sampled_from([math.nan, math.inf, -math.inf])))
        return floats, kind
    return draw(st.sampled_from([ids.astype(str), ids.astype(bool), ids.astype(object), ids.astype(complex), None,
                                 [str(i) for i in ids]])), kind


@ENV_SETTINGS
@given(data=st.data())
def test_sequence_envs_accept_valid_and_reject_invalid_actions(envs, data):
    env = data.draw(st.sampled_from(_sequence_envs(envs)))
    T, V = env.action_space.shape[0], env.unwrapped.lm.vocab_size
    env.reset(options={"problem_id": data.draw(st.integers(0, env.unwrapped.n_problems - 1))})
    bad, kind = data.draw(invalid_response(T, V))
    with pytest.raises(ValueError):  # anything else (TypeError, IndexError, a silent step) fails the test
        env.step(bad)
    good = data.draw(valid_response(T, V))
    start = time.perf_counter()
    obs, reward, terminated, truncated, info = env.step(good)  # the invalid action did not end the episode
    assert time.perf_counter() - start < TIME_LIMIT
    assert env.observation_space.contains(obs) and math.isfinite(reward)
    assert (terminated, truncated) == (True, False) and isinstance(info["response_text"], str)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(good)


@st.composite
def valid_token(draw, V: int):
    token = draw(st.integers(0, V - 1))
    kind = draw(st.sampled_from(["int", "np.int64", "0-d", "(1,)", "float", "np.int32"]))
    return {"int": token, "np.int64": np.int64(token), "0-d": np.asarray(token), "(1,)": np.asarray([token]),
            "float": float(token), "np.int32": np.int32(token)}[kind]


@st.composite
def invalid_token(draw, V: int):
    return draw(st.one_of(
        st.integers(V, 2**70), st.integers(-(2**70), -1),  # outside the vocabulary (or int64)
        st.floats(0, V - 1).filter(lambda x: x % 1 != 0),  # fractions
        st.sampled_from([math.nan, math.inf, -math.inf, None, True, "3", b"3", [1, 2], np.zeros((1, 1), np.int64),
                         np.zeros(2, np.int64), np.asarray(["a"])]),
    ))


@ENV_SETTINGS
@given(data=st.data())
def test_token_envs_accept_valid_and_reject_invalid_actions(envs, data):
    env = data.draw(st.sampled_from(_token_envs(envs)))
    V = env.action_space.n
    env.reset(options={"problem_id": data.draw(st.integers(0, env.unwrapped.n_problems - 1))})
    for _ in range(data.draw(st.integers(1, 6))):
        if data.draw(st.booleans()):
            with pytest.raises(ValueError):
                env.step(data.draw(invalid_token(V)))
            continue
        obs, reward, terminated, truncated, info = env.step(data.draw(valid_token(V)))
        assert env.observation_space.contains(obs) and math.isfinite(reward)
        if terminated or truncated:
            with pytest.raises(RuntimeError, match="call reset"):
                env.step(0)
            env.reset()


# ------------------------------------------------------------------------------------------ texts

_HOSTILE_PIECES = [
    "\\boxed{", "\\boxed {", "{", "}", "\\", "\\{", "\\}", "\\frac{", "}{", "(", ")", "[", "]", "answer is ",
    "The answer is", "answer:", " ", "  \t", "\n", "\n\n", "\r\n", "\x00", "1", "42", "-7", "3.5", "1,000", "1=",
    "1 x ", " = ", "=", "+", "*", "/", "$", "\\(", "\\)", "**", "__", "é", "😀", "\u2028", "\ufeff", "\u0661",
    "-", ".", ",", "%", "<think>", "</think>", "\\left(", "\\right)", "\\times", "×", "step 1:", "of",
]
_SYNTAX = "".join(sorted(set("".join(_HOSTILE_PIECES))))


def _repeat(pieces: list[str], size: int) -> str:
    """``pieces`` joined and repeated to ``size`` characters."""
    unit = "".join(pieces)
    return (unit * (size // len(unit) + 1))[:size]


# Repetitions of 1 to 3 pieces at 1k, 10k or 100k characters: unbalanced boxes, deep nesting, long runs of
# spaces or digits, thousands of equations... (Hypothesis alone rarely draws sizes that large.)
hostile_texts = st.builds(_repeat, st.lists(st.sampled_from(_HOSTILE_PIECES), min_size=1, max_size=3),
                          st.sampled_from([1_000, 10_000, MAX_CHARS]))
#: Inputs that were quadratic or worse before answer extraction and the step checker became linear.
KNOWN_HOSTILE = [
    "\\boxed{" * 15_000,
    "The answer is" + " " * MAX_CHARS + "x",
    "answer:" + " " * MAX_CHARS,
    "1" * MAX_CHARS + "x = 1",
    "1 x " * 25_000 + "= 1",
    "\\boxed{" * 14_000 + "1 = 1" + "}" * 14_000,
]
texts = st.one_of(
    st.text(max_size=300),  # any unicode, NUL included
    st.text(alphabet=_SYNTAX, max_size=300),  # dense in braces, backslashes, digits and operators
    hostile_texts,  # huge repetitions: unbalanced boxes, deep nesting, long runs
    st.tuples(st.text(alphabet=_SYNTAX, max_size=40), hostile_texts, st.text(alphabet=_SYNTAX, max_size=40)).map(
        "".join),
)
numeric_answers = st.one_of(st.integers(-10**6, 10**6).map(str), st.sampled_from(["3.5", "-0.25", "1/2", "1000"]))


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    sizes = [len(x) for a in args if isinstance(a, list) for x in a if isinstance(x, str)]
    assert elapsed < TIME_LIMIT, f"{getattr(fn, '__name__', fn)} took {elapsed:.2f} s on texts of {sizes} chars"
    return out


def _assert_scores(out, n: int, allowed: set | None = None) -> None:
    assert isinstance(out, list) and len(out) == n
    for value in out:
        assert isinstance(value, float) and math.isfinite(value)
        assert allowed is None or value in allowed


@TEXT_SETTINGS
@example(responses=KNOWN_HOSTILE[:3], data=None)
@given(responses=st.lists(texts, min_size=1, max_size=3), data=st.data())
def test_outcome_rewards_on_random_and_hostile_text(responses, data):
    n = len(responses)
    answers = ["42"] * n if data is None else data.draw(st.lists(numeric_answers, min_size=n, max_size=n))
    prompts = ["What is 6 * 7?"] * n
    _assert_scores(_timed(math_answer_reward, prompts, responses, answers), n, {0.0, 1.0})
    _assert_scores(_timed(boxed_format_reward, prompts, responses, answers), n, {0.0, 1.0})
    for pattern, flags in ((r"^<think>.*</think>", re.DOTALL), (r"\\boxed\{[^{}]*\}", 0)):
        _assert_scores(_timed(regex_format_reward(pattern, flags), prompts, responses, answers), n, {0.0, 1.0})
    combined = CombinedReward({"accuracy": math_answer_reward, "format": boxed_format_reward},
                              weights={"format": 0.5})
    total, components = _timed(combined.compute, prompts, responses, answers)
    assert len(total) == n and all(math.isfinite(float(v)) for v in total)
    assert set(components) == {"accuracy", "format"}
    validated = _timed(call_reward_fn, math_answer_reward, prompts, responses, answers)
    assert len(validated.values) == n
    with pytest.raises(ValueError, match="same length"):  # the documented error
        math_answer_reward(prompts, responses, answers + ["1"])


@TEXT_SETTINGS
@example(text=KNOWN_HOSTILE[0])
@example(text=KNOWN_HOSTILE[1])
@given(text=texts)
def test_answer_extraction_on_random_and_hostile_text(text):
    answer = _timed(extract_answer, text)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip())
    boxes = _timed(boxed_contents, text)
    assert isinstance(boxes, list) and all(isinstance(b, str) and b in text for b in boxes)
    if boxes:
        assert answer == boxes[-1].strip()


@TEXT_SETTINGS
@example(steps=[KNOWN_HOSTILE[3:]])
@given(steps=st.lists(st.lists(texts, max_size=3), min_size=1, max_size=3))
def test_process_rewards_on_random_and_hostile_text(steps):
    prompts, answers = ["p"] * len(steps), ["7"] * len(steps)
    for fn, allowed in ((arithmetic_step_reward, {1.0, 0.0, None}), (arithmetic_step_penalty, {0.0, -1.0, None})):
        out = _timed(fn, prompts, steps, answers)
        assert isinstance(out, list) and [len(row) for row in out] == [len(row) for row in steps]
        assert all(v in allowed and (v is None or isinstance(v, float)) for row in out for v in row)
    for step in (s for row in steps for s in row):
        assert _timed(check_arithmetic_step, step) in (1.0, 0.0, None)


_BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1, True, 1e308, 10**30]
lengths = st.lists(st.one_of(st.integers(0, 4096), st.floats(0, 4096), st.sampled_from(_BAD_NUMBERS + [2**40, 3.5])),
                   max_size=8)
sizes = st.one_of(st.integers(1, 4096), st.integers(1, 64), st.sampled_from(_BAD_NUMBERS + [0, 1.5, 64.0, np.int64(64)]))
factors = st.one_of(st.floats(0, 10), st.integers(0, 10), st.sampled_from(_BAD_NUMBERS + [-0.5, 1e300]))


@TEXT_SETTINGS
@example(lengths=[math.nan], max_length=64, coef=1.0)
@example(lengths=[math.inf], max_length=64, coef=1.0)
@example(lengths=[10**30], max_length=1, coef=1e300)  # overflows float64
@given(lengths=lengths, max_length=sizes, coef=factors)
def test_length_penalty_returns_finite_values_or_raises_value_error(lengths, max_length, coef):
    try:
        out = _timed(length_penalty, lengths, max_length, coef)
    except ValueError as err:
        assert str(err).startswith("length_penalty: ")
        return
    assert out.shape == (len(lengths),) and np.all(np.isfinite(out)) and np.all(out <= 0)


@TEXT_SETTINGS
@example(lengths=[10], max_length=64, overlong_buffer=16, penalty_factor=math.nan)
@example(lengths=[math.nan], max_length=64, overlong_buffer=16, penalty_factor=1.0)
@example(lengths=[10], max_length=64.5, overlong_buffer=16, penalty_factor=1.0)
@given(lengths=lengths, max_length=sizes, overlong_buffer=sizes, penalty_factor=factors)
def test_overlong_penalty_returns_finite_values_or_raises_value_error(lengths, max_length, overlong_buffer,
                                                                      penalty_factor):
    try:
        out = _timed(overlong_penalty, lengths, max_length, overlong_buffer, penalty_factor)
    except ValueError as err:
        assert str(err).startswith(("Need max_length", "overlong_penalty: "))
        return
    assert out.shape == (len(lengths),) and np.all(np.isfinite(out))
    assert np.all((out <= 0) & (out >= -float(penalty_factor)))


# ------------------------------------------------------------------- boxed_contents vs the plain scan


def _boxed_contents_reference(text: str) -> list[str]:
    """The former quadratic implementation: scan forward from every ``\\boxed{`` (the specification)."""
    found, pos = [], 0
    while (match := re.compile(r"\\boxed\s*\{").search(text, pos)) is not None:
        start = i = match.end()
        depth = 1
        while i < len(text) and depth:
            if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            pos = start
            continue
        found.append(text[start: i - 1])
        pos = i
    return found


@settings(max_examples=300, **COMMON)
@given(st.lists(st.sampled_from(["\\boxed{", "\\boxed {", "{", "}", "\\", "\\{", "\\}", "a", " ", "\\boxed"]),
                max_size=16).map("".join))
def test_linear_boxed_contents_matches_the_reference_scan(text):
    assert boxed_contents(text) == _boxed_contents_reference(text)
