"""The :class:`Problem` record shared by every task, and helpers to normalise answers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Problem", "align_extras", "as_problems", "normalize_answer", "problem_from_dict", "split_solution"]

_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
#: Largest exponent (in digits) a number written in exponent notation is expanded to; beyond it the answer is kept
#: as written (expanding "1e999999999" would build a billion-digit string).
MAX_EXPANDED_DIGITS = 4300
# What float("nan") / float("inf") print as (and what JSON's NaN / Infinity load as): never a gold answer.
_NON_FINITE = re.compile(r"[-+]?(?:nan|inf|infinity)", re.IGNORECASE)


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
        extra: The problem's other fields, ``name -> value`` (a copy of the mapping given): every column of its
            record but the question and the id, as read (see :func:`problem_from_dict`), e.g. ``metadata``,
            ``test_cases``. Reward functions receive each as a keyword argument
            (:func:`~llm_gym.envs.problems.problem_fields`). Compared by ``==``, left out of ``hash``
            (values may be unhashable); treat it as read-only.

    Raises:
        ValueError: If ``id``, ``question`` or ``answer`` is empty or not a string, or ``answer`` is NaN or
            an infinity (``"nan"``, ``"inf"``, ``"-Infinity"``...).
        TypeError: If ``extra`` is not a mapping with string keys.

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
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.extra, Mapping) or not all(isinstance(key, str) for key in self.extra):
            raise TypeError(f"Problem.extra must be a mapping with string keys (field name -> value), got "
                            f"{self.extra!r:.120}")
        object.__setattr__(self, "extra", dict(self.extra))
        for name in ("id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Problem.{name} must be a non-empty string, got {value!r}")
        if _NON_FINITE.fullmatch(self.answer.strip()):
            raise ValueError(
                f"Problem {self.id!r}: answer {self.answer!r} is NaN or infinite, which is not a gold answer (NaN "
                f"equals nothing, so no response could be scored correct). Fix the data; if the answer really is "
                f"infinity, write it in LaTeX as '\\infty'."
            )


def normalize_answer(text: str | int | float | Decimal) -> str:
    """Return the canonical string form of a final answer, exactly (no digit is ever rounded).

    Numbers lose thousands separators, a leading ``+``, trailing zeros after the decimal point and
    an integral ``.0``; anything that is not a plain number is only stripped of surrounding
    whitespace. Every digit written is kept (decimal arithmetic, not floats: ``"9007199254740993"`` and
    a 40-digit decimal stay as they are). A number in exponent notation whose plain form would have more
    than :data:`MAX_EXPANDED_DIGITS` digits (``"1e999999999"``) is kept as written instead of expanded.

    Args:
        text: The raw answer (a string, or a number from JSON: ``int``, ``float`` or ``Decimal``).

    Returns:
        The normalised answer.

    Raises:
        ValueError: ``text`` is a float or Decimal NaN or infinity (no gold answer can be that).

    Example:
        >>> normalize_answer("1,234.50"), normalize_answer(12.0), normalize_answer(" 7 ")
        ('1234.5', '12', '7')
        >>> normalize_answer(Decimal("0.10000000000000000555111512312578270211815834045"))
        '0.10000000000000000555111512312578270211815834045'
    """
    if isinstance(text, bool):
        return str(text)
    if isinstance(text, int):
        return _plain_decimal(Decimal(text))  # Decimal: no 4,300-digit limit of str(int)
    if isinstance(text, (float, Decimal)):
        if not _finite(text):
            raise ValueError(f"answer {text!r} is not a finite number: a gold answer must be a finite value.")
        text = repr(text) if isinstance(text, float) else str(text)
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
    if abs(value.adjusted()) > MAX_EXPANDED_DIGITS and "e" in candidate.lower():
        return raw  # "1e999999999": expanding it would take gigabytes
    return _plain_decimal(value)


def _finite(number: float | Decimal) -> bool:
    """Whether a float or Decimal is finite (``math.isfinite`` would turn ``Decimal("1e400")`` into inf)."""
    return number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)


def _plain_decimal(value: Decimal) -> str:
    """``value`` in plain notation with every digit kept: no exponent, no trailing fractional zeros, no ``-0``.

    ``format(value, "f")`` is exact (``Decimal.normalize`` would round to the context's 28 digits).

    >>> _plain_decimal(Decimal("1.2E+3")), _plain_decimal(Decimal("-0.500")), _plain_decimal(Decimal("-0.0"))
    ('1200', '-0.5', '0')
    """
    if value.is_zero():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


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


def problem_from_dict(
    record: Mapping[str, Any],
    *,
    default_id: str,
    source: str = "",
    question_key: str = "question",
    answer_key: str = "answer",
    id_key: str | None = None,
    where: str = "",
    arg_names: tuple[str, str, str] = ("question_key", "answer_key", "id_key"),
) -> Problem:
    """Build a :class:`Problem` from a mapping such as one line of a ``.jsonl`` file.

    The answer may be a number or a string; a GSM8K-style answer ``"steps ...\\n#### 42"`` is split into
    ``solution`` and ``answer`` (:func:`split_solution`), other answers are normalised with
    :func:`normalize_answer`. Optional keys: ``"solution"`` (used when the answer has no ``####`` part) and
    ``"difficulty"`` (kept when it is an int).

    Every key but the question and the id is also kept in ``extra`` with its value as given (``difficulty`` and
    ``solution`` too, so a reward function reads them as written), and reaches reward functions as a keyword
    argument, as TRL passes dataset columns. The answer key is replaced there by the canonical answer (the
    value reward functions get as ``answers``) when it is not ``"answer"``: with ``answer_key="ground_truth"``,
    ``extra["ground_truth"] == problem.answer``.

    Args:
        record: The mapping.
        default_id: The id when the record has no id (or its id is None).
        source: The problem's ``source``.
        question_key: Key of the question text.
        answer_key: Key of the answer.
        id_key: Key of the problem id, which must then be present. None: the optional ``"id"`` key.
        where: Prefix of error messages that locates the record (``"data.jsonl, line 3"``).
        arg_names: The names of the caller's arguments that set the three keys, used in the missing-key
            message (``("question_column", "answer_column", "id_column")`` for the envs).

    Returns:
        The problem (question stripped).

    Raises:
        ValueError: A missing key (the message lists the keys present and names the argument to set), an empty
            or non-string question, an answer that is not a string or a finite number (``NaN`` and
            ``Infinity`` are refused), or an empty final answer. The message starts with ``where``.
        TypeError: A key that is not a string (the message starts with ``where``).

    >>> problem_from_dict({"question": "1 + 1?", "answer": 2}, default_id="mine/0").answer
    '2'
    >>> problem_from_dict({"q": "1 + 1?", "a": "2", "uid": 7}, default_id="x", question_key="q", answer_key="a",
    ...                   id_key="uid").id
    '7'
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(record, Mapping):
        raise ValueError(f"{prefix}expected a JSON object / dict, got {type(record).__name__}")
    required = [(question_key, arg_names[0], "questions"), (answer_key, arg_names[1], "answers")]
    if id_key is not None:
        required.append((id_key, arg_names[2], "problem ids"))
    for key, arg, what in required:
        if key not in record:
            raise ValueError(f"{prefix}missing key {key!r} (keys present: {sorted(map(str, record))}): set "
                             f"{arg}='<key>' to the key that holds the {what}.")
    question, raw_answer = record[question_key], record[answer_key]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{prefix}{question_key!r} must be a non-empty string, got {question!r}")
    solution, answer = _answer_parts(raw_answer, answer_key, prefix)
    if solution is None and isinstance(record.get("solution"), str) and record["solution"].strip():
        solution = record["solution"].strip()
    difficulty = record.get("difficulty")
    raw_id = record.get("id" if id_key is None else id_key)
    try:
        return Problem(
            id=default_id if raw_id is None else str(raw_id),
            question=question.strip(),
            answer=answer,
            solution=solution,
            source=source,
            difficulty=difficulty if isinstance(difficulty, int) and not isinstance(difficulty, bool) else None,
            extra=_extra_fields(record, question_key, answer_key, "id" if id_key is None else id_key, answer),
        )
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{prefix}{exc}") from None


def _extra_fields(record: Mapping[str, Any], question_key: str, answer_key: str, id_key: str, answer: str
                  ) -> dict[str, Any]:
    """A record's :attr:`Problem.extra`: every key but the question and the id, the answer key canonical.

    Raises:
        TypeError: a key that is not a string (it could not be a keyword argument).
    """
    bad = [key for key in record if not isinstance(key, str)]
    if bad:
        raise TypeError(f"key {bad[0]!r} is not a string: every column name must be a string (reward functions "
                        f"receive the columns as keyword arguments).")
    extra = {key: value for key, value in record.items() if key not in (question_key, id_key, answer_key)}
    if answer_key != "answer":
        extra[answer_key] = answer
    return extra


def align_extras(problems: list[Problem]) -> list[Problem]:
    """The problems with the same ``extra`` keys: a key some lack is added to those with the value None.

    So every batch of an env's problems passes the same keyword arguments to reward functions, as the columns of
    a table do (``datasets.Dataset.from_list`` fills missing keys with None the same way). Keys keep the order of
    their first appearance.

    >>> a, b = Problem("a", "q?", "1", extra={"x": 1}), Problem("b", "q?", "2", extra={"y": 2})
    >>> [p.extra for p in align_extras([a, b])]
    [{'x': 1, 'y': None}, {'x': None, 'y': 2}]
    """
    keys = list(dict.fromkeys(key for p in problems for key in p.extra))
    if all(len(p.extra) == len(keys) for p in problems):  # each holds a subset of keys: same length, same keys
        return problems
    return [p if len(p.extra) == len(keys) else replace(p, extra={key: p.extra.get(key) for key in keys})
            for p in problems]


def _answer_parts(raw_answer: Any, answer_key: str, prefix: str) -> tuple[str | None, str]:
    """``(solution, answer)`` of a record's raw answer (a string or a finite number, kept exactly).

    Raises:
        ValueError: the answer is not a string or a finite number, its final answer is empty, or NaN/infinite.
    """
    if isinstance(raw_answer, bool) or not isinstance(raw_answer, (str, int, float, Decimal)):
        raise ValueError(f"{prefix}{answer_key!r} must be a string or a number, got {raw_answer!r}")
    if isinstance(raw_answer, (float, Decimal)) and not _finite(raw_answer):
        raise ValueError(f"{prefix}{answer_key!r} is {raw_answer!r}, which is not a gold answer (NaN equals "
                         f"nothing, so no response could be scored correct). Fix the answer in the data.")
    if isinstance(raw_answer, str):
        solution, answer = split_solution(raw_answer)
    else:
        solution, answer = None, normalize_answer(raw_answer)
    if not answer:
        raise ValueError(f"{prefix}{answer_key!r} has an empty final answer: {raw_answer!r}")
    if _NON_FINITE.fullmatch(answer):
        raise ValueError(f"{prefix}{answer_key!r} is {raw_answer!r}, NaN or infinite, which is not a gold answer "
                         f"(NaN equals nothing, so no response could be scored correct). Fix the answer in the "
                         f"data; if it really is infinity, write it in LaTeX as '\\infty'.")
    return solution, answer


def as_problems(
    dataset: Iterable[Problem | Mapping[str, Any]],
    name: str = "dataset",
    *,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
    id_prefix: str | None = None,
    source: str | None = None,
) -> list[Problem]:
    """Check a user's problem list: convert dicts to :class:`Problem` and refuse duplicate ids.

    Args:
        dataset: :class:`Problem` objects and/or dicts with a question and an answer (optional ``"solution"``
            and ``"difficulty"``; every other key is kept in ``extra``; see :func:`problem_from_dict`), e.g. the
            rows of a Hugging Face ``datasets.Dataset`` (:func:`~llm_gym.tasks.sources.hf_problems` checks its
            columns first).
        name: What to call the list in error messages (``dataset[3]``).
        question_column: Key of the question text in every dict.
        answer_column: Key of the answer (a string or a number) in every dict.
        id_column: Key of the problem id, required in every dict. None: the optional ``"id"`` key; a dict
            without one gets ``"<id_prefix>/<index>"`` (0-based index).
        id_prefix: Prefix of default ids; None = ``name``.
        source: The converted problems' ``source``; None = ``name``.

    Returns:
        The problems, in order, with the same ``extra`` keys (:func:`align_extras`).

    Raises:
        TypeError: ``dataset`` is a string, a single Problem or dict, not iterable, or holds an item that is
            neither a Problem nor a dict (the message says what to pass), or a dict with a non-string key.
        ValueError: A dict that is not a valid problem, e.g. without the question or answer key (the message
            names its index, the keys it has and the argument to set), or two problems with the same id (the
            message names the id and both indices).

    >>> [p.id for p in as_problems([{"question": "1 + 1?", "answer": "2"}, Problem("b", "2 + 2?", "4")])]
    ['dataset/0', 'b']
    >>> [p.answer for p in as_problems([{"prompt": "1 + 1?", "target": 2}], question_column="prompt",
    ...                                answer_column="target")]
    ['2']
    """
    what = ("pass a list of llm_gym.tasks.Problem, a list of dicts with 'question' and 'answer' keys (or name "
            "yours with question_column= / answer_column=), a Hugging Face datasets.Dataset, or the path of a "
            ".jsonl, .json, .parquet or .csv file")
    if isinstance(dataset, (str, bytes, Problem, Mapping)) or not isinstance(dataset, Iterable):
        raise TypeError(f"{name} must be a list of problems, got {type(dataset).__name__}: {what}.")
    id_prefix = name if id_prefix is None else id_prefix
    source = name if source is None else source
    keys = {"question_key": question_column, "answer_key": answer_column, "id_key": id_column,
            "arg_names": ("question_column", "answer_column", "id_column")}
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(dataset):
        if isinstance(item, Mapping):
            item = problem_from_dict(item, default_id=f"{id_prefix}/{i}", source=source, where=f"{name}[{i}]",
                                     **keys)
        elif not isinstance(item, Problem):
            raise TypeError(f"{name}[{i}] is a {type(item).__name__}, not a Problem or a dict: {what}.")
        if item.id in first_index:
            raise ValueError(f"{name}[{i}] has the id {item.id!r} of {name}[{first_index[item.id]}]: problem ids must "
                             f"be unique (they name problems in logs, info['problem'] and reward functions). Give "
                             f"every problem its own id.")
        first_index[item.id] = i
        problems.append(item)
    return align_extras(problems)
