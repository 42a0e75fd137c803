"""Problems and prompts of the llm-gym envs: loading the problems, checking the prompt template and few-shot
messages, rendering the prompts, and the per-problem fields reward functions receive.

Reward functions receive every field of a problem as a keyword argument, as TRL passes dataset columns
(:func:`problem_fields`): ``problem_ids``, ``solutions``, ``difficulty`` and each key of ``Problem.extra`` (the
record's other columns, and the answer under its own column name). The env adds ``completion_ids`` (the
responses' token ids) and ``trainer_state`` (a :class:`TrainerState`, set by the algorithm before each rollout).
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_gym.tasks import Problem, ProblemSequence, get_problems, load_problem_source

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "MEASURED_PROMPTS", "RESERVED_FIELD_NAMES", "PromptSequence", "TrainerState",
           "check_few_shot", "check_field_names", "check_prompt_template", "load_problems", "measured_prompts",
           "problem_fields", "render_prompts"]

#: Names a problem field cannot have: the reward functions' own arguments (llm-gym's and TRL's).
RESERVED_FIELD_NAMES = ("prompts", "responses", "answers", "steps", "problem_ids", "solutions", "completion_ids",
                        "trainer_state", "completions", "log_extra", "log_metric")

DEFAULT_PROMPT_TEMPLATE = "{question}\nPut your final answer within \\boxed{{}}."


def check_few_shot(messages: Any) -> tuple[dict[str, str], ...]:
    """The env's ``few_shot`` chat messages, checked: a sequence of ``{"role": str, "content": str}``.

    Raises:
        TypeError: not a sequence of mappings, or a message whose ``role`` / ``content`` is missing or not a
            string (names the message and the expected form).
    """
    form = 'a list of chat messages such as [{"role": "user", "content": "What is 2 * 3?"}, ...]'
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"few_shot must be {form}; got {type(messages).__name__}.")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not all(isinstance(m.get(k), str) for k in ("role", "content")):
            raise TypeError(f"few_shot[{i}] = {m!r} must be a mapping with string 'role' and 'content': {form}.")
        checked.append({"role": m["role"], "content": m["content"]})
    return tuple(checked)


def check_prompt_template(template: Any) -> str:
    """Check that ``template`` is a ``str.format`` template with exactly one kind of field, ``{question}``.

    Args:
        template: The env's ``prompt_template``.

    Returns:
        ``template``.

    Raises:
        TypeError: ``template`` is not a string.
        ValueError: ``template`` has unbalanced braces, a field other than ``{question}`` (``{q}``, ``{}``,
            ``{question.x}``), a bad format spec, or no ``{question}`` at all; the message names the template
            and shows how to write one.
    """
    fix = (f"It must be a str.format template that contains {{question}} where the question goes, with literal "
           f"braces doubled ('{{{{' and '}}}}'), e.g. {DEFAULT_PROMPT_TEMPLATE!r}.")
    if not isinstance(template, str):
        raise TypeError(f"prompt_template must be a string, got {type(template).__name__}. {fix}")
    shown = template if len(template) <= 200 else template[:200] + "..."
    cause = None
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        cause = str(exc)
    else:
        others = sorted(fields - {"question"})
        if others:
            cause = f"unknown field {{{others[0]}}}; the only field is {{question}}"
        elif not fields:
            cause = "no {question} field, so the question would never be shown"
        else:
            try:
                template.format(question="")  # format specs and conversions: "{question:d}" fails here
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
    if cause is not None:
        raise ValueError(f"prompt_template {shown!r} is not a valid prompt template ({cause}). {fix}")
    return template


@dataclass(frozen=True)
class TrainerState:
    """Where training is, as reward functions see it: the ``trainer_state`` keyword argument (TRL's name).

    The algorithm sets it on the env before each rollout (:meth:`~llm_gym.envs.scoring.ResponseScoring.set_trainer_state`);
    an env used outside training passes ``TrainerState()``.

    Attributes:
        global_step: Optimizer steps taken so far (the algorithm's ``train/n_updates``), as TRL's
            ``TrainerState.global_step`` counts them.
        num_timesteps: Env steps so far (SB3's ``num_timesteps``: responses at sequence level, tokens at token
            level, turns in multi-turn envs).

    >>> TrainerState(global_step=3).global_step
    3
    """

    global_step: int = 0
    num_timesteps: int = 0


def problem_fields(problems: Sequence[Problem]) -> dict[str, list]:
    """The per-problem keyword arguments of reward functions: one list of ``N`` values per field.

    ``problem_ids`` and ``solutions``, ``difficulty`` (the record's ``difficulty`` column as read when it had
    one, else :attr:`Problem.difficulty`), then every key of :attr:`Problem.extra` (a key a problem lacks gives
    None there). TRL reward functions (:func:`~llm_gym.rewards.from_trl`) receive the same, ``problem_ids`` and
    ``solutions`` renamed ``problem_id`` and ``solution``.

    Args:
        problems: ``N`` problems.

    Returns:
        ``name -> list of N values``.

    >>> p = Problem("a/0", "2 + 2?", "4", difficulty=1, extra={"ground_truth": "4", "tests": [1]})
    >>> problem_fields([p])
    {'problem_ids': ['a/0'], 'solutions': [None], 'difficulty': [1], 'ground_truth': ['4'], 'tests': [[1]]}
    """
    fields: dict[str, list] = {"problem_ids": [p.id for p in problems], "solutions": [p.solution for p in problems],
                               "difficulty": [p.extra.get("difficulty", p.difficulty) for p in problems]}
    for key in dict.fromkeys(key for p in problems for key in p.extra):
        if key != "difficulty":
            fields[key] = [p.extra.get(key) for p in problems]
    return fields


def check_field_names(problems: Sequence[Problem]) -> None:
    """Refuse a problem field whose name is a reward-function argument (:data:`RESERVED_FIELD_NAMES`).

    A :class:`~llm_gym.tasks.ProblemSequence` is checked on its first problem (its problems share their fields).

    Raises:
        ValueError: names the field, the reserved names and the fix (rename the column).
    """
    sample = problems[:1] if isinstance(problems, ProblemSequence) else problems
    names = dict.fromkeys(key for p in sample for key in p.extra)
    bad = [name for name in names if name in RESERVED_FIELD_NAMES]
    if bad:
        raise ValueError(f"The problems have a column {bad[0]!r}, which is the name of a reward-function argument "
                         f"({', '.join(RESERVED_FIELD_NAMES)}): reward functions receive every column as a keyword "
                         f"argument, so rename it in the data.")


class PromptSequence(Sequence[str]):
    """The prompts of a :class:`~llm_gym.tasks.ProblemSequence`, each rendered when read (see :func:`render_prompts`).

    Equal when made from equal problems with equal settings on the same model handle.
    """

    def __init__(self, problems: ProblemSequence, lm: Any, template: str, system_prompt: str | None,
                 chat_template: bool, few_shot: tuple[dict[str, str], ...]):
        self.problems, self.lm = problems, lm
        self.settings = (template, system_prompt, bool(chat_template), few_shot)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        template, system_prompt, chat_template, few_shot = self.settings
        question = self.problems[k].question
        return self.lm.format_prompt(template.format(question=question), system_prompt, chat_template, few_shot)

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, PromptSequence) and other.lm is self.lm and other.problems == self.problems
                and other.settings == self.settings)

    def __hash__(self) -> int:
        return hash((self.problems, id(self.lm), self.settings[:3]))


#: How many prompts of a :class:`PromptSequence` (from the first) are measured to check ``max_prompt_length``.
MEASURED_PROMPTS = 256


def measured_prompts(prompts: Sequence[str]) -> Sequence[str]:
    """The prompts an env measures at construction: all of a list, the first :data:`MEASURED_PROMPTS` of a
    :class:`PromptSequence` (a longer prompt further on raises at its ``reset``, naming ``max_prompt_length``)."""
    return prompts[:MEASURED_PROMPTS] if isinstance(prompts, PromptSequence) else prompts


def render_prompts(problems: Sequence[Problem], lm: Any, template: str, system_prompt: str | None,
                   chat_template: bool, few_shot: tuple[dict[str, str], ...]) -> Sequence[str]:
    """Each problem's prompt: ``template`` filled with its question, then the model's chat template.

    Args:
        problems: The problems; a :class:`~llm_gym.tasks.ProblemSequence` gets a :class:`PromptSequence` (each
            prompt rendered when read), a list gets a list.
        lm: The model handle (:meth:`~llm_gym.lm.LanguageModel.format_prompt`).
        template: The checked ``prompt_template``.
        system_prompt: Optional system message.
        chat_template: Apply the model's chat template.
        few_shot: Checked few-shot messages.

    Returns:
        One prompt per problem.
    """
    if isinstance(problems, ProblemSequence):
        return PromptSequence(problems, lm, template, system_prompt, chat_template, few_shot)
    return [lm.format_prompt(template.format(question=p.question), system_prompt, chat_template, few_shot)
            for p in problems]


def load_problems(task: str, dataset: Sequence[Problem | Mapping[str, Any]] | str | os.PathLike | Any | None,
                  split: str, n: int | None, seed: int, difficulty: int | Sequence[int], *,
                  question_column: str = "question", answer_column: str = "answer",
                  id_column: str | None = None) -> Sequence[Problem]:
    """The env's problems: ``dataset`` if given, else ``get_problems(task...)``.

    Args:
        task: The task name or ``.jsonl`` path (used when ``dataset`` is None).
        dataset: None; a path of a ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file; a Hugging Face
            ``datasets.Dataset``, or a ``DatasetDict`` of which the split ``split`` is used; or a list of
            :class:`Problem` and/or dicts. All go through :func:`~llm_gym.tasks.load_problem_source`. A
            :class:`~llm_gym.tasks.ProblemSequence` (problems made on demand) is returned as it is.
        split: ``get_problems``' split, and the split taken from a ``DatasetDict``.
        n: ``get_problems``' ``n``.
        seed: ``get_problems``' seed.
        difficulty: ``get_problems``' difficulty.
        question_column: The column (dict key) of the question text, in ``dataset`` or a ``.jsonl`` task.
        answer_column: The column of the answer (strings or numbers).
        id_column: The column of the problem ids; None = the optional ``"id"`` column.

    Returns:
        The problems.

    Raises:
        ValueError: the result is empty, two problems share an id, a column is missing (the message names it,
            the columns present and the argument to set), a column has the name of a reward-function argument
            (:func:`check_field_names`), a ``DatasetDict`` has no split ``split``, a row is not a valid problem,
            or a file cannot be read.
        TypeError: ``dataset`` is not a list of problems or dicts, a dataset nor a path (the message says what
            to pass).
        FileNotFoundError: a ``dataset`` path that does not exist.
    """
    columns = {"question_column": question_column, "answer_column": answer_column, "id_column": id_column}
    if dataset is None:
        problems = get_problems(task, split=split, n=n, seed=seed, difficulty=difficulty, **columns)
    elif isinstance(dataset, ProblemSequence):
        problems = dataset
    else:
        problems = load_problem_source(dataset, split=split, **columns)
    if not len(problems):
        raise ValueError("The dataset is empty: pass at least one Problem (or a non-empty file or dataset).")
    check_field_names(problems)
    return problems
