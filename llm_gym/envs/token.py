"""TokenEnv: one step = one token (the granularity of token-level PPO and per-token process rewards)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from llm_gym.envs.common import LLMEnvBase
from llm_gym.rewards.steps import IncrementalDecoder

__all__ = ["TokenEnv"]


class _PendingToken(NamedTuple):
    """A token step begun by :meth:`TokenEnv.begin_step`, waiting for its score."""

    kind: str  # "final", "steps" or "none"
    problem_id: int
    token_index: int
    terminated: bool
    truncated: bool
    ids: np.ndarray | None  # "final": (T,) right-padded response; "steps": (t + 1,) prefix; "none": None


class TokenEnv(LLMEnvBase):
    """A math problem per episode; each action is the next token of the response.

    Same constructor arguments, problems, prompts and reward as
    :class:`~llm_gym.envs.sequence.SequenceEnv` (see there); only the step granularity differs.

    Observation (``Dict``): ``input_ids`` ``Box(0, V-1, (L + T,), int64)`` and ``attention_mask``
    ``Box(0, 1, (L + T,), int64)`` with ``L = max_prompt_length``, ``T = max_new_tokens``: positions
    ``0..L-1`` hold the prompt **left-padded** to ``L`` (exactly SequenceEnv's observation), positions
    ``L..L+n-1`` the ``n`` tokens generated so far (mask 1, whatever their id), and the rest is
    right-padding with the pad id (mask 0).

    Action: ``Discrete(V)``, the next token id.

    Episode: ``reset`` picks a problem as SequenceEnv does. ``step`` appends the token. The episode ends
    with ``terminated=True`` on the EOS id (the EOS token is part of the response), or with
    ``truncated=True`` after ``T`` tokens without EOS (``info["truncated_by_length"] = True``).

    Reward: the last step pays the total of the same scorer as SequenceEnv on the same response
    (:meth:`score_batch`, the outcome reward). With process supervision (``process_reward_fn``, see
    SequenceEnv, or the :class:`~llm_gym.wrappers.process.ProcessReward` wrapper) every step reward is
    paid on its step's end token: when token ``t`` completes a step (its text ends an occurrence of
    ``step_delimiter``), the env scores the steps completed so far (:meth:`process_rewards` with
    ``final=False``, the unfinished step is not scored) and pays the step rewards at indices ``<= t`` not
    paid yet; the last token scores every step (the final one ends on it) and pays whatever remains. So
    every other step pays 0.0, the episode's return is the outcome reward plus the sum of
    ``info["step_rewards"]``, and ``info["step_rewards"]`` equals SequenceEnv's for the same response.

    Info: every step has ``problem_id`` and ``token_index`` (0-based index of the token just taken). Reset
    gives SequenceEnv's reset keys (``problem_id``, ``problem``, ``prompt_text``, ``answer``); the last
    step gives SequenceEnv's full step info for the same response (``response_text``,
    ``response_length``, ``reward_components``, ``accuracy``, ``step_rewards``, ``truncated_by_length``)
    plus ``token_index``. One exception: ``truncated_by_length`` is the episode's ``truncated`` flag, so
    it is True for ``T`` tokens without EOS even when they end with pad ids (which SequenceEnv's padding
    rule would read as padding).

    Raises:
        ValueError: as SequenceEnv's constructor.
    """

    def _make_spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        vocab, length = self.lm.vocab_size, self.max_prompt_length + self.max_new_tokens
        observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int64),
        })
        return observation_space, spaces.Discrete(vocab)

    # Episode state before the first reset (reset replaces them with per-instance arrays).
    _response: np.ndarray = np.zeros(0, dtype=np.int64)
    _n: int = 0
    _done: bool = False

    @property
    def n_generated(self) -> int:
        """Tokens generated so far in the current episode."""
        return self._n

    def response_ids(self) -> np.ndarray:
        """The tokens generated so far, ``(n,)`` int64 (a fresh array)."""
        return self._response[: self._n].copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode on ``options["problem_id"]`` (int index) or a random problem.

        Returns:
            ``(obs, info)``: the prompt followed by ``T`` pad positions (``(L + T,)`` ids and mask) and
            SequenceEnv's reset info.

        Raises:
            ValueError: ``problem_id`` outside ``0 .. n_problems - 1``.
        """
        self._select_problem(seed, options)
        T, pad = self.max_new_tokens, self.lm.pad_token_id
        self._ids = np.concatenate([self._prompt["input_ids"], np.full(T, pad, dtype=np.int64)])
        self._mask = np.concatenate([self._prompt["attention_mask"], np.zeros(T, dtype=np.int64)])
        self._response = np.full(T, pad, dtype=np.int64)  # (T,) right-padded, SequenceEnv's action format
        self._n, self._paid, self._done = 0, 0.0, False
        self._decoder = IncrementalDecoder(self.lm.tokenizer)  # finds the tokens that complete a step
        return self._obs(), self._info()

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def begin_step(self, action: int | np.integer | np.ndarray) -> _PendingToken:
        """The first part of ``step``: append one token; say what, if anything, must be scored.

        ``step(action)`` appends the token and, at the end of the response, scores it:
        ``(obs, reward, terminated, truncated, info)`` (see the class docstring).

        Args:
            action: one token id (int, numpy integer, or a 0-d / ``(1,)`` array).

        Returns:
            The pending step: ``"final"`` (the episode ends: score the response), ``"steps"`` (the token
            completes a reasoning step: score the completed steps) or ``"none"``.

        Raises:
            RuntimeError: ``step`` before ``reset`` or after the episode ended.
            ValueError: a non-integer action or a token id outside ``0 .. V-1``.
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before step().")
        if self._done:
            raise RuntimeError("The episode has ended (EOS or max_new_tokens): call reset() before step().")
        token, t = self._check_token(action), self._n
        L = self.max_prompt_length
        self._response[t] = self._ids[L + t] = token
        self._mask[L + t] = 1
        self._n = t + 1
        terminated = token == self.lm.eos_token_id
        truncated = not terminated and self._n == self.max_new_tokens
        self._done = terminated or truncated
        self._decoder.push(token)
        if self._done:
            kind, ids = "final", self._response.copy()
        elif self._decoder.ends_step(self.step_delimiter):  # mid-episode: the completed steps only
            kind, ids = "steps", self.response_ids()
        else:
            kind, ids = "none", None
        return _PendingToken(kind, self._problem_id, t, bool(terminated), bool(truncated), ids)

    def score_pending(self, pending: Sequence[_PendingToken]) -> list[Any]:
        """Score pending token steps (of this env or equal ones): one call per reward function for all.

        The finished responses are decoded and scored together (the env's reward and accuracy once); their
        steps and those completed mid-episode go to ``process_reward_fn`` in ONE call.

        Returns:
            Per pending step: ``(outcome, info)`` for ``"final"``, its step rewards for ``"steps"``, None for
            ``"none"``.
        """
        finals = [r for r, p in enumerate(pending) if p.kind == "final"]
        mids = [r for r, p in enumerate(pending) if p.kind == "steps"]
        out: list[Any] = [None] * len(pending)
        if finals:
            pids = [pending[r].problem_id for r in finals]
            ids = np.stack([pending[r].ids for r in finals])
            texts, n_tokens = self._decode(ids)
            responses = [ids[i, :n] for i, n in enumerate(n_tokens)]
            total, components, accuracy = self._reward_values(pids, texts, responses)
        else:
            pids, ids, n_tokens = [], None, []
        steps = self._step_rewards(pids + [pending[r].problem_id for r in mids],
                                   [ids[i, :n] for i, n in enumerate(n_tokens)] + [pending[r].ids for r in mids],
                                   [True] * len(finals) + [False] * len(mids))
        if finals:
            infos = self._outcome_infos(pids, ids, texts, n_tokens, components, accuracy, steps[:len(finals)])
            for i, r in enumerate(finals):
                out[r] = (float(total[i]), infos[i])
        for i, r in enumerate(mids):
            out[r] = steps[len(finals) + i]
        return out

    def finish_step(self, pending: _PendingToken, score: Any
                    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Pay the step's reward: the outcome plus the unpaid step rewards at the end, due step rewards before."""
        t = pending.token_index
        if pending.kind != "final":
            reward = 0.0 if pending.kind == "none" else self._pay_step_rewards(score, up_to=t)
            return self._obs(), reward, False, False, {"problem_id": self._problem_id, "token_index": t}
        outcome, info = score
        self._last_text = info["response_text"]
        reward = outcome + self._pay_step_rewards(info["step_rewards"], up_to=None)
        info |= {"token_index": t, "truncated_by_length": pending.truncated}
        return self._obs(), float(reward), pending.terminated, pending.truncated, info

    def _response_finished(self) -> bool:
        """The response is finished once the episode ended; before that the tokens are a prefix."""
        return self._done

    def _pay_step_rewards(self, step_rewards: list[tuple[int, float]], up_to: int | None) -> float:
        """Step rewards at token indices ``<= up_to`` (all when None) not paid yet; records the payment."""
        due = sum(float(r) for i, r in step_rewards if up_to is None or i <= up_to) - self._paid
        self._paid += due
        return float(due)

    def _check_token(self, action: int | np.integer | np.ndarray) -> int:
        vocab = self.lm.vocab_size
        a = np.asarray(action)
        ok = a.shape in ((), (1,)) and (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))
        value = a.reshape(-1)[0] if ok else None
        if not ok or not np.isfinite(value) or value % 1 != 0:
            raise ValueError(f"Action must be one integer token id in 0..{vocab - 1}, got {action!r}.")
        token = int(value)
        if not 0 <= token < vocab:
            raise ValueError(f"Token id {token} is outside the vocabulary 0..{vocab - 1}.")
        return token

    def render(self) -> str | None:
        """``"ansi"``: the current prompt and the response generated so far as text."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            text = self.lm.tokenizer.decode(self.response_ids().tolist(), skip_special_tokens=True)
            return f"{self.prompts[self._problem_id]}{text}"
        return None
