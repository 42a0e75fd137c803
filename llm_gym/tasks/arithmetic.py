"""A procedurally generated arithmetic curriculum with a leak-free train/test split.

Levels:

* **1** - ``a + b`` with ``a, b`` in 0..20 (441 distinct expressions in total).
* **2** - ``a + b`` or ``a - b`` with operands in 0..100; subtraction only when ``a >= b`` so
  answers are never negative (15,352 distinct expressions).
* **3** - two operations from ``+ - *`` on three operands in 1..12, standard precedence and no
  parentheses (``a + b - c``, ``a * b + c``, ``a - b * c``); every intermediate and final value is
  non-negative.
* **4** - three operations from ``+ - * /`` on four operands in 1..12, written with parentheses
  around every inner sub-expression (``(7 + 5) / (9 - 6) * 4`` is written
  ``((7 + 5) / (9 - 6)) * 4``); divisions are exact and every intermediate value lies in 0..1000,
  so answers are integers.

The split of an expression is a pure function of its canonical text (a SHA-256 hash, about 20% of
expressions go to ``"test"``), so train and test never share an expression, whatever the seed,
level or ``n``, and even across levels.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from llm_gym.tasks.problem import Problem

__all__ = [
    "LEVELS",
    "SPLITS",
    "arithmetic_problems",
    "expression_split",
    "make_problem",
    "seed_int",
    "split_capacity",
]

LEVELS: tuple[int, ...] = (1, 2, 3, 4)
SPLITS: tuple[str, ...] = ("train", "test")
_TEST_PERCENT = 20
_L34_MAX_VALUE = 1000


@dataclass(frozen=True)
class _Node:
    """A binary operation in an expression tree (leaves are plain ints)."""

    op: str
    left: _Node | int
    right: _Node | int


def _hash_hex(expression: str) -> str:
    return hashlib.sha256(f"arithmetic:{expression}".encode()).hexdigest()


def expression_split(expression: str) -> str:
    """Return the split (``"train"`` or ``"test"``) an arithmetic expression belongs to.

    The decision is a stable hash of the canonical expression text, so it is the same in every
    process, for every seed and at every level.

    Args:
        expression: Canonical expression text, exactly as it appears in the question
            (e.g. ``"7 + 12"``).

    Returns:
        ``"test"`` for about 20% of expressions, ``"train"`` for the rest.

    Example:
        >>> expression_split("7 + 12") in ("train", "test")
        True
    """
    return "test" if int(_hash_hex(expression)[:16], 16) % 100 < _TEST_PERCENT else "train"


def seed_int(*parts: object) -> int:
    """A stable 64-bit seed from ``parts`` (a SHA-256 of their text): the same in every process.

    >>> seed_int("arithmetic", 1, "train", 0) == seed_int("arithmetic", 1, "train", 0)
    True
    """
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16], 16)


def _apply(op: str, a: int, b: int) -> int | None:
    """Apply ``op``; None when the result is not a non-negative integer."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    raise ValueError(f"unknown operator {op!r}")


def _evaluate(node: _Node | int, steps: list[str], max_value: int | None) -> int | None:
    """Evaluate ``node`` in post-order, appending one ``"a op b = c"`` line per operation."""
    if isinstance(node, int):
        return node
    left = _evaluate(node.left, steps, max_value)
    if left is None:
        return None
    right = _evaluate(node.right, steps, max_value)
    if right is None:
        return None
    value = _apply(node.op, left, right)
    if value is None or (max_value is not None and value > max_value):
        return None
    steps.append(f"{left} {node.op} {right} = {value}")
    return value


def _render(node: _Node | int, parenthesize_inner: bool, root: bool = True) -> str:
    if isinstance(node, int):
        return str(node)
    text = (
        f"{_render(node.left, parenthesize_inner, False)} {node.op} "
        f"{_render(node.right, parenthesize_inner, False)}"
    )
    return f"({text})" if parenthesize_inner and not root else text


@cache
def _enumerated_pool(level: int, split: str) -> tuple[str, ...]:
    """All expressions of level 1 or 2 in ``split``, in canonical order."""
    if level == 1:
        exprs = [f"{a} + {b}" for a in range(21) for b in range(21)]
    elif level == 2:
        exprs = [f"{a} + {b}" for a in range(101) for b in range(101)]
        exprs += [f"{a} - {b}" for a in range(101) for b in range(a + 1)]
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"level {level} is not enumerated")
    return tuple(e for e in exprs if expression_split(e) == split)


def split_capacity(level: int, split: str) -> int | float:
    """Return how many distinct problems ``level`` holds in ``split``.

    Args:
        level: Difficulty level (1-4).
        split: ``"train"`` or ``"test"``.

    Returns:
        The exact count for levels 1 and 2, ``math.inf`` for levels 3 and 4 (thousands of
        distinct expressions; treated as unbounded).

    Raises:
        ValueError: On an unknown level or split.

    Example:
        >>> split_capacity(1, "train") + split_capacity(1, "test")
        441
    """
    _check_level(level)
    _check_split(split)
    if level in (1, 2):
        return len(_enumerated_pool(level, split))
    return math.inf


def _check_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"unknown arithmetic difficulty {level!r}; valid levels are {list(LEVELS)}")
    return level


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {list(SPLITS)}")


def _random_tree(level: int, rng: random.Random) -> _Node:
    if level == 3:
        a, b, c = (rng.randint(1, 12) for _ in range(3))
        op1, op2 = rng.choice("+-*"), rng.choice("+-*")
        if op2 == "*" and op1 != "*":
            return _Node(op1, a, _Node(op2, b, c))
        return _Node(op2, _Node(op1, a, b), c)
    # level 4: a random binary tree with 4 leaves (5 shapes) and 3 operators.
    a, b, c, d = (rng.randint(1, 12) for _ in range(4))
    o1, o2, o3 = (rng.choice("+-*/") for _ in range(3))
    shape = rng.randrange(5)
    if shape == 0:
        return _Node(o3, _Node(o2, _Node(o1, a, b), c), d)
    if shape == 1:
        return _Node(o2, _Node(o1, a, b), _Node(o3, c, d))
    if shape == 2:
        return _Node(o1, a, _Node(o2, b, _Node(o3, c, d)))
    if shape == 3:
        return _Node(o3, _Node(o1, a, _Node(o2, b, c)), d)
    return _Node(o1, a, _Node(o3, _Node(o2, b, c), d))


def make_problem(expression: str, value: int, steps: Sequence[str], level: int, split: str,
                 source: str = "arithmetic") -> Problem:
    """The :class:`~llm_gym.tasks.problem.Problem` "What is ``expression``?" with its worked steps.

    Args:
        expression: The canonical expression text, as asked.
        value: Its exact value (the gold answer).
        steps: The worked solution, one line per step.
        level: The difficulty level.
        split: ``"train"`` or ``"test"``.
        source: The problem source (``"arithmetic"``, ``"arithmetic_tool"``); part of the id.

    Returns:
        The problem, with a stable id ``"{source}/L{level}/{split}/{hash}"``.
    """
    return Problem(
        id=f"{source}/L{level}/{split}/{_hash_hex(expression)[:10]}",
        question=f"What is {expression}?",
        answer=str(value),
        solution="\n".join(steps),
        source=source,
        difficulty=level,
    )


def _level_problems(n: int, level: int, split: str, seed: int) -> list[Problem]:
    rng = random.Random(seed_int("arithmetic", level, split, seed))
    if level in (1, 2):
        pool = _enumerated_pool(level, split)
        if n > len(pool):
            raise ValueError(
                f"arithmetic level {level} {split} split holds only {len(pool)} distinct problems, "
                f"but n={n} were requested"
            )
        problems = []
        for expression in rng.sample(pool, n):
            a, op, b = expression.split()
            value = _apply(op, int(a), int(b))
            assert value is not None
            problems.append(make_problem(expression, value, [f"{expression} = {value}"], level, split))
        return problems

    max_attempts = 1000 * n + 10_000
    seen: set[str] = set()
    problems = []
    for _ in range(max_attempts):
        if len(problems) == n:
            break
        tree = _random_tree(level, rng)
        steps: list[str] = []
        value = _evaluate(tree, steps, _L34_MAX_VALUE)
        if value is None:
            continue
        expression = _render(tree, parenthesize_inner=level == 4)
        if expression in seen or expression_split(expression) != split:
            continue
        seen.add(expression)
        problems.append(make_problem(expression, value, steps, level, split))
    if len(problems) < n:  # pragma: no cover - thousands of distinct expressions per split
        raise ValueError(
            f"could only generate {len(problems)} distinct arithmetic level {level} {split} problems, "
            f"but n={n} were requested"
        )
    return problems


def _allocate(n: int, capacities: dict[int, int | float]) -> dict[int, int]:
    """Split ``n`` as evenly as possible over levels, capping each at its capacity."""
    counts = dict.fromkeys(capacities, 0)
    remaining = n
    open_levels = sorted(capacities)
    while remaining and open_levels:
        share, extra = divmod(remaining, len(open_levels))
        still_open = []
        for i, level in enumerate(open_levels):
            want = share + (1 if i < extra else 0)
            take = min(want, capacities[level] - counts[level])
            counts[level] += int(take)
            remaining -= int(take)
            if counts[level] < capacities[level]:
                still_open.append(level)
        if len(still_open) == len(open_levels):
            break
        open_levels = still_open
    return counts


def arithmetic_problems(
    n: int,
    difficulty: int | Iterable[int] = 1,
    split: str = "train",
    seed: int = 0,
) -> list[Problem]:
    """Generate ``n`` distinct arithmetic problems of the given level(s) and split.

    Each question reads ``"What is <expression>?"``; ``answer`` is the integer value and
    ``solution`` lists the worked steps, one ``"a op b = c"`` line per operation in evaluation
    order (e.g. ``"3 * 4 = 12\\n12 + 5 = 17"``). Ids are ``"arithmetic/L<level>/<split>/<hash>"``,
    where the hash is a prefix of the expression's SHA-256, so a problem keeps its id across seeds.

    When ``difficulty`` lists several levels, ``n`` is split between them as evenly as possible
    (earlier levels get the remainder; a level that cannot hold its share, such as level 1, is
    capped and the rest goes to the other levels) and the result is a **curriculum ordered from
    the easiest level to the hardest** (problems within a level are in random order). Shuffle it
    yourself if you want the levels interleaved.

    Args:
        n: Number of problems (>= 1).
        difficulty: A level 1-4, or a list/tuple of levels to mix.
        split: ``"train"`` or ``"test"``. Every returned problem belongs to it; the two splits
            never share an expression (see :func:`expression_split`).
        seed: Random seed; the same arguments always give the same problems.

    Returns:
        ``n`` problems with no duplicate questions.

    Raises:
        ValueError: On a bad ``n``, level or split, or when ``n`` exceeds what the split holds
            (level 1 has 441 expressions in total, split about 80/20).

    Example:
        >>> p = arithmetic_problems(1, difficulty=3, seed=1)[0]
        >>> p.question.startswith("What is "), p.difficulty
        (True, 3)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    _check_split(split)
    if isinstance(difficulty, (list, tuple, set, frozenset)):
        levels = sorted({_check_level(level) for level in difficulty})
        if not levels:
            raise ValueError(f"difficulty must name at least one level from {list(LEVELS)}")
    else:
        levels = [_check_level(difficulty)]

    capacities = {level: split_capacity(level, split) for level in levels}
    total = sum(capacities.values())
    if n > total:
        raise ValueError(
            f"arithmetic levels {levels} {split} split hold only {int(total)} distinct problems, "
            f"but n={n} were requested"
        )
    counts = _allocate(n, capacities)
    problems: list[Problem] = []
    for level in levels:
        if counts[level]:
            problems.extend(_level_problems(counts[level], level, split, seed))
    return problems
