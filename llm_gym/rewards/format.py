"""Format rewards: score the *shape* of a response, not its correctness."""

from __future__ import annotations

import re
from typing import Any

from llm_gym.rewards.base import RewardFunction

__all__ = ["boxed_contents", "boxed_format_reward", "regex_format_reward"]

_BOXED_START = re.compile(r"\\boxed\s*\{")


def boxed_contents(text: str) -> list[str]:
    """Return the contents of every complete ``\\boxed{...}`` in ``text``, in order.

    Braces are matched, so nested groups such as ``\\boxed{\\frac{1}{2}}`` are returned whole.
    An unterminated ``\\boxed{`` (e.g. a truncated response) is skipped.

    Args:
        text: Any string.

    Returns:
        The list of box contents (possibly empty).

    >>> boxed_contents(r"first \\boxed{1}, then \\boxed{\\frac{1}{2}} and \\boxed{oops")
    ['1', '\\\\frac{1}{2}']
    """
    found: list[str] = []
    pos = 0
    while True:
        match = _BOXED_START.search(text, pos)
        if match is None:
            return found
        start = match.end()
        depth = 1
        i = start
        while i < len(text) and depth:
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2  # escaped brace \{ or \} does not count
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            i += 1
        if depth:
            # Unbalanced: skip this opener and keep looking for later complete boxes.
            pos = start
            continue
        found.append(text[start : i - 1])
        pos = i


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


def regex_format_reward(pattern: str, flags: int = 0) -> RewardFunction:
    """Build a reward that gives ``1.0`` when ``re.search(pattern, response, flags)`` matches, else ``0.0``.

    Args:
        pattern: A regular expression.
        flags: ``re`` flags, e.g. ``re.DOTALL``.

    Returns:
        A reward function whose ``__name__`` is ``"regex_format_reward(<pattern repr>)"``.

    Raises:
        re.error: If ``pattern`` does not compile.

    >>> fn = regex_format_reward(r"^<think>.*</think>", re.DOTALL)
    >>> fn.__name__
    "regex_format_reward('^<think>.*</think>')"
    >>> fn(["", ""], ["<think>hm</think> 4", "4"], ["", ""])
    [1.0, 0.0]
    """
    compiled = re.compile(pattern, flags)

    def reward(prompts: list[str], responses: list[str], answers: list[str], **kwargs: Any) -> list[float]:
        return [1.0 if isinstance(r, str) and compiled.search(r) else 0.0 for r in responses]

    name = f"regex_format_reward({pattern!r})"
    reward.__name__ = name
    reward.__qualname__ = name
    reward.__doc__ = f"1.0 if the response matches {pattern!r} (re.search, flags={flags!r}), else 0.0."
    return reward
