"""The :class:`Problem` record shared by every task, and helpers to normalise answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["Problem", "normalize_answer", "split_solution"]

_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class Problem:
    """One question with its canonical final answer.

    Attributes:
        id: Identifier, unique within a task (e.g. ``"arithmetic/L1/train/3f2a9c1b07"``,
            ``"gsm8k/473"``, ``"gsm_symbolic/0007/5d41402abc"``).
        question: The question text shown to the model.
        answer: Canonical final answer. Numbers are plain strings without thousands separators and
            integers carry no ``.0`` (``"1234"``, ``"3.5"``).
        solution: Worked solution, one step per line where possible, or None if unknown.
        source: Name of the task or file the problem came from.
        difficulty: Difficulty level where the task defines one (arithmetic levels 1-4), else None.

    Raises:
        ValueError: If ``id``, ``question`` or ``answer`` is empty.

    Example:
        >>> Problem(id="demo/0", question="What is 2 + 2?", answer="4").answer
        '4'
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    source: str = ""
    difficulty: int | None = None

    def __post_init__(self) -> None:
        for name in ("id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Problem.{name} must be a non-empty string, got {value!r}")


def normalize_answer(text: str | int | float) -> str:
    """Return the canonical string form of a final answer.

    Numbers lose thousands separators, a leading ``+``, trailing zeros after the decimal point and
    an integral ``.0``; anything that is not a plain number is only stripped of surrounding
    whitespace.

    Args:
        text: The raw answer (a string, or a number from JSON).

    Returns:
        The normalised answer.

    Example:
        >>> normalize_answer("1,234.50"), normalize_answer(12.0), normalize_answer(" 7 ")
        ('1234.5', '12', '7')
    """
    if isinstance(text, bool):
        return str(text)
    if isinstance(text, int):
        return str(text)
    if isinstance(text, float):
        text = repr(text)
    raw = str(text).strip()
    candidate = _THOUSANDS_COMMA.sub("", raw)
    if not _NUMBER.fullmatch(candidate):
        return raw
    try:
        value = Decimal(candidate)
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return raw
    if not value.is_finite():  # pragma: no cover - the regex excludes inf/nan
        return raw
    if value == value.to_integral_value():
        return str(int(value))
    formatted = format(value.normalize(), "f")
    return formatted


def split_solution(text: str) -> tuple[str | None, str]:
    """Split a GSM8K-style answer ``"steps ... #### 42"`` into its solution and final answer.

    GSM8K calculator annotations such as ``<<2*46=92>>`` are removed from the solution, blank
    lines are dropped and each remaining line is stripped. Text without ``####`` is treated as a
    bare final answer.

    Args:
        text: The answer text.

    Returns:
        ``(solution, answer)``: the solution is None when there are no steps before ``####``;
        the answer is normalised with :func:`normalize_answer`.

    Example:
        >>> split_solution("2 * 3 = <<2*3=6>>6 apples\\n#### 6")
        ('2 * 3 = 6 apples', '6')
        >>> split_solution("1,000")
        (None, '1000')
    """
    if "####" not in text:
        return None, normalize_answer(text)
    steps, _, final = text.rpartition("####")
    steps = _CALCULATOR_ANNOTATION.sub("", steps)
    lines = [line.strip() for line in steps.splitlines() if line.strip()]
    return ("\n".join(lines) or None), normalize_answer(final)
