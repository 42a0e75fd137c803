"""The multi-turn env base: :class:`MultiTurnEnv` (one step = one assistant turn) and :class:`TurnResult`.

See :mod:`llm_gym.envs.multiturn` for the family; subclasses implement :meth:`MultiTurnEnv.respond`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from llm_gym.envs.common import LLMEnvBase
from llm_gym.envs.sequence import check_action
from llm_gym.lm import LanguageModel
from llm_gym.text import encode_message, valid_text
from llm_gym.validation import check_int

__all__ = ["MultiTurnEnv", "TurnResult", "is_multi_turn"]


def is_multi_turn(observation_space: spaces.Space) -> bool:
    """True for a multi-turn env's observation space (a ``Dict`` with an ``assistant_mask``).

    The one test of "is this env multi-turn" for wrappers (``env.observation_space``) and algorithms (the
    model's ``observation_space``): :class:`MultiTurnEnv` observations carry the ``assistant_mask``.
    """
    return isinstance(observation_space, spaces.Dict) and "assistant_mask" in observation_space.spaces

# Content of the stand-in assistant message whose end the chat template's end-of-turn text follows.
_PLACEHOLDER = "ASSISTANT_TURN_PLACEHOLDER"


@dataclass(frozen=True)
class TurnResult:
    """The env's answer to one assistant turn, returned by :meth:`MultiTurnEnv.respond`.

    Attributes:
        message: The env's reply (a tool result, feedback), appended to the conversation as a ``role``
            message; None = the turn is final and the episode terminates.
        reward: This step's reward (e.g. the outcome reward on a final turn, a tool-call cost on others).
        reward_components: ``name -> value`` reported as ``info["reward_components"]`` for this step.
        accuracy: On a final turn, ``info["accuracy"]`` (1.0 correct, 0.0 not); None =
            ``reward_components.get("accuracy", 0.0)``.
        role: Chat role of ``message``, ``"user"`` or ``"tool"`` (any role the chat template renders).
        info: Extra ``info`` keys for this step (e.g. ``"tool_calls"``).
        score_answer: True for a final turn (``message`` None) that the env scores with its own reward
            (``reward_fn``), as a :class:`~llm_gym.envs.sequence.SequenceEnv` scores a response: ``reward``,
            ``reward_components`` and ``accuracy`` are then filled in by the env, in ONE call for every
            sub-env of a vector env whose final turn comes on the same vector step. Leave them at their
            defaults.

    Raises:
        ValueError: ``score_answer`` with a ``message`` (only a final turn is scored as an answer).
    """

    message: str | None
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    role: str = "user"
    info: dict[str, Any] = field(default_factory=dict)
    score_answer: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.message, str):  # valid text for the tokenizer: a lone surrogate becomes U+FFFD
            object.__setattr__(self, "message", valid_text(self.message))
        if self.score_answer and self.message is not None:
            raise ValueError("TurnResult(score_answer=True) is for a final turn: set message=None (the episode "
                             "ends), or score_answer=False for a turn the env answers.")


class _PendingTurn(NamedTuple):
    """A turn begun by :meth:`MultiTurnEnv.begin_step`, waiting for the env's score of its answer (if any)."""

    problem_id: int
    turn: np.ndarray  # (n,) the turn's real token ids
    closed: bool  # the turn ended with EOS
    text: str
    result: TurnResult


class MultiTurnEnv(LLMEnvBase):
    """A conversation per episode; each action is one assistant turn; the env answers until a final turn.

    Token in, token out: the observation holds the exact token ids of the conversation so far. The
    policy's sampled ids are appended verbatim (never decoded and re-encoded, so the log-probs the
    sampler computed stay the trainer's); only the env's own messages are tokenized.

    Observation (``Dict`` of ``Box(int64, (C,))``, ``C = max_context_length``), **left-padded** with the
    pad id like SequenceEnv's prompt (the conversation ends at position ``C - 1``, so ``model.generate``
    takes it as is):

    * ``input_ids``: the prompt (chat template applied), then for each turn the turn's ids and the env
      message's ids.
    * ``attention_mask``: 1 on the conversation, 0 on padding.
    * ``assistant_mask``: 1 exactly on the tokens the policy sampled (every turn, its EOS included), 0 on
      the prompt, env messages and padding.

    Action: ``Box(int64, (max_new_tokens,))``, one turn, with SequenceEnv's padding rule (the turn ends at
    its first EOS, included; without EOS trailing pad ids are padding).

    Env messages (:meth:`message_ids`): after a non-final turn the env appends "end of the assistant turn
    (when the policy did not emit it) + the message as a ``role`` message + the assistant generation
    prompt". With a chat template this text is the suffix the template adds when the message is appended
    to a conversation (rendered with and without it). A turn that ends with EOS keeps its sampled EOS and
    the env's text starts after the template's EOS. A turn cut by ``max_new_tokens`` without EOS is closed
    by the env: its end-of-turn text (EOS included) is env-inserted (``assistant_mask`` 0) and the
    episode goes on; ``info["truncated_by_length"]`` reports the cut. Without a chat template (or with
    ``chat_template=False``) the plain-text format is ``"\\n{Role}: {message}\\nAssistant: "`` (``Role`` =
    ``role.capitalize()``) after the turn as sampled.

    Episode: ``reset`` picks a problem as SequenceEnv does. ``step`` appends the turn and calls
    :meth:`respond`. ``terminated`` when it returns no message (a final turn); ``truncated`` after
    ``max_turns`` turns, or when the message plus a full next turn (``max_new_tokens``) would not fit in
    ``C`` (the context budget is spent). A message that ends the episode by truncation is not appended
    (no turn would read it). The reward of each step is :attr:`TurnResult.reward` (0.0 on intermediate
    turns unless the subclass charges, e.g., a tool-call cost); the outcome reward comes with the final turn.

    Context budget ``C``: ``max_context_length``, or by default
    ``L + max_turns * T + (max_turns - 1) * max_message_tokens`` capped at the model's context length
    (``L = max_prompt_length``, ``T = max_new_tokens``): room for the prompt, every turn and one message
    of up to ``max_message_tokens`` between turns. Messages longer than that use up the budget sooner.

    Info: reset gives SequenceEnv's reset keys plus the conversation keys below with ``turns = 0``. Every
    step adds ``turns`` (assistant turns so far), ``response_text`` (this turn, special tokens skipped),
    ``response_length`` (its tokens), ``truncated_by_length`` (cut at ``max_new_tokens`` without EOS),
    ``env_message`` (the text appended after this turn, or None), ``reward_components`` (this step's),
    ``step_rewards`` (always ``[]``: no process supervision at turn level yet), ``truncated_by_turns``,
    ``truncated_by_context`` and the subclass's :attr:`TurnResult.info`. Conversation keys:
    ``conversation_text`` (the unpadded conversation decoded with special tokens), ``turn_spans``
    (``(start, end)`` token indices of each turn in the unpadded conversation, end exclusive; add
    ``C - n`` for positions in the observation, ``n`` the conversation length), ``prompt_token_count``,
    ``assistant_token_count`` and ``env_token_count`` (tokens of env messages). The last step also has
    ``accuracy`` and ``episode_reward_components`` (each component summed over the episode's steps).
    Invariant: conversation = prompt ids + concatenation over turns of (turn ids + message ids), so
    ``n = prompt_token_count + assistant_token_count + env_token_count``.

    Args:
        model: As SequenceEnv (any :class:`~llm_gym.envs.sequence.SequenceEnv` keyword argument passes
            through ``**kwargs``: ``task``, ``dataset``, ``max_new_tokens``, ``max_prompt_length``,
            ``reward_fn``, ``prompt_template``, ``system_prompt``, ``chat_template``, ``seed``, ...).
            ``task`` is any name of :data:`llm_gym.tasks.TASKS` (``"arithmetic_tool"``:
            :func:`~llm_gym.tasks.arithmetic_tool.arithmetic_tool_problems`) or a ``.jsonl`` path.
        max_turns: Most assistant turns per episode, an integer >= 1.
        max_context_length: ``C`` in tokens, an integer with ``L + T <= C <=`` the model's context; None =
            the default rule above.
        max_message_tokens: Tokens budgeted per env message in the default ``C``, an integer >= 0.
        **kwargs: LLMEnvBase's arguments.

    Raises:
        ValueError: a bad ``max_turns`` / ``max_context_length`` / ``max_message_tokens`` (named, with the
            range), a ``C`` that cannot hold the prompt and one turn or exceeds the model's context, a
            ``process_reward_fn`` (not supported at turn level), a chat template that cannot append a
            message as a suffix (pass ``chat_template=False``), or any SequenceEnv constructor error.
    """

    #: Roles the env's messages use; each is rendered once at construction so a template that rejects it
    #: fails early.
    message_roles: tuple[str, ...] = ("user",)

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        max_turns: int = 4,
        max_context_length: int | None = None,
        max_message_tokens: int = 64,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        self.max_turns = check_int("max_turns", max_turns, minimum=1, owner=owner)
        self._context_arg = check_int(
            "max_context_length", max_context_length, minimum=1, allow_none=True, owner=owner
        )
        self.max_message_tokens = check_int("max_message_tokens", max_message_tokens, minimum=0, owner=owner)
        if kwargs.get("process_reward_fn") is not None:
            raise ValueError(
                f"{owner}: process_reward_fn is not supported in multi-turn episodes yet (step "
                f"rewards are per response); leave it None and use the outcome reward."
            )
        super().__init__(model, **kwargs)
        self._system_prompt = kwargs.get("system_prompt")
        self._chat = bool(kwargs.get("chat_template", True)) and self.lm.tokenizer.chat_template is not None
        for role in self.message_roles:
            self.message_text("probe", role, closed=True)  # a template that cannot append a message fails now
        self._conv = np.zeros(0, dtype=np.int64)
        self._assistant = np.zeros(0, dtype=np.int64)
        self._spans: list[tuple[int, int]] = []
        self._n_prompt = self._n_env = self._turns = 0
        self._totals: dict[str, float] = {}
        self._done = False

    # ----------------------------------------------------------------- spaces and budget
    def _make_spaces(self) -> tuple[spaces.Dict, spaces.Box]:
        self.max_context_length = self._context_budget()
        vocab, C = self.lm.vocab_size, self.max_context_length
        observation_space = spaces.Dict(
            {
                "input_ids": spaces.Box(0, vocab - 1, shape=(C,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(C,), dtype=np.int64),
                "assistant_mask": spaces.Box(0, 1, shape=(C,), dtype=np.int64),
            }
        )
        return observation_space, spaces.Box(0, vocab - 1, shape=(self.max_new_tokens,), dtype=np.int64)

    def _context_budget(self) -> int:
        """``C`` (tokens): ``max_context_length`` checked, or the default rule of the class docstring."""
        L, T, n, context = self.max_prompt_length, self.max_new_tokens, self.max_turns, self.lm.context_length
        if self._context_arg is None:
            return min(L + n * T + (n - 1) * self.max_message_tokens, context)
        C, owner = self._context_arg, type(self).__name__
        if C < L + T:
            raise ValueError(
                f"{owner}: max_context_length={C} cannot hold the prompt (max_prompt_length={L}) and "
                f"one turn (max_new_tokens={T}): raise it to at least {L + T}, or pass None."
            )
        if C > context:
            raise ValueError(
                f"{owner}: max_context_length={C} exceeds the model's context of {context} tokens: "
                f"lower it, or pass None for the default budget."
            )
        return C

    # ----------------------------------------------------------------- env messages
    def message_text(self, message: str, role: str = "user", closed: bool = True) -> str:
        """The text appended after a turn: end of turn (unless ``closed``) + message + generation prompt.

        With a chat template: the suffix the template adds when a ``role`` message is appended to a
        conversation that ends with an assistant turn (rendered without and with it, generation prompt
        on), starting right after the assistant's content. When ``closed`` (the policy emitted EOS) the
        template's EOS text (and whitespace before it) is left out, as the sampled EOS is already there.
        Without a chat template: ``"\\n{Role}: {message}\\nAssistant: "``.

        Args:
            message: The env's message.
            role: Its chat role (``"user"``, ``"tool"``, ...).
            closed: Whether the turn ended with the policy's EOS.

        Returns:
            The text to tokenize.

        Raises:
            ValueError: the template rejects ``role`` or does not render the longer conversation as a
                continuation of the shorter one (the message says to pass ``chat_template=False``).
        """
        if not self._chat:
            return f"\n{role.capitalize()}: {message}\nAssistant: "
        from jinja2 import TemplateError

        system = [{"role": "system", "content": self._system_prompt}] if self._system_prompt else []
        history = [*system, {"role": "user", "content": "Q"}, {"role": "assistant", "content": _PLACEHOLDER}]
        template = self.lm.tokenizer.apply_chat_template
        try:
            before = template(history, tokenize=False)
            after = template(
                [*history, {"role": role, "content": message}], tokenize=False, add_generation_prompt=True
            )
        except TemplateError as exc:
            raise ValueError(
                f"{type(self).__name__}: the model's chat template cannot render a {role!r} message "
                f"after an assistant turn ({exc}); use a role it accepts (e.g. 'user') or pass "
                f"chat_template=False for the plain-text format."
            ) from exc
        end = before.rfind(_PLACEHOLDER)
        if end < 0 or not after.startswith(before):
            raise ValueError(
                f"{type(self).__name__}: the model's chat template does not render a conversation "
                f"as a prefix of its continuation, so a message cannot be appended token-in/token-out; "
                f"pass chat_template=False for the plain-text format."
            )
        suffix = after[end + len(_PLACEHOLDER) :]
        eos = self.lm.tokenizer.eos_token
        at = suffix.find(eos) if closed and eos else -1
        if at >= 0 and not suffix[:at].strip():
            suffix = suffix[at + len(eos) :]
        return suffix

    def message_ids(self, message: str, role: str = "user", closed: bool = True) -> np.ndarray:
        """Token ids of :meth:`message_text`, ``(m,)`` int64 (no special tokens added), as a step appends.

        The message is the policy's text as far as the tokenizer goes: lone surrogates become U+FFFD and
        special-token text in it (``"<|im_end|>"``) is encoded as plain text, never as the special token
        (:func:`llm_gym.text.encode_message`); only the chat template's own special tokens are special.
        """
        message = valid_text(message)
        ids = encode_message(self.lm.tokenizer, self.message_text(message, role, closed), message,
                             lambda content: self.message_text(content, role, closed))
        return np.asarray(ids, dtype=np.int64)

    # ----------------------------------------------------------------- subclass hooks
    def respond(self, turn_text: str) -> TurnResult:
        """The env's answer to a turn: a message (the episode goes on) or None (final), with its reward.

        Called once per step, after the turn's text is decoded; the current problem is
        ``self.problems[self._problem_id]`` and :attr:`turns` counts the earlier turns.

        Args:
            turn_text: The turn decoded with special tokens skipped.

        Returns:
            A :class:`TurnResult`.

        Raises:
            NotImplementedError: in the base class; subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement respond(turn_text) -> TurnResult.")

    def score_text(self, text: str) -> tuple[float, dict[str, float], float]:
        """Score a final answer to the current problem with the env's reward (:meth:`score_texts` on one row).

        Args:
            text: The final turn's text.

        Returns:
            ``(total, components, accuracy)``: the weighted reward, ``name -> unweighted value`` and the
            accuracy (the ``"accuracy"`` component, else :func:`~llm_gym.rewards.math_answer_reward`).

        Raises:
            RewardFunctionError: a reward function failed (names it).
        """
        return self.score_texts([self._problem_id], [text])[0]

    # ----------------------------------------------------------------- episode
    @property
    def turns(self) -> int:
        """Assistant turns taken in the current episode."""
        return self._turns

    def conversation_ids(self) -> np.ndarray:
        """The unpadded conversation so far, ``(n,)`` int64 (a fresh array)."""
        return self._conv.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode on ``options["problem_id"]`` (int index) or a random problem.

        Returns:
            ``(obs, info)``: the left-padded prompt (``(C,)`` arrays) and the reset info.

        Raises:
            ValueError: ``problem_id`` outside ``0 .. n_problems - 1``.
        """
        self._select_problem(seed, options)
        self._conv = self._prompt["input_ids"][self._prompt["attention_mask"].astype(bool)].copy()
        self._assistant = np.zeros(len(self._conv), dtype=np.int64)
        self._spans, self._n_prompt, self._n_env, self._turns = [], len(self._conv), 0, 0
        self._totals, self._done = {}, False
        return self._obs(), self._info() | {"turns": 0} | self._conversation_info()

    def _obs(self) -> dict[str, np.ndarray]:
        C, n = self.max_context_length, len(self._conv)
        ids = np.full(C, self.lm.pad_token_id, dtype=np.int64)
        mask, assistant = np.zeros(C, dtype=np.int64), np.zeros(C, dtype=np.int64)
        ids[C - n :], mask[C - n :], assistant[C - n :] = self._conv, 1, self._assistant
        return {"input_ids": ids, "attention_mask": mask, "assistant_mask": assistant}

    def _append(self, ids: np.ndarray, assistant: bool) -> None:
        self._conv = np.concatenate([self._conv, ids])
        self._assistant = np.concatenate([self._assistant, np.full(len(ids), int(assistant), dtype=np.int64)])

    def _conversation_info(self) -> dict[str, Any]:
        return {
            "conversation_text": self.lm.tokenizer.decode(self._conv.tolist(), skip_special_tokens=False),
            "turn_spans": list(self._spans),
            "prompt_token_count": self._n_prompt,
            "assistant_token_count": int(self._assistant.sum()),
            "env_token_count": self._n_env,
        }

    def _read_turn(self, action: Any) -> tuple[np.ndarray, bool]:
        """``(turn ids (n,), closed)``: the action's real tokens and whether they end with EOS."""
        import torch

        ids = check_action(action, self.max_new_tokens, self.lm.vocab_size)
        n = int(self.lm.response_mask(torch.as_tensor(ids[None]))[0].sum())
        turn = ids[:n]
        return turn, bool(n > 0 and turn[-1] == self.lm.eos_token_id)

    def begin_step(self, action: Any) -> _PendingTurn:
        """The first part of ``step``: read the turn and let the env answer it (:meth:`respond`).

        ``step(action)`` appends one assistant turn, lets the env answer it and appends the answer:
        ``(obs, reward, terminated, truncated, info)`` (see the class docstring). A final turn whose
        :class:`TurnResult` has ``score_answer`` is scored in :meth:`score_pending`.

        Args:
            action: ``(max_new_tokens,)`` int token ids (see the class docstring for the padding rule).

        Returns:
            The pending turn.

        Raises:
            RuntimeError: ``step`` before ``reset`` or after the episode ended.
            ValueError: wrong action shape, a non-integer id or a token id outside ``0 .. V-1``.
            TypeError: :meth:`respond` returned something other than a :class:`TurnResult`.
        """
        if self._problem_id is None:
            raise RuntimeError("Call reset() before step().")
        if self._done:
            raise RuntimeError(
                "The episode has ended (a final turn, max_turns or the context budget): call reset() "
                "before step()."
            )
        turn, closed = self._read_turn(action)
        text = self.lm.tokenizer.decode(turn.tolist(), skip_special_tokens=True)
        result = self.respond(text)
        if not isinstance(result, TurnResult):
            raise TypeError(
                f"{type(self).__name__}.respond must return a TurnResult, got {type(result).__name__}."
            )
        return _PendingTurn(self._problem_id, turn, closed, text, result)

    def score_pending(self, pending: Sequence[_PendingTurn]) -> list[tuple[float, dict[str, float], float] | None]:
        """Score the final answers among pending turns (of this env or equal ones): ONE call of the env's reward.

        Returns:
            Per pending turn, ``(total, components, accuracy)`` (:meth:`score_texts`) when its
            :class:`TurnResult` asks for ``score_answer``, else None.
        """
        rows = [r for r, p in enumerate(pending) if p.result.score_answer]
        out: list[tuple[float, dict[str, float], float] | None] = [None] * len(pending)
        scores = self.score_texts([pending[r].problem_id for r in rows], [pending[r].text for r in rows],
                                  [pending[r].turn for r in rows])
        for r, score in zip(rows, scores, strict=True):
            out[r] = score
        return out

    def finish_step(self, pending: _PendingTurn, score: tuple[float, dict[str, float], float] | None
                    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Append the turn and the env's answer; the step's ``(obs, reward, terminated, truncated, info)``."""
        turn, closed, text, result = pending.turn, pending.closed, pending.text, pending.result
        if score is not None:
            total, components, accuracy = score
            result = dataclasses.replace(result, reward=total, reward_components=components, accuracy=accuracy)
        self._spans.append((len(self._conv), len(self._conv) + len(turn)))
        self._append(turn, assistant=True)
        self._turns += 1
        terminated, reason, message = result.message is None, None, None
        if not terminated and self._turns >= self.max_turns:
            reason = "turns"
        elif not terminated:
            ids = self.message_ids(result.message, result.role, closed)
            if len(self._conv) + len(ids) + self.max_new_tokens > self.max_context_length:
                reason = "context"
            else:
                self._append(ids, assistant=False)
                self._n_env += len(ids)
                message = result.message
        self._done = terminated or reason is not None
        for name, value in result.reward_components.items():
            self._totals[name] = self._totals.get(name, 0.0) + float(value)
        info = (
            self._info()
            | {
                "turns": self._turns,
                "response_text": text,
                "response_length": len(turn),
                "truncated_by_length": bool(not closed and len(turn) == self.max_new_tokens),
                "env_message": message,
                "reward_components": {k: float(v) for k, v in result.reward_components.items()},
                "step_rewards": [],
                "truncated_by_turns": reason == "turns",
                "truncated_by_context": reason == "context",
            }
            | self._conversation_info()
            | result.info
        )
        if self._done:
            accuracy = 0.0  # truncated: no final answer
            if terminated:
                accuracy = (
                    result.reward_components.get("accuracy", 0.0)
                    if result.accuracy is None
                    else result.accuracy
                )
            info |= {"accuracy": float(accuracy), "episode_reward_components": dict(self._totals)}
        return self._obs(), float(result.reward), bool(terminated), reason is not None, info

    def render(self) -> str | None:
        """``"ansi"``: the conversation so far as text (special tokens included)."""
        if self.render_mode == "ansi" and self._problem_id is not None:
            return self.lm.tokenizer.decode(self._conv.tolist(), skip_special_tokens=False)
        return None
