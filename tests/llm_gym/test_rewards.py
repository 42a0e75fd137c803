"""Tests for llm_gym.rewards: validation, combination, math correctness and format rewards."""

from __future__ import annotations

import functools
import re
import threading

import numpy as np
import pytest
import torch

from llm_gym.rewards import (
    CombinedReward,
    RewardFunction,
    RewardFunctionError,
    RewardOutput,
    boxed_format_reward,
    call_reward_fn,
    extract_answer,
    math_answer_reward,
    reward_fn_name,
)
from llm_gym.rewards import regex_format_reward as make_regex_reward
from llm_gym.rewards.format import boxed_contents


def _batch(responses: list[str], answers: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    n = len(responses)
    return ["prompt"] * n, list(responses), list(answers) if answers is not None else [""] * n


def _math(responses: list[str], answers: list[str]) -> list[float]:
    return math_answer_reward(*_batch(responses, answers))


# --------------------------------------------------------------------------- extract_answer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"\boxed{42}", "42"),
        (r"First \boxed{1}, then corrected: \boxed{2}", "2"),
        (r"So \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{ {a}+{b} }", "{a}+{b}"),
        (r"3 + 4 = 7 and 10 - 3 = 7 so \boxed{7}. Check: 7 * 2 = 14", "7"),
        ("The answer is 17.", "17"),
        ("So, the answer is: -3. Other numbers: 99", "-3"),
        ("Final answer: 1,000 dollars. (12 steps)", "1000"),
        ("the answer is $\\frac{3}{4}$", r"\frac{3}{4}"),
        ("I have 3 apples and 5 pears, 8 in total", "8"),
        ("x-3", "3"),
        ("temperature dropped to -12 degrees", "-12"),
        ("half is 1/2", "1/2"),
        ("42 apples", "42"),
        ("no numbers here", None),
        ("", None),
        (r"truncated \boxed{12", "12"),  # unterminated box is ignored, falls back to the last number
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_extract_answer_non_string_is_none() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]


def test_boxed_contents_nested_and_escaped() -> None:
    assert boxed_contents(r"\boxed{\{1,2\}} and \boxed{\sqrt{\frac{1}{4}}}") == [
        r"\{1,2\}",
        r"\sqrt{\frac{1}{4}}",
    ]
    assert boxed_contents(r"\boxed{a} \boxed{b") == ["a"]


# --------------------------------------------------------------------------- math_answer_reward


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"\boxed{42.0}", "42", 1.0),
        (r"\boxed{42}", "42", 1.0),
        ("$42$", "42", 1.0),
        ("42 apples", "42", 1.0),
        ("The answer is 42.", "42", 1.0),
        ("The answer is 17.", "17", 1.0),
        (r"\boxed{0.5}", "1/2", 1.0),
        (r"\boxed{\frac{1}{2}}", "1/2", 1.0),
        ("The answer is 0.5", "1/2", 1.0),
        (r"\boxed{\dfrac{7}{2}}", "3.5", 1.0),
        (r"\boxed{-3}", "-3", 1.0),
        ("answer: -3", "-3", 1.0),
        (r"\boxed{3}", "-3", 0.0),
        (r"\boxed{1,000}", "1000", 1.0),
        ("In total 1,000 coins", "1000", 1.0),
        (r"\boxed{43}", "42", 0.0),
        ("The answer is 41.", "42", 0.0),
        ("I do not know.", "42", 0.0),
        ("", "42", 0.0),
        # Several numbers, including the gold one, but the boxed final answer is wrong / right.
        (r"We get 42 first, then 42 + 1 = 43, so \boxed{43}", "42", 0.0),
        (r"43 - 1 = 42 so \boxed{42}. Sanity check: 42 * 2 = 84", "42", 1.0),
        # Two boxes: the last one wins (math-verify alone would read {41, 42} as a set).
        (r"\boxed{41} ... wait, actually \boxed{42}", "42", 1.0),
        (r"\boxed{42} ... wait, actually \boxed{41}", "42", 0.0),
        # Nested braces.
        (r"\boxed{\frac{\sqrt{4}}{4}}", "1/2", 0.0),  # unevaluated: a numeric gold needs a stated value
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", 1.0),
        # Garbage never raises.
        (r"\boxed{}", "42", 0.0),
        (r"\boxed{\frac{{}}{", "42", 0.0),
        (r"\boxed{)(*&^%$#@!}", "42", 0.0),
        ("}" * 50 + "{" * 50, "42", 0.0),
    ],
)
def test_math_answer_reward_cases(response: str, gold: str, expected: float) -> None:
    assert _math([response], [gold]) == [expected]


def test_math_answer_reward_batch_and_types() -> None:
    responses = [r"\boxed{42}", "The answer is 17.", "no idea", r"\boxed{0.5}"]
    golds = ["42", "17", "3", "1/2"]
    out = _math(responses, golds)
    assert out == [1.0, 1.0, 0.0, 1.0]
    assert all(type(x) is float for x in out)


def test_math_answer_reward_odd_inputs_do_not_raise() -> None:
    assert math_answer_reward(["", ""], [None, 42], ["42", "42"]) == [0.0, 0.0]  # type: ignore[list-item]
    assert _math([r"\boxed{42}"], [""]) == [0.0]
    # Non-math gold falls back to exact comparison.
    assert _math([r"\boxed{Paris}", r"\boxed{Rome}"], ["Paris", "Paris"]) == [1.0, 0.0]


def test_math_answer_reward_length_mismatch() -> None:
    with pytest.raises(ValueError, match="same length"):
        math_answer_reward(["p"], [r"\boxed{1}", r"\boxed{2}"], ["1"])


def test_math_answer_reward_in_thread() -> None:
    responses = [r"\boxed{42.0}", "The answer is 17.", r"\boxed{41}", r"\boxed{\frac{9}{2}}", "x"]
    golds = ["42", "17", "42", "4.5", "1"]
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            result["value"] = math_answer_reward(*_batch(responses, golds))
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            result["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert result["value"] == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_math_answer_reward_passes_validation() -> None:
    out = call_reward_fn(math_answer_reward, *_batch([r"\boxed{2}", "3"], ["2", "2"]))
    np.testing.assert_array_equal(out.values, [1.0, 0.0])
    assert out.has_opinion.all()


# --------------------------------------------------------------------------- format rewards


def test_boxed_format_reward() -> None:
    responses = [r"so \boxed{42}", r"\boxed{\frac{1}{2}}", r"\boxed{4", "42", r"\boxed {7}", r"\boxed{}"]
    assert boxed_format_reward(*_batch(responses)) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_regex_format_reward() -> None:
    fn = make_regex_reward(r"^<think>.*</think>", re.DOTALL)
    assert fn.__name__ == "regex_format_reward('^<think>.*</think>')"
    assert reward_fn_name(fn) == fn.__name__
    assert fn(*_batch(["<think>a\nb</think> 4", "4 <think>x</think>", "<think>"])) == [1.0, 0.0, 0.0]
    assert isinstance(fn, RewardFunction)
    with pytest.raises(re.error):
        make_regex_reward("(")


# --------------------------------------------------------------------------- reward_fn_name


class _Scorer:
    def __call__(self, prompts, responses, answers, **kw):
        return [1.0] * len(responses)


class _NamedScorer(_Scorer):
    name = "custom_name"


def _plain(prompts, responses, answers, **kw):
    return [0.5] * len(responses)


def test_reward_fn_name() -> None:
    assert reward_fn_name(_plain) == "_plain"
    assert reward_fn_name(functools.partial(_plain)) == "_plain"
    assert reward_fn_name(functools.partial(functools.partial(_plain))) == "_plain"
    assert reward_fn_name(_Scorer()) == "_Scorer"
    assert reward_fn_name(_NamedScorer()) == "custom_name"
    assert reward_fn_name(lambda p, r, a: r) == "<lambda>"
    assert reward_fn_name(math_answer_reward) == "math_answer_reward"
    assert reward_fn_name(CombinedReward({"a": _plain})) == "combined"


# --------------------------------------------------------------------------- call_reward_fn


def test_call_reward_fn_accepts_sequences_arrays_and_tensors() -> None:
    batch = _batch(["a", "b", "c"])
    expected = np.array([1.0, 0.0, 2.5])
    for ret in (
        [1, False, 2.5],
        (1.0, 0.0, 2.5),
        np.array([1.0, 0.0, 2.5], dtype=np.float32),
        torch.tensor([1.0, 0.0, 2.5]),
        [np.int64(1), np.bool_(False), np.float32(2.5)],
    ):
        out = call_reward_fn(lambda p, r, a, ret=ret, **kw: ret, *batch)
        assert isinstance(out, RewardOutput)
        assert out.values.dtype == np.float64 and out.values.shape == (3,)
        np.testing.assert_array_equal(out.values, expected)
        assert out.has_opinion.dtype == bool and out.has_opinion.all()


def test_call_reward_fn_none_means_no_opinion() -> None:
    out = call_reward_fn(lambda p, r, a, **kw: [None, 0.25, None], *_batch(["a", "b", "c"]))
    np.testing.assert_array_equal(out.values, [0.0, 0.25, 0.0])
    np.testing.assert_array_equal(out.has_opinion, [False, True, False])


def test_call_reward_fn_passes_problem_fields() -> None:
    seen: dict[str, object] = {}

    def fn(prompts, responses, answers, **fields):
        seen.update(fields)
        return [float(x) for x in fields["bonus"]]

    out = call_reward_fn(fn, *_batch(["a", "b"]), bonus=[1, 2], task="math")
    np.testing.assert_array_equal(out.values, [1.0, 2.0])
    assert seen == {"bonus": [1, 2], "task": "math"}


def test_call_reward_fn_empty_batch() -> None:
    out = call_reward_fn(lambda p, r, a, **kw: [], [], [], [])
    assert out.values.shape == (0,) and out.has_opinion.shape == (0,)


def _raises(p, r, a, **kw):
    raise KeyError("missing_field")


def _returns_float(p, r, a, **kw):
    return 1.0


def _returns_dict(p, r, a, **kw):
    return {"x": 1.0}


def _too_short(p, r, a, **kw):
    return [1.0] * (len(r) - 1)


def _returns_string(p, r, a, **kw):
    return [1.0, "1.0", 0.0]


def _returns_nan(p, r, a, **kw):
    return [1.0, 0.0, float("nan")]


def _returns_inf(p, r, a, **kw):
    return np.array([1.0, -np.inf, 0.0])


def _returns_2d(p, r, a, **kw):
    return np.ones((len(r), 1))


def _returns_complex(p, r, a, **kw):
    return [1.0, 1j, 0.0]


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_raises, ["_raises", "KeyError", "missing_field"]),
        (_returns_float, ["_returns_float", "float", "list"]),
        (_returns_dict, ["_returns_dict", "dict"]),
        (_too_short, ["_too_short", "expected 3, got 2", "one value per response"]),
        (_returns_string, ["_returns_string", "index 1", "'1.0'", "str"]),
        (_returns_nan, ["_returns_nan", "index 2", "nan"]),
        (_returns_inf, ["_returns_inf", "index 1", "-inf"]),
        (_returns_2d, ["_returns_2d", "(3, 1)", "1-D"]),
        (_returns_complex, ["_returns_complex", "index 1", "complex"]),
        (functools.partial(_too_short), ["_too_short", "expected 3, got 2"]),
    ],
)
def test_call_reward_fn_errors_name_the_function(fn, fragments: list[str]) -> None:
    with pytest.raises(RewardFunctionError) as info:
        call_reward_fn(fn, *_batch(["a", "b", "c"]))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, ValueError)


def test_call_reward_fn_error_chains_original_exception() -> None:
    with pytest.raises(RewardFunctionError) as info:
        call_reward_fn(_raises, *_batch(["a"]))
    assert isinstance(info.value.__cause__, KeyError)


def test_call_reward_fn_error_names_callable_object() -> None:
    class BadScorer:
        name = "bad_scorer"

        def __call__(self, p, r, a, **kw):
            return [None, float("inf")]

    with pytest.raises(RewardFunctionError, match="bad_scorer.*index 1"):
        call_reward_fn(BadScorer(), *_batch(["a", "b"]))


def test_call_reward_fn_input_length_mismatch() -> None:
    with pytest.raises(ValueError, match="same length"):
        call_reward_fn(_plain, ["p"], ["a", "b"], ["x", "y"])


# --------------------------------------------------------------------------- CombinedReward


def _correct(p, r, a, **kw):
    return [1.0 if resp == ans else 0.0 for resp, ans in zip(r, a, strict=True)]


def _length(p, r, a, **kw):
    return [float(len(resp)) for resp in r]


def _sometimes(p, r, a, **kw):
    return [None if resp.startswith("skip") else 2.0 for resp in r]


def test_combined_reward_weighted_total() -> None:
    combined = CombinedReward(
        {"correct": _correct, "length": _length, "sometimes": _sometimes},
        weights={"correct": 2.0, "length": -0.5},
    )
    batch = _batch(["42", "skip", "7"], ["42", "skip", "8"])
    # correct: [1, 1, 0]; length: [2, 4, 1]; sometimes: [2, None, 2] (weight 1.0 by default)
    # total:  [2*1 - 0.5*2 + 2, 2*1 - 0.5*4 + 0, 2*0 - 0.5*1 + 2] = [3.0, 0.0, 1.5]
    total, components = combined.compute(*batch)
    assert total.dtype == np.float64 and total.shape == (3,)
    np.testing.assert_allclose(total, [3.0, 0.0, 1.5])
    assert list(components) == ["correct", "length", "sometimes"]
    np.testing.assert_array_equal(components["correct"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(components["length"], [2.0, 4.0, 1.0])
    np.testing.assert_array_equal(components["sometimes"], [2.0, 0.0, 2.0])

    called = combined(*batch)
    assert called == [3.0, 0.0, 1.5]
    assert all(type(x) is float for x in called)
    assert combined.weights == {"correct": 2.0, "length": -0.5, "sometimes": 1.0}
    assert combined.name == "combined"

    _, outputs = combined.compute_outputs(*batch)
    np.testing.assert_array_equal(outputs["sometimes"].has_opinion, [True, False, True])


def test_combined_reward_with_real_rewards_and_nesting() -> None:
    inner = CombinedReward({"math": math_answer_reward, "fmt": boxed_format_reward}, weights={"fmt": 0.1})
    outer = CombinedReward({"inner": inner, "fmt_again": boxed_format_reward}, weights={"inner": 10.0})
    batch = _batch([r"\boxed{42}", "The answer is 42", r"\boxed{41}"], ["42", "42", "42"])
    # inner: [1.1, 1.0, 0.1]; outer: 10*inner + fmt -> [12.0, 10.0, 2.0]
    np.testing.assert_allclose(inner(*batch), [1.1, 1.0, 0.1])
    np.testing.assert_allclose(outer(*batch), [12.0, 10.0, 2.0])
    assert isinstance(inner, RewardFunction)


def test_combined_reward_propagates_component_errors() -> None:
    combined = CombinedReward({"ok": _plain, "bad": _too_short})
    with pytest.raises(RewardFunctionError, match="_too_short"):
        combined(*_batch(["a", "b"]))


def test_combined_reward_invalid_construction() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CombinedReward({})
    with pytest.raises(ValueError, match="unknown keys.*'typo'"):
        CombinedReward({"a": _plain}, weights={"typo": 1.0})
    with pytest.raises(ValueError, match="finite"):
        CombinedReward({"a": _plain}, weights={"a": float("nan")})
    with pytest.raises(ValueError, match="not callable"):
        CombinedReward({"a": 3})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "response, expected",
    [
        (r"\boxed{8 + 4}", 0.0),  # the question copied into the box: equal to 12, but not an answer
        (r"\boxed{8+4}", 0.0),
        (r"\boxed{3 \cdot 4}", 0.0),
        (r"\boxed{8 + 4 = 12}", 1.0),  # an expression that states its value is fine
        (r"\boxed{12}", 1.0),
        (r"\boxed{12 apples}", 1.0),
        (r"\boxed{\frac{24}{2}}", 1.0),
    ],
)
def test_unevaluated_expressions_do_not_count_as_answers(response, expected):
    assert math_answer_reward([""], [response], ["12"]) == [expected]


def test_is_stated_value():
    from llm_gym.rewards.math import is_stated_value

    assert [is_stated_value(c) for c in ["12", "-3.5", "1/2", "1,000", "8 + 4", "0 + 11", "x = 5"]] == [
        True, True, True, True, False, False, True]


# --------------------------------------------------------------------------- linear time on hostile text

# Each case: (function, text expression). Evaluated in a child process that times every call: the quadratic
# code that this guards against takes minutes on these inputs and holds the GIL inside one regex call, so
# only a separate process can be stopped when it hangs.
_HOSTILE_CASES = {
    "boxed_contents(unbalanced boxes)": ("boxed_contents", r'"\\boxed{" * 30000'),
    "boxed_contents(one box, unbalanced braces)": ("boxed_contents", r'"\\boxed{" + "{" * 200000'),
    "boxed_contents(nested boxes)": ("boxed_contents", r'"\\boxed{\\boxed{" * 15000 + "}" * 10'),
    "extract_answer(unbalanced boxes)": ("extract_answer", r'"\\boxed{" * 30000'),
    "extract_answer(answer is + spaces)": ("extract_answer", r'"The answer is" + " " * 200000 + "x"'),
    "extract_answer(answer: + spaces)": ("extract_answer", r'"answer:" + " " * 200000 + "**"'),
    "boxed_format_reward(unbalanced boxes)": ("boxed_format_reward", r'"\\boxed{" * 30000'),
    "math_answer_reward(unbalanced boxes)": ("math_answer_reward", r'"\\boxed{" * 30000 + " 42"'),
    "check_arithmetic_step(long run before =)": ("check_arithmetic_step", r'"1" * 200000 + "x = 1"'),
    "check_arithmetic_step(spaced run before =)": ("check_arithmetic_step", r'"1 " * 100000 + "x = 1"'),
    "check_arithmetic_step(3 x 4 chain)": ("check_arithmetic_step", r'"1 x " * 50000 + "= 1"'),
    "check_arithmetic_step(open parens)": ("check_arithmetic_step", r'"(" * 200000 + "1 = 1"'),
    "check_arithmetic_step(nested boxes)": ("check_arithmetic_step", r'"\\boxed{" * 28000 + "1 = 1" + "}" * 28000'),
    "check_arithmetic_step(nested fractions)": ("check_arithmetic_step", r'"\\frac{" * 30000 + "1" + "}{1}" * 30000 + "= 1"'),
    "check_arithmetic_step(many lines)": ("check_arithmetic_step", r'("1" * 2000 + "x = 1\n") * 100'),
}

_CHILD = r'''
import json, sys, time
from llm_gym.rewards import arithmetic_step_reward, boxed_format_reward, extract_answer, math_answer_reward
from llm_gym.rewards.format import boxed_contents
from llm_gym.rewards.arithmetic import check_arithmetic_step

CALLS = {
    "boxed_contents": boxed_contents,
    "extract_answer": extract_answer,
    "check_arithmetic_step": check_arithmetic_step,
    "boxed_format_reward": lambda text: boxed_format_reward([""], [text], ["42"]),
    "math_answer_reward": lambda text: math_answer_reward([""], [text], ["42"]),
}
for name, (fn, expression) in json.loads(sys.argv[1]).items():
    text = eval(expression)
    start = time.perf_counter()
    CALLS[fn](text)
    print(json.dumps({"case": name, "chars": len(text), "seconds": time.perf_counter() - start}), flush=True)
'''


def test_answer_extraction_and_step_checking_run_in_linear_time() -> None:
    """Hostile responses of ~200k characters are parsed in well under a second (quadratic code took minutes)."""
    import json
    import subprocess
    import sys

    limit = 60.0  # the whole child process, import included; each call must take < 1 s
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(_HOSTILE_CASES)], capture_output=True,
                              text=True, timeout=limit, check=False)
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        done = [json.loads(line)["case"] for line in out.splitlines()]
        stuck = next(name for name in _HOSTILE_CASES if name not in done)
        pytest.fail(f"{stuck} did not finish within {limit:g} s (finished: {done})")
    assert not stderr.strip() or "Traceback" not in stderr, stderr
    results = [json.loads(line) for line in stdout.splitlines()]
    assert [r["case"] for r in results] == list(_HOSTILE_CASES)
    assert all(r["chars"] >= 100_000 for r in results)
    slow = {r["case"]: round(r["seconds"], 3) for r in results if r["seconds"] > 1.0}
    assert not slow, f"not linear time: {slow}"


def test_extract_answer_after_long_whitespace_is_unchanged() -> None:
    assert extract_answer("The answer is" + " " * 1000 + "42") == "42"
    assert extract_answer("answer:" + " " * 50 + ": **7**") == "7"
    assert extract_answer(r"\boxed{" * 1000 + r"\boxed{5} then \boxed{6") == "5"


# --------------------------------------------------------------------------- length rewards


def test_length_rewards_reject_non_finite_values() -> None:
    from llm_gym.rewards import length_penalty, overlong_penalty

    for lengths in ([float("nan")], [float("inf")], [3, -1], ["ten"]):
        with pytest.raises(ValueError, match="lengths must be"):
            length_penalty(lengths, max_length=64)
        with pytest.raises(ValueError, match="lengths must be"):
            overlong_penalty(lengths, max_length=64, overlong_buffer=16)
    for kwargs in ({"penalty_factor": float("nan")}, {"penalty_factor": float("inf")}, {"max_length": 64.5},
                   {"overlong_buffer": 3.5}, {"overlong_buffer": True}):
        with pytest.raises(ValueError, match="Need max_length"):
            overlong_penalty([10], **({"max_length": 64, "overlong_buffer": 16} | kwargs))
    assert overlong_penalty(np.array([10, 60]), np.int64(64), np.int64(16)).tolist() == [0.0, -0.75]
