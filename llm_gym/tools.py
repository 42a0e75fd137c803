"""Tools a language model can call during a multi-turn episode: a safe, exact calculator.

The model calls the calculator inside an assistant turn in one of two syntaxes, and the env answers each call
with the text :func:`run_tool_calls` returns (a number, or a message starting with ``"Error: "``):

1. ``<calc>EXPR</calc>``: the short syntax the task prompt teaches, e.g. ``<calc>234 * 567</calc>``.
   A ``<calc>`` with no ``</calc>`` before the next ``<calc>`` (or the end) is not a call.
2. ``<tool_call>JSON</tool_call>``: the tool-call format of chat templates such as Qwen2.5's (Hermes
   style), so models trained for function calling can use it unchanged::

       <tool_call>
       {"name": "calculator", "arguments": {"expression": "234 * 567"}}
       </tool_call>

   ``"arguments"`` may also be a JSON string holding that object (OpenAI style) and may be called
   ``"parameters"`` (Llama 3 style). Malformed JSON is still a call: its result is an error message.

>>> [(call.syntax, call.expression, result) for call, result in run_tool_calls(
...     'So <calc>234 * 567</calc> and <tool_call>{"name": "calculator", '
...     '"arguments": {"expression": "7 / 2"}}</tool_call>.')]
[('calc', '234 * 567', '132678'), ('tool_call', '7 / 2', '3.5')]

The calculator (:func:`evaluate_expression`) parses the expression with :mod:`ast` and evaluates a whitelist
of nodes with :class:`fractions.Fraction` (nothing is ``eval``-ed; the evaluator is
:class:`llm_gym.arithmetic.ExactEvaluator`, shared with the arithmetic step checkers): numbers, ``+ - * / // % **``, unary
``+``/``-`` and parentheses. Every problem, from a syntax error to ``__import__('os')`` or ``9**9**9``, gives
an ``"Error: ..."`` string, never an exception, quickly.

>>> calculator("1,234 × 2"), calculator("1 / 3"), calculator("10 / 0")
('2468', '0.333333', 'Error: division by zero in 10 / 0; check the divisor.')
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

from llm_gym.arithmetic import ALL_OPERATORS, ExactEvaluator, ExpressionError, shorten
from llm_gym.text import valid_text

__all__ = [
    "SIGNIFICANT_DIGITS",
    "ToolCall",
    "calculator",
    "evaluate_expression",
    "find_tool_calls",
    "run_tool_calls",
]

#: Significant digits of a result that is not a terminating decimal (``1/3`` -> ``"0.333333"``).
SIGNIFICANT_DIGITS = 6
#: Largest ``max_digits`` accepted: Python refuses to print integers of more than 4300 digits.
_MAX_DIGITS_LIMIT = 4000
_HELP = "the calculator takes numbers, + - * / // % ** and parentheses"


# ---------------------------------------------------------------------------------------- finding calls
# A tag's contents may not contain another opening tag, so an unclosed tag is skipped and each start
# position scans only up to the next opening tag: linear time even on "<calc>" * 100_000.
_CALC = re.compile(r"<calc>((?:(?!<calc>).)*?)</calc>", re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>((?:(?!<tool_call>).)*?)</tool_call>", re.DOTALL)
_CALCULATOR = "calculator"
_TOOL_CALL_EXAMPLE = '<tool_call>{"name": "calculator", "arguments": {"expression": "2 + 3"}}</tool_call>'


@dataclass(frozen=True)
class ToolCall:
    """One tool call found in a model's text.

    Attributes:
        name: The tool called: ``"calculator"`` for ``<calc>``, the JSON ``"name"`` for ``<tool_call>``
            (``""`` when the JSON is malformed).
        expression: The expression to evaluate, as written (``""`` when it could not be read).
        start: Index (characters) of the call's first character in the text (``<``).
        end: Index (characters) just after the call's last character: ``text[start:end]`` is the call.
        syntax: ``"calc"`` (``<calc>EXPR</calc>``) or ``"tool_call"`` (``<tool_call>JSON</tool_call>``).
        error: Why the call could not be read (malformed JSON, missing expression), as an
            ``"Error: ..."`` message that :func:`run_tool_calls` returns instead of a result; else None.
    """

    name: str
    expression: str
    start: int
    end: int
    syntax: str
    error: str | None = None


def _parse_tool_call(body: str) -> tuple[str, str, str | None]:
    """``(name, expression, error)`` read from the JSON between ``<tool_call>`` tags.

    The name and expression are valid text (a ``"\\ud800"`` escape gives U+FFFD, not a lone surrogate the
    tokenizer would refuse); JSON that cannot be read, an integer over Python's 4,300-digit limit included,
    gives an error message.
    """
    fix = f"write {_TOOL_CALL_EXAMPLE}"
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5000-digit integer, "[[[[..." nesting
        reason = shorten(valid_text(str(exc)) or type(exc).__name__, 120)
        return "", "", f"Error: the tool call is not valid JSON ({reason}); {fix}."
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return "", "", f'Error: the tool call must be a JSON object with a string "name"; {fix}.'
    name = valid_text(payload["name"])
    if name != _CALCULATOR:
        return name, "", None  # an unknown tool: run_tool_calls says which tools exist
    arguments = payload.get("arguments", payload.get("parameters"))
    if isinstance(arguments, str):  # OpenAI style: the arguments object serialised as a string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            pass
    expression = arguments.get("expression") if isinstance(arguments, dict) else None
    if not isinstance(expression, str):
        return name, "", f'Error: the calculator needs "arguments": {{"expression": "<a string>"}}; {fix}.'
    return name, valid_text(expression), None


def find_tool_calls(text: str) -> list[ToolCall]:
    """Every tool call in ``text``, in order of position.

    ``<calc>EXPR</calc>`` and ``<tool_call>JSON</tool_call>`` are found (see the module docstring); a
    ``<calc>`` inside a ``<tool_call>`` is part of that call, not a call of its own. An opening tag with no
    closing tag before the next opening tag of its kind is not a call. Malformed tool-call JSON is still
    returned, as a call whose ``error`` holds the message. Linear time in ``len(text)``.

    Args:
        text: An assistant turn (or any text).

    Returns:
        The calls sorted by ``start``; ``[]`` when there are none.

    Raises:
        TypeError: ``text`` is not a string (pass the decoded response text).

    >>> [(c.syntax, c.expression, c.start, c.end) for c in find_tool_calls("a <calc>2+3</calc> <calc>4")]
    [('calc', '2+3', 2, 18)]
    """
    if not isinstance(text, str):
        raise TypeError(f"find_tool_calls expects the response text as a str, got {type(text).__name__}.")
    calls = []
    for match in _TOOL_CALL.finditer(text):
        name, expression, error = _parse_tool_call(match.group(1).strip())
        calls.append(ToolCall(name, expression, match.start(), match.end(), "tool_call", error))
    spans = [(call.start, call.end) for call in calls]
    for match in _CALC.finditer(text):
        if not any(start <= match.start() < end for start, end in spans):
            calls.append(ToolCall(_CALCULATOR, match.group(1), match.start(), match.end(), "calc"))
    return sorted(calls, key=lambda call: call.start)


def run_tool_calls(text: str) -> list[tuple[ToolCall, str]]:
    """Find every tool call in ``text`` and run it: the text to show the model for each.

    Args:
        text: An assistant turn.

    Returns:
        ``(call, result)`` per call, in order: the calculator's result, or an ``"Error: ..."`` message for
        a call that could not be read or names an unknown tool. Never raises on the model's text.

    Raises:
        TypeError: ``text`` is not a string.

    >>> [result for _, result in run_tool_calls("<calc>2 ** 10</calc> <calc>x + 1</calc>")][0]
    '1024'
    """
    results = []
    for call in find_tool_calls(text):
        if call.error is not None:
            result = call.error
        elif call.name != _CALCULATOR:
            result = f"Error: unknown tool {call.name!r}; the only tool is {_CALCULATOR!r}."
        else:
            result = calculator(call.expression)
        results.append((call, result))
    return results


# ------------------------------------------------------------------------------------------- evaluating
# (pattern, replacement): the notations models write, rewritten to Python's.
_NOTATION = (
    (re.compile(r"[×·∗]"), "*"),
    (re.compile(r"÷"), "/"),
    (re.compile(r"[−–]"), "-"),  # unicode minus, en dash
    (re.compile(r"\^"), "**"),  # "2^10": a power, never XOR
    (re.compile(r"(?<=[\d.)])\s*[xX]\s*(?=[\d.(])"), " * "),  # "3 x 4", "3x4"; not "x + 1" nor "0x1F"
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # thousands separators: "1,234,567"
    (re.compile(r"(?<![\w.])0+(?=\d)"), ""),  # leading zeros, which Python refuses: "007" -> "7"
)


# "0x10", "0b1", "0o7": a radix prefix, refused (the "x" rule below would read "0x10" as 0 * 10 = 0).
_RADIX = re.compile(r"(?<![\w.])0[xXbBoO][0-9a-fA-F]\w*")


def _normalize(expression: str) -> str:
    """The expression in Python syntax: unicode operators, ``x``, ``^`` and commas rewritten, one line."""
    text = " ".join(expression.split())
    for pattern, replacement in _NOTATION:
        text = pattern.sub(replacement, text)
    return text


def _paren_depth(text: str) -> int:
    """Deepest nesting of brackets in ``text`` (``"(1 + (2))"`` -> 2)."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _decimal_text(value: Fraction) -> str:
    """``value`` as text: exact if an integer or terminating decimal, else rounded (see evaluate_expression)."""
    if value.denominator == 1:
        return str(value.numerator)
    sign, numerator, denominator = "-" if value < 0 else "", abs(value.numerator), value.denominator
    twos, fives, rest = 0, 0, denominator
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest == 1:  # terminating: the fewest decimals that make it exact
        places = max(twos, fives)
        digits = str(numerator * 10**places // denominator).rjust(places + 1, "0")
        return f"{sign}{digits[:-places]}.{digits[-places:]}"
    integer_digits = len(str(numerator // denominator).lstrip("0"))
    # Never fewer than one decimal, so a rounded result never looks like an exact integer.
    context = Context(prec=max(SIGNIFICANT_DIGITS, integer_digits + 1), rounding=ROUND_HALF_UP)
    text = format(context.divide(Decimal(numerator), Decimal(denominator)), "f")
    text = text.rstrip("0") if "." in text else text + "."
    return f"{sign}{text}0" if text.endswith(".") else f"{sign}{text}"


def evaluate_expression(expression: str, max_digits: int = 100, max_depth: int = 32,
                        max_length: int = 200) -> str:
    """Evaluate an arithmetic expression safely and exactly; the result or an error as text.

    Grammar: numbers (``12``, ``3.5``, ``.5``, ``1,234``), ``+ - * /``, ``//`` (floor division), ``%``
    (remainder, sign of the divisor as in Python), ``**`` with an integer exponent, unary ``+``/``-`` and
    parentheses. Also accepted: any whitespace, ``×``/``·``/``x`` for ``*``, ``÷`` for ``/``, ``−`` for
    ``-``, ``^`` for ``**`` and leading zeros (``007``). The expression is parsed with :mod:`ast` and only
    whitelisted nodes are evaluated, with :class:`fractions.Fraction` (``0.1 + 0.2`` is exactly ``0.3``);
    nothing is ``eval``-ed.

    Result text:

    - an integer: ``"56088"``, ``"-3"``;
    - a terminating decimal, exact: ``"2.5"``, ``"-0.125"``;
    - any other fraction, rounded half up to :data:`SIGNIFICANT_DIGITS` (6) significant digits in plain
      notation, with at least one decimal: ``1/3`` -> ``"0.333333"``, ``2/3`` -> ``"0.666667"``,
      ``10**7/3`` -> ``"3333333.3"``.

    Args:
        expression: The expression as the model wrote it.
        max_digits: Most digits (1 to 4000) a number may have: every literal, intermediate and final
            result (numerator and denominator of the exact value). Powers are checked before computing.
        max_depth: Deepest bracket nesting allowed (``"((1))"`` has depth 2), at least 1.
        max_length: Most characters allowed in the expression (surrounding whitespace excluded), at least 1.

    Returns:
        The result text, or a message starting with ``"Error: "`` that names the problem and the fix:
        empty expression, too long, nested too deeply, syntax error, a name / call / unsupported operator
        or literal (``0x10`` is refused, never read as ``0 * 10``), division by zero, a non-integer exponent,
        a number over ``max_digits`` digits. Never
        raises for any ``expression``, and returns in milliseconds.

    Raises:
        ValueError: A limit is out of range (a programming error, not the model's).

    >>> evaluate_expression("234*567"), evaluate_expression("2 + 3 * (4 - 1) / 2"), calculator("2 ^ 0.5")
    ('132678', '6.5', 'Error: the exponent of 2 ** 0.5 is not an integer; only integer powers are supported.')
    """
    if not 1 <= max_digits <= _MAX_DIGITS_LIMIT or max_depth < 1 or max_length < 1:
        raise ValueError(f"evaluate_expression: need 1 <= max_digits <= {_MAX_DIGITS_LIMIT}, max_depth >= 1 "
                         f"and max_length >= 1; got {max_digits}, {max_depth}, {max_length}.")
    if not isinstance(expression, str):
        kind = type(expression).__name__
        return f"Error: the expression must be text, got {kind}; pass a string like '2 + 3'."
    stripped = expression.strip()
    if not stripped:
        return "Error: empty expression; write an arithmetic expression such as 2 + 3 * 4."
    if len(stripped) > max_length:
        return (f"Error: the expression has {len(stripped)} characters, more than the limit of {max_length}; "
                f"split it into smaller calculations.")
    radix = _RADIX.search(stripped)
    if radix:
        return (f"Error: {shorten(radix.group(), 20)!r} reads as a hexadecimal, binary or octal number, which the "
                f"calculator does not take; write decimal numbers (and 0 * 4, with spaces, for a product).")
    source = _normalize(stripped)
    if _paren_depth(source) > max_depth:
        return (f"Error: the expression nests brackets {_paren_depth(source)} deep, more than the limit of "
                f"{max_depth}; simplify it or split it into smaller calculations.")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        quoted = shorten(stripped)
        return f"Error: syntax error in {quoted!r} ({reason}); write an expression such as (2 + 3) * 4."
    try:
        return _decimal_text(ExactEvaluator(source, max_digits, ALL_OPERATORS, _HELP).value(tree.body))
    except ExpressionError as exc:
        return f"Error: {exc}"
    except RecursionError:
        return "Error: the expression is nested too deeply; split it into smaller calculations."


def calculator(expression: str) -> str:
    """The calculator tool: :func:`evaluate_expression` with its default limits.

    Args:
        expression: The expression the model wrote, e.g. ``"234 * 567"``.

    Returns:
        The result text (``"132678"``) or an ``"Error: ..."`` message; never raises.
    """
    return evaluate_expression(expression)
