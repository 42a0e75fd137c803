"""`dataset=` from the sources users already have: HF datasets, parquet / JSON / JSONL files, column mappings."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import gymnasium as gym
import pytest

import llm_gym  # noqa: F401  (registers the envs)
from llm_gym.envs.sequence import SequenceEnv
from llm_gym.envs.token import TokenEnv
from llm_gym.tasks import Problem, get_problems, hf_problems, load_problem_file, load_problem_source

# Rows with renamed columns; "target" mixes a GSM8K answer, a thousands separator and a plain string.
ROWS = {
    "prompt": ["What is 2 + 3?", "Tom has 3 apples and buys 4. How many?", "Capital of France?"],
    "target": ["5", "3 + 4 = <<3+4=7>>7 apples\n#### 7", "1,000"],
    "image": ["ignored-a", "ignored-b", "ignored-c"],
}
# Worked out by hand from ROWS: (question, answer, solution).
EXPECTED = [
    ("What is 2 + 3?", "5", None),
    ("Tom has 3 apples and buys 4. How many?", "7", "3 + 4 = 7 apples"),
    ("Capital of France?", "1000", None),
]
COLUMNS = {"question_column": "prompt", "answer_column": "target"}


def fields(problems: list[Problem]) -> list[tuple[str, str, str | None]]:
    return [(p.question, p.answer, p.solution) for p in problems]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def records() -> list[dict]:
    return [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]


# --------------------------------------------------------------------------- sources, no env


def test_hf_dataset_with_renamed_columns() -> None:
    problems = load_problem_source(datasets.Dataset.from_dict(ROWS), **COLUMNS)
    assert fields(problems) == EXPECTED
    assert [p.id for p in problems] == ["dataset/0", "dataset/1", "dataset/2"]
    assert {p.source for p in problems} == {"dataset"}


def test_hf_dataset_default_columns_id_and_optional_columns() -> None:
    ds = datasets.Dataset.from_dict({"question": ["a?", "b?"], "answer": [12, 4], "id": ["x", "y"],
                                     "difficulty": [3, 1], "solution": ["six twice", None]})
    problems = load_problem_source(ds)
    assert [(p.id, p.answer, p.difficulty, p.solution) for p in problems] == [("x", "12", 3, "six twice"),
                                                                             ("y", "4", 1, None)]
    # An explicit id column (integers become strings).
    ds = datasets.Dataset.from_dict({"q": ["a?", "b?"], "a": [1.5, 2.0], "uid": [10, 20]})
    problems = load_problem_source(ds, question_column="q", answer_column="a", id_column="uid")
    assert [(p.id, p.answer) for p in problems] == [("10", "1.5"), ("20", "2")]


def test_parquet_file_with_renamed_columns(tmp_path: Path) -> None:
    path = tmp_path / "mine.parquet"
    datasets.Dataset.from_dict(ROWS).to_parquet(str(path))
    problems = load_problem_file(path, **COLUMNS)
    assert fields(problems) == EXPECTED
    assert [p.id for p in problems] == ["mine/0", "mine/1", "mine/2"]
    assert {p.source for p in problems} == {"mine.parquet"}
    assert load_problem_source(str(path), **COLUMNS) == problems


def test_parquet_numeric_answers(tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    datasets.Dataset.from_dict({"question": ["a?", "b?", "c?"], "answer": [3.5, 12.0, -2.0]}).to_parquet(str(path))
    assert [p.answer for p in load_problem_file(path)] == ["3.5", "12", "-2"]


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_json_file_with_renamed_columns(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "mine.json"
    text = json.dumps(records()) if layout == "array" else "".join(json.dumps(r) + "\n" for r in records())
    path.write_text(text, encoding="utf-8")
    problems = load_problem_file(path, **COLUMNS)
    assert fields(problems) == EXPECTED
    assert [p.id for p in problems] == ["mine/0", "mine/1", "mine/2"]


def test_jsonl_file_with_renamed_columns_keeps_the_line_loader(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", records())
    problems = load_problem_file(path, **COLUMNS)
    assert fields(problems) == EXPECTED
    assert [p.id for p in problems] == ["mine/1", "mine/2", "mine/3"]  # 1-based line numbers, as before
    # A .jsonl column may mix numbers and strings (read line by line); an id column is read as a string.
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"q": "a?", "a": 2, "k": 5}, {"q": "b?", "a": "x", "k": "z"}])
    problems = load_problem_file(path, question_column="q", answer_column="a", id_column="k")
    assert [(p.id, p.answer) for p in problems] == [("5", "2"), ("z", "x")]
    assert get_problems(str(path), question_column="q", answer_column="a", id_column="k") == problems


def test_list_of_dicts_with_renamed_columns() -> None:
    problems = load_problem_source(records(), **COLUMNS)
    assert fields(problems) == EXPECTED
    assert [p.id for p in problems] == ["dataset/0", "dataset/1", "dataset/2"]


def test_missing_column_names_column_columns_and_argument(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(ROWS)
    with pytest.raises(ValueError) as info:
        load_problem_source(ds, question_column="prompt")
    assert str(info.value) == ("dataset has no column 'answer' (its columns: ['prompt', 'target', 'image']): set "
                               "answer_column='<column>' to the column that holds the answers.")
    with pytest.raises(ValueError, match=r"dataset has no column 'uid' .*set id_column="):
        load_problem_source(ds, id_column="uid", **COLUMNS)
    path = tmp_path / "mine.parquet"
    ds.to_parquet(str(path))
    with pytest.raises(ValueError, match=r"^mine\.parquet has no column 'question' \(its columns: \['prompt', "
                                         r"'target', 'image'\]\): set question_column="):
        load_problem_file(path)
    with pytest.raises(ValueError, match=r"^dataset\[0\]: missing key 'answer' \(keys present: \['image', 'prompt', "
                                         r"'target'\]\): set answer_column='<key>'"):
        load_problem_source(records(), question_column="prompt")
    jsonl = write_jsonl(tmp_path / "mine.jsonl", records())
    with pytest.raises(ValueError, match=r"mine\.jsonl, line 1: missing key 'question' .*set question_column="):
        load_problem_file(jsonl)


def test_dataset_dict_takes_the_split_or_says_which_exist() -> None:
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS),
                               "test": datasets.Dataset.from_dict({"prompt": ["9 - 1?"], "target": ["8"]})})
    assert fields(load_problem_source(dd, split="train", **COLUMNS)) == EXPECTED
    assert fields(load_problem_source(dd, split="test", **COLUMNS)) == [("9 - 1?", "8", None)]
    with pytest.raises(ValueError, match=r"DatasetDict with the splits \['train', 'test'\], and it has no split "
                                         r"'validation': pick one with split='train'"):
        load_problem_source(dd, split="validation", **COLUMNS)
    with pytest.raises(ValueError, match="no split was given"):
        hf_problems(dd, **COLUMNS)


def test_empty_sources_and_bad_files(tmp_path: Path) -> None:
    empty = datasets.Dataset.from_dict({"question": [], "answer": []})
    assert load_problem_source(empty) == []  # the env turns this into its "dataset is empty" error
    path = tmp_path / "empty.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.json' contains no problems"):
        load_problem_file(path)
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json'.*could not read it .*Check that it is valid JSON"):
        load_problem_file(path)
    path = tmp_path / "problems.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"suffix '\.txt'; supported: \['\.jsonl', '\.json', '\.parquet', '\.csv'\]"):
        load_problem_file(path)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_problem_file(tmp_path / "nope.parquet")


def test_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("prompt,target\n\"What is 2 + 3?\",5\n\"Half of 7?\",3.5\n", encoding="utf-8")
    problems = load_problem_file(path, **COLUMNS)
    assert [(p.id, p.question, p.answer) for p in problems] == [("mine/0", "What is 2 + 3?", "5"),
                                                                ("mine/1", "Half of 7?", "3.5")]


# --------------------------------------------------------------------------- the envs


@pytest.fixture
def env_kwargs(tiny_model_dir) -> dict:
    return {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": 8, "max_prompt_length": 96}


@pytest.mark.parametrize("env_cls", [SequenceEnv, TokenEnv])
@pytest.mark.parametrize("source", ["hf", "dict", "parquet", "json", "jsonl"])
def test_env_problems_equal_the_rows_in_order(env_cls, source: str, env_kwargs: dict, tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(ROWS)
    if source == "hf":
        dataset = ds
    elif source == "dict":
        dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["x?"], "target": ["0"]}),
                                        "test": ds})
        env_kwargs["split"] = "test"
    elif source == "parquet":
        dataset = str(tmp_path / "rows.parquet")
        ds.to_parquet(dataset)
    else:
        dataset = tmp_path / f"rows.{source}"
        write_jsonl(dataset, records())
    env = env_cls(dataset=dataset, **COLUMNS, **env_kwargs)
    assert fields(env.problems) == EXPECTED
    assert env.n_problems == 3 and env.task == "custom"
    for k, (question, answer, _) in enumerate(EXPECTED):
        _, info = env.reset(options={"problem_id": k})
        assert info["answer"] == answer and question in info["prompt_text"]


@pytest.mark.parametrize("env_id", ["LLMMath-v0", "LLMMathToken-v0"])
def test_gym_make_with_a_dataset_and_columns(env_id: str, tiny_model_dir) -> None:
    env = gym.make(env_id, dataset=datasets.Dataset.from_dict(ROWS), question_column="prompt",
                   answer_column="target", model=str(tiny_model_dir), device="cpu")
    assert fields(env.unwrapped.problems) == EXPECTED
    _, info = env.reset(options={"problem_id": 1})
    assert info["answer"] == "7" and info["problem"] == "dataset/1"
    env.close()


def test_env_errors(env_kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"dataset has no column 'question' \(its columns: \['prompt', 'target', "
                                         r"'image'\]\): set question_column="):
        SequenceEnv(dataset=datasets.Dataset.from_dict(ROWS), **env_kwargs)
    with pytest.raises(ValueError, match="The dataset is empty"):
        TokenEnv(dataset=datasets.Dataset.from_dict({"question": [], "answer": []}), **env_kwargs)
    with pytest.raises(ValueError, match="split 'train'"):  # the env's default split is not in the dict
        SequenceEnv(dataset=datasets.DatasetDict({"test": datasets.Dataset.from_dict(ROWS)}), **COLUMNS,
                    **env_kwargs)
    # Column arguments are checked before the model is loaded (this model path does not exist).
    for bad in ({"question_column": ""}, {"answer_column": 3}, {"id_column": ""}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be the name of a column"):
            SequenceEnv(model="/no/such/model", dataset=records(), **bad)
