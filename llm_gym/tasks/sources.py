"""Problems from the data users already have: Hugging Face datasets, parquet / JSON / CSV files, lists of dicts.

:func:`load_problem_source` is what the envs' ``dataset=`` goes through. Every dict-like source takes the same
column mapping (``question_column``, ``answer_column``, ``id_column``), and every row becomes a
:class:`~llm_gym.tasks.Problem` by the rules of :func:`~llm_gym.tasks.problem_from_dict` (numbers or strings as
answers, GSM8K ``"#### 42"`` answers split into solution and answer, optional ``"solution"`` and
``"difficulty"`` columns; every other column is kept in the problem's ``extra`` and reaches reward functions as a
keyword argument, as in TRL)::

    from datasets import load_dataset
    from llm_gym.tasks import load_problem_source

    ds = load_dataset("openai/gsm8k", "main", split="test")       # any datasets.Dataset
    problems = load_problem_source(ds)                            # its "question" / "answer" columns
    problems = load_problem_source("mine.parquet", question_column="prompt", answer_column="target")

Answers are read exactly as written, in every file format: ``.jsonl`` and ``.json`` numbers are parsed as
decimals (:func:`~llm_gym.tasks.jsonl.loads_exact`), ``.csv`` cells stay the text of the cell; no column's type
is inferred, so an answer above 2**53 next to a float is not rounded. A parquet file and a Hugging Face dataset
carry their own column types: a ``float64`` value is read as the float that was stored. The other columns (the
problem's ``extra``) keep the values each format gives: CSV cells as text (``difficulty`` an int when it is
one), JSON values as ``json.loads`` reads them, parquet and dataset values with their column types.

``datasets`` is imported only when a ``.parquet`` file is read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_gym.tasks.jsonl import load_jsonl, loads_exact, plain_numbers, read_utf8
from llm_gym.tasks.problem import Problem, as_problems

__all__ = ["DATA_FILE_FORMATS", "check_columns", "hf_problems", "is_hf_dataset", "load_problem_file", "load_problem_source"]

# File suffix -> its format (``.jsonl`` is read by :func:`load_jsonl`; ``.parquet`` by ``datasets``; ``.json`` and
# ``.csv`` by the standard library, so every answer is read exactly as written).
DATA_FILE_FORMATS: dict[str, str] = {".json": "json", ".parquet": "parquet", ".csv": "csv"}
_INTEGER = re.compile(r"[-+]?\d+")

_ARG_NAMES = ("question_column", "answer_column", "id_column")


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a Hugging Face ``Dataset``, ``IterableDataset`` or a dict of them (``DatasetDict``).

    Never imports ``datasets``: an object of its classes can only exist once it is imported.
    """
    module = sys.modules.get("datasets")
    if module is None:
        return False
    kinds = tuple(getattr(module, name) for name in ("Dataset", "IterableDataset", "DatasetDict",
                                                     "IterableDatasetDict") if hasattr(module, name))
    return isinstance(obj, kinds)


def hf_problems(
    dataset: Any,
    *,
    split: str | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
    name: str = "dataset",
    id_prefix: str | None = None,
    source: str | None = None,
) -> list[Problem]:
    """The problems of a Hugging Face dataset, one per row, in row order.

    The columns are checked once before any row is read. Every column is read: the ones not mapped to the
    question, answer and id go to each problem's ``extra`` (reward functions receive them as keyword
    arguments, as in TRL), so drop columns you do not need (``ds.remove_columns([...])``, e.g. images) first.

    Args:
        dataset: A ``datasets.Dataset`` or ``IterableDataset``; or a ``DatasetDict`` /
            ``IterableDatasetDict``, of which the split ``split`` is used.
        split: The split of a ``DatasetDict`` (the envs pass their ``split``, ``"train"`` by default); ignored
            for a single dataset.
        question_column: The column of the question text.
        answer_column: The column of the answer (strings or numbers).
        id_column: The column of the problem ids (cast to ``str``). None: the ``"id"`` column when there is
            one, else ``"<id_prefix>/<row index>"`` (0-based).
        name: What to call the dataset in error messages (``dataset[3]: ...``).
        id_prefix: Prefix of default ids; None = ``name``.
        source: The problems' ``source``; None = ``name``.

    Returns:
        The problems (possibly empty: the caller decides whether that is an error).

    Raises:
        ValueError: A ``DatasetDict`` without the split (the message lists its splits and says what to pass),
            a missing column (the message names the column, lists the columns and names the argument to set),
            or an invalid row (see :func:`~llm_gym.tasks.as_problems`).
    """
    if isinstance(dataset, Mapping):  # DatasetDict / IterableDatasetDict
        splits = list(dataset)
        if split is None or split not in dataset:
            wanted = "no split was given" if split is None else f"it has no split {split!r}"
            raise ValueError(f"{name} is a {type(dataset).__name__} with the splits {splits}, and {wanted}: pick "
                             f"one with split={splits[0] if splits else 'train'!r} (the env's split argument) or "
                             f"pass {name}=ds[{splits[0] if splits else 'train'!r}].")
        dataset = dataset[split]
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        _check_columns(list(columns), (question_column, answer_column, id_column), name)
    return as_problems(dataset, name, question_column=question_column, answer_column=answer_column,
                       id_column=id_column, id_prefix=id_prefix, source=source)


def _check_columns(present: Sequence[str], wanted: tuple[str, str, str | None], name: str) -> None:
    """Raise ``ValueError`` naming the first wanted column that is not in ``present``.

    Raises:
        ValueError: the message names the column, the columns that exist and the argument to set.
    """
    for column, arg, what in zip(wanted, _ARG_NAMES, ("questions", "answers", "problem ids"), strict=True):
        if column is not None and column not in present:
            raise ValueError(f"{name} has no column {column!r} (its columns: {list(present)}): set "
                             f"{arg}='<column>' to the column that holds the {what}.")


def load_problem_file(
    path: str | os.PathLike[str],
    *,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
) -> list[Problem]:
    """Load the problems of a local ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file.

    ``.jsonl`` is read line by line by :func:`~llm_gym.tasks.load_jsonl` (ids ``"<stem>/<line number>"``,
    errors name the line, a column may mix numbers and strings). ``.json`` (one JSON array of objects, or JSON
    Lines) is parsed with every number exact (:func:`~llm_gym.tasks.jsonl.loads_exact`); ``.csv`` (a header
    row, then one row per problem) keeps every cell as its text (a ``difficulty`` cell holding an integer
    becomes an int; an empty id cell means no id). ``.parquet`` goes through
    ``datasets.load_dataset("parquet", data_files=path, split="train")``. These three give ids
    ``"<stem>/<row index>"`` (0-based) and errors that name the row as ``<file name>[<row index>]``. No
    column's type is guessed from its values, so an answer is the text written (``9007199254740993`` next to
    ``2.5`` stays ``"9007199254740993"``).

    Args:
        path: The file.
        question_column: The column (key) of the question text.
        answer_column: The column of the answer (strings or numbers).
        id_column: The column of the problem ids. None: the optional ``"id"`` column.

    Returns:
        The problems in file order, ``source`` set to the file name.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: An unsupported suffix (the message lists the supported ones), a file ``datasets`` cannot
            read (the message gives its error), a file with no problems, a missing column or an invalid row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return load_jsonl(path, question_column, answer_column, id_column, arg_names=_ARG_NAMES)
    if suffix not in DATA_FILE_FORMATS:
        raise ValueError(f"problem file {str(path)!r} has the suffix {path.suffix!r}; supported: "
                         f"{['.jsonl', *DATA_FILE_FORMATS]}. Convert it or load it yourself and pass the rows.")
    if suffix == ".parquet":
        rows = _read_with_datasets(path, DATA_FILE_FORMATS[suffix])
    else:
        exact = (answer_column, "id" if id_column is None else id_column)  # JSON numbers read exactly
        rows = _read_json_rows(path, exact) if suffix == ".json" else _read_csv_rows(path)
        present = list(dict.fromkeys(key for row in rows for key in row))
        if rows:
            _check_columns(present, (question_column, answer_column, id_column), path.name)
    problems = hf_problems(rows, question_column=question_column, answer_column=answer_column,
                           id_column=id_column, name=path.name, id_prefix=path.stem, source=path.name)
    if not problems:
        raise ValueError(f"problem file {str(path)!r} contains no problems (it has no rows)")
    return problems


def _read_json_rows(path: Path, exact: tuple[str, str]) -> list[dict[str, Any]]:
    """The objects of a ``.json`` file (one array of objects, or one object per line).

    The numbers of the ``exact`` keys (answer, id) are read exactly (:func:`~llm_gym.tasks.jsonl.loads_exact`),
    the others as ``json.loads`` reads them (:func:`~llm_gym.tasks.jsonl.plain_numbers`).

    Raises:
        ValueError: not UTF-8, invalid JSON (the message names the line and column), or an item that is not
            an object; an empty file ("contains no problems").
    """
    text = read_utf8(path)
    if not text.strip():
        raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty)")
    try:
        data = loads_exact(text)
    except json.JSONDecodeError:  # JSON Lines: one object per line
        data = []
        for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
            if not line.strip():
                continue
            try:
                data.append(loads_exact(line))
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"problem file {str(path)!r}: could not read it (line {lineno}: {exc.msg} at column "
                    f"{exc.colno}). Check that it is valid JSON: one array of objects, or one object per line."
                ) from None
    rows = data if isinstance(data, list) else [data]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path.name}[{i}]: expected a JSON object with the question and the answer, got "
                             f"{type(row).__name__} {row!r:.80}")
    return [plain_numbers(row, exact) for row in rows]


def _read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv`` file with a header: every cell its text (an integer ``difficulty`` an int, an empty
    ``difficulty`` or ``id`` cell None).

    Raises:
        ValueError: not UTF-8, a repeated column name, or a row whose number of cells differs from the
            header's (the message names the row and says to quote cells that hold commas).
    """
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty)")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"problem file {str(path)!r}: the header names the column(s) {repeated} more than once; "
                         f"give every column its own name.")
    rows: list[dict[str, Any]] = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):  # a blank line
            continue
        if len(cells) != len(header):
            raise ValueError(f"{path.name}[{len(rows)}] (line {reader.line_num}): {len(cells)} cells, but the header "
                             f"has {len(header)} ({header}); quote a cell that holds a comma (\"1,000\").")
        row: dict[str, Any] = dict(zip(header, cells, strict=True))
        if "difficulty" in row:
            cell = row["difficulty"].strip()
            row["difficulty"] = int(cell) if _INTEGER.fullmatch(cell) else (row["difficulty"] if cell else None)
        if row.get("id") == "":
            row["id"] = None
        rows.append(row)
    return rows


def _read_with_datasets(path: Path, builder: str) -> Any:
    """``datasets.load_dataset(builder, data_files=path, split="train")``, its errors made plain.

    Raises:
        ValueError: the file is empty or ``datasets`` cannot read it (the message gives its error and the fix).
    """
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parser errors in several exception types
        if not path.read_bytes().strip() or isinstance(exc, StopIteration) or "no data" in str(exc):
            raise ValueError(f"problem file {str(path)!r} contains no problems (it is empty)") from None
        raise ValueError(
            f"problem file {str(path)!r}: datasets.load_dataset({builder!r}) could not read it "
            f"({type(exc).__name__}: {exc}). Check that it is a valid {builder} file."
        ) from exc


def load_problem_source(
    dataset: Iterable[Problem | Mapping[str, Any]] | str | os.PathLike[str] | Any,
    *,
    split: str | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
) -> list[Problem]:
    """The problems of any source the envs' ``dataset=`` accepts.

    Args:
        dataset: A path (:func:`load_problem_file`: ``.jsonl``, ``.json``, ``.parquet``, ``.csv``), a Hugging
            Face ``Dataset`` / ``DatasetDict`` (:func:`hf_problems`), or a list of :class:`Problem` and/or dicts
            (:func:`~llm_gym.tasks.as_problems`; ids ``"dataset/<index>"``).
        split: The split of a ``DatasetDict``; ignored by the other sources.
        question_column: The column (dict key) of the question text.
        answer_column: The column of the answer (strings or numbers).
        id_column: The column of the problem ids. None: the optional ``"id"`` column.

    Returns:
        The problems in order (possibly empty for a list or a dataset).

    Raises:
        TypeError: ``dataset`` is none of these.
        FileNotFoundError: A path that does not exist.
        ValueError: A column argument that is not a non-empty string, a missing column (named with the columns present and the argument to set), a
            ``DatasetDict`` without ``split``, an invalid row or file, or duplicate ids.
    """
    check_columns(question_column, answer_column, id_column)
    columns = {"question_column": question_column, "answer_column": answer_column, "id_column": id_column}
    if isinstance(dataset, (str, os.PathLike)):
        return load_problem_file(dataset, **columns)
    if is_hf_dataset(dataset):
        return hf_problems(dataset, split=split, **columns)
    return as_problems(dataset, **columns)


def check_columns(question_column: Any, answer_column: Any, id_column: Any = None) -> None:
    """Check the column arguments: non-empty strings (``id_column`` may be None).

    Raises:
        ValueError: a column argument is not a non-empty string; the message names it.
    """
    for arg, value in zip(_ARG_NAMES, (question_column, answer_column, id_column), strict=True):
        if value is None and arg == "id_column":
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{arg} must be the name of a column (a non-empty string), got {value!r}.")
