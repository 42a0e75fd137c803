"""Process supervision: split responses into steps, score every step, map each step to its last token.

A *step* is the text between two occurrences of a delimiter (a line by default). :func:`split_steps`
decodes a response token by token and returns each step with ``end_index``, the index of the token that
completes it: the token holding the delimiter's last character, or the response's last token for the
final step. A *process reward function* scores the steps of a batch of responses, one value per step:

>>> def one_per_step(prompts, steps, answers, **problem_fields):
...     return [[1.0] * len(response_steps) for response_steps in steps]
>>> call_process_reward_fn(one_per_step, ["p"], [["3 + 4 = 7", "so 7"]], ["7"])
[[1.0, 1.0]]

The envs turn ``(end_index, reward)`` pairs into ``info["step_rewards"]`` (see
:meth:`llm_gym.envs.common.LLMEnvBase.process_rewards`). :func:`arithmetic_step_reward` is the rule
checker for arithmetic: every ``expression = value`` of a step is verified exactly.
"""

from __future__ import annotations

import ast
import functools
import re
from bisect import bisect_right
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from llm_gym.rewards.base import (
    RewardFunctionError,
    _check_timeout,
    invoke_reward_fn,
    reward_fn_name,
    validated_value,
)

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "IncrementalDecoder",
    "ProcessRewardFunction",
    "Step",
    "arithmetic_step_reward",
    "call_process_reward_fn",
    "check_arithmetic_step",
    "split_steps",
    "token_texts",
]


# ----------------------------------------------------------------------------------------- steps
class Step(NamedTuple):
    """One reasoning step of a response.

    Attributes:
        text: The step's text, stripped of surrounding whitespace, without its delimiter; never blank.
        end_index: 0-based index (in the response's tokens) of the token that completes the step.
    """

    text: str
    end_index: int


class IncrementalDecoder:
    """Decode a response one token at a time: the text each token adds, in linear time.

    Each :meth:`push` decodes only a short window of recent tokens (the incremental detokenization of
    vLLM and TGI), so the pieces concatenate to the decoded response with any tokenizer: one character
    per token (the tiny test model), byte-level BPE where one token holds several characters such as
    ``".\\n\\n"`` (SmolLM2), or SentencePiece, whose single-token decode drops leading spaces. A token
    that ends inside a multi-byte character adds ``""`` and the character is credited to the token that
    completes it. Special tokens (EOS, pad) add ``""``: they are not part of the text.

    Args:
        tokenizer: A Hugging Face tokenizer (anything with ``decode(ids, skip_special_tokens=...)``).

    Attributes:
        text: The text decoded so far (the concatenation of the pieces).
        piece: The text the last pushed token added (``""`` before the first push).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens whose text is already in self.text
        self.text = ""
        self.piece = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Append one token and return the text it adds (``""`` for special or incomplete tokens)."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.piece = new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self._ids)
        else:
            self.piece = ""
        self.text += self.piece
        return self.piece

    def ends_step(self, delimiter: str) -> bool:
        """Whether an occurrence of ``delimiter`` ends inside the last pushed token's text.

        True whenever :func:`split_steps` ends a step at that token (it may also be True when the
        occurrence overlaps an earlier one, e.g. a third ``"\\n"`` with ``delimiter="\\n\\n"``).
        """
        if not self.piece:
            return False
        start = max(0, len(self.text) - len(self.piece) - len(delimiter) + 1)
        return delimiter in self.text[start:]


def token_texts(response_ids: Sequence[int] | np.ndarray, tokenizer: Any) -> list[str]:
    """The text each token adds to the decoded response (see :class:`IncrementalDecoder`).

    Args:
        response_ids: ``(n,)`` token ids.
        tokenizer: A Hugging Face tokenizer.

    Returns:
        ``n`` strings whose concatenation is the response text (special tokens give ``""``).
    """
    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(i) for i in _as_id_list(response_ids)]


def _as_id_list(response_ids: Sequence[int] | np.ndarray) -> list[int]:
    ids = np.asarray(response_ids)
    if ids.ndim != 1:
        raise ValueError(f"response_ids must be one response, a 1-D sequence of token ids; got shape {ids.shape}.")
    return [int(i) for i in ids]


def split_steps(response_ids: Sequence[int] | np.ndarray, tokenizer: Any, delimiter: str = "\n",
                final: bool = True) -> list[Step]:
    """Split a response into steps at ``delimiter`` and map each step to the token that completes it.

    Conventions:

    - A step ends at the token holding the **last character** of its delimiter occurrence (occurrences
      are found left to right without overlap). With byte-level BPE that token may hold more text, e.g.
      ``".\\n\\n"``: the step still ends there.
    - The final step (the text after the last delimiter) ends at the **last token**, ``n - 1``: the EOS
      when the response has one (a response is finished only once its EOS is emitted), else the last
      token of a truncated response. With ``final=False`` (a response still being generated) it is
      not a step yet and is left out.
    - Blank segments (consecutive delimiters, whitespace only, special tokens only) are skipped, so every
      step has non-blank text. Step texts are stripped and exclude the delimiter and special tokens.

    Causal: the steps returned for a prefix of the tokens are the steps of the whole response that end
    within the prefix (with ``final=False``).

    Args:
        response_ids: ``(n,)`` int token ids, the response's real tokens (EOS included, no padding).
        tokenizer: The Hugging Face tokenizer that produced them.
        delimiter: Non-empty string that ends a step (``"\\n"``: one step per line).
        final: Whether the response is finished (its last segment is a step).

    Returns:
        The steps in order, with strictly increasing ``end_index`` in ``0 .. n - 1``.

    Raises:
        ValueError: ``delimiter`` empty or not a string, or ``response_ids`` not 1-D.

    Example:
        >>> # char tokenizer, ids of "3+4=7\\n\\nso 7" + EOS
        >>> split_steps(ids, tokenizer)  # doctest: +SKIP
        [Step(text='3+4=7', end_index=5), Step(text='so 7', end_index=11)]
    """
    if not isinstance(delimiter, str) or not delimiter:
        raise ValueError(f"delimiter must be a non-empty string, got {delimiter!r}.")
    pieces = token_texts(response_ids, tokenizer)
    ends = np.cumsum([len(p) for p in pieces]).tolist()  # ends[i]: end (exclusive) of token i's text
    text = "".join(pieces)
    steps: list[Step] = []
    pos = 0
    while (found := text.find(delimiter, pos)) >= 0:
        segment = text[pos:found].strip()
        if segment:
            steps.append(Step(segment, bisect_right(ends, found + len(delimiter) - 1)))
        pos = found + len(delimiter)
    tail = text[pos:].strip()
    if final and tail:
        steps.append(Step(tail, len(pieces) - 1))
    return steps


# ------------------------------------------------------------------------- process reward functions
@runtime_checkable
class ProcessRewardFunction(Protocol):
    """Protocol of a process reward function: one value per step of every response, batched (:meth:`__call__`)."""

    def __call__(
        self,
        prompts: list[str],
        steps: list[list[str]],
        answers: list[str],
        **problem_fields: Any,
    ) -> Sequence[Sequence[float | None]]:
        """Score every step of ``N`` responses.

        Args:
            prompts: The ``N`` prompts (rendered as text).
            steps: ``N`` lists of step texts (see :func:`split_steps`), one list per response.
            answers: The ``N`` gold answers.
            **problem_fields: Extra per-problem columns (lists of length ``N``), e.g. ``solutions``;
                functions must accept and ignore unknown fields.

        Returns:
            ``N`` sequences, the i-th with one value per step of response i: a finite real number, or
            ``None`` for no opinion (no reward at that step). To be *causal* (the token env pays step
            rewards while the response is generated), step k's value must depend on steps ``0..k`` only.
        """


def _sequence_items(raw: Any) -> list[Any] | None:
    """``raw`` as a list if it is a list, tuple, 1-D array or 1-D tensor, else None."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if hasattr(raw, "tolist") and hasattr(raw, "shape") and len(tuple(raw.shape)) == 1:
        return list(raw.tolist())
    return None


def _validated_steps(raw: Any, name: str, steps: list[list[str]]) -> list[list[float | None]]:
    """Check ``raw`` holds one list per response with one finite value or None per step."""
    outer = _sequence_items(raw)
    if outer is None or len(outer) != len(steps):
        got = f"{len(outer)} lists" if outer is not None else type(raw).__name__
        raise RewardFunctionError(
            f"Process reward function {name!r} returned {got}; it must return a list of {len(steps)} lists, "
            f"one per response, each with one value per step (None for 'no opinion')."
        )
    result = []
    for i, (values, response_steps) in enumerate(zip(outer, steps, strict=True)):
        inner = _sequence_items(values)
        if inner is None or len(inner) != len(response_steps):
            got = f"{len(inner)} values" if inner is not None else type(values).__name__
            raise RewardFunctionError(
                f"Process reward function {name!r} returned {got} for response {i}, which has "
                f"{len(response_steps)} steps; return one value per step (None for 'no opinion')."
            )
        result.append([validated_value(item, f"Process reward function {name!r}", f"for step {k} of response {i}")
                       for k, item in enumerate(inner)])
    return result


def call_process_reward_fn(
    fn: ProcessRewardFunction,
    prompts: Sequence[str],
    steps: Sequence[Sequence[str]],
    answers: Sequence[str],
    *,
    timeout: float | None = None,
    **problem_fields: Any,
) -> list[list[float | None]]:
    """Call a process reward function on a batch and validate what it returns.

    Args:
        fn: The process reward function (see :class:`ProcessRewardFunction`).
        prompts: ``N`` prompts.
        steps: ``N`` lists of step texts.
        answers: ``N`` gold answers.
        timeout: Seconds ``fn`` may take (finite, > 0), or ``None`` for no limit; as in
            :func:`llm_gym.rewards.call_reward_fn` (a timed-out call keeps running in a daemon thread).
        **problem_fields: Extra per-problem fields, passed through unchanged.

    Returns:
        ``N`` lists, the i-th with one ``float`` or ``None`` per step of response i (``bool`` -> 0/1).

    Raises:
        ValueError: ``prompts``, ``steps`` and ``answers`` differ in length (caller bug), or a bad
            ``timeout``.
        RewardFunctionError: ``fn`` raises, times out, returns the wrong number of lists or of values in
            a list, or a value that is not a finite real number or ``None``. The message names ``fn``.

    >>> call_process_reward_fn(lambda p, s, a, **kw: [[True, None]], ["p"], [["a", "b"]], ["7"])
    [[1.0, None]]
    """
    n = len(steps)
    if len(prompts) != n or len(answers) != n:
        raise ValueError(
            f"call_process_reward_fn: prompts, steps and answers must have the same length, got "
            f"len(prompts)={len(prompts)}, len(steps)={n}, len(answers)={len(answers)}."
        )
    timeout = _check_timeout(timeout, "call_process_reward_fn")
    name = reward_fn_name(fn)
    step_lists = [list(s) for s in steps]
    args = (list(prompts), [list(s) for s in step_lists], list(answers))
    raw = invoke_reward_fn(fn, args, problem_fields, timeout, name, kind="Process reward function", unit="steps")
    return _validated_steps(raw, name, step_lists)


# ------------------------------------------------------------------------------ arithmetic checker
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


def _clean(line: str) -> str:
    """Normalise the notation of one line: LaTeX and unicode operators, boxes, ``$``, thousands commas."""
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


def _left_operand(part: str) -> str | None:
    """The arithmetic expression ending at the end of ``part`` (left of an ``=``), or None."""
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


def _right_operand(part: str) -> str | None:
    """The arithmetic expression starting at the start of ``part`` (right of an ``=``), or None."""
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
def _evaluate(expr: str) -> Fraction | None:
    """Exact value of ``+ - * /`` and parentheses over integers and decimals, or None if not that.

    Cached: a pure function of the text, and a response often repeats its numbers and expressions.
    """
    if len(expr) > MAX_EXPRESSION_CHARS:
        return None
    if _PLAIN_NUMBER.fullmatch(expr):
        return Fraction(expr)  # the common right-hand side, without a parse
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(ast.get_source_segment(expr, node))  # "0.1" -> 1/10 exactly
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div):
                return a / b  # ZeroDivisionError: not checkable
            return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
        raise ValueError("not plain arithmetic")

    try:
        return value(tree.body)
    except (ValueError, TypeError, ZeroDivisionError):
        return None


def _equation_holds(left_part: str, right_part: str) -> bool | None:
    """Whether the ``=`` between two parts of a line holds; None when either side is not checkable."""
    left, right = _left_operand(left_part), _right_operand(right_part)
    if left is None or right is None:
        return None
    a, b = _evaluate(left), _evaluate(right)
    return None if a is None or b is None else a == b


def check_arithmetic_step(text: str) -> float | None:
    """Check every ``expression = value`` of a step exactly; see :func:`arithmetic_step_reward`.

    Returns:
        1.0 if every checkable ``=`` holds, 0.0 if one does not, None if no ``=`` is checkable.

    >>> check_arithmetic_step(r"So 3 + 4 * 2 = 3 + 8 = 11, \\boxed{11}."), check_arithmetic_step("12 / 8 = 1.4")
    (1.0, 0.0)
    """
    checked = False
    for line in text.splitlines():
        if "=" not in line:  # _clean never adds one
            continue
        parts = _clean(line).split("=")
        for i in range(len(parts) - 1):
            holds = _equation_holds(parts[i], parts[i + 1])
            if holds is False:
                return 0.0  # one wrong equation decides the step
            checked = checked or holds is True
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
