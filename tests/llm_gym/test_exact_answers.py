"""Issue 27: answers are read exactly as written, from every file format (no float rounding, no type guessing).

An answer above 2**53 in a column that also holds a float used to be stored as the rounded float
(``9007199254740993`` -> ``"9007199254740992"``), so the right answer scored 0. The expected values here are
the literals written into the files, derived by hand (an integer's decimal digits; a decimal whose last
fractional digit is not 0 is its own canonical form).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_gym.tasks import load_problem_file, normalize_answer

TEXT_FORMATS = ("jsonl", "json-array", "json-lines", "csv")

# Integers a float64 cannot hold exactly: beyond 2**53, both signs, up to 60 digits.
big_integers = st.one_of(st.integers(2**53 + 1, 10**60), st.integers(-(10**60), -(2**53) - 1))


@st.composite
def long_decimals(draw) -> str:
    """A decimal literal with more digits than a float keeps (up to 40 + 40), its last fractional digit non-zero."""
    whole = draw(st.from_regex(r"(0|[1-9][0-9]{0,39})", fullmatch=True))
    fraction = draw(st.from_regex(r"[0-9]{0,39}[1-9]", fullmatch=True))
    sign = draw(st.sampled_from(["", "-"]))
    return f"{sign}{whole}.{fraction}"


def write(path: Path, fmt: str, answer_literal: str) -> Path:
    """Two rows: the answer under test next to a float column, then a float answer (so a type-guessing reader
    makes the answer column float64). ``answer_literal`` is written as a JSON number / a CSV cell."""
    rows = [("What is the big number?", answer_literal, "0.5"), ("Half of 5?", "2.5", "1.25")]
    if fmt == "csv":
        path.write_text("question,answer,weight\n" + "".join(f"{q},{a},{w}\n" for q, a, w in rows), encoding="utf-8")
        return path
    objects = [f'{{"question": {json.dumps(q)}, "answer": {a}, "weight": {w}}}' for q, a, w in rows]
    text = "[" + ", ".join(objects) + "]" if fmt == "json-array" else "".join(o + "\n" for o in objects)
    path.write_text(text, encoding="utf-8")
    return path


def suffix(fmt: str) -> str:
    return {"jsonl": ".jsonl", "csv": ".csv"}.get(fmt, ".json")


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=big_integers)
def test_big_integer_answers_are_read_exactly(tmp_path: Path, fmt: str, number: int) -> None:
    path = write(tmp_path / f"rows{suffix(fmt)}", fmt, str(number))
    problems = load_problem_file(path)
    assert [p.answer for p in problems] == [str(number), "2.5"]


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(literal=long_decimals())
def test_long_decimal_answers_keep_every_digit(tmp_path: Path, fmt: str, literal: str) -> None:
    path = write(tmp_path / f"rows{suffix(fmt)}", fmt, literal)
    assert load_problem_file(path)[0].answer == literal  # already canonical: no "+", no trailing zero


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.integers(2**53 + 1, 2**63 - 1))
def test_parquet_int64_answers_next_to_a_float_column(tmp_path: Path, number: int) -> None:
    """Parquet stores its column types: an int64 answer column is read as the integers stored."""
    import datasets

    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict({"question": ["a?", "b?"], "answer": [number, 3], "weight": [0.5, 1.5]}).to_parquet(
        str(path))
    assert [p.answer for p in load_problem_file(path)] == [str(number), "3"]


def test_the_2_53_plus_1_example_in_every_text_format(tmp_path: Path) -> None:
    """The issue's case by hand: 2**53 + 1 = 9007199254740993, which float64 rounds to ...992."""
    assert float(9007199254740993) == 9007199254740992.0  # why a float reader gets it wrong
    for fmt in TEXT_FORMATS:
        path = write(tmp_path / f"case-{fmt}{suffix(fmt)}", fmt, "9007199254740993")
        assert load_problem_file(path)[0].answer == "9007199254740993", fmt


def test_float_literal_of_a_big_integer_and_huge_literals(tmp_path: Path) -> None:
    """``9007199254740993.0`` is the integer written; a 5000-digit integer loads (Python's int() parsing stops at
    4,300 digits); ``1e999999999`` is kept in exponent form at once instead of being expanded to a billion digits."""
    path = tmp_path / "huge.jsonl"
    lines = [{"question": "a?", "answer": "X"}, {"question": "b?", "answer": "X"}, {"question": "c?", "answer": "X"}]
    literals = ["9007199254740993.0", "7" * 5000, "1e999999999"]
    path.write_text("".join(json.dumps(line).replace('"X"', lit) + "\n" for line, lit in zip(lines, literals,
                                                                                            strict=True)))
    start = time.perf_counter()
    answers = [p.answer for p in load_problem_file(path)]
    assert answers[:2] == ["9007199254740993", "7" * 5000]
    assert answers[2].lower() in ("1e999999999", "1e+999999999")  # the same number, not expanded
    assert time.perf_counter() - start < 5.0
    assert normalize_answer(10**5000) == "1" + "0" * 5000  # str(int) would raise past 4,300 digits


def test_csv_cells_are_text_as_written(tmp_path: Path) -> None:
    """CSV: no NA guessing ("NA" is an answer, not a missing value), ids keep their leading zeros, an integer
    difficulty is an int, a row with too many cells names the row, an empty answer is an error."""
    path = tmp_path / "cells.csv"
    path.write_text('id,question,answer,difficulty\n007,"Symbol of sodium, upper case?",NA,2\n'
                    '008,"1,000 + 1?","1,001",\n', encoding="utf-8")
    problems = load_problem_file(path)
    assert [(p.id, p.question, p.answer, p.difficulty) for p in problems] == [
        ("007", "Symbol of sodium, upper case?", "NA", 2), ("008", "1,000 + 1?", "1001", None)]
    path.write_text("question,answer\nq1,1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cells\.csv\[0\] \(line 2\): 3 cells, but the header has 2"):
        load_problem_file(path)
    path.write_text("question,answer\nq1,\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cells\.csv\[0\]: 'answer' has an empty final answer"):
        load_problem_file(path)


def test_json_rows_must_be_objects_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('["just a string"]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows\.json\[0\]: expected a JSON object"):
        load_problem_file(path)
    path.write_text('{"question": "a?", "answer": 1}\n{"question": "b?", "answer": }\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"could not read it \(line 2: Expecting value"):
        load_problem_file(path)
    path.write_text('{"question": "a?", "answer": 1}\n{"prompt": "b?", "answer": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows\.json\[1\]: missing key 'question'"):
        load_problem_file(path)
