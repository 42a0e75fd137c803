"""How an llm-gym env scores responses: its reward (:func:`build_reward`) and :class:`ResponseScoring`.

:class:`ResponseScoring` is the part of :class:`~llm_gym.envs.common.LLMEnvBase` that scores finished
responses: decoding, the env's :class:`~llm_gym.rewards.CombinedReward`, the accuracy reported in ``info``
and process supervision (step rewards from a process reward function). Every method takes a batch and
calls each function once for all of it; the one-response forms (:meth:`ResponseScoring.score_response`,
:meth:`ResponseScoring.process_rewards`) are batches of one. The batch methods read only the env's
configuration (model handle, problems, prompts, reward), never its current episode, so a vector env scores
the rows of all its equal sub-envs with one of them (:meth:`ResponseScoring.scoring_key` says which are
equal).

Every reward function receives ``prompts``, ``responses``, ``answers`` and, as keyword arguments, the fields of
each row's problem (:func:`~llm_gym.envs.problems.problem_fields`: ``problem_ids``, ``solutions``,
``difficulty`` and every extra column), ``completion_ids`` (each response's sampled token ids, EOS included)
when the env has them, and ``trainer_state`` (:class:`~llm_gym.envs.problems.TrainerState`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from llm_gym.envs.problems import TrainerState, problem_fields
from llm_gym.rewards import CombinedReward, boxed_format_reward, math_answer_reward, reward_fn_name
from llm_gym.rewards.process import call_process_reward_fn
from llm_gym.rewards.steps import split_steps

__all__ = ["ResponseScoring", "TrainerState", "build_reward"]

StepRewards = list[tuple[int, float]]


class ResponseScoring:
    """Mixin of :class:`~llm_gym.envs.common.LLMEnvBase`: scoring finished responses in batches.

    Reads the env's ``lm``, ``problems``, ``prompts``, ``reward``, ``max_new_tokens``, ``process_reward_fn``,
    ``step_delimiter``, ``reward_timeout`` and ``_problem_info``.
    """

    #: Set while a subclass's own ``process_rewards`` scores a row for a batch: that row's ``final``.
    _hook_final: bool | None = None
    #: What reward functions receive as ``trainer_state`` (:meth:`set_trainer_state`).
    trainer_state: TrainerState = TrainerState()

    def set_trainer_state(self, state: TrainerState) -> None:
        """Set the ``trainer_state`` reward functions receive from now on (the algorithm calls it before each rollout).

        Args:
            state: A :class:`~llm_gym.envs.problems.TrainerState`.

        Raises:
            TypeError: ``state`` is not a ``TrainerState``.
        """
        if not isinstance(state, TrainerState):
            raise TypeError(f"set_trainer_state takes an llm_gym.envs.problems.TrainerState, got {type(state).__name__}.")
        self.trainer_state = state

    def reward_kwargs(self, problem_ids: Sequence[int], completion_ids: Sequence[Sequence[int]] | None = None
                      ) -> dict[str, Any]:
        """The keyword arguments of the reward functions for ``n`` rows (see the module docstring).

        Args:
            problem_ids: ``n`` problem indices.
            completion_ids: ``n`` lists of token ids (each response's real tokens), or None when unknown.

        Returns:
            :func:`~llm_gym.envs.problems.problem_fields` of the rows' problems, ``completion_ids`` (when given) and
            ``trainer_state``.
        """
        fields = problem_fields([self.problems[k] for k in problem_ids])
        if completion_ids is not None:
            fields["completion_ids"] = [[int(t) for t in ids] for ids in completion_ids]
        return fields | {"trainer_state": self.trainer_state}

    def scoring_key(self) -> tuple:
        """What the batch scoring reads: envs with equal keys score any row alike (compared with ``==``).

        The class, the model handle, ``max_new_tokens``, the reward's functions (by identity), weights and
        timeout, the process reward function and delimiter, and the prompts and problems.
        """
        reward = self.reward
        if isinstance(reward, CombinedReward):
            reward = (type(reward), tuple((name, fn, reward.weights[name]) for name, fn in reward.components.items()),
                      reward.timeout)
        return (type(self), self.lm, self.max_new_tokens, reward, self.process_reward_fn, self.step_delimiter,
                self.reward_timeout, type(self).process_rewards, self.prompts, self.problems)

    # ----------------------------------------------------------------- outcome
    def score_batch(self, problem_ids: Sequence[int], response_ids: np.ndarray
                    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Decode and score ``n`` finished responses, each reward function called once for all of them.

        A pure function of its arguments: it neither needs nor changes the current episode. Row ``r`` gets
        exactly what a ``SequenceEnv`` step gives for ``response_ids[r]`` after a reset on ``problem_ids[r]``
        (same reward, same info): the responses are decoded as one batch, and the env's reward
        (:class:`CombinedReward`: each component once with all ``n``), the accuracy fallback
        (:func:`math_answer_reward`, when ``"accuracy"`` is not a component) and ``process_reward_fn`` are
        each called once.

        Args:
            problem_ids: ``n`` problem indices (``0 .. n_problems - 1``).
            response_ids: ``(n, T)`` int ids, each row right-padded like a ``SequenceEnv`` action (a row
                ends at its first EOS, included; without EOS trailing pad ids are padding).

        Returns:
            ``(rewards, infos)``: ``(n,)`` float64 totals and ``n`` info dicts (the reset info keys of the
            row's problem plus ``response_text``, ``response_length``, ``reward_components``, ``accuracy``,
            ``step_rewards``, ``truncated_by_length``).

        Raises:
            ValueError: ``response_ids`` not 2-D, its row count not ``len(problem_ids)``, or a problem index
                out of range.
            RewardFunctionError: a reward function failed (names it).
        """
        pids, ids = self.check_batch(problem_ids, response_ids)
        if not pids:
            return np.zeros(0, dtype=np.float64), []
        texts, n_tokens = self._decode(ids)
        responses = [ids[r, :n] for r, n in enumerate(n_tokens)]
        total, components, accuracy = self._reward_values(pids, texts, responses)
        step_rewards = self._step_rewards(pids, responses, [True] * len(pids))
        return total, self._outcome_infos(pids, ids, texts, n_tokens, components, accuracy, step_rewards)

    def check_batch(self, problem_ids: Sequence[int], response_ids: np.ndarray) -> tuple[list[int], np.ndarray]:
        """``(problem ids as ints, (n, T) int64 ids)`` of a batch to score.

        Raises:
            ValueError: ``response_ids`` not 2-D with one row per problem id, or a problem index out of range.
        """
        ids = np.asarray(response_ids)
        pids = [int(k) for k in np.asarray(problem_ids).reshape(-1)]
        if ids.ndim != 2 or ids.shape[0] != len(pids):
            raise ValueError(f"score_batch needs (n, T) response ids with n = len(problem_ids) = {len(pids)}, got "
                             f"shape {ids.shape}.")
        bad = [k for k in pids if not 0 <= k < self.n_problems]
        if bad:
            raise ValueError(f"problem_id={bad[0]} is outside 0..{self.n_problems - 1}")
        return pids, ids.astype(np.int64, copy=False)

    def _decode(self, ids: np.ndarray) -> tuple[list[str], list[int]]:
        """``(texts, real token counts)`` of ``(n, T)`` right-padded response ids."""
        import torch

        ids_t = torch.as_tensor(ids)
        mask = self.lm.response_mask(ids_t)  # (n, T)
        return self.lm.decode(ids_t, mask), [int(n) for n in mask.sum(dim=-1).tolist()]

    def _reward_values(self, pids: list[int], texts: list[str], completion_ids: Sequence[Sequence[int]] | None = None
                       ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """``(total (n,), components name -> (n,), accuracy (n,))``: the env's reward once, the accuracy once."""
        prompts, answers = [self.prompts[k] for k in pids], [self.problems[k].answer for k in pids]
        fields = self.reward_kwargs(pids, completion_ids)
        total, components = self.reward.compute(prompts, texts, answers, **fields)
        accuracy = self.accuracy_values(prompts, texts, answers, components, fields)
        return np.asarray(total, dtype=np.float64), components, np.asarray(accuracy, dtype=np.float64)

    def accuracy_values(self, prompts: list[str], texts: list[str], answers: list[str],
                        components: dict[str, np.ndarray], fields: dict[str, Any]) -> np.ndarray:
        """``info["accuracy"]`` of ``n`` scored responses: the ``"accuracy"`` component, else math-verify's check.

        A subclass whose task has its own notion of a correct answer overrides it (one call for all ``n``).

        Args:
            prompts: ``n`` prompts.
            texts: ``n`` responses.
            answers: ``n`` gold answers.
            components: The reward's unweighted components, ``name -> (n,)``.
            fields: The reward functions' keyword arguments (:meth:`reward_kwargs`).

        Returns:
            ``(n,)`` values in [0, 1].
        """
        if "accuracy" in components:
            return components["accuracy"]
        return np.asarray(math_answer_reward(prompts, texts, answers), dtype=np.float64)

    def _outcome_infos(self, pids: list[int], ids: np.ndarray, texts: list[str], n_tokens: list[int],
                       components: dict[str, np.ndarray], accuracy: np.ndarray, step_rewards: list[StepRewards]
                       ) -> list[dict[str, Any]]:
        """The step info of each finished response (see :meth:`score_batch`)."""
        return [self._problem_info(k) | {
            "response_text": texts[r],
            "response_length": n_tokens[r],
            "reward_components": {name: float(v[r]) for name, v in components.items()},
            "accuracy": float(accuracy[r]),
            "step_rewards": [(int(i), float(v)) for i, v in step_rewards[r]],
            "truncated_by_length": bool(n_tokens[r] == self.max_new_tokens and ids[r, -1] != self.lm.eos_token_id),
        } for r, k in enumerate(pids)]

    def score_texts(self, problem_ids: Sequence[int], texts: Sequence[str],
                    completion_ids: Sequence[Sequence[int]] | None = None
                    ) -> list[tuple[float, dict[str, float], float]]:
        """Score ``n`` final answers given as text (multi-turn envs) with the env's reward, one call for all.

        Args:
            problem_ids: ``n`` problem indices.
            texts: ``n`` answers.
            completion_ids: The answers' token ids (reward functions' ``completion_ids``), or None.

        Returns:
            ``n`` tuples ``(total, components, accuracy)``: the weighted reward, ``name -> unweighted value``
            and the accuracy (the ``"accuracy"`` component, else :func:`~llm_gym.rewards.math_answer_reward`).

        Raises:
            RewardFunctionError: a reward function failed (names it).
        """
        pids = [int(k) for k in problem_ids]
        if not pids:
            return []
        total, components, accuracy = self._reward_values(pids, list(texts), completion_ids)
        return [(float(total[r]), {name: float(v[r]) for name, v in components.items()}, float(accuracy[r]))
                for r in range(len(pids))]

    def score_response(self, response_ids: np.ndarray) -> tuple[float, dict[str, Any]]:
        """Decode and score one finished response of the current problem (:meth:`score_batch` on one row).

        Args:
            response_ids: ``(T,)`` int64 ids, right-padded with the pad id.

        Returns:
            ``(total, info)`` as one row of :meth:`score_batch`.

        Raises:
            RuntimeError: before the first ``reset``.
            RewardFunctionError: a reward function failed (names it).
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before score_response(): the response is scored against a problem.")
        rewards, infos = self.score_batch([self._problem_id], np.asarray(response_ids)[None])
        self._last_text = infos[0]["response_text"]
        return float(rewards[0]), infos[0]

    # ----------------------------------------------------------------- process supervision
    def _response_finished(self) -> bool:
        """Whether the response being scored is complete (``process_rewards``' default ``final``)."""
        return True

    def process_rewards(self, response_ids: np.ndarray, final: bool | None = None) -> StepRewards:
        """Process supervision: ``(token_index, reward)`` at the end of every scored step of a response.

        The response is split into steps at ``step_delimiter`` (:func:`~llm_gym.rewards.split_steps`: a step
        ends at the token holding the delimiter's last character; the final step at the last token, EOS
        included), ``process_reward_fn`` scores the steps of the current problem (validated by
        :func:`~llm_gym.rewards.call_process_reward_fn`), and each non-None value is placed at its step's end
        token. Without ``process_reward_fn`` the result is ``[]``.

        Causal: with ``final=False`` only the steps completed by a delimiter are scored (the unfinished last
        segment is not), so the rewards at indices ``<= t`` depend only on tokens ``0..t`` as long as the
        scorer scores step k from steps ``0..k``. :class:`~llm_gym.envs.token.TokenEnv` scores the prefix
        generated so far whenever a token completes a step and pays each reward at its token index. A
        subclass may override it (one argument is enough) under the same causality rule; batches then call
        it once per response.

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
        if final is None:
            final = self._response_finished() if self._hook_final is None else self._hook_final
        return self._batch_process_rewards([self._problem_id], [response_ids], [bool(final)])[0]

    def _batch_process_rewards(self, problem_ids: Sequence[int], responses: Sequence[np.ndarray],
                               finals: Sequence[bool]) -> list[StepRewards]:
        """:meth:`process_rewards` of ``n`` responses with ONE call of ``process_reward_fn``.

        Each response is split into steps (``finals[r]``: whether its last segment is a step); the responses
        with at least one step are scored together in one :func:`call_process_reward_fn` call (a response
        without steps is not passed: the function never sees an empty step list).

        Args:
            problem_ids: ``n`` problem indices.
            responses: ``n`` arrays ``(n_i,)`` of real tokens (EOS included, no padding).
            finals: ``n`` flags.

        Returns:
            ``n`` lists of ``(token_index, reward)``.
        """
        out: list[StepRewards] = [[] for _ in problem_ids]
        if self.process_reward_fn is None:
            return out
        steps = [split_steps(ids, self.lm.tokenizer, self.step_delimiter, final=final)
                 for ids, final in zip(responses, finals, strict=True)]
        rows = [r for r, row_steps in enumerate(steps) if row_steps]
        if not rows:
            return out
        pids = [problem_ids[r] for r in rows]
        values = call_process_reward_fn(self.process_reward_fn, [self.prompts[k] for k in pids],
                                        [[s.text for s in steps[r]] for r in rows],
                                        [self.problems[k].answer for k in pids], timeout=self.reward_timeout,
                                        **self.reward_kwargs(pids, [responses[r] for r in rows]))
        for r, row_values in zip(rows, values, strict=True):
            out[r] = [(step.end_index, v) for step, v in zip(steps[r], row_values, strict=True) if v is not None]
        return out

    def _step_rewards(self, problem_ids: Sequence[int], responses: Sequence[np.ndarray], finals: Sequence[bool]
                      ) -> list[StepRewards]:
        """Step rewards of ``n`` responses: one batched call, or a subclass's :meth:`process_rewards` per row.

        A subclass (or a test) that overrides :meth:`process_rewards` keeps its per-response hook: it is
        called once per response with the env's problem set to that response's problem and its default
        ``final`` set to ``finals[r]``.
        """
        if type(self).process_rewards is ResponseScoring.process_rewards:
            return self._batch_process_rewards(problem_ids, responses, finals)
        current, out = self._problem_id, []
        try:
            for k, ids, final in zip(problem_ids, responses, finals, strict=True):
                self._problem_id, self._hook_final = int(k), bool(final)
                out.append(self.process_rewards(ids))
        finally:
            self._problem_id, self._hook_final = current, None
        return out


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
    return CombinedReward({reward_fn_name(reward_fn): reward_fn}, **kwargs)
