"""Code shared by the sequence-level and token-level environments.

:class:`LLMEnvBase` owns what both granularities have in common: the model handle, the problems and
their prompts, the prompt-length checks, problem selection at reset, the left-padded prompt
observation, the reset info, scoring finished responses (decode + :class:`CombinedReward`; one response,
:meth:`LLMEnvBase.score_response`, or a batch with each reward function called once,
:meth:`LLMEnvBase.score_batch`), precomputed scores a sequence-level step can use
(:meth:`LLMEnvBase.prime_scores`) and process supervision (step rewards from a process reward function,
:meth:`LLMEnvBase.process_rewards`).
:class:`~llm_gym.envs.sequence.SequenceEnv` and :class:`~llm_gym.envs.token.TokenEnv` add their spaces,
``reset`` and ``step``.
"""

from __future__ import annotations

import copy
import os
import string
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.rewards import CombinedReward, boxed_format_reward, math_answer_reward
from llm_gym.rewards.process import ProcessRewardFunction, call_process_reward_fn, split_steps
from llm_gym.tasks import Problem, get_problems, load_problem_source
from llm_gym.tasks.arithmetic import LEVELS
from llm_gym.tasks.sources import check_columns
from llm_gym.validation import check_int, check_real

DEFAULT_PROMPT_TEMPLATE = "{question}\nPut your final answer within \\boxed{{}}."


class _PrimedScore(NamedTuple):
    """One precomputed ``SequenceEnv.step`` result, used when the step's problem and action match."""

    problem_id: int
    response_ids: np.ndarray  # (T,) int64
    reward: float
    info: dict[str, Any]


class LLMEnvBase(gym.Env):
    """Base of the llm-gym environments: problems, prompts, problem selection and response scoring.

    Subclasses implement :meth:`_make_spaces` (``observation_space``, ``action_space``) and ``reset`` / ``step`` with
    :meth:`_select_problem`, :meth:`prompt_obs`, :meth:`_info` and :meth:`score_response`. The
    constructor arguments are documented on :class:`~llm_gym.envs.sequence.SequenceEnv`.

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
        self.prompts = [
            self.lm.format_prompt(prompt_template.format(question=p.question), system_prompt, chat_template,
                                  self.few_shot)
            for p in self.problems
        ]
        self.max_prompt_length = self._check_lengths(max_prompt_length)
        self.reward = build_reward(reward_fn, format_weight, reward_timeout)
        self.reward_timeout = reward_timeout
        self.set_process_reward_fn(process_reward_fn, step_delimiter)
        self.observation_space, self.action_space = self._make_spaces()
        self._problem_id: int | None = None
        self._prompt: dict[str, np.ndarray] | None = None
        self._last_text = ""
        self._primed: deque[_PrimedScore] = deque()

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

    @property
    def n_problems(self) -> int:
        """Number of problems this env draws from (valid ``problem_id`` values are ``0 .. n-1``)."""
        return len(self.problems)

    def _check_lengths(self, max_prompt_length: int | None) -> int:
        lengths = self.lm.prompt_lengths(self.prompts)
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

    def _response_finished(self) -> bool:
        """Whether the response being scored is complete (``process_rewards``' default ``final``)."""
        return True

    def process_rewards(self, response_ids: np.ndarray, final: bool | None = None) -> list[tuple[int, float]]:
        """Process supervision: ``(token_index, reward)`` at the end of every scored step of a response.

        The response is split into steps at ``step_delimiter`` (:func:`~llm_gym.rewards.process.split_steps`:
        a step ends at the token holding the delimiter's last character; the final step at the last
        token, EOS included), ``process_reward_fn`` scores the steps of the current problem (validated by
        :func:`~llm_gym.rewards.process.call_process_reward_fn`), and each non-None value is placed at its
        step's end token. Without ``process_reward_fn`` the result is ``[]``.

        Causal: with ``final=False`` only the steps completed by a delimiter are scored (the unfinished
        last segment is not), so the rewards at indices ``<= t`` depend only on tokens ``0..t`` as long
        as the scorer scores step k from steps ``0..k``. :class:`~llm_gym.envs.token.TokenEnv` calls this
        on the prefix generated so far whenever a token completes a step and pays each reward at its
        token index. A subclass may override it (one argument is enough) under the same causality rule.

        Args:
            response_ids: ``(n,)`` int64, the response's real tokens (EOS included, no padding).
            final: Whether the response is finished (its last segment is a step). None: finished except
                during a :class:`~llm_gym.envs.token.TokenEnv` episode, whose tokens are a prefix.

        Returns:
            A list of ``(token_index, reward)`` with increasing ``0 <= token_index < n``.

        Raises:
            RuntimeError: before the first ``reset``.
            RewardFunctionError: ``process_reward_fn`` raised, timed out or returned an invalid value.
        """
        if self.process_reward_fn is None:
            return []
        if self._problem_id is None:
            raise RuntimeError("Call reset() before process_rewards(): the steps are scored against a problem.")
        final = self._response_finished() if final is None else bool(final)
        return self._batch_process_rewards([self._problem_id], [response_ids], final)[0]

    def _batch_process_rewards(self, problem_ids: Sequence[int], responses: Sequence[np.ndarray], final: bool
                               ) -> list[list[tuple[int, float]]]:
        """:meth:`process_rewards` of ``n`` responses with ONE call of ``process_reward_fn``.

        Each response is split into steps (:func:`~llm_gym.rewards.process.split_steps`); the responses that
        have at least one step are scored together in one :func:`call_process_reward_fn` call (a response
        without steps is not passed, as in the one-response path: the function never sees an empty step list).

        Args:
            problem_ids: ``n`` problem indices.
            responses: ``n`` arrays ``(n_i,)`` of real tokens (EOS included, no padding).
            final: Whether the responses are finished (their last segment is a step).

        Returns:
            ``n`` lists of ``(token_index, reward)``, as :meth:`process_rewards`.
        """
        out: list[list[tuple[int, float]]] = [[] for _ in problem_ids]
        if self.process_reward_fn is None:
            return out
        steps = [split_steps(ids, self.lm.tokenizer, self.step_delimiter, final=final) for ids in responses]
        rows = [r for r, row_steps in enumerate(steps) if row_steps]
        if not rows:
            return out
        problems = [self.problems[problem_ids[r]] for r in rows]
        values = call_process_reward_fn(self.process_reward_fn, [self.prompts[problem_ids[r]] for r in rows],
                                        [[s.text for s in steps[r]] for r in rows], [p.answer for p in problems],
                                        timeout=self.reward_timeout, **problem_fields(problems))
        for r, row_values in zip(rows, values, strict=True):
            out[r] = [(step.end_index, v) for step, v in zip(steps[r], row_values, strict=True) if v is not None]
        return out

    def _step_rewards(self, problem_ids: list[int], responses: list[np.ndarray]) -> list[list[tuple[int, float]]]:
        """Step rewards of ``n`` finished responses: one batched call, or a subclass's :meth:`process_rewards`.

        A subclass (or a test) that overrides :meth:`process_rewards` keeps its per-response hook: it is
        called once per response with the env's problem temporarily set to that response's problem.
        """
        if type(self).process_rewards is LLMEnvBase.process_rewards:
            return self._batch_process_rewards(problem_ids, responses, final=True)
        current, out = self._problem_id, []
        try:
            for k, ids in zip(problem_ids, responses, strict=True):
                self._problem_id = k
                out.append(self.process_rewards(ids))
        finally:
            self._problem_id = current
        return out

    def score_batch(self, problem_ids: Sequence[int], response_ids: np.ndarray
                    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Decode and score ``n`` finished responses, each reward function called once for all of them.

        A pure function of its arguments: it neither needs nor changes the current episode. Row ``r`` gets
        exactly what :meth:`score_response` gives for ``response_ids[r]`` after a reset on
        ``problem_ids[r]`` (same reward, same info), but the responses are decoded as one batch, the
        env's reward (:class:`CombinedReward`: each component once with all ``n``), the accuracy fallback
        (:func:`math_answer_reward`, when ``"accuracy"`` is not a component) and ``process_reward_fn``
        are each called once. Functions that score rows independently give identical values either way.

        Args:
            problem_ids: ``n`` problem indices (``0 .. n_problems - 1``).
            response_ids: ``(n, T)`` int ids, each row right-padded like a ``SequenceEnv`` action (a row
                ends at its first EOS, included; without EOS trailing pad ids are padding).

        Returns:
            ``(rewards, infos)``: ``(n,)`` float64 totals and ``n`` info dicts (``_info()`` keys of the row's
            problem plus ``response_text``, ``response_length``, ``reward_components``, ``accuracy``,
            ``step_rewards``, ``truncated_by_length``).

        Raises:
            ValueError: ``response_ids`` not 2-D, its row count not ``len(problem_ids)``, or a problem index
                out of range.
            RewardFunctionError: a reward function failed (names it).
        """
        import torch

        pids, ids = self._check_batch(problem_ids, response_ids)
        if not pids:
            return np.zeros(0, dtype=np.float64), []
        ids_t = torch.as_tensor(ids)
        mask = self.lm.response_mask(ids_t)  # (n, T)
        texts = self.lm.decode(ids_t, mask)
        prompts, problems = [self.prompts[k] for k in pids], [self.problems[k] for k in pids]
        answers = [p.answer for p in problems]
        total, components = self.reward.compute(prompts, texts, answers, **problem_fields(problems))
        accuracy = components["accuracy"] if "accuracy" in components else math_answer_reward(
            prompts, texts, answers)
        n_tokens = [int(n) for n in mask.sum(dim=-1).tolist()]
        step_rewards = self._step_rewards(pids, [ids[r, :n] for r, n in enumerate(n_tokens)])
        infos = [self._problem_info(k) | {
            "response_text": texts[r],
            "response_length": n_tokens[r],
            "reward_components": {name: float(v[r]) for name, v in components.items()},
            "accuracy": float(accuracy[r]),
            "step_rewards": [(int(i), float(v)) for i, v in step_rewards[r]],
            "truncated_by_length": bool(n_tokens[r] == self.max_new_tokens and ids[r, -1] != self.lm.eos_token_id),
        } for r, k in enumerate(pids)]
        return np.asarray(total, dtype=np.float64), infos

    def _check_batch(self, problem_ids: Sequence[int], response_ids: np.ndarray) -> tuple[list[int], np.ndarray]:
        """``(problem ids as ints, (n, T) int64 ids)``; raises ``ValueError`` on a shape or range error."""
        ids = np.asarray(response_ids)
        pids = [int(k) for k in np.asarray(problem_ids).reshape(-1)]
        if ids.ndim != 2 or ids.shape[0] != len(pids):
            raise ValueError(f"score_batch needs (n, T) response ids with n = len(problem_ids) = {len(pids)}, got "
                             f"shape {ids.shape}.")
        bad = [k for k in pids if not 0 <= k < self.n_problems]
        if bad:
            raise ValueError(f"problem_id={bad[0]} is outside 0..{self.n_problems - 1}")
        return pids, ids.astype(np.int64, copy=False)

    def score_response(self, response_ids: np.ndarray) -> tuple[float, dict[str, Any]]:
        """Decode and score one finished response of the current problem (:meth:`score_batch` on one row).

        Args:
            response_ids: ``(T,)`` int64 ids, right-padded with the pad id (the response ends at its
                first EOS, included; without EOS trailing pad ids are padding).

        Returns:
            ``(total, info)``: the weighted reward and the step info (``_info()`` keys plus
            ``response_text``, ``response_length``, ``reward_components``, ``accuracy``, ``step_rewards``,
            ``truncated_by_length``).

        Raises:
            RuntimeError: before the first ``reset``.
            RewardFunctionError: a reward function failed (names it).
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before score_response(): the response is scored against a problem.")
        rewards, infos = self.score_batch([self._problem_id], np.asarray(response_ids)[None])
        self._last_text = infos[0]["response_text"]
        return float(rewards[0]), infos[0]

    # ----------------------------------------------------------------- primed scores
    def prime_scores(self, problem_ids: Sequence[int], response_ids: np.ndarray, rewards: Sequence[float],
                     infos: Sequence[dict[str, Any]]) -> None:
        """Queue precomputed scores (from :meth:`score_batch`) for the next sequence-level steps.

        ``SequenceEnv.step`` takes the queue's head instead of scoring when the head's problem is the
        current one and its ids equal the action's; on a mismatch it clears the queue and scores as usual,
        so a wrong or stale entry can cost time, never correctness. ``reset`` keeps the queue (a rollout
        resets between steps). :func:`llm_gym.envs.batch_scoring.prime_sequence_rollout` fills it.

        Args:
            problem_ids: ``n`` problem indices, in the order the steps will come.
            response_ids: ``(n, T)`` int ids, the actions.
            rewards: ``n`` rewards.
            infos: ``n`` info dicts (a deep copy is returned by the step that uses one).

        Raises:
            ValueError: the four arguments differ in length, or ``response_ids`` is not 2-D.
        """
        ids = np.asarray(response_ids)
        if ids.ndim != 2 or not len(problem_ids) == ids.shape[0] == len(rewards) == len(infos):
            raise ValueError(f"prime_scores needs n problem ids, (n, T) response ids, n rewards and n infos; got "
                             f"{len(problem_ids)}, shape {ids.shape}, {len(rewards)} and {len(infos)}.")
        for k, row, reward, info in zip(problem_ids, ids.astype(np.int64), rewards, infos, strict=True):
            self._primed.append(_PrimedScore(int(k), row.copy(), float(reward), info))

    def clear_primed(self) -> None:
        """Drop every queued score (see :meth:`prime_scores`)."""
        self._primed.clear()

    @property
    def n_primed(self) -> int:
        """Number of queued scores (see :meth:`prime_scores`)."""
        return len(self._primed)

    def _take_primed(self, response_ids: np.ndarray) -> tuple[float, dict[str, Any]] | None:
        """The queued ``(reward, info copy)`` for this step's problem and action, or None (queue cleared)."""
        if not self._primed:
            return None
        head = self._primed[0]
        if head.problem_id == self._problem_id and np.array_equal(head.response_ids, response_ids):
            self._primed.popleft()
            self._last_text = head.info["response_text"]
            return head.reward, copy.deepcopy(head.info)
        self._primed.clear()
        return None

    def render(self) -> str | None:
        """``"ansi"``: the current prompt and the last response as text."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            return f"{self.prompts[self._problem_id]}{self._last_text}"
        return None


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


def problem_fields(problems: Sequence[Problem]) -> dict[str, list]:
    """Extra per-problem fields passed to reward functions: ``problem_ids`` and ``solutions`` lists."""
    return {"problem_ids": [p.id for p in problems], "solutions": [p.solution for p in problems]}


def load_problems(task: str, dataset: Sequence[Problem | Mapping[str, Any]] | str | os.PathLike | Any | None,
                  split: str, n: int | None, seed: int, difficulty: int | Sequence[int], *,
                  question_column: str = "question", answer_column: str = "answer",
                  id_column: str | None = None) -> list[Problem]:
    """The env's problems: ``dataset`` if given, else ``get_problems(task...)``.

    Args:
        task: The task name or ``.jsonl`` path (used when ``dataset`` is None).
        dataset: None; a path of a ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file; a Hugging Face
            ``datasets.Dataset``, or a ``DatasetDict`` of which the split ``split`` is used; or a list of
            :class:`Problem` and/or dicts. All go through :func:`~llm_gym.tasks.load_problem_source`.
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
            the columns present and the argument to set), a ``DatasetDict`` has no split ``split``, a row is
            not a valid problem, or a file cannot be read.
        TypeError: ``dataset`` is not a list of problems or dicts, a dataset nor a path (the message says what
            to pass).
        FileNotFoundError: a ``dataset`` path that does not exist.
    """
    columns = {"question_column": question_column, "answer_column": answer_column, "id_column": id_column}
    if dataset is None:
        problems = get_problems(task, split=split, n=n, seed=seed, difficulty=difficulty, **columns)
    else:
        problems = load_problem_source(dataset, split=split, **columns)
    if not problems:
        raise ValueError("The dataset is empty: pass at least one Problem (or a non-empty file or dataset).")
    return problems


def build_reward(reward_fn: Callable | Mapping[str, Callable] | CombinedReward | None,
                 format_weight: float, timeout: float | None = None) -> CombinedReward:
    """The env's :class:`CombinedReward`: default accuracy (+ ``format_weight`` x format) or ``reward_fn``.

    Args:
        reward_fn: None (the default reward), a reward function, ``{name: fn}`` or a ``CombinedReward``.
        format_weight: Weight of :func:`boxed_format_reward` in the default reward (0 = left out).
        timeout: Seconds each component call may take (``CombinedReward(..., timeout=)``); None = no limit.

    Raises:
        ValueError: ``timeout`` given with a ready-made ``CombinedReward`` (set its own ``timeout``), or a
            bad timeout.
    """
    kwargs = {} if timeout is None else {"timeout": timeout}
    if reward_fn is None:
        components = {"accuracy": math_answer_reward}
        weights = {"accuracy": 1.0}
        if format_weight:
            components["format"] = boxed_format_reward
            weights["format"] = float(format_weight)
        return CombinedReward(components, weights, **kwargs)
    if isinstance(reward_fn, CombinedReward):
        if timeout is not None:
            raise ValueError("reward_timeout cannot be applied to a ready-made CombinedReward: pass "
                             "CombinedReward(..., timeout=seconds) as reward_fn instead (or its components as a dict).")
        return reward_fn
    if isinstance(reward_fn, Mapping):
        return CombinedReward(dict(reward_fn), **kwargs)
    from llm_gym.rewards import reward_fn_name

    return CombinedReward({reward_fn_name(reward_fn): reward_fn}, **kwargs)
