"""Tests of the calculator tool (llm_gym.tools): exact values worked out by hand, every error, both call syntaxes.

A pure module with no model, so no model fixture is needed.
"""

from __future__ import annotations

import dataclasses
import doctest
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llm_gym.tools
from llm_gym.tools import ToolCall, calculator, evaluate_expression, find_tool_calls, run_tool_calls

FAST_SECONDS = 0.5  # generous: the machine is shared with a training run; real times are ~1 ms


def test_module_doctests():
    assert doctest.testmod(llm_gym.tools).failed == 0


# ------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize(("expression", "expected"), [
    ("234*567", "132678"),  # 234*500 + 234*67 = 117000 + 15678
    ("123 * 456", "56088"),  # 49200 + 6888
    ("9876 * 5432", "53646432"),  # 49380000 + 4266432
    ("2 + 3 * 4", "14"),
    ("(2 + 3) * 4", "20"),
    ("10 - 4 - 3", "3"),  # left-associative: (10 - 4) - 3
    ("100 / 4 / 5", "5"),
    ("2 * 3 ** 2", "18"),
    ("2 ** 3 ** 2", "512"),  # right-associative: 2 ** 9
    ("-3 ** 2", "-9"),  # -(3 ** 2), as in Python and in math
    ("-(4 - 10)", "6"),
    ("--5", "5"),
    ("7 // 2", "3"),
    ("-7 // 2", "-4"),  # floor
    ("17 % 5", "2"),
    ("-7 % 3", "2"),  # sign of the divisor
    ("2 ** -2", "0.25"),
    ("(-1) ** 1001", "-1"),
    ("1 / 3 * 3", "1"),  # exact: no 0.9999999
    ("10 ** 99 - 10 ** 99 + 1", "1"),
])
def test_integer_arithmetic_and_precedence(expression, expected):
    assert evaluate_expression(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("0.1 + 0.2", "0.3"),  # exact, not 0.30000000000000004
    ("1.5 * 1.5", "2.25"),
    ("12.50 - 0.5", "12"),
    ("3.75 * 4", "15"),
    ("7 / 2", "3.5"),
    ("1 / 8", "0.125"),
    ("-1 / 40", "-0.025"),
    (".5 + 2.", "2.5"),
    ("1.05 * 3", "3.15"),
])
def test_terminating_decimals_are_exact(expression, expected):
    assert evaluate_expression(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("1 / 3", "0.333333"),
    ("2 / 3", "0.666667"),  # rounded half up
    ("-2 / 3", "-0.666667"),
    ("10 / 7", "1.42857"),  # 1.428571428...
    ("100 / 7", "14.2857"),  # 14.285714...
    ("(2 / 3) ** 3", "0.296296"),  # 8/27 = 0.296296296...
    ("1 / 7000000", "0.000000142857"),  # 1.42857142...e-7: 6 significant digits, no exponent
    ("10 ** 7 / 3", "3333333.3"),  # more than 6 integer digits: all kept, plus one decimal
    ("999999.96 / 1 + 1 / 300", "1000000.0"),  # 999999.96333...: rounding carries, still one decimal
])
def test_other_fractions_are_rounded_to_six_significant_digits(expression, expected):
    assert evaluate_expression(expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("1,234 + 1", "1235"),
    ("1,234,567 * 2", "2469134"),
    ("12,345.5 * 2", "24691"),
    ("6 × 7", "42"),
    ("84 ÷ 4", "21"),
    ("3 x 4", "12"),
    ("3x4", "12"),
    ("(1 + 2) X (3)", "9"),
    ("2 · 5", "10"),
    ("10 − 3", "7"),  # U+2212 minus sign
    ("2^10", "1024"),
    ("  2 +\n 3\t", "5"),
    ("007 + 1", "8"),
])
def test_notations_models_write(expression, expected):
    assert evaluate_expression(expression) == expected


def test_calculator_uses_the_default_limits():
    assert calculator("10 ** 99") == "1" + "0" * 99
    assert calculator("10 ** 100").startswith("Error: ")
    assert evaluate_expression("10 ** 100", max_digits=101) == "1" + "0" * 100


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("expression", "fragment"), [
    ("2 +", "syntax error"),
    ("(2 + 3", "syntax error"),
    ("0x1F", "reads as a hexadecimal"),
    ("2 x", "syntax error"),
    ("x + 1", "unknown name 'x'"),
    ("__import__('os')", "function calls are not allowed"),
    ("__import__('os').system('ls')", "function calls are not allowed"),
    ("abs(-3)", "function calls are not allowed"),
    ("(1).real", "unsupported syntax"),
    ("[1, 2]", "unsupported syntax"),
    ("lambda: 1", "unsupported syntax"),
    ("'a' * 3", "unsupported literal"),
    ("True + 1", "unsupported literal"),
    ("1e5", "unsupported literal"),
    ("1_000", "unsupported literal"),
    ("2j", "unsupported literal"),
    ("2 < 3", "unsupported operator"),
    ("1 << 3", "unsupported operator"),
    ("1,2345", "thousands separator"),
    ("1 / 0", "division by zero"),
    ("1 / (2 - 2)", "division by zero"),
    ("5 // 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("4 ** 0.5", "not an integer"),
    ("1" * 101, "more than 100 digits"),
    ("0." + "0" * 100 + "1", "more than 100 digits"),  # denominator 10**101
    ("10 ** 100", "more than 100 digits"),
    ("10 ** 50 * 10 ** 50", "more than 100 digits"),
    ("9**9**9", "more than 100 digits"),
    ("2**2**2**2**2", "more than 100 digits"),  # 2 ** 65536
    ("(1 / 3) ** 300", "more than 100 digits"),
    ("(" * 33 + "1" + ")" * 33, "33 deep"),
    ("1+" * 100 + "1", "201 characters"),
    ("", "empty expression"),
    ("   \n ", "empty expression"),
])
def test_errors_are_returned_as_messages(expression, fragment):
    start = time.perf_counter()
    result = evaluate_expression(expression)
    assert time.perf_counter() - start < FAST_SECONDS
    assert isinstance(result, str)
    assert result.startswith("Error: ")
    assert fragment in result


def test_limits_are_exact():
    assert evaluate_expression("(" * 32 + "1" + ")" * 32) == "1"
    assert evaluate_expression("((1))", max_depth=2) == "1"
    assert "3 deep" in evaluate_expression("(((1)))", max_depth=2)
    assert evaluate_expression("1+" * 99 + "1") == "100"  # 199 characters
    assert evaluate_expression("999", max_digits=3) == "999"
    assert "more than 3 digits" in evaluate_expression("999 + 1", max_digits=3)
    assert "more than 3 digits" in evaluate_expression("1000", max_digits=3)
    assert evaluate_expression("2 ** 332") == str(2**332)  # 100 digits
    assert "more than 100 digits" in evaluate_expression("2 ** 333")  # 101 digits


@pytest.mark.parametrize("expression", [
    "a" * 10_000,
    "1+" * 5_000 + "1",
    "9" * 10_000,
    "(" * 10_000,
    "9**9**9**9",
])
def test_huge_input_returns_fast(expression):
    start = time.perf_counter()
    assert evaluate_expression(expression).startswith("Error: ")
    assert time.perf_counter() - start < FAST_SECONDS


@pytest.mark.parametrize("expression", [None, 12, b"1+1"])
def test_non_string_expression_is_an_error_message(expression):
    assert evaluate_expression(expression).startswith("Error: the expression must be text")


@pytest.mark.parametrize("limits", [{"max_digits": 0}, {"max_digits": 5000}, {"max_depth": 0}, {"max_length": 0}])
def test_bad_limits_raise(limits):
    with pytest.raises(ValueError, match="max_digits"):
        evaluate_expression("1 + 1", **limits)


# -------------------------------------------------------------------------------------------- calls
TOOL_CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 12"}}\n</tool_call>'


def test_calc_syntax():
    assert find_tool_calls("<calc>234*567</calc>") == [ToolCall("calculator", "234*567", 0, 20, "calc")]
    [(call, result)] = run_tool_calls("So <calc> 234 * 567 </calc>.")
    assert (call.start, call.end, call.expression, result) == (3, 27, " 234 * 567 ", "132678")


def test_tool_call_syntax():
    text = "Let me compute. " + TOOL_CALL
    [(call, result)] = run_tool_calls(text)
    assert call == ToolCall("calculator", "12 * 12", 16, len(text), "tool_call")
    assert result == "144"


@pytest.mark.parametrize("payload", [
    '{"name": "calculator", "arguments": "{\\"expression\\": \\"1 + 1\\"}"}',  # arguments as a JSON string
    '{"name": "calculator", "parameters": {"expression": "1 + 1"}}',  # Llama 3 style key
])
def test_tool_call_argument_variants(payload):
    [(call, result)] = run_tool_calls(f"<tool_call>{payload}</tool_call>")
    assert (call.expression, call.error, result) == ("1 + 1", None, "2")


def test_several_calls_in_order():
    text = ("A <calc>1+1</calc> B " + '<tool_call>{"name": "calculator", "arguments": {"expression": "2*3"}}'
            "</tool_call> C <calc>10/4</calc> D <calc>1/0</calc>")
    pairs = run_tool_calls(text)
    assert [call.syntax for call, _ in pairs] == ["calc", "tool_call", "calc", "calc"]
    assert [call.expression for call, _ in pairs] == ["1+1", "2*3", "10/4", "1/0"]
    assert [result for _, result in pairs][:3] == ["2", "6", "2.5"]
    assert pairs[3][1].startswith("Error: division by zero")
    assert [text[call.start:call.end][:5] for call, _ in pairs] == ["<calc", "<tool", "<calc", "<calc"]
    assert all(text[call.end - 1] == ">" for call, _ in pairs)
    assert [call.start for call, _ in pairs] == sorted(call.start for call, _ in pairs)


@pytest.mark.parametrize(("body", "fragment"), [
    ('{"name": "calculator", "arguments": {"expression": "1+1"}', "not valid JSON"),  # missing brace
    ("calculator(1+1)", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", 'JSON object with a string "name"'),
    ('{"arguments": {"expression": "1+1"}}', 'JSON object with a string "name"'),
    ('{"name": "calculator", "arguments": {}}', '"arguments": {"expression"'),
    ('{"name": "calculator", "arguments": {"expression": 5}}', '"arguments": {"expression"'),
    ('{"name": "calculator", "arguments": "not json"}', '"arguments": {"expression"'),
])
def test_malformed_tool_call_is_a_call_with_an_error(body, fragment):
    text = f"x <tool_call>{body}</tool_call>"
    [(call, result)] = run_tool_calls(text)
    assert (call.syntax, call.start, call.end) == ("tool_call", 2, len(text))
    assert call.error == result
    assert result.startswith("Error: ") and fragment in result


def test_unknown_tool():
    [(call, result)] = run_tool_calls('<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>')
    assert (call.name, call.error) == ("search", None)
    assert result == "Error: unknown tool 'search'; the only tool is 'calculator'."


@pytest.mark.parametrize(("text", "expressions"), [
    ("<calc>2+3", []),
    ("<calc>2+3 and <calc>4*5</calc>", ["4*5"]),
    ("2+3</calc>", []),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}', []),
    ("<tool_call><calc>1+2</calc></tool_call>", [""]),  # one call, the tool_call (its body is not JSON)
    ("no calls here", []),
])
def test_unclosed_and_nested_tags(text, expressions):
    assert [call.expression for call in find_tool_calls(text)] == expressions


def test_unclosed_calc_start_position_of_next_call():
    [call] = find_tool_calls("<calc>2+3 and <calc>4*5</calc>")
    assert (call.start, call.end) == (14, 30)


@pytest.mark.parametrize("text", ["<calc>" * 100_000, "<tool_call>" * 100_000, "<calc>" + "1" * 1_000_000,
                                  "<tool_call>" + "[" * 100_000 + "</tool_call>"])
def test_hostile_text_is_fast(text):
    start = time.perf_counter()
    pairs = run_tool_calls(text)
    assert time.perf_counter() - start < FAST_SECONDS * 4
    assert all(result.startswith("Error: ") for _, result in pairs)


def test_tool_call_is_frozen_and_text_must_be_str():
    call = ToolCall("calculator", "1", 0, 17, "calc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.expression = "2"
    with pytest.raises(TypeError, match="str"):
        find_tool_calls(b"<calc>1</calc>")


# --------------------------------------------------------------------------------------- properties
OPERATORS = {"+": (1, lambda a, b: a + b), "-": (1, lambda a, b: a - b), "*": (2, lambda a, b: a * b)}


def _trees():
    """Random integer expression trees: an int leaf, ("neg", child) or (op, left, right, extra_parens)."""
    leaves = st.integers(0, 999)
    return st.recursive(leaves, lambda children: st.one_of(
        st.tuples(st.just("neg"), children),
        st.tuples(st.sampled_from(sorted(OPERATORS)), children, children, st.booleans()),
    ), max_leaves=12)


def _value(tree) -> int:
    if isinstance(tree, int):
        return tree
    if tree[0] == "neg":
        return -_value(tree[1])
    return OPERATORS[tree[0]][1](_value(tree[1]), _value(tree[2]))


def _render(tree) -> tuple[str, int]:
    """Text and precedence of ``tree``, with the parentheses its shape needs (and some it does not)."""
    if isinstance(tree, int):
        return str(tree), 4
    if tree[0] == "neg":
        text, precedence = _render(tree[1])
        return "-" + (text if precedence >= 3 else f"({text})"), 3
    op, left, right, extra = tree
    precedence = OPERATORS[op][0]
    (left_text, left_prec), (right_text, right_prec) = _render(left), _render(right)
    left_text = left_text if left_prec >= precedence else f"({left_text})"
    right_text = right_text if right_prec > precedence else f"({right_text})"  # a - (b - c)
    text = f"{left_text} {op} {right_text}"
    return (f"({text})", 4) if extra else (text, precedence)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees())
def test_integer_expressions_match_python(tree):
    text, _ = _render(tree)
    assert evaluate_expression(text, max_length=1000) == str(_value(tree))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789+-*/%().,^x× e_<>'\"[]a ")), max_size=250))
def test_any_text_gives_a_string_fast(text):
    start = time.perf_counter()
    result = calculator(text)
    assert time.perf_counter() - start < FAST_SECONDS
    assert isinstance(result, str) and result
