"""Load problems from a JSON Lines file (one JSON object per line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llm_gym.tasks.problem import Problem, normalize_answer, split_solution

__all__ = ["load_jsonl"]


def load_jsonl(
    path: str | os.PathLike[str],
    question_key: str = "question",
    answer_key: str = "answer",
) -> list[Problem]:
    """Load problems from a ``.jsonl`` file.

    Each non-blank line must be a JSON object with a question and an answer. The answer may be a
    number or a string; a GSM8K-style answer ``"steps ...\\n#### 42"`` is split into ``solution``
    (the steps, calculator annotations ``<<...>>`` removed) and ``answer`` (``"42"``, commas
    stripped). Optional keys: ``"id"`` (default ``"<file stem>/<line number>"``), ``"solution"``
    (used when the answer has no ``####`` part) and ``"difficulty"`` (an int).

    Args:
        path: The file to read (UTF-8).
        question_key: Key of the question text.
        answer_key: Key of the answer.

    Returns:
        The problems in file order, with ``source`` set to the file name.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: On invalid JSON, a line that is not an object, a missing or empty question or
            answer, a duplicate id (the message names the file and line number), or a file with no
            problems.

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
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            record, question, answer, solution = _parse_line(line, where, question_key, answer_key)
            problem_id = str(record.get("id", f"{path.stem}/{lineno}"))
            if problem_id in ids:
                raise ValueError(
                    f"{where}: duplicate id {problem_id!r} (first used on line {ids[problem_id]})"
                )
            ids[problem_id] = lineno
            difficulty = record.get("difficulty")
            problems.append(
                Problem(
                    id=problem_id,
                    question=question.strip(),
                    answer=answer,
                    solution=solution,
                    source=path.name,
                    difficulty=difficulty
                    if isinstance(difficulty, int) and not isinstance(difficulty, bool)
                    else None,
                )
            )
    if not problems:
        raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty or only blank lines)")
    return problems


def _parse_line(
    line: str, where: str, question_key: str, answer_key: str
) -> tuple[dict, str, str, str | None]:
    """Parse and validate one non-blank line of a ``.jsonl`` problem file.

    Args:
        line: The raw line text.
        where: ``"<path>, line <n>"`` prefix for error messages.
        question_key: Key of the question text.
        answer_key: Key of the answer.

    Returns:
        ``(record, question, answer, solution)``; ``question`` is not yet stripped.

    Raises:
        ValueError: On invalid JSON, a non-object, or a missing or empty question or answer.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in (question_key, answer_key):
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r} (keys present: {sorted(record)})")
    question, raw_answer = record[question_key], record[answer_key]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: {question_key!r} must be a non-empty string, got {question!r}")
    if isinstance(raw_answer, bool) or not isinstance(raw_answer, (str, int, float)):
        raise ValueError(f"{where}: {answer_key!r} must be a string or a number, got {raw_answer!r}")
    if isinstance(raw_answer, str):
        solution, answer = split_solution(raw_answer)
    else:
        solution, answer = None, normalize_answer(raw_answer)
    if not answer:
        raise ValueError(f"{where}: {answer_key!r} has an empty final answer: {raw_answer!r}")
    if solution is None and isinstance(record.get("solution"), str) and record["solution"].strip():
        solution = record["solution"].strip()
    return record, question, answer, solution
