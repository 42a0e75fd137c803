"""Exact arithmetic on expression text: the one evaluator of the calculator tool and the step checkers.

An expression is parsed with :mod:`ast` and a whitelist of nodes is evaluated with
:class:`fractions.Fraction` (nothing is ``eval``-ed): plain decimal numbers, the binary operators the caller
allows, unary ``+``/``-`` and parentheses. Every problem raises :class:`ExpressionError` with a message that
names it and the fix. Two callers:

- the calculator tool (:func:`llm_gym.tools.evaluate_expression`) allows every operator
  (:data:`ALL_OPERATORS`) with a digit limit on every number, and turns an error into an ``"Error: ..."``
  reply for the model;
- the arithmetic step checkers (:mod:`llm_gym.rewards.arithmetic`, :mod:`llm_gym.rewards.grounded`) allow
  ``+ - * /`` (:data:`BASIC_OPERATORS`) with no digit limit (their expressions are at most 200 characters
  with no power, so no number outgrows them) and treat an error as "not checkable".

>>> evaluate("0.1 + 0.2 * 3"), evaluate("7 // 2")
(Fraction(7, 10), Fraction(3, 1))
>>> evaluate("7 // 2", operators=BASIC_OPERATORS)
Traceback (most recent call last):
    ...
llm_gym.arithmetic.ExpressionError: unsupported operator in '7 // 2'; supported: numbers, + - * / and parentheses.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from fractions import Fraction

__all__ = [
    "ALL_OPERATORS",
    "BASIC_OPERATORS",
    "ExactEvaluator",
    "ExpressionError",
    "evaluate",
    "shorten",
]

#: The four operations of school arithmetic.
BASIC_OPERATORS: frozenset[str] = frozenset({"+", "-", "*", "/"})
#: Every operator the evaluator knows: also floor division, remainder (sign of the divisor, as in Python)
#: and integer powers.
ALL_OPERATORS: frozenset[str] = BASIC_OPERATORS | {"//", "%", "**"}

_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")  # plain decimal literals only: no "1e5", "0x1F", "1_000", "2j"
_BINARY: dict[type, tuple[str, Callable[[Fraction, Fraction], Fraction]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.FloorDiv: ("//", lambda a, b: Fraction(a // b)),
    ast.Mod: ("%", lambda a, b: a % b),
}
_ORDER = ("+", "-", "*", "/", "//", "%", "**")


class ExpressionError(ValueError):
    """The expression cannot be evaluated; the message (no ``"Error: "`` prefix) names the problem and the fix."""


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (ending in ``"..."``), for quoting in an error message.

    >>> shorten("1 + 2"), shorten("1234567890", limit=8)
    ('1 + 2', '12345...')
    """
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ExactEvaluator:
    """Exact evaluation of a parsed expression over the node whitelist, with an optional digit limit.

    Args:
        source: The expression text the tree was parsed from (literals are read from it, so ``0.1`` is
            exactly 1/10, and error messages quote it).
        max_digits: Most digits a number may have (numerator and denominator of every literal,
            intermediate and result; powers are checked before computing), or None for no limit.
        operators: The binary operators allowed, a subset of :data:`ALL_OPERATORS`.
        hint: What the evaluator accepts, appended to messages about unsupported syntax.

    Raises:
        ValueError: ``operators`` holds an unknown operator, or ``max_digits < 1``.
    """

    def __init__(self, source: str, max_digits: int | None = None,
                 operators: frozenset[str] = ALL_OPERATORS, hint: str | None = None):
        unknown = set(operators) - ALL_OPERATORS
        if unknown or (max_digits is not None and max_digits < 1):
            raise ValueError(f"ExactEvaluator: operators must be a subset of {sorted(ALL_OPERATORS)} and "
                             f"max_digits None or >= 1; got unknown {sorted(unknown)}, max_digits={max_digits}.")
        self.source = source
        self.max_digits = max_digits
        self.operators = frozenset(operators)
        self.hint = hint or f"supported: numbers, {' '.join(o for o in _ORDER if o in operators)} and parentheses"
        self.limit = None if max_digits is None else 10**max_digits  # too many digits: a part reaches this

    def checked(self, value: Fraction, what: str) -> Fraction:
        """``value``, or :class:`ExpressionError` when its numerator or denominator has too many digits."""
        if self.limit is not None and (abs(value.numerator) >= self.limit or value.denominator >= self.limit):
            raise ExpressionError(f"{what} has more than {self.max_digits} digits, the calculator's limit; "
                                  f"split the computation or use smaller numbers.")
        return value

    def segment(self, node: ast.AST) -> str:
        """The (shortened) source text of ``node``, for messages."""
        return shorten(ast.get_source_segment(self.source, node) or type(node).__name__)

    def value(self, node: ast.AST) -> Fraction:
        """The exact value of an expression node.

        Raises:
            ExpressionError: an unsupported node or operator, a literal that is not a plain decimal number,
                division by zero, a non-integer exponent, or a number over ``max_digits`` digits.
        """
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and "**" in self.operators:
            return self.power(node)
        if isinstance(node, ast.BinOp) and _BINARY.get(type(node.op), ("",))[0] in self.operators:
            left, right = self.value(node.left), self.value(node.right)
            symbol, operation = _BINARY[type(node.op)]
            if right == 0 and symbol in ("/", "//", "%"):
                raise ExpressionError(f"division by zero in {self.segment(node)}; check the divisor.")
            return self.checked(operation(left, right), f"the result of {self.segment(node)}")
        raise ExpressionError(self.unsupported(node))

    def constant(self, node: ast.Constant) -> Fraction:
        """A literal as written (``"0.1"`` -> 1/10). Raises :class:`ExpressionError` for anything else."""
        text = ast.get_source_segment(self.source, node) or ""
        if type(node.value) not in (int, float) or not _NUMBER.fullmatch(text):
            raise ExpressionError(f"unsupported literal {shorten(text)!r}; {self.hint}, written like 12, 3.5 "
                                  f"or 1,234.")
        return self.checked(Fraction(text), f"the number {shorten(text)}")

    def power(self, node: ast.BinOp) -> Fraction:
        """An integer power, refused before computing when its result would exceed ``max_digits``."""
        base, exponent = self.value(node.left), self.value(node.right)
        if exponent.denominator != 1:
            raise ExpressionError(f"the exponent of {self.segment(node)} is not an integer; "
                                  f"only integer powers are supported.")
        # Any base other than 0 and +-1 has a numerator or denominator >= 2, so |exponent| digits ~ 0.3 * |e|:
        # refuse before computing (9**9**9 would take minutes).
        size = max(abs(base.numerator), base.denominator)
        if self.max_digits is not None and size > 1 and abs(exponent) * math.log10(size) > self.max_digits + 1:
            raise ExpressionError(f"the result of {self.segment(node)} has more than {self.max_digits} digits, "
                                  f"the calculator's limit; use a smaller base or exponent.")
        if base == 0 and exponent < 0:
            raise ExpressionError(f"division by zero in {self.segment(node)} (zero to a negative power).")
        # Fast for the bases 0 and +-1 too, whatever the exponent.
        return self.checked(base ** int(exponent), f"the result of {self.segment(node)}")

    def unsupported(self, node: ast.AST) -> str:
        """The message for a node outside the whitelist."""
        text = self.segment(node)
        if isinstance(node, ast.Call):
            return f"function calls are not allowed ({text!r}); {self.hint}."
        if isinstance(node, ast.Name):
            return f"unknown name {node.id!r}; {self.hint}: replace names by their values."
        if isinstance(node, ast.Tuple):
            return (f"a comma that is not a thousands separator ({text!r}); write one expression, with "
                    f"commas only between groups of three digits (1,234).")
        if isinstance(node, (ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp)):
            return f"unsupported operator in {text!r}; {self.hint}."
        return f"unsupported syntax {text!r} ({type(node).__name__}); {self.hint}."


def evaluate(source: str, max_digits: int | None = None, operators: frozenset[str] = ALL_OPERATORS) -> Fraction:
    """The exact value of an expression in Python syntax (see :class:`ExactEvaluator`).

    Args:
        source: The expression, e.g. ``"3 + 4 * 2"`` (no notation is rewritten here: callers normalise
            ``×``, ``^``, thousands commas... first).
        max_digits: Most digits of any number, or None for no limit.
        operators: The binary operators allowed.

    Returns:
        The value as a :class:`~fractions.Fraction`.

    Raises:
        ExpressionError: a syntax error, or anything :meth:`ExactEvaluator.value` refuses.

    >>> evaluate("10 / 4"), evaluate("2 ** 10", max_digits=4)
    (Fraction(5, 2), Fraction(1024, 1))
    """
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ExpressionError(f"syntax error in {shorten(source)!r}") from exc
    return ExactEvaluator(source, max_digits, operators).value(tree.body)
