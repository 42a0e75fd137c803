"""The one exact arithmetic evaluator (llm_gym.arithmetic), shared by the calculator tool and the step checkers.

The calculator's own behaviour is pinned by test_tools.py, the checkers' by test_process.py, test_grounded.py
and test_properties.py; here: the evaluator's API, that both callers use it, and that they agree wherever
their grammars overlap.
"""

from __future__ import annotations

import doctest
import importlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_gym.arithmetic
import llm_gym.tools
from llm_gym.arithmetic import ALL_OPERATORS, BASIC_OPERATORS, ExactEvaluator, ExpressionError, evaluate
from llm_gym.rewards.arithmetic import (
    MAX_EXPRESSION_CHARS,
    arithmetic_equations,
    check_arithmetic_step,
    exact_value,
    left_operand,
    normalize_notation,
    right_operand,
)


@pytest.mark.parametrize("module", [
    "llm_gym.arithmetic", "llm_gym.rewards.arithmetic", "llm_gym.rewards.base", "llm_gym.rewards.calling",
    "llm_gym.rewards.combined", "llm_gym.rewards.process", "llm_gym.rewards.grounded",
    "llm_gym.reward_models.samples", "llm_gym.reward_models.training", "llm_gym.tasks.arithmetic",
])
def test_module_doctests(module):
    assert doctest.testmod(importlib.import_module(module)).failed == 0


def test_the_calculator_and_the_checkers_share_one_evaluator():
    assert llm_gym.tools.ExactEvaluator is ExactEvaluator
    assert importlib.import_module("llm_gym.rewards.arithmetic").evaluate is evaluate
    assert not hasattr(llm_gym.tools, "_Evaluator")


@pytest.mark.parametrize(("expression", "expected"), [
    ("3 + 4 * 2", Fraction(11)),
    ("(1 + 2) / 4", Fraction(3, 4)),
    ("0.1 + 0.2", Fraction(3, 10)),
    ("-(-2.5)", Fraction(5, 2)),
    (".5 + 5.", Fraction(11, 2)),
])
def test_basic_arithmetic_is_exact(expression, expected):
    assert evaluate(expression, operators=BASIC_OPERATORS) == expected
    assert evaluate(expression) == expected


@pytest.mark.parametrize("expression", ["7 // 2", "7 % 2", "2 ** 3", "x + 1", "abs(2)", "1e5", "1 < 2", "(1, 2)"])
def test_basic_operators_refuse_the_rest(expression):
    with pytest.raises(ExpressionError):
        evaluate(expression, operators=BASIC_OPERATORS)


@pytest.mark.parametrize(("expression", "fragment"), [
    ("1 / 0", "division by zero"),
    ("2 ** 0.5", "not an integer"),
    ("9 ** 9 ** 9", "more than 100 digits"),
    ("10 ** 100", "more than 100 digits"),
    ("1 +", "syntax error"),
])
def test_errors_name_the_problem(expression, fragment):
    with pytest.raises(ExpressionError, match=fragment):
        evaluate(expression, max_digits=100)


def test_no_digit_limit_by_default_and_a_limit_when_asked():
    big = "9" * 150
    assert evaluate(f"{big} * {big}") == Fraction(int(big) ** 2)
    with pytest.raises(ExpressionError, match="more than 100 digits"):
        evaluate(f"{big} * {big}", max_digits=100)


def test_bad_evaluator_settings_raise():
    with pytest.raises(ValueError, match="subset"):
        ExactEvaluator("1", operators=frozenset({"+", "^"}))
    with pytest.raises(ValueError, match="max_digits"):
        ExactEvaluator("1", max_digits=0)
    assert BASIC_OPERATORS < ALL_OPERATORS


def test_checker_helpers_are_public_and_consistent():
    assert normalize_notation(r"$3 \times 4$ = 12").split("=")[0].strip() == "3  *  4"
    assert left_operand("First, 3 + 4 ") == "3 + 4" and right_operand(" 7, so") == "7"
    assert [tuple(eq) for eq in arithmetic_equations("3 + 4 = 7\n7 * 2 = 15")] == [("3 + 4", "7", True),
                                                                                  ("7 * 2", "15", False)]
    assert exact_value("1" * (MAX_EXPRESSION_CHARS + 1)) is None
    assert check_arithmetic_step("7 // 2 = 3") is None  # floor division is not school arithmetic here


_numbers = st.one_of(st.integers(0, 10**6).map(str), st.decimals(0, 1000, places=2).map(lambda d: f"{d:.2f}"))


@st.composite
def _basic_expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(_numbers)
    op = draw(st.sampled_from(["+", "-", "*", "/"]))
    left, right = draw(_basic_expressions(depth=depth - 1)), draw(_basic_expressions(depth=depth - 1))
    return f"({left} {op} {right})"


@settings(max_examples=300, deadline=None)
@given(_basic_expressions())
def test_calculator_and_checker_agree_on_plain_arithmetic(expression):
    """Where both grammars apply, the checker's value printed as the calculator prints it is its reply."""
    value = exact_value(expression)
    reply = llm_gym.tools.evaluate_expression(expression, max_digits=4000)
    if value is None:  # only a division by zero (the expressions are short and well formed)
        assert reply.startswith("Error: division by zero")
    else:
        assert reply == llm_gym.tools.evaluate_expression(str(value.numerator) + " / " + str(value.denominator),
                                                          max_digits=4000)
