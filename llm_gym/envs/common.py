"""Code shared by the sequence-level and token-level environments.

:class:`LLMEnvBase` owns what both granularities have in common: the model handle, the problems and
their prompts, the prompt-length checks, problem selection at reset, the left-padded prompt
observation, the reset info, scoring a finished response (decode + :class:`CombinedReward`) and process
supervision (step rewards from a process reward function, :meth:`LLMEnvBase.process_rewards`).
:class:`~llm_gym.envs.sequence.SequenceEnv` and :class:`~llm_gym.envs.token.TokenEnv` add their spaces,
``reset`` and ``step``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.rewards import CombinedReward, boxed_format_reward, math_answer_reward
from llm_gym.rewards.process import ProcessRewardFunction, call_process_reward_fn, split_steps
from llm_gym.tasks import Problem, get_problems, load_jsonl

DEFAULT_PROMPT_TEMPLATE = "{question}\nPut your final answer within \\boxed{{}}."


class LLMEnvBase(gym.Env):
    """Base of the llm-gym environments: problems, prompts, problem selection and response scoring.

    Subclasses implement :meth:`_make_spaces` (``observation_space``, ``action_space``) and ``reset`` / ``step`` with
    :meth:`_select_problem`, :meth:`prompt_obs`, :meth:`_info` and :meth:`score_response`. The
    constructor arguments are documented on :class:`~llm_gym.envs.sequence.SequenceEnv`.

    Raises:
        ValueError: empty dataset, or a prompt that does not fit in the context with ``max_new_tokens``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        task: str = "arithmetic",
        dataset: Sequence[Problem] | str | None = None,
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
        seed: int = 0,
        device: str = "auto",
        render_mode: str | None = None,
    ):
        self.lm = get_language_model(model, device=device)
        self.problems = load_problems(task, dataset, split, n_problems, seed, difficulty)
        self.split, self.task = split, task if dataset is None else "custom"
        self.max_new_tokens = int(max_new_tokens)
        self.render_mode = render_mode
        self.prompts = [
            self.lm.format_prompt(prompt_template.format(question=p.question), system_prompt, chat_template)
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

    def _make_spaces(self) -> tuple[gym.Space, gym.Space]:
        """``(observation_space, action_space)``; called at the end of the constructor."""
        raise NotImplementedError

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
        p = self.problems[self._problem_id]
        return {"problem_id": self._problem_id, "problem": p.id, "prompt_text": self.prompts[self._problem_id],
                "answer": p.answer}

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
        steps = split_steps(response_ids, self.lm.tokenizer, self.step_delimiter, final=final)
        if not steps:
            return []
        prompt, p = self.prompts[self._problem_id], self.problems[self._problem_id]
        values = call_process_reward_fn(self.process_reward_fn, [prompt], [[s.text for s in steps]], [p.answer],
                                        timeout=self.reward_timeout, **problem_fields([p]))[0]
        return [(step.end_index, value) for step, value in zip(steps, values, strict=True) if value is not None]

    def score_response(self, response_ids: np.ndarray) -> tuple[float, dict[str, Any]]:
        """Decode and score one finished response with the env's reward.

        Args:
            response_ids: ``(T,)`` int64 ids, right-padded with the pad id (the response ends at its
                first EOS, included; without EOS trailing pad ids are padding).

        Returns:
            ``(total, info)``: the weighted reward and the step info (``_info()`` keys plus
            ``response_text``, ``response_length``, ``reward_components``, ``accuracy``, ``step_rewards``,
            ``truncated_by_length``).

        Raises:
            RewardFunctionError: a reward function failed (names it).
        """
        import torch

        ids_t = torch.as_tensor(response_ids)[None]
        mask = self.lm.response_mask(ids_t)
        text = self.lm.decode(ids_t, mask)[0]
        prompt, p = self.prompts[self._problem_id], self.problems[self._problem_id]
        total, components = self.reward.compute([prompt], [text], [p.answer], **problem_fields([p]))
        accuracy = components["accuracy"][0] if "accuracy" in components else math_answer_reward(
            [prompt], [text], [p.answer])[0]
        n_tokens = int(mask.sum())
        info = self._info() | {
            "response_text": text,
            "response_length": n_tokens,
            "reward_components": {name: float(v[0]) for name, v in components.items()},
            "accuracy": float(accuracy),
            "step_rewards": [(int(i), float(r)) for i, r in self.process_rewards(response_ids[:n_tokens])],
            "truncated_by_length": bool(
                n_tokens == self.max_new_tokens and response_ids[-1] != self.lm.eos_token_id),
        }
        self._last_text = text
        return float(total[0]), info

    def render(self) -> str | None:
        """``"ansi"``: the current prompt and the last response as text."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            return f"{self.prompts[self._problem_id]}{self._last_text}"
        return None


def problem_fields(problems: Sequence[Problem]) -> dict[str, list]:
    """Extra per-problem fields passed to reward functions: ``problem_ids`` and ``solutions`` lists."""
    return {"problem_ids": [p.id for p in problems], "solutions": [p.solution for p in problems]}


def load_problems(task: str, dataset: Sequence[Problem] | str | os.PathLike | None, split: str,
                  n: int | None, seed: int, difficulty: int | Sequence[int]) -> list[Problem]:
    """The env's problems: ``dataset`` (a list or a ``.jsonl`` path) if given, else ``get_problems(task...)``.

    Raises:
        ValueError: the result is empty.
    """
    if dataset is None:
        problems = get_problems(task, split=split, n=n, seed=seed, difficulty=difficulty)
    elif isinstance(dataset, (str, os.PathLike)):
        problems = load_jsonl(dataset)
    else:
        problems = list(dataset)
    if not problems:
        raise ValueError("The dataset is empty: pass at least one Problem (or a non-empty .jsonl file).")
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
