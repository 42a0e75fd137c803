"""Load problems from a JSON Lines file (one JSON object per line), every number exactly as written."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Collection
from decimal import Decimal
from pathlib import Path
from typing import Any

from llm_gym.tasks.problem import Problem, align_extras, problem_from_dict

__all__ = ["load_jsonl", "loads_exact", "plain_numbers", "read_utf8"]


def loads_exact(text: str) -> Any:
    """``json.loads`` that keeps every number exactly as written.

    A number with a fraction or an exponent becomes a :class:`~decimal.Decimal` (a float would round
    ``0.1000000000000000055511151231257827`` and ``9007199254740993.0``); an integer stays an ``int``, or a
    ``Decimal`` beyond Python's 4,300-digit ``int`` parsing limit. ``NaN`` and ``Infinity`` load as floats (the
    answer checks refuse them).

    Raises:
        json.JSONDecodeError: invalid JSON.

    >>> loads_exact('{"answer": 9007199254740993.0, "difficulty": 2}')
    {'answer': Decimal('9007199254740993.0'), 'difficulty': 2}
    """
    return json.loads(text, parse_float=Decimal, parse_int=_exact_int)


def plain_numbers(record: dict[str, Any], exact: Collection[str]) -> dict[str, Any]:
    """``record`` (parsed by :func:`loads_exact`) with the numbers of every key but ``exact`` as ``json.loads`` reads them.

    The answer (and id) keys stay exact; the other columns reach reward functions as plain JSON values: a number
    with a fraction or an exponent is a ``float`` (nested in lists and objects too), as ``json.loads`` and
    ``datasets`` give it, so ``weight * reward`` works in a reward function.

    >>> plain_numbers(loads_exact('{"answer": 0.5, "weight": 0.5, "cases": [1.5, 2]}'), ["answer"])
    {'answer': Decimal('0.5'), 'weight': 0.5, 'cases': [1.5, 2]}
    """
    return {key: value if key in exact else _as_float(value) for key, value in record.items()}


def _as_float(value: Any) -> Any:
    """``value`` with every ``Decimal`` (in lists and dicts too) made a ``float``."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_as_float(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_float(v) for k, v in value.items()}
    return value


def _exact_int(text: str) -> int | Decimal:
    """An integer literal as an ``int``, or a ``Decimal`` when it has more digits than ``int()`` may parse."""
    limit = sys.get_int_max_str_digits()
    return Decimal(text) if limit and len(text.lstrip("-")) > limit else int(text)


def load_jsonl(
    path: str | os.PathLike[str],
    question_key: str = "question",
    answer_key: str = "answer",
    id_key: str | None = None,
    *,
    arg_names: tuple[str, str, str] = ("question_key", "answer_key", "id_key"),
) -> list[Problem]:
    """Load problems from a ``.jsonl`` file.

    Each non-blank line must be a JSON object with a question and an answer. The answer may be a
    number or a string, and is read exactly as written (:func:`loads_exact`: no float rounding); a GSM8K-style answer ``"steps ...\\n#### 42"`` is split into ``solution``
    (the steps, calculator annotations ``<<...>>`` removed) and ``answer`` (``"42"``, commas
    stripped). Optional keys: ``"id"`` (default ``"<file stem>/<line number>"``), ``"solution"``
    (used when the answer has no ``####`` part) and ``"difficulty"`` (an int). Every key but the question and
    the id is kept in the problem's ``extra`` (:func:`~llm_gym.tasks.problem_from_dict`; numbers outside the
    answer as ``json.loads`` reads them, :func:`plain_numbers`), so reward functions receive it.

    Args:
        path: The file to read (UTF-8; a byte order mark is allowed).
        question_key: Key of the question text.
        answer_key: Key of the answer.
        id_key: Key of the problem id, then required on every line. None: the optional ``"id"`` key.
        arg_names: The caller's argument names for the three keys, named in the missing-key message
            (the envs pass ``("question_column", "answer_column", "id_column")``).

    Returns:
        The problems in file order, with ``source`` set to the file name.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On bytes that are not UTF-8, invalid JSON, a line that is not an object, a missing key
            (the message lists the line's keys and names the argument to set), an empty question or answer,
            a NaN or infinite answer, a duplicate id (the message names the file and line number), or a file
            with no problems.

    Example:
        >>> import json, tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        ...     _ = f.write(json.dumps({"question": "1 + 1?", "answer": "so 2\\n#### 2"}) + "\\n")
        >>> p = load_jsonl(f.name)[0]
        >>> p.answer, p.solution
        ('2', 'so 2')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {str(path)!r} does not exist")
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for lineno, line in enumerate(io.StringIO(read_utf8(path), newline=None), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        record = plain_numbers(_parse_line(line, where), (answer_key, "id" if id_key is None else id_key))
        problem = problem_from_dict(record, default_id=f"{path.stem}/{lineno}", source=path.name,
                                    question_key=question_key, answer_key=answer_key, id_key=id_key, where=where,
                                    arg_names=arg_names)
        if problem.id in ids:
            raise ValueError(f"{where}: duplicate id {problem.id!r} (first used on line {ids[problem.id]})")
        ids[problem.id] = lineno
        problems.append(problem)
    if not problems:
        raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty or only blank lines)")
    return align_extras(problems)


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte order mark is dropped).

    Raises:
        ValueError: The file is not valid UTF-8; the message names the file, the line, the column and the
            offending byte, and says how to fix it.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        lineno = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise ValueError(
            f"{path}, line {lineno}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}: "
            f"{exc.reason}). Save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}` if it is Latin-1."
        ) from None


def _parse_line(line: str, where: str) -> dict:
    """Parse one non-blank line of a ``.jsonl`` problem file into a dict.

    Args:
        line: The raw line text.
        where: ``"<path>, line <n>"`` prefix for error messages.

    Returns:
        The JSON object.

    Raises:
        ValueError: On invalid JSON or a value that is not an object.
    """
    try:
        record = loads_exact(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record
