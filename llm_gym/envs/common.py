"""Code shared by the sequence-level, token-level and multi-turn environments.

:class:`LLMEnvBase` owns what every granularity has in common: the model handle, the problems and their
prompts (:mod:`llm_gym.envs.problems`), the prompt-length checks, problem selection at reset, the
left-padded prompt observation, the reset info, the process-supervision setting, and scoring finished
responses in batches (:class:`~llm_gym.envs.scoring.ResponseScoring`). Its ``step`` is the batched form
of :class:`~llm_gym.scoring.BatchedEnv` on a batch of one: :class:`~llm_gym.envs.sequence.SequenceEnv`,
:class:`~llm_gym.envs.token.TokenEnv` and :class:`~llm_gym.envs.multiturn.MultiTurnEnv` add their spaces,
``reset`` and the three parts of a step (``begin_step``, ``score_pending``, ``finish_step``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.envs.problems import (
    DEFAULT_PROMPT_TEMPLATE,
    check_few_shot,
    check_prompt_template,
    load_problems,
    measured_prompts,
    problem_fields,
    render_prompts,
)
from llm_gym.envs.scoring import ResponseScoring, build_reward
from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.rewards.process import ProcessRewardFunction
from llm_gym.scoring import BatchedEnv
from llm_gym.tasks import Problem
from llm_gym.tasks.arithmetic import LEVELS
from llm_gym.tasks.sources import check_columns
from llm_gym.validation import check_int, check_real

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "LLMEnvBase", "build_reward", "check_few_shot", "check_prompt_template",
           "load_problems", "problem_fields"]


class LLMEnvBase(ResponseScoring, BatchedEnv):
    """Base of the llm-gym environments: problems, prompts, problem selection and response scoring.

    Subclasses implement :meth:`_make_spaces` (``observation_space``, ``action_space``), ``reset`` (with
    :meth:`_select_problem`, :meth:`prompt_obs` and :meth:`_info`) and the three parts of a step that
    :class:`~llm_gym.scoring.BatchedEnv` declares: ``begin_step`` (advance the episode, no reward function
    called), ``score_pending`` (score many pending steps at once, with the batch methods of
    :class:`~llm_gym.envs.scoring.ResponseScoring`) and ``finish_step``; ``step`` runs them on a batch of one.
    The constructor arguments are documented on :class:`~llm_gym.envs.sequence.SequenceEnv`.

    Raises:
        ValueError: a numeric argument of the wrong type or out of range (:meth:`_check_arguments`), a bad
            ``prompt_template``, a column argument that is not a non-empty string, a column missing from the
            dataset, an empty dataset, duplicate problem ids, or a prompt that does not fit in the context with
            ``max_new_tokens``.
        TypeError: ``dataset`` is not a list of problems / dicts, a Hugging Face dataset nor a path.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        task: str = "arithmetic",
        dataset: Sequence[Problem | Mapping[str, Any]] | str | os.PathLike | Any | None = None,
        split: str = "train",
        difficulty: int | Sequence[int] = 1,
        n_problems: int | None = None,
        max_new_tokens: int = 64,
        max_prompt_length: int | None = None,
        reward_fn: Callable | Mapping[str, Callable] | None = None,
        format_weight: float = 0.0,
        process_reward_fn: ProcessRewardFunction | None = None,
        step_delimiter: str = "\n",
        reward_timeout: float | None = None,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        system_prompt: str | None = None,
        chat_template: bool = True,
        few_shot: Sequence[Mapping[str, str]] = (),
        seed: int = 0,
        device: str = "auto",
        render_mode: str | None = None,
        question_column: str = "question",
        answer_column: str = "answer",
        id_column: str | None = None,
    ):
        # Every cheap check first, so a typo fails before the model loads.
        (max_new_tokens, max_prompt_length, n_problems, format_weight, reward_timeout, difficulty,
         seed) = self._check_arguments(max_new_tokens, max_prompt_length, n_problems, format_weight,
                                       reward_timeout, difficulty, seed, chat_template, render_mode)
        prompt_template = check_prompt_template(prompt_template)
        check_columns(question_column, answer_column, id_column)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}.")
        self.few_shot = check_few_shot(few_shot)
        # The problems before the model, so a missing column fails fast too.
        self.problems = load_problems(task, dataset, split, n_problems, seed, difficulty,
                                      question_column=question_column, answer_column=answer_column,
                                      id_column=id_column)
        self.lm = get_language_model(model, device=device)
        self.split, self.task = split, task if dataset is None else "custom"
        self.max_new_tokens = max_new_tokens
        self.render_mode = render_mode
        self.problem_seed = seed
        self.prompt_settings = (prompt_template, system_prompt, bool(chat_template))  # see set_problems
        self.prompts = render_prompts(self.problems, self.lm, *self.prompt_settings, self.few_shot)
        self.max_prompt_length = self._check_lengths(max_prompt_length)
        self.reward = build_reward(reward_fn, format_weight, reward_timeout)
        self.reward_timeout = reward_timeout
        self.set_process_reward_fn(process_reward_fn, step_delimiter)
        self.observation_space, self.action_space = self._make_spaces()
        self._problem_id: int | None = None
        self._prompt: dict[str, np.ndarray] | None = None
        self._last_text = ""

    def _make_spaces(self) -> tuple[gym.Space, gym.Space]:
        """``(observation_space, action_space)``; called at the end of the constructor."""
        raise NotImplementedError

    def _check_arguments(self, max_new_tokens: Any, max_prompt_length: Any, n_problems: Any, format_weight: Any,
                         reward_timeout: Any, difficulty: Any, seed: Any, chat_template: Any, render_mode: Any
                         ) -> tuple[int, int | None, int | None, float, float | None, int | tuple[int, ...], int]:
        """Check the constructor's numeric (and flag) arguments before anything is loaded.

        Integers must be ``int`` or numpy integers (not ``bool``, not ``12.0``); reals must be finite.

        Returns:
            ``(max_new_tokens, max_prompt_length, n_problems, format_weight, reward_timeout, difficulty, seed)``
            as plain Python values (``difficulty`` an int or a tuple of ints).

        Raises:
            ValueError: an argument of the wrong type or out of range; the message names it and its range.
        """
        owner = type(self).__name__
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1, owner=owner)
        max_prompt_length = check_int("max_prompt_length", max_prompt_length, minimum=1, allow_none=True,
                                      owner=owner)
        n_problems = check_int("n_problems", n_problems, minimum=1, allow_none=True, owner=owner)
        format_weight = check_real("format_weight", format_weight, minimum=0, owner=owner)
        reward_timeout = check_real("reward_timeout", reward_timeout, minimum=0, min_inclusive=False,
                                    allow_none=True, owner=owner)
        seed = check_int("seed", seed, owner=owner)
        levels = f"an arithmetic level in {min(LEVELS)}..{max(LEVELS)}"
        if isinstance(difficulty, (list, tuple, set, frozenset, np.ndarray)):
            items = list(np.asarray(difficulty).reshape(-1)) if isinstance(difficulty, np.ndarray) else list(
                difficulty)
            if not items:
                raise ValueError(f"{owner}: difficulty must be {levels} or a non-empty list of them, got "
                                 f"{difficulty!r}.")
            difficulty = tuple(check_int("difficulty", d, min(LEVELS), max(LEVELS), owner=owner) for d in items)
        else:
            difficulty = check_int("difficulty", difficulty, min(LEVELS), max(LEVELS), owner=owner)
        if not isinstance(chat_template, (bool, np.bool_)):
            raise ValueError(f"{owner}: chat_template must be True or False, got {chat_template!r}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{owner}: render_mode must be None or one of {self.metadata['render_modes']}, got "
                             f"{render_mode!r}.")
        return max_new_tokens, max_prompt_length, n_problems, format_weight, reward_timeout, difficulty, seed

    def set_problems(self, problems: Sequence[Problem | Mapping[str, Any]]) -> None:
        """Replace the problems the env draws from (a curriculum's next level), every other setting kept.

        The prompts are rendered as at construction and ``max_prompt_length`` (so the spaces) is kept. Call it
        between episodes: the next ``reset`` draws from the new problems.

        Args:
            problems: A list of :class:`~llm_gym.tasks.Problem` and/or dicts, or a
                :class:`~llm_gym.tasks.ProblemSequence` (see :func:`~llm_gym.envs.problems.load_problems`).

        Raises:
            ValueError: no problems, duplicate ids, a reserved field name, or a prompt longer than
                ``max_prompt_length`` (the env keeps its problems then).
        """
        old = self.problems, self.prompts
        self.problems = load_problems(self.task, problems, self.split, None, self.problem_seed, 1)
        self.prompts = render_prompts(self.problems, self.lm, *self.prompt_settings, self.few_shot)
        try:
            self._check_lengths(self.max_prompt_length)
        except ValueError:
            self.problems, self.prompts = old
            raise

    @property
    def n_problems(self) -> int:
        """Number of problems this env draws from (valid ``problem_id`` values are ``0 .. n-1``)."""
        return len(self.problems)

    def _check_lengths(self, max_prompt_length: int | None) -> int:
        lengths = self.lm.prompt_lengths(measured_prompts(self.prompts))  # a lazy env's: its first prompts
        longest = int(np.argmax(lengths))
        length = max(lengths) if max_prompt_length is None else int(max_prompt_length)
        if lengths[longest] > length:
            raise ValueError(
                f"Problem {self.problems[longest].id!r} has a {lengths[longest]}-token prompt, more than "
                f"max_prompt_length={length}. Raise max_prompt_length or drop long problems."
            )
        if length + self.max_new_tokens > self.lm.context_length:
            raise ValueError(
                f"max_prompt_length={length} + max_new_tokens={self.max_new_tokens} exceeds the model's "
                f"context of {self.lm.context_length} tokens. Lower max_new_tokens or use shorter prompts."
            )
        return length

    def _select_problem(self, seed: int | None, options: dict[str, Any] | None) -> int:
        """Seed ``np_random``, pick the episode's problem and encode its prompt.

        Args:
            seed: passed to :meth:`gymnasium.Env.reset`.
            options: ``{"problem_id": k}`` picks problem ``k``; otherwise a draw from ``np_random``.

        Returns:
            The problem index ``k``.

        Raises:
            ValueError: ``problem_id`` outside ``0 .. n_problems - 1``.
        """
        super().reset(seed=seed)
        options = options or {}
        if "problem_id" in options:
            k = int(options["problem_id"])
            if not 0 <= k < self.n_problems:
                raise ValueError(f"problem_id={k} is outside 0..{self.n_problems - 1}")
        else:
            k = int(self.np_random.integers(self.n_problems))
        self._problem_id = k
        ids, mask = self.lm.encode_prompts([self.prompts[k]], self.max_prompt_length)
        self._prompt = {"input_ids": ids[0].numpy(), "attention_mask": mask[0].numpy()}
        self._last_text = ""
        return k

    @property
    def problem_id(self) -> int | None:
        """The current episode's problem index (None before the first ``reset``)."""
        return self._problem_id

    def prompt_obs(self) -> dict[str, np.ndarray]:
        """The current prompt, left-padded: fresh ``input_ids (L,)`` and ``attention_mask (L,)`` int64.

        Raises:
            RuntimeError: before the first ``reset``.
        """
        if self._prompt is None:
            raise RuntimeError("Call reset() before prompt_obs().")
        return {key: value.copy() for key, value in self._prompt.items()}

    def _info(self) -> dict[str, Any]:
        return self._problem_info(self._problem_id)

    def _problem_info(self, k: int) -> dict[str, Any]:
        """The reset info of problem ``k`` (``problem_id``, ``problem``, ``prompt_text``, ``answer``)."""
        p = self.problems[k]
        return {"problem_id": k, "problem": p.id, "prompt_text": self.prompts[k], "answer": p.answer}

    def set_process_reward_fn(self, fn: ProcessRewardFunction | None, delimiter: str | None = None) -> None:
        """Turn process supervision on (or off with ``fn=None``) and set the step delimiter.

        Args:
            fn: A process reward function ``fn(prompts, steps, answers, **problem_fields)`` returning one
                value (or None) per step (see :class:`~llm_gym.rewards.process.ProcessRewardFunction`),
                e.g. :func:`~llm_gym.rewards.process.arithmetic_step_reward`; None = no step rewards.
            delimiter: The text that ends a step (see :func:`~llm_gym.rewards.process.split_steps`); None
                keeps the current one (``"\\n"`` at construction).

        Raises:
            TypeError: ``fn`` is neither None nor callable.
            ValueError: ``delimiter`` is not a non-empty string.
        """
        if fn is not None and not callable(fn):
            raise TypeError(f"process_reward_fn must be a callable fn(prompts, steps, answers, **fields) or None, "
                            f"got {type(fn).__name__}.")
        if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
            raise ValueError(f"step_delimiter must be a non-empty string such as '\\n', got {delimiter!r}.")
        self.process_reward_fn = fn
        self.step_delimiter = delimiter if delimiter is not None else getattr(self, "step_delimiter", "\n")

    def render(self) -> str | None:
        """``"ansi"``: the current prompt and the last response as text."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            return f"{self.prompts[self._problem_id]}{self._last_text}"
        return None
