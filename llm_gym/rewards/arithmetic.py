"""Rule-checked process reward for arithmetic: every ``expression = value`` of a step is verified exactly.

:func:`arithmetic_equations` reads the checkable equations of a step (LaTeX and unicode notation normalised
by :func:`normalize_notation`, each ``=`` with its operands :func:`left_operand` and :func:`right_operand`)
and values them with the exact evaluator shared with the calculator tool
(:func:`llm_gym.arithmetic.evaluate`, ``+ - * /`` only). :func:`check_arithmetic_step` scores one step;
:func:`arithmetic_step_reward` and :func:`arithmetic_step_penalty` are the process reward functions.
:mod:`llm_gym.rewards.grounded` builds on the same equations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, NamedTuple

from llm_gym.arithmetic import BASIC_OPERATORS, ExpressionError, evaluate

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING",
    "Equation",
    "arithmetic_equations",
    "arithmetic_step_penalty",
    "arithmetic_step_reward",
    "check_arithmetic_step",
    "exact_value",
    "left_operand",
    "normalize_notation",
    "right_operand",
]


#: Longest expression (characters) the checker evaluates; longer ones are not checked (None).
MAX_EXPRESSION_CHARS = 200
#: Passes of each LaTeX rewrite per line: one nesting level of ``\\boxed{}`` / ``\\frac{}{}`` per pass, so
#: deeper nesting is left as it is (the equations around it are then usually not checkable). Bounds the
#: cost of hostile text such as ``"\\boxed{" * 30000`` to linear time.
MAX_NESTING = 16

# (pattern, replacement, characters one of which every match contains: a line without them skips the pattern)
_LATEX_SUBS = (
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"(\1)/(\2)", "\\"),
    (re.compile(r"\\(?:boxed|fbox)\s*\{([^{}]*)\}"), r" \1 ", "\\"),
    (re.compile(r"\\(?:left|right)\b"), "", "\\"),
    (re.compile(r"\\(?:times|cdot)\b|[×·∗]"), " * ", "\\×·∗"),
    (re.compile(r"\\div\b|÷"), " / ", "\\÷"),
    (re.compile(r"\\[$()\[\],;:! ]|\$|\*\*|__"), " ", "\\$*_"),  # math delimiters, LaTeX spaces, markdown bold
    (re.compile(r"[−–]"), "-", "−–"),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), "", ","),  # thousands separators
    (re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])"), " * ", "xX"),  # "3 x 4"
)
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step\s*\d+\s*[:.)])\s+", re.IGNORECASE)
# The arithmetic characters. The run ending at an "=" is found by matching the reversed text from its
# start: searching for ``[...]*$`` retries from every position and is quadratic in the run's length.
_RIGHT_RUN = re.compile(r"[\d\s.+\-*/()]*")
_TRAILING_WORD_REVERSED = re.compile(r"\s*([A-Za-z]+)")
_PLAIN_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")  # a valid Python literal as it is
# Words that make a number next to "=" part of a larger quantity: "half of 8 = 4", "= 3 hundred".
_OPERATOR_WORDS = frozenset(
    "of times plus minus by over per divided multiplied add added subtract subtracted twice half double "
    "triple thrice squared cubed percent dozen hundred thousand million billion".split()
)


def normalize_notation(line: str) -> str:
    """Normalise the notation of one line: LaTeX and unicode operators, boxes, ``$``, thousands commas.

    Also drops a list marker (``1.``, ``-``, ``Step 2:``) at the start and markdown bold. Never adds an ``=``.

    >>> normalize_notation(r"1. $\\frac{6}{4} \\times 2$ = 3")
    ' (6)/(4)  *  2  = 3'
    """
    text = _LIST_MARKER.sub("", line)
    for pattern, replacement, triggers in _LATEX_SUBS:
        if not any(char in text for char in triggers):
            continue
        for _ in range(MAX_NESTING):  # nested \boxed{\frac{..}{..}} need several passes
            text, n_subs = pattern.subn(replacement, text)
            if not n_subs:
                break
    return text


def _balance(expr: str, left: bool) -> str:
    """Drop the unmatched outer brackets a run picked up from the prose around an equation.

    Left of ``=`` a leading ``(`` (``"(3 + 4"`` -> ``"3 + 4"``), right of it a trailing ``)`` or ``(``
    (``"7)"``, ``"7 ("`` -> ``"7"``).
    """
    opened, closed = expr.count("("), expr.count(")")
    start, end = 0, len(expr)  # indices, not repeated slicing: linear in len(expr)
    while left and opened > closed and expr[start:start + 1] == "(":
        start, opened = start + 1, opened - 1
        while start < end and expr[start].isspace():
            start += 1
    while not left and end > start and (
            (expr[end - 1] == ")" and closed > opened) or (expr[end - 1] == "(" and opened > closed)):
        opened, closed = opened - (expr[end - 1] == "("), closed - (expr[end - 1] == ")")
        end -= 1
        while end > start and expr[end - 1].isspace():
            end -= 1
    return expr[start:end]


def left_operand(part: str) -> str | None:
    """The arithmetic expression ending at the end of ``part`` (the text left of an ``=``), or None.

    The longest run of numbers, ``+ - * /``, parentheses and spaces; None when it is empty, glued to a
    symbol (``x2``, ``\\sqrt{9}``), starts with a binary operator whose left operand is not a number
    (``x - 3``) or follows an operator word (``half of 8``).

    >>> left_operand("First, 3 + 4 "), left_operand("half of 8 "), left_operand("2x ")
    ('3 + 4', None, None)
    """
    run_start = len(part) - _RIGHT_RUN.match(part[::-1]).end()
    before, text = part[:run_start], part[run_start:]
    dots = re.match(r"\.+(?=\s)", text)  # a full stop ending the previous sentence: "them. 3 + 4"
    if dots:
        before, text = before + dots.group(), text[dots.end():]
    expr = _balance(text.strip(), left=True)
    if not expr or (before and not text[0].isspace()):
        return None  # nothing, or glued to a symbol: "x2", "5%", "\sqrt{9}"
    if expr[0] in "+*/" or (expr[0] == "-" and before.strip() and before.rstrip()[-1] not in ",;:"):
        return None  # a binary operator whose left operand is not a number: "x - 3"
    word = _TRAILING_WORD_REVERSED.match(before[::-1])  # the word ending ``before`` (reversed), if any
    return None if word and word.group(1)[::-1].lower() in _OPERATOR_WORDS else expr


def right_operand(part: str) -> str | None:
    """The arithmetic expression starting at the start of ``part`` (the text right of an ``=``), or None.

    None when the run is empty, ends with an operator, is glued to a unit or word (``= 7x``, ``= 5%``,
    ``= 3,5``) or is followed by an operator word (``= 3 hundred``).

    >>> right_operand(" 7. Then"), right_operand(" 5%"), right_operand(" 3 hundred")
    ('7', None, None)
    """
    run = _RIGHT_RUN.match(part)
    after, expr = part[run.end():], _balance(run.group().strip().rstrip("."), left=False)
    if not expr or expr[-1] in "+-*/" or expr[0] in "+*/":
        return None
    glued = after and run.group()[-1] in "0123456789)"  # not after a space, full stop or stray "("
    if glued and not (after[0] in ",;:?" and not after[1:2].isdigit()):
        return None  # "= 7x", "= 5%", "= 3,5"
    word = re.match(r"\s*([A-Za-z]+)", after)
    return None if word and word.group(1).lower() in _OPERATOR_WORDS else expr


@functools.lru_cache(maxsize=4096)
def exact_value(expr: str) -> Fraction | None:
    """Exact value of ``+ - * /`` and parentheses over integers and decimals, or None if not that.

    :func:`llm_gym.arithmetic.evaluate` with :data:`~llm_gym.arithmetic.BASIC_OPERATORS` and no digit limit
    (at most :data:`MAX_EXPRESSION_CHARS` characters and no power keep every number small); a longer
    expression, a syntax error, another operator or a division by zero gives None. Cached: a pure function
    of the text, and a response often repeats its numbers and expressions.

    >>> exact_value("3 + 4 * 2"), exact_value("0.1 * 3"), exact_value("7 // 2"), exact_value("1 / 0")
    (Fraction(11, 1), Fraction(3, 10), None, None)
    """
    if len(expr) > MAX_EXPRESSION_CHARS:
        return None
    if _PLAIN_NUMBER.fullmatch(expr):
        return Fraction(expr)  # the common right-hand side, without a parse
    try:
        return evaluate(expr, max_digits=None, operators=BASIC_OPERATORS)
    except ExpressionError:
        return None


class Equation(NamedTuple):
    """One checkable ``left = right`` of a step.

    Attributes:
        left: The left operand, an arithmetic expression (:func:`left_operand`).
        right: The right operand (:func:`right_operand`).
        holds: Whether both sides have the same exact value.
    """

    left: str
    right: str
    holds: bool


def arithmetic_equations(text: str) -> Iterator[Equation]:
    """Every checkable ``left = right`` of a step, in reading order (lazily).

    Each line is normalised (:func:`normalize_notation`) and split at ``=``; each ``=`` gives the pair of
    operands around it (chains give one pair per ``=``). A pair is checkable when both operands are found
    and both have an exact value (:func:`exact_value`); the others are skipped.

    >>> [tuple(eq) for eq in arithmetic_equations("So 3 + 4 = 7 = 8 - 2, and x = 5.")]
    [('3 + 4', '7', True), ('7', '8 - 2', False)]
    """
    for line in text.splitlines():
        if "=" not in line:  # normalize_notation never adds one
            continue
        parts = normalize_notation(line).split("=")
        for i in range(len(parts) - 1):
            left, right = left_operand(parts[i]), right_operand(parts[i + 1])
            if left is None or right is None:
                continue
            a, b = exact_value(left), exact_value(right)
            if a is not None and b is not None:
                yield Equation(left, right, a == b)


def check_arithmetic_step(text: str) -> float | None:
    """Check every ``expression = value`` of a step exactly; see :func:`arithmetic_step_reward`.

    Returns:
        1.0 if every checkable ``=`` holds, 0.0 if one does not, None if no ``=`` is checkable.

    >>> check_arithmetic_step(r"So 3 + 4 * 2 = 3 + 8 = 11, \\boxed{11}."), check_arithmetic_step("12 / 8 = 1.4")
    (1.0, 0.0)
    """
    checked = False
    for equation in arithmetic_equations(text):
        if not equation.holds:
            return 0.0  # one wrong equation decides the step
        checked = True
    return 1.0 if checked else None


def arithmetic_step_reward(prompts: list[str], steps: list[list[str]], answers: list[str],
                           **problem_fields: Any) -> list[list[float | None]]:
    """Rule-checked process reward for arithmetic: is every equation written in a step true?

    Each ``=`` of a step is checked with exact rational arithmetic (Python's ``ast`` and ``Fraction``;
    nothing is ``eval``-ed): its left operand is the longest arithmetic expression (numbers, ``+ - * /``,
    parentheses, unary minus) ending at the ``=``, its right operand the longest one starting after it, so
    chains (``3 + 4 * 2 = 3 + 8 = 11``) and equations inside prose (``First, 3 + 4 = 7.``) are checked
    pair by pair. Notation: ``\\boxed{}``, ``$``, ``\\times``, ``\\cdot``, ``×``, ``x`` between numbers,
    ``\\div``, ``÷``, ``\\frac{a}{b}``, thousands commas, list markers (``1.``, ``-``) and markdown bold
    are normalised first. Decimals are exact (``0.1`` is 1/10), so a rounded value (``10 / 3 = 3.33``)
    counts as wrong.

    Not checkable (no opinion): a side with a variable, unit or word glued to it (``2x + 3 = 7``,
    ``5 apples = 5``, ``50% = 0.5``), a number next to an operator word (``half of 8 = 4``,
    ``= 3 hundred``), powers, functions, division by zero, ``==`` / ``<=`` / ``!=``.

    Args:
        prompts: ``N`` prompts (unused).
        steps: ``N`` lists of step texts (a step may hold several lines; all are checked).
        answers: ``N`` gold answers (unused: the final answer is the outcome reward's job).
        **problem_fields: Ignored.

    Returns:
        Per response, per step: 1.0 if every checkable ``=`` of the step holds, 0.0 if one does not (the
        wrong step is pinpointed), None if the step has no checkable equation (prose, a bare
        ``\\boxed{7}``, malformed expressions).

    >>> arithmetic_step_reward(["p"], [["3 + 4 = 7", "7 * 2 = 15", "The answer is \\\\boxed{15}"]], ["14"])
    [[1.0, 0.0, None]]
    """
    return [[check_arithmetic_step(step) for step in response_steps] for response_steps in steps]


def arithmetic_step_penalty(prompts: list[str], steps: list[list[str]], answers: list[str],
                            **problem_fields: Any) -> list[list[float | None]]:
    """:func:`arithmetic_step_reward` that only penalises errors: 0.0 for a correct step, -1.0 for a wrong one.

    With ``+1`` per correct step, a policy can earn step reward by writing one true but useless equation
    and stopping (our process-supervised GRPO run on arithmetic level 3 learned exactly that; see
    docs/benchmarks.md). Here a correct chain earns nothing beyond the outcome reward, so stopping early
    gains nothing, while a wrong step is still pinpointed and pushed down.

    Returns:
        Per response, per step: 0.0 (correct), -1.0 (wrong) or None (nothing checkable).

    >>> arithmetic_step_penalty(["p"], [["3 + 4 = 7", "7 * 2 = 15", "so \\\\boxed{15}"]], ["14"])
    [[0.0, -1.0, None]]
    """
    return [[None if r is None else r - 1.0 for r in row] for row in arithmetic_step_reward(prompts, steps, answers)]
