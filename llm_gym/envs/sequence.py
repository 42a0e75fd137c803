"""SequenceEnv: one step = one whole response (the granularity GRPO, DAPO and GSPO train at)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from llm_gym.lm import LanguageModel, get_language_model
from llm_gym.rewards import CombinedReward, boxed_format_reward, math_answer_reward
from llm_gym.tasks import Problem, get_problems, load_jsonl

DEFAULT_PROMPT_TEMPLATE = "{question}\nPut your final answer within \\boxed{{}}."


class SequenceEnv(gym.Env):
    """A math problem per episode; the action is the whole response; the reward scores it.

    Observation (``Dict``): ``input_ids`` ``Box(int64, (L,))`` and ``attention_mask`` ``Box(int64, (L,))``:
    the prompt (chat template applied) **left-padded** to ``L = max_prompt_length`` with the pad id,
    which is what ``model.generate`` takes.

    Action: ``Box(int64, (max_new_tokens,))`` token ids. The response ends at its first EOS (included);
    without EOS, trailing pad ids are padding. So a ``generate`` output right-padded with the pad id is
    a valid action as it is.

    Reward: by default ``accuracy`` (1.0 when math-verify finds the final answer equivalent to the gold
    answer, else 0.0) plus ``format_weight`` x ``format`` (1.0 when a ``\\boxed{}`` is present). Every
    component is in ``info["reward_components"]``. A custom ``reward_fn`` (a batched reward function or
    a dict of them, see :mod:`llm_gym.rewards`) replaces the default; ``info["accuracy"]`` is always
    reported for logging.

    Episode: ``reset`` picks a problem (``options={"problem_id": k}`` or a draw from ``np_random``);
    ``step`` scores the response and terminates.

    Info keys: ``problem_id`` (int index), ``problem`` (its string id), ``prompt_text``, ``answer``; after
    ``step`` also ``response_text``, ``response_length`` (tokens), ``reward_components``, ``accuracy``,
    ``step_rewards`` (list of ``(token_index, reward)``; empty without process supervision) and
    ``truncated_by_length`` (no EOS within ``max_new_tokens``).

    Args:
        model: model name/path or a :class:`~llm_gym.lm.LanguageModel` (its tokenizer, vocabulary and
            context length define the spaces). None = SmolLM2-135M-Instruct.
        task: ``"arithmetic"``, ``"gsm8k"``, ``"gsm_symbolic"`` or a ``.jsonl`` path.
        dataset: explicit problems (a list of :class:`~llm_gym.tasks.Problem` or a ``.jsonl`` path);
            overrides ``task``.
        split: ``"train"`` or ``"test"`` (disjoint; GSM8K originals are test only).
        difficulty: arithmetic level(s), 1 = ``a + b`` with a, b <= 20.
        n_problems: how many problems to draw (None = the task's default).
        max_new_tokens: response budget ``T`` in tokens.
        max_prompt_length: ``L``; None = the longest prompt of the dataset.
        reward_fn: replaces the default reward (callable or ``{name: fn}``).
        format_weight: weight of the ``\\boxed{}`` format component in the default reward (0 = off).
        prompt_template: ``str.format`` template with ``{question}``.
        system_prompt: optional system message.
        chat_template: wrap the prompt in the model's chat template.
        seed: dataset seed (problem generation).
        device: for the model handle.

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
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        system_prompt: str | None = None,
        chat_template: bool = True,
        seed: int = 0,
        device: str = "auto",
        render_mode: str | None = None,
    ):
        self.lm = get_language_model(model, device=device)
        self.problems = _load_problems(task, dataset, split, n_problems, seed, difficulty)
        self.split, self.task = split, task if dataset is None else "custom"
        self.max_new_tokens = int(max_new_tokens)
        self.render_mode = render_mode
        self.prompts = [
            self.lm.format_prompt(prompt_template.format(question=p.question), system_prompt, chat_template)
            for p in self.problems
        ]
        self.max_prompt_length = self._check_lengths(max_prompt_length)
        self.reward = _build_reward(reward_fn, format_weight)
        vocab, length = self.lm.vocab_size, self.max_prompt_length
        self.observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
        })
        self.action_space = spaces.Box(0, vocab - 1, shape=(self.max_new_tokens,), dtype=np.int64)
        self._problem_id: int | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self._last_text = ""

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

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on ``options["problem_id"]`` (int index) or a random problem.

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
        self._obs = {"input_ids": ids[0].numpy(), "attention_mask": mask[0].numpy()}
        return self._copy_obs(), self._info()

    def _copy_obs(self) -> dict[str, np.ndarray]:
        return {key: value.copy() for key, value in self._obs.items()}

    def _info(self) -> dict[str, Any]:
        p = self.problems[self._problem_id]
        return {"problem_id": self._problem_id, "problem": p.id, "prompt_text": self.prompts[self._problem_id],
                "answer": p.answer}

    def step(self, action):
        """Score a whole response and end the episode.

        Args:
            action: ``(max_new_tokens,)`` int token ids (see class docstring for the padding rule).

        Returns:
            ``(obs, reward, terminated=True, truncated=False, info)``.

        Raises:
            RuntimeError: ``step`` before ``reset``.
            ValueError: wrong action shape or a token id outside ``0 .. V-1``.
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before step().")
        ids = _check_action(action, self.max_new_tokens, self.lm.vocab_size)
        import torch

        ids_t = torch.as_tensor(ids)[None]
        mask = self.lm.response_mask(ids_t)
        text = self.lm.decode(ids_t, mask)[0]
        p = self.problems[self._problem_id]
        total, components = self.reward.compute([self.prompts[self._problem_id]], [text], [p.answer],
                                                **_problem_fields([p]))
        accuracy = components["accuracy"][0] if "accuracy" in components else math_answer_reward(
            [self.prompts[self._problem_id]], [text], [p.answer])[0]
        n_tokens = int(mask.sum())
        info = self._info() | {
            "response_text": text,
            "response_length": n_tokens,
            "reward_components": {name: float(v[0]) for name, v in components.items()},
            "accuracy": float(accuracy),
            "step_rewards": [],
            "truncated_by_length": bool(n_tokens == self.max_new_tokens and ids[-1] != self.lm.eos_token_id),
        }
        self._last_text = text
        return self._copy_obs(), float(total[0]), True, False, info

    def render(self) -> str | None:
        """``"ansi"``: the current prompt and the last response as text."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            return f"{self.prompts[self._problem_id]}{self._last_text}"
        return None


def _check_action(action, max_new_tokens: int, vocab_size: int) -> np.ndarray:
    ids = np.asarray(action)
    if ids.shape != (max_new_tokens,):
        raise ValueError(
            f"Action must be a ({max_new_tokens},) array of token ids (right-padded with the pad id), got "
            f"shape {ids.shape}."
        )
    if not np.issubdtype(ids.dtype, np.integer):
        if not np.all(np.mod(ids, 1) == 0):
            raise ValueError(f"Action must hold integer token ids, got dtype {ids.dtype} with fractions.")
        ids = ids.astype(np.int64)
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        raise ValueError(
            f"Action holds token id {int(ids[bad][0])} at position {int(np.argmax(bad))}, outside the "
            f"vocabulary 0..{vocab_size - 1}."
        )
    return ids.astype(np.int64)


def _problem_fields(problems: Sequence[Problem]) -> dict[str, list]:
    return {"problem_ids": [p.id for p in problems], "solutions": [p.solution for p in problems]}


def _load_problems(task, dataset, split, n, seed, difficulty) -> list[Problem]:
    if dataset is None:
        problems = get_problems(task, split=split, n=n, seed=seed, difficulty=difficulty)
    elif isinstance(dataset, (str, os.PathLike)):
        problems = load_jsonl(dataset)
    else:
        problems = list(dataset)
    if not problems:
        raise ValueError("The dataset is empty: pass at least one Problem (or a non-empty .jsonl file).")
    return problems


def _build_reward(reward_fn, format_weight: float) -> CombinedReward:
    if reward_fn is None:
        components = {"accuracy": math_answer_reward}
        weights = {"accuracy": 1.0}
        if format_weight:
            components["format"] = boxed_format_reward
            weights["format"] = float(format_weight)
        return CombinedReward(components, weights)
    if isinstance(reward_fn, CombinedReward):
        return reward_fn
    if isinstance(reward_fn, Mapping):
        return CombinedReward(dict(reward_fn))
    from llm_gym.rewards import reward_fn_name

    return CombinedReward({reward_fn_name(reward_fn): reward_fn})
