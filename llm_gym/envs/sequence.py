"""SequenceEnv: one step = one whole response (the granularity GRPO, DAPO and GSPO train at)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from llm_gym.envs.common import DEFAULT_PROMPT_TEMPLATE, LLMEnvBase

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "SequenceEnv", "check_action"]


class SequenceEnv(LLMEnvBase):
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

    Process supervision (``process_reward_fn``): the response is split into steps at ``step_delimiter``
    (one line per step by default; :func:`~llm_gym.rewards.process.split_steps`), the function scores
    every step (one value or None per step) and ``info["step_rewards"]`` lists ``(token_index, reward)``
    for every scored step, ``token_index`` being the step's last token (the token holding the delimiter;
    the last token, EOS included, for the final step). The env's scalar reward stays the outcome reward:
    the step rewards are reported in ``info`` only, and algorithms read them from there (GRPO's
    ``advantage="process"``). :class:`~llm_gym.envs.token.TokenEnv` pays the same step rewards as rewards
    at their tokens.

    Episode: ``reset`` picks a problem (``options={"problem_id": k}`` or a draw from ``np_random``);
    ``step`` scores the response and terminates. Stepping again before the next ``reset`` raises
    ``RuntimeError`` (as :class:`~llm_gym.envs.token.TokenEnv` does), so a response is never scored twice.

    Batched scoring: :meth:`score_batch` scores ``n`` responses with each reward function called once, a
    pure function of ``(problem_ids, response_ids)``. ``step`` is that scoring on a batch of one (the
    three parts of :class:`~llm_gym.scoring.BatchedEnv`), so a vector env
    (:class:`~llm_gym.envs.vector.GroupVecEnv`, :class:`~llm_gym.envs.vector.SequenceVecEnv`) that scores
    all its rows in one call returns exactly what N separate steps would.

    Info keys: ``problem_id`` (int index), ``problem`` (its string id), ``prompt_text``, ``answer``; after
    ``step`` also ``response_text``, ``response_length`` (tokens), ``reward_components``, ``accuracy``,
    ``step_rewards`` (list of ``(token_index, reward)``; empty without process supervision) and
    ``truncated_by_length`` (no EOS within ``max_new_tokens``).

    Args:
        model: model name/path or a :class:`~llm_gym.lm.LanguageModel` (its tokenizer, vocabulary and
            context length define the spaces). None = SmolLM2-135M-Instruct.
        task: ``"arithmetic"``, ``"gsm8k"``, ``"gsm_symbolic"`` or a ``.jsonl`` path.
        dataset: your own problems, overriding ``task`` (see :func:`~llm_gym.tasks.load_problem_source`): a
            Hugging Face ``datasets.Dataset``; a ``datasets.DatasetDict``, of which the split ``split`` is used
            (``ValueError`` listing its splits if it has none of that name); the path of a ``.jsonl`` file
            (read line by line, ids ``"<stem>/<line>"``) or of a ``.json``, ``.parquet`` or ``.csv`` file (read
            with ``datasets.load_dataset``, ids ``"<stem>/<row index>"``); a list of dicts (ids
            ``"dataset/<index>"``); or a list of :class:`~llm_gym.tasks.Problem`. Rows need a question and an
            answer column (see ``question_column``, ``answer_column``); optional ``"id"``, ``"solution"``,
            ``"difficulty"``. Ids must be unique.
        split: ``"train"`` or ``"test"`` (disjoint; GSM8K originals are test only); with a ``DatasetDict``
            ``dataset``, the name of its split to use (any name).
        difficulty: arithmetic level(s), 1 = ``a + b`` with a, b <= 20.
        n_problems: how many problems to draw, an integer >= 1 (None = the task's default).
        max_new_tokens: response budget ``T`` in tokens, an integer >= 1.
        max_prompt_length: ``L``, an integer >= 1; None = the longest prompt of the dataset.
        reward_fn: replaces the default reward (callable or ``{name: fn}``).
        format_weight: weight of the ``\\boxed{}`` format component in the default reward, a finite number
            >= 0 (0 = off).
        process_reward_fn: a process reward function ``fn(prompts, steps, answers, **problem_fields)`` ->
            one value (or None = no reward) per step of each response, e.g.
            :func:`~llm_gym.rewards.process.arithmetic_step_reward` (see
            :class:`~llm_gym.rewards.process.ProcessRewardFunction`); None = no step rewards.
        step_delimiter: the text that ends a step (``"\\n"``: one step per line; ``"\\n\\n"``: paragraphs).
        reward_timeout: seconds each reward call may take, a finite number > 0 (every ``reward_fn``
            component, through ``CombinedReward(..., timeout=)``, and ``process_reward_fn``); None = no limit.
            A call that times out raises :class:`~llm_gym.rewards.RewardFunctionError`.
        prompt_template: ``str.format`` template with ``{question}`` (its only field; literal braces doubled).
        system_prompt: optional system message.
        chat_template: wrap the prompt in the model's chat template.
        few_shot: chat messages (``{"role", "content"}`` dicts) placed before the question's user message, a
            demonstration of the expected answer (without a chat template: ``"{Role}: {content}"`` lines).
        seed: dataset seed (problem generation), an integer.
        device: for the model handle.
        question_column: the column (dict key) of the question text in ``dataset`` (or a ``.jsonl`` ``task``).
        answer_column: the column of the answer: strings (``"steps\n#### 42"`` splits into solution and
            answer) or numbers.
        id_column: the column of the problem ids (required in every row); None = the ``"id"`` column when
            present, else the default ids above.

    Raises:
        ValueError: a numeric argument of the wrong type or out of range (``max_new_tokens``,
            ``max_prompt_length``, ``n_problems``, ``format_weight``, ``reward_timeout``, ``difficulty``,
            ``seed``; the message names the argument and its range), a ``prompt_template`` without
            ``{question}`` or with unbalanced braces, a column argument that is not a non-empty string, a
            column missing from ``dataset`` (the message names it, the columns that exist and the argument to
            set), a ``DatasetDict`` without the split ``split``, an unsupported file suffix or unreadable file,
            an empty dataset, duplicate problem ids, a prompt that does not fit in the context with
            ``max_new_tokens``, an empty ``step_delimiter``, or
            ``reward_timeout`` with a ready-made ``CombinedReward`` (give it its own ``timeout``).
        TypeError: ``process_reward_fn`` not callable, or ``dataset`` not a list of problems / dicts, a Hugging
            Face dataset or a path.
        FileNotFoundError: a ``dataset`` path that does not exist.
    """

    def _make_spaces(self) -> tuple[spaces.Dict, spaces.Box]:
        vocab, length = self.lm.vocab_size, self.max_prompt_length
        observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
        })
        return observation_space, spaces.Box(0, vocab - 1, shape=(self.max_new_tokens,), dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode on ``options["problem_id"]`` (int index) or a random problem.

        Returns:
            ``(obs, info)``: the left-padded prompt (``(L,)`` ids and mask) and the reset info.

        Raises:
            ValueError: ``problem_id`` outside ``0 .. n_problems - 1``.
        """
        self._select_problem(seed, options)
        self._done = False
        return self.prompt_obs(), self._info()

    def begin_step(self, action: Any) -> tuple[int, np.ndarray]:
        """The first part of ``step``: check the action; nothing is scored yet.

        ``step(action)`` scores a whole response and ends the episode: ``(obs, reward, terminated=True,
        truncated=False, info)``, ``obs`` the prompt again.

        Args:
            action: ``(max_new_tokens,)`` int token ids (see the class docstring for the padding rule).

        Returns:
            ``(problem_id, response_ids (T,) int64)``, the pending step.

        Raises:
            RuntimeError: ``step`` before ``reset``, or a second ``step`` in the same episode.
            ValueError: wrong action shape, a non-integer id or a token id outside ``0 .. V-1``.
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before step().")
        if self._done:
            raise RuntimeError("The episode has ended (a SequenceEnv episode is one step: the whole response): "
                               "call reset() before step().")
        return self._problem_id, check_action(action, self.max_new_tokens, self.lm.vocab_size)

    def score_pending(self, pending: Sequence[tuple[int, np.ndarray]]) -> list[tuple[float, dict[str, Any]]]:
        """Score pending steps (of this env or equal ones) with :meth:`score_batch`: one call per reward function.

        Returns:
            One ``(reward, info)`` per pending step.
        """
        if not pending:
            return []
        rewards, infos = self.score_batch([k for k, _ in pending], np.stack([ids for _, ids in pending]))
        return [(float(r), info) for r, info in zip(rewards, infos, strict=True)]

    def finish_step(self, pending: tuple[int, np.ndarray], score: tuple[float, dict[str, Any]]
                    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """End the episode with its score: ``(prompt obs, reward, True, False, info)``."""
        reward, info = score
        self._last_text = info["response_text"]
        self._done = True
        return self.prompt_obs(), reward, True, False, info

    # Episode state before the first reset.
    _done: bool = False


def check_action(action: Any, max_new_tokens: int, vocab_size: int) -> np.ndarray:
    """``action`` as ``(max_new_tokens,)`` int64 token ids, checked.

    Integer arrays (any integer dtype) and float arrays of whole numbers are accepted.

    Raises:
        ValueError: wrong shape, a dtype that is not integer or float (strings, bools, objects), a float with a
            fraction or a NaN/infinity, or an id outside ``0 .. vocab_size - 1``.
    """
    ids = np.asarray(action)
    if ids.shape != (max_new_tokens,):
        raise ValueError(
            f"Action must be a ({max_new_tokens},) array of token ids (right-padded with the pad id), got "
            f"shape {ids.shape}."
        )
    if np.issubdtype(ids.dtype, np.floating):
        if not np.all(np.isfinite(ids)) or not np.all(np.mod(ids, 1) == 0):
            raise ValueError(f"Action must hold integer token ids, got dtype {ids.dtype} with fractions or "
                             f"NaN/infinite values.")
    elif not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"Action must hold integer token ids, got an array of dtype {ids.dtype}.")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        raise ValueError(
            f"Action holds token id {int(ids[bad][0])} at position {int(np.argmax(bad))}, outside the "
            f"vocabulary 0..{vocab_size - 1}."
        )
    return ids.astype(np.int64)
