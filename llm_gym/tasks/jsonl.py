"""Load problems from a JSON Lines file (one JSON object per line)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from llm_gym.tasks.problem import Problem, problem_from_dict

__all__ = ["load_jsonl"]


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
    number or a string; a GSM8K-style answer ``"steps ...\\n#### 42"`` is split into ``solution``
    (the steps, calculator annotations ``<<...>>`` removed) and ``answer`` (``"42"``, commas
    stripped). Optional keys: ``"id"`` (default ``"<file stem>/<line number>"``), ``"solution"``
    (used when the answer has no ``####`` part) and ``"difficulty"`` (an int).

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
    for lineno, line in enumerate(io.StringIO(_read_utf8(path), newline=None), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        record = _parse_line(line, where)
        problem = problem_from_dict(record, default_id=f"{path.stem}/{lineno}", source=path.name,
                                    question_key=question_key, answer_key=answer_key, id_key=id_key, where=where,
                                    arg_names=arg_names)
        if problem.id in ids:
            raise ValueError(f"{where}: duplicate id {problem.id!r} (first used on line {ids[problem.id]})")
        ids[problem.id] = lineno
        problems.append(problem)
    if not problems:
        raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty or only blank lines)")
    return problems


def _read_utf8(path: Path) -> str:
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
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.jsonl` if it is Latin-1."
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
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record
