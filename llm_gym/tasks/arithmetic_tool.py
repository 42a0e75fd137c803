"""Arithmetic where exact computation matters: multi-digit products with several operations (tool-use tasks).

A 135M model cannot multiply ``234 * 567`` in its head; with a calculator
(:class:`~llm_gym.envs.multiturn.ToolMathEnv`, ``<calc>234 * 567 - 89</calc>``) it can. Levels:

* **1** - ``a * b`` with ``a, b`` in 12..999.
* **2** - ``a * b + c`` or ``a * b - c`` with ``a, b`` in 12..999 and ``c`` in 10..999.
* **3** - ``a * b + c * d`` or ``a * b - c * d`` with operands in 12..999.
* **4** - ``(a + b) * c - d * e`` (or ``+``, or ``a - b`` inside) with operands in 12..999.

Every answer is an exact non-negative integer (a subtraction that would go negative is written as an
addition). Train and test never share an expression: the split is a stable hash of the expression text
(:func:`~llm_gym.tasks.arithmetic.expression_split`, about 20% test).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from llm_gym.tasks.arithmetic import expression_split, make_problem, seed_int
from llm_gym.tasks.problem import Problem

__all__ = ["TOOL_LEVELS", "arithmetic_tool_problems"]

TOOL_LEVELS: tuple[int, ...] = (1, 2, 3, 4)
DEFAULT_N = {"train": 1000, "test": 200}
_LOW, _HIGH = 12, 999


def _sub_or_add(left: int, right: int, rng: random.Random) -> tuple[str, int]:
    """A random ``-`` or ``+`` between two values; ``+`` when ``left - right`` would be negative."""
    op = "-" if rng.random() < 0.5 and left >= right else "+"
    return op, left - right if op == "-" else left + right


def _expression(level: int, rng: random.Random) -> tuple[str, int, list[str]]:
    """``(expression text, exact value, worked steps)`` of one random expression of ``level``."""
    a, b, c, d, e = (rng.randint(_LOW, _HIGH) for _ in range(5))
    if level == 1:
        return f"{a} * {b}", a * b, [f"{a} * {b} = {a * b}"]
    if level == 2:
        c = rng.randint(10, _HIGH)
        op, value = _sub_or_add(a * b, c, rng)
        return f"{a} * {b} {op} {c}", value, [f"{a} * {b} = {a * b}", f"{a * b} {op} {c} = {value}"]
    if level == 3:
        op, value = _sub_or_add(a * b, c * d, rng)
        return (
            f"{a} * {b} {op} {c} * {d}",
            value,
            [f"{a} * {b} = {a * b}", f"{c} * {d} = {c * d}", f"{a * b} {op} {c * d} = {value}"],
        )
    inner_op, inner = _sub_or_add(a, b, rng)
    op, value = _sub_or_add(inner * c, d * e, rng)
    steps = [
        f"{a} {inner_op} {b} = {inner}",
        f"{inner} * {c} = {inner * c}",
        f"{d} * {e} = {d * e}",
        f"{inner * c} {op} {d * e} = {value}",
    ]
    return f"({a} {inner_op} {b}) * {c} {op} {d} * {e}", value, steps


def _level_problems(n: int, level: int, split: str, seed: int) -> list[Problem]:
    rng = random.Random(seed_int("arithmetic_tool", level, split, seed))
    seen: set[str] = set()
    problems: list[Problem] = []
    while (
        len(problems) < n
    ):  # millions of expressions per level: duplicates and the other split are rare skips
        expression, value, steps = _expression(level, rng)
        if expression in seen or expression_split(expression) != split:
            continue
        seen.add(expression)
        problems.append(make_problem(expression, value, steps, level, split, source="arithmetic_tool"))
    return problems


def arithmetic_tool_problems(
    n: int | None = None, difficulty: int | Iterable[int] = 1, split: str = "train", seed: int = 0
) -> list[Problem]:
    """Generate ``n`` distinct multi-digit arithmetic problems whose exact answer needs a calculator.

    Questions read ``"What is 234 * 567 - 89?"``; ``answer`` is the exact integer (``"132589"``) and
    ``solution`` lists one ``"a op b = c"`` line per operation. With several levels, ``n`` is split as
    evenly as possible (earlier levels get the remainder) and the result is ordered from the easiest level
    to the hardest.

    Args:
        n: Number of problems, an integer >= 1; None = 1000 (train) or 200 (test).
        difficulty: A level in 1..4 or a list of them (see the module docstring).
        split: ``"train"`` or ``"test"`` (disjoint, by a hash of the expression).
        seed: Random seed; the same arguments always give the same problems.

    Returns:
        ``n`` problems with no duplicate questions.

    Raises:
        ValueError: ``n`` not a positive integer or None, a level outside 1..4 (or an empty list), or a split
            other than ``"train"`` / ``"test"``.

    Example:
        >>> p = arithmetic_tool_problems(1, difficulty=2, seed=3)[0]
        >>> p.question.startswith("What is "), p.difficulty, p.source
        (True, 2, 'arithmetic_tool')
    """
    if split not in DEFAULT_N:
        raise ValueError(f"arithmetic_tool: unknown split {split!r}; valid splits are ['train', 'test'].")
    if n is None:
        n = DEFAULT_N[split]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"arithmetic_tool: n must be a positive integer or None, got {n!r}.")
    levels = (
        sorted(set(difficulty)) if isinstance(difficulty, (list, tuple, set, frozenset)) else [difficulty]
    )
    bad = [level for level in levels if isinstance(level, bool) or level not in TOOL_LEVELS]
    if not levels or bad:
        raise ValueError(
            f"arithmetic_tool: difficulty must be a level in {list(TOOL_LEVELS)} or a non-empty list "
            f"of them, got {difficulty!r}."
        )
    share, extra = divmod(n, len(levels))
    problems: list[Problem] = []
    for i, level in enumerate(levels):
        count = share + (1 if i < extra else 0)
        if count:
            problems.extend(_level_problems(count, int(level), split, seed))
    return problems
