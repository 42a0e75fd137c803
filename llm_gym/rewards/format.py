"""Format rewards: score the *shape* of a response, not its correctness."""

from __future__ import annotations

import re
from typing import Any

from llm_gym.rewards.base import RewardFunction

__all__ = ["RegexFormatReward", "boxed_contents", "boxed_format_reward", "regex_format_reward"]

_BOXED_START = re.compile(r"\\boxed\s*\{")
_BRACE = re.compile(r"\\[{}]|[{}]")  # an escaped brace (one token, ignored) or a brace


def boxed_contents(text: str) -> list[str]:
    """Return the contents of every complete ``\\boxed{...}`` in ``text``, in order.

    Braces are matched, so nested groups such as ``\\boxed{\\frac{1}{2}}`` are returned whole; an escaped
    brace (``\\{`` or ``\\}``) does not count. An unterminated ``\\boxed{`` (e.g. a truncated response) is
    skipped, and boxes inside it are still found. A box nested inside a complete box is part of the outer
    box's contents, not returned on its own.

    Runs in time linear in ``len(text)``: one pass matches every brace with a stack, then each
    ``\\boxed{`` looks its closing brace up. (Scanning forward from every opener is quadratic on hostile
    text such as ``"\\boxed{" * 20000``.)

    Args:
        text: Any string.

    Returns:
        The list of box contents (possibly empty).

    >>> boxed_contents(r"first \\boxed{1}, then \\boxed{\\frac{1}{2}} and \\boxed{oops")
    ['1', '\\\\frac{1}{2}']
    """
    if "\\boxed" not in text:
        return []
    closing = _matching_braces(text)
    found: list[str] = []
    pos = 0  # end of the last complete box: openers inside it belong to it
    for match in _BOXED_START.finditer(text):
        if match.start() < pos:
            continue
        end = closing.get(match.end() - 1)
        if end is not None:  # else unbalanced: skip this opener, later (inner) boxes may be complete
            found.append(text[match.end() : end])
            pos = end + 1
    return found


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every matched ``{`` of ``text`` to the index of its ``}``, in one linear pass.

    Escaped braces ``\\{`` and ``\\}`` are skipped; an unmatched ``}`` is ignored and an unmatched ``{``
    has no entry.
    """
    closing: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE.finditer(text):
        brace = match.group()
        if brace == "{":
            stack.append(match.start())
        elif brace == "}" and stack:
            closing[stack.pop()] = match.start()
    return closing


def boxed_format_reward(
    prompts: list[str], responses: list[str], answers: list[str], **kwargs: Any
) -> list[float]:
    """Reward ``1.0`` for responses containing a complete ``\\boxed{...}`` (balanced braces), else ``0.0``.

    Args:
        prompts: ``N`` prompts (unused).
        responses: ``N`` responses.
        answers: ``N`` gold answers (unused).
        **kwargs: Extra problem fields (ignored).

    Returns:
        ``N`` floats in ``{0.0, 1.0}``. Non-string responses score ``0.0``.

    >>> boxed_format_reward(["", "", ""], [r"so \\boxed{42}", r"\\boxed{4", "42"], ["", "", ""])
    [1.0, 0.0, 0.0]
    """
    return [1.0 if isinstance(r, str) and boxed_contents(r) else 0.0 for r in responses]


class RegexFormatReward:
    """Reward ``1.0`` when ``re.search(pattern, response, flags)`` matches, else ``0.0`` (:func:`regex_format_reward`).

    A module-level class, so it pickles (the compiled pattern is sent as pattern and flags): a call with
    ``timeout=`` runs in a worker process that is killed when a pathological pattern backtracks too long.

    Args:
        pattern: A regular expression.
        flags: ``re`` flags, e.g. ``re.DOTALL``.

    Raises:
        re.error: If ``pattern`` does not compile.
    """

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.compiled = re.compile(pattern, flags)
        self.__name__ = self.__qualname__ = f"regex_format_reward({pattern!r})"
        self.__doc__ = f"1.0 if the response matches {pattern!r} (re.search, flags={flags!r}), else 0.0."

    def __call__(self, prompts: list[str], responses: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        """``N`` floats in ``{0.0, 1.0}``; non-string responses score ``0.0``."""
        return [1.0 if isinstance(r, str) and self.compiled.search(r) else 0.0 for r in responses]

    def __repr__(self) -> str:
        return self.__name__


def regex_format_reward(pattern: str, flags: int = 0) -> RewardFunction:
    """Build a reward that gives ``1.0`` when ``re.search(pattern, response, flags)`` matches, else ``0.0``.

    Args:
        pattern: A regular expression.
        flags: ``re`` flags, e.g. ``re.DOTALL``.

    Returns:
        A :class:`RegexFormatReward` (picklable) whose ``__name__`` is ``"regex_format_reward(<pattern repr>)"``.

    Raises:
        re.error: If ``pattern`` does not compile.

    >>> fn = regex_format_reward(r"^<think>.*</think>", re.DOTALL)
    >>> fn.__name__
    "regex_format_reward('^<think>.*</think>')"
    >>> fn(["", ""], ["<think>hm</think> 4", "4"], ["", ""])
    [1.0, 0.0]
    """
    return RegexFormatReward(pattern, flags)
