"""Every reward value either validates to a finite float (or None) or raises RewardFunctionError naming the
function: never a raw OverflowError, TypeError or numpy warning. Also the weighted sum of a CombinedReward
and from_trl's tokenizer argument, checked eagerly."""

from __future__ import annotations

import math
import warnings
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gym.rewards import (
    CombinedReward,
    RewardFunctionError,
    call_process_reward_fn,
    call_reward_fn,
    from_trl,
)


def _beyond_float64() -> list[np.longdouble]:
    """Long doubles beyond float64's range (inf where long double is float64)."""
    with np.errstate(over="ignore", under="ignore"):
        big, tiny = np.longdouble(1e308) * np.longdouble(1e10), np.longdouble(1e-308) * np.longdouble(1e-30)
    return [big, -big, tiny]


huge_ints = st.builds(lambda e, s: s * 10**e + s, st.integers(300, 6000), st.sampled_from([1, -1]))
numpy_scalars = st.one_of(
    st.floats(width=16).map(np.float16),
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.floats().map(np.longdouble),
    st.sampled_from(_beyond_float64()),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.integers(-128, 127).map(np.int8),
    st.booleans().map(np.bool_),
)
reward_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    numpy_scalars,
    st.fractions(),
    huge_ints.map(lambda n: Fraction(n, 7)),
    st.decimals(allow_nan=True),
    st.complex_numbers(),
    st.text(max_size=50),
    st.text(min_size=200, max_size=300),
    st.binary(max_size=20),
    st.lists(st.floats(), max_size=3),
    st.just(object()),
)


def returns_value(prompts, responses, answers, value=None, **fields):
    return [value[0]]


def expected(value) -> float | None:
    """What a valid value validates to: None, or float(value) when that is finite (bool -> 0/1)."""
    if value is None:
        return None
    return float(value)


@settings(max_examples=300, deadline=None)
@given(value=reward_values)
def test_every_reward_value_validates_or_raises_a_named_error(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning either
        try:
            out = call_reward_fn(returns_value, ["p"], ["r"], ["a"], value=[value])
        except RewardFunctionError as exc:
            assert "'returns_value'" in str(exc) and "at index 0" in str(exc)
            assert len(str(exc)) < 1000  # a huge value is described, not printed
            return
    if value is None:
        assert out.has_opinion.tolist() == [False]
        return
    number = out.values[0]
    assert out.has_opinion.tolist() == [True] and math.isfinite(number) and number == expected(value)


@settings(max_examples=60, deadline=None)
@given(value=reward_values)
def test_process_reward_values_follow_the_same_rule(value):
    def step_fn(prompts, steps, answers, **fields):
        return [[value]]

    try:
        call_process_reward_fn(step_fn, ["p"], [["a step"]], ["a"])
    except RewardFunctionError as exc:
        assert "'step_fn'" in str(exc)


def test_a_huge_integer_names_the_function_and_its_size():
    with pytest.raises(RewardFunctionError, match=r"'returns_value' returned an integer of about 401 digits "
                                                  r"\(type int\) at index 0, too large for a float"):
        call_reward_fn(returns_value, ["p"], ["r"], ["a"], value=[10**400])


def big(prompts, responses, answers, **fields):
    return [1e308, 1.0]


def also_big(prompts, responses, answers, **fields):
    return [1e308, 2.0]


@settings(max_examples=80, deadline=None)
@given(a=st.floats(-1e308, 1e308), b=st.floats(-1e308, 1e308), wa=st.floats(-1e10, 1e10), wb=st.floats(-1e10, 1e10))
def test_combined_reward_total_is_finite_or_an_error_naming_the_components(a, b, wa, wb):
    combined = CombinedReward({"first": lambda p, r, x, **k: [a], "second": lambda p, r, x, **k: [b]},
                              weights={"first": wa, "second": wb})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            total = combined(["p"], ["r"], ["x"])
        except RewardFunctionError as exc:
            assert "first" in str(exc) and "second" in str(exc) and "overflows" in str(exc)
            with np.errstate(over="ignore", invalid="ignore"):
                assert not np.isfinite(np.float64(wa) * a + np.float64(wb) * b)
            return
    assert math.isfinite(total[0])


def test_combined_reward_overflow_is_an_error_not_a_warning():
    combined = CombinedReward({"big": big, "also_big": also_big}, weights={"also_big": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RewardFunctionError, match=r"weighted sum of the components is inf at index 0 \(1 of 2 "
                                                      r"responses\): big = 1 x 1e\+308, also_big = 1 x 1e\+308"):
            combined(["p", "p"], ["r", "r"], ["a", "a"])


def trl_len(completions, **kwargs):
    return [float(len(c)) for c in completions]


class NotATokenizer:
    def encode(self, text):  # no add_special_tokens
        return [1, 2]


class StringEncoder:
    def encode(self, text, add_special_tokens=True):
        return text.split()


@pytest.mark.parametrize(("tokenizer", "fragment"), [
    ("gpt2", r"got the str 'gpt2'.*AutoTokenizer.from_pretrained\('gpt2'\)"),
    (Path("models/gpt2"), r"got the PosixPath.*AutoTokenizer.from_pretrained"),
    (b"gpt2", "got the bytes"),
    (3, "has no encode method"),
    (NotATokenizer(), r"encode\(text, add_special_tokens=False\) failed"),
    (StringEncoder(), "must return token ids"),
])
def test_from_trl_checks_the_tokenizer_when_it_is_given(tokenizer, fragment):
    with pytest.raises(TypeError, match=rf"from_trl: .*{fragment}"):
        from_trl(trl_len, tokenizer=tokenizer)


def test_from_trl_accepts_a_tokenizer_or_a_language_model(tiny_lm):
    for tokenizer in (tiny_lm, tiny_lm.tokenizer, None):
        assert from_trl(trl_len, tokenizer=tokenizer)(["p"], ["abc"], ["1"]) == [3.0]


def test_decimal_is_refused_by_name():
    with pytest.raises(RewardFunctionError, match=r"'returns_value' returned Decimal\('1.5'\) \(type Decimal\)"):
        call_reward_fn(returns_value, ["p"], ["r"], ["a"], value=[Decimal("1.5")])
