"""Math-answer correctness reward, backed by ``math-verify``.

The response's final answer is located with :func:`extract_answer` (last ``\\boxed{...}``, else the
number after "The answer is"/"answer:", else the last number) and compared to the gold answer with
``math_verify.verify``. Only the extracted answer is handed to math-verify, so a response that mentions
many numbers is judged by its final answer alone, and huge responses stay cheap to score.

Thread safety: math-verify implements its timeouts with ``signal.alarm``, which only works in the
main thread, so outside the main thread timeouts are disabled (``parsing_timeout=None``,
``timeout_seconds=None``). Candidate answers are capped at :data:`MAX_ANSWER_CHARS` to bound the cost.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from llm_gym.rewards.format import boxed_contents

__all__ = ["MAX_ANSWER_CHARS", "clear_parse_cache", "extract_answer", "is_stated_value", "math_answer_reward"]

#: Extracted answers longer than this are scored 0.0 without calling math-verify (no timeout in threads).
MAX_ANSWER_CHARS = 1000

# A number: optional sign (not after a word char / closing bracket, so "x-3" gives "3"), digits with
# optional thousands separators, optional decimals, optional "/denominator". A radix literal ("0x10", "0b1",
# "0o7") is matched whole first, so it is the answer as written (math-verify does not read it as 0 or 10).
_NUMBER = (
    r"(?:(?<![\w)\]}])-)?0[xXbBoO][0-9a-fA-F]\w*|"
    r"(?:(?<![\w)\]}])-)?"
    r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
    r"(?:\s*/\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)?"
    r"|(?:(?<![\w)\]}])-)?\.\d+"
)
_NUMBER_RE = re.compile(_NUMBER)
# One whitespace run before each optional token, never two adjacent runs ("\s*:?\s*(?:\*\*)?\s*" lets the
# engine try every split of a run between three \s*, cubic: "answer is" + 400 spaces took seconds).
_ANSWER_PHRASE_RE = re.compile(
    r"(?:\banswer\s+is|\banswer\s*:)\s*(?::\s*)?(?:(?:\*\*|__)\s*)?"
    r"(?:\$(?P<dollar>[^$]{1,200})\$|\\\((?P<paren>.{1,200}?)\\\)|(?:\\?\$)?(?P<num>" + _NUMBER + r"))",
    re.IGNORECASE,
)


class _DropDisabledTimeoutWarning(logging.Filter):
    """Drop math-verify's one-off "Timeout is disabled" warning: disabling it in threads is deliberate."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropDisabledTimeoutWarning())


def _clean_number(text: str) -> str:
    return re.sub(r"\s+", "", text).replace(",", "")


def extract_answer(response: str) -> str | None:
    """Extract the final answer text from a model response.

    Resolution order:

    1. The content of the **last** complete ``\\boxed{...}`` (nested braces handled).
    2. The answer after the last "The answer is" / "answer:" phrase (case-insensitive): a ``$...$`` or
       ``\\(...\\)`` math span, or a number (thousands commas removed).
    3. The last number in the text (``-3``, ``3.5``, ``1,000`` -> ``"1000"``, ``1/2``).

    Args:
        response: The model's response text.

    Returns:
        The answer text, stripped, or ``None`` if nothing was found (or ``response`` is not a string).

    >>> extract_answer(r"3 + 4 = 7, so \\boxed{7}. Check: 7 * 2 = 14")
    '7'
    >>> extract_answer("The answer is 1,000 apples.")
    '1000'
    >>> extract_answer("no numbers here") is None
    True
    """
    if not isinstance(response, str) or not response:
        return None
    boxes = boxed_contents(response)
    if boxes:
        return boxes[-1].strip()
    phrases = list(_ANSWER_PHRASE_RE.finditer(response))
    if phrases:
        last = phrases[-1]
        if last.group("num") is not None:
            return _clean_number(last.group("num"))
        span = last.group("dollar") if last.group("dollar") is not None else last.group("paren")
        if span and span.strip():
            return span.strip()
    numbers = _NUMBER_RE.findall(response)
    if numbers:
        return _clean_number(numbers[-1])
    return None


def _parse_kwargs() -> dict[str, Any]:
    """Keyword arguments disabling math-verify's signal-based timeouts outside the main thread."""
    if threading.current_thread() is threading.main_thread():
        return {}
    return {"parsing_timeout": None}


def _verify_kwargs() -> dict[str, Any]:
    if threading.current_thread() is threading.main_thread():
        return {}
    return {"timeout_seconds": None}


@functools.lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    """Parse a gold answer robustly; the result does not depend on the thread, so it is cached."""
    gold = gold.strip()
    if not gold:
        return ()
    kw = _parse_kwargs()
    if "\\boxed" in gold or "$" in gold or "\\(" in gold or "\\[" in gold:
        attempts = [gold, f"\\boxed{{{gold}}}"]
    else:
        # Bare strings like "42", "1/2", "\frac{1}{2}": boxing makes math-verify read the whole string.
        attempts = [f"\\boxed{{{gold}}}", f"${gold}$"]
    for text in attempts:
        try:
            parsed = parse(text, extraction_config=[LatexExtractionConfig()], **kw)
        except Exception:  # noqa: BLE001 - math-verify on odd input must never crash training
            parsed = []
        if parsed:
            return tuple(parsed)
    try:
        parsed = parse(gold, extraction_config=[ExprExtractionConfig()], **kw)
    except Exception:  # noqa: BLE001
        parsed = []
    return tuple(parsed)


@functools.lru_cache(maxsize=8192)
def _parse_candidate(candidate: str) -> tuple[Any, ...]:
    """Parse an extracted answer (boxed, so math-verify reads the whole string as one answer)."""
    kw = _parse_kwargs()
    try:
        parsed = parse(f"\\boxed{{{candidate}}}", extraction_config=[LatexExtractionConfig()], **kw)
        if not parsed:
            parsed = parse(candidate, extraction_config=[ExprExtractionConfig()], **kw)
    except Exception:  # noqa: BLE001
        return ()
    return tuple(parsed)


def clear_parse_cache() -> None:
    """Forget the parsed candidate answers (math-verify's parse of each extracted answer is cached).

    For timing: a benchmark that scores the same responses twice clears it between runs, as a new rollout's
    responses would be new text.
    """
    _parse_candidate.cache_clear()


_NUMERIC_GOLD_RE = re.compile(r"^-?\d+(\.\d+)?(/\d+)?$")
_VALUE_RE = re.compile(r"^-?\d[\d,]*(\.\d+)?(/\d+)?%?[a-zA-Z]*\.?$|^-?\\d?frac\{\d+\}\{\d+\}$")


def is_stated_value(candidate: str) -> bool:
    """True when an extracted answer states a value (``12``, ``-3.5``, ``1/2``, ``\frac{1}{2}``, ``12 apples``,
    ``8 + 4 = 12``), False for an unevaluated expression (``8 + 4``).

    Without this check math-verify evaluates ``\boxed{8 + 4}`` to 12 and calls it correct, and a policy
    trained on that reward learns to copy the question into the box (seen in our first GRPO run on
    LLMMath-v0: held-out "accuracy" 1.0 with every answer of that form).
    """
    text = candidate.split("=")[-1]
    text = re.sub(r"\\text\{[^}]*\}|\\[,!;]|\$|\s", "", text)
    return bool(_VALUE_RE.match(text))


def _score(response: Any, gold: Any) -> float:
    candidate = extract_answer(response) if isinstance(response, str) else None
    if candidate is None or not candidate or len(candidate) > MAX_ANSWER_CHARS:
        return 0.0
    gold_text = "" if gold is None else str(gold)
    if _NUMERIC_GOLD_RE.match(gold_text.strip()) and not is_stated_value(candidate):
        return 0.0  # a numeric answer must be stated as a value, not as the unevaluated question
    gold_parsed = _parse_gold(gold_text)
    if not gold_parsed:
        # Gold is not math (e.g. a name): fall back to exact, whitespace-insensitive comparison.
        return float(bool(gold_text.strip()) and candidate.split() == gold_text.split())
    pred_parsed = _parse_candidate(candidate)
    if not pred_parsed:
        return 0.0
    try:
        return 1.0 if verify(list(gold_parsed), list(pred_parsed), **_verify_kwargs()) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def math_answer_reward(
    prompts: list[str], responses: list[str], answers: list[str], **kwargs: Any
) -> list[float]:
    """Reward ``1.0`` if the response's final answer equals the gold answer mathematically, else ``0.0``.

    The final answer is found with :func:`extract_answer` and compared with ``math_verify.verify``
    (so ``42`` == ``42.0``, ``1/2`` == ``0.5`` == ``\\frac{1}{2}``, ``1,000`` == ``1000``). When the gold
    answer is a number, the response's answer must state a value (:func:`is_stated_value`): an
    unevaluated expression such as ``\\boxed{8 + 4}`` scores ``0.0`` even though it equals 12. Never
    raises on odd text: anything unparseable scores ``0.0``. Safe to call from any thread.

    Args:
        prompts: ``N`` prompts (unused).
        responses: ``N`` responses.
        answers: ``N`` gold answers, plain strings such as ``"42"``, ``"-3"``, ``"1/2"``, ``"3.5"``
            (LaTeX like ``"\\frac{1}{2}"`` or ``"$x^2$"`` also works).
        **kwargs: Extra problem fields (ignored).

    Returns:
        ``N`` floats in ``{0.0, 1.0}``.

    Raises:
        ValueError: If ``responses`` and ``answers`` have different lengths.

    >>> math_answer_reward(["", "", ""], [r"\\boxed{42.0}", "The answer is 0.5.", "It is 7"], ["42", "1/2", "8"])
    [1.0, 1.0, 0.0]
    """
    if len(responses) != len(answers):
        raise ValueError(
            f"math_answer_reward: responses and answers must have the same length, got "
            f"{len(responses)} and {len(answers)}."
        )
    return [_score(response, gold) for response, gold in zip(responses, answers, strict=True)]
