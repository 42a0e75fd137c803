"""Adapters from other libraries' reward-function conventions to llm-gym's.

:func:`from_trl` turns a reward function written for TRL's ``GRPOTrainer`` (documented at
https://huggingface.co/docs/trl/grpo_trainer, "Using a custom reward function") into an llm-gym reward
function, so the same function scores in both trainers.

>>> def reward_len(completions, **kwargs):       # TRL's documented example
...     return [-abs(20 - len(completion)) for completion in completions]
>>> fn = from_trl(reward_len)
>>> fn(["2 + 3 = ?"], ["The answer is 5."], ["5"]), fn.__name__
([-4], 'reward_len')
"""

from __future__ import annotations

import asyncio
import inspect
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

from llm_gym.rewards.base import reward_fn_name

__all__ = ["TRL_FIELD_NAMES", "TRLReward", "from_trl"]

#: llm-gym problem fields renamed to the dataset-column names TRL reward functions read.
TRL_FIELD_NAMES = {"solutions": "solution", "problem_ids": "problem_id"}
#: Fields that are not dataset columns for TRL: the columns GRPOTrainer leaves out, and llm-gym's call arguments.
_NOT_COLUMNS = ("prompt", "completion", "completion_ids", "trainer_state")


def _no_op(*args: Any, **kwargs: Any) -> None:
    """Stands in for TRL's ``log_extra`` / ``log_metric`` callbacks (nothing is logged)."""


def _checked_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer to encode ``completion_ids`` with (None for None), checked now.

    Args:
        tokenizer: None, a Hugging Face tokenizer, or an object holding one in ``.tokenizer`` (a
            :class:`~llm_gym.lm.LanguageModel`).

    Returns:
        An object whose ``encode(text, add_special_tokens=False)`` returns a list of ints, or None.

    Raises:
        TypeError: ``tokenizer`` is a name or path (load the tokenizer first), has no ``encode``, or its
            ``encode(text, add_special_tokens=False)`` fails or does not return token ids.
    """
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, bytes, os.PathLike)):
        raise TypeError(
            f"from_trl: tokenizer must be a tokenizer object, got the {type(tokenizer).__name__} {tokenizer!r}. "
            f"Load it first: from_trl(fn, tokenizer=AutoTokenizer.from_pretrained({str(tokenizer)!r})), or pass "
            f"the env's LanguageModel (env.unwrapped.lm)."
        )
    tok = tokenizer if callable(getattr(tokenizer, "encode", None)) else getattr(tokenizer, "tokenizer", None)
    if tok is None or not callable(getattr(tok, "encode", None)):
        raise TypeError(f"from_trl: tokenizer must be a Hugging Face tokenizer (or a LanguageModel), got "
                        f"{type(tokenizer).__name__}, which has no encode method.")
    try:
        ids = tok.encode("The answer is 42.", add_special_tokens=False)
        valid = all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids)
    except Exception as exc:  # noqa: BLE001 - any failure: not a usable tokenizer
        raise TypeError(f"from_trl: tokenizer.encode(text, add_special_tokens=False) failed on a test text "
                        f"({type(exc).__name__}: {exc}); pass a Hugging Face tokenizer (or a LanguageModel).") from exc
    if not valid:
        raise TypeError(f"from_trl: tokenizer.encode(text, add_special_tokens=False) must return token ids (ints), "
                        f"got {ids!r:.80}; pass a Hugging Face tokenizer (or a LanguageModel).")
    return tok


def _as_list(value: Any) -> Any:
    """A per-row field as a list (tuples too); anything else as it is."""
    return list(value) if isinstance(value, (list, tuple)) else value


def trl_kwargs(answers: Sequence[str], problem_fields: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a TRL reward function gets besides prompts, completions and completion_ids.

    Dataset columns: ``answer`` (the gold answers), ``solution`` and ``problem_id`` (llm-gym's
    ``solutions`` / ``problem_ids`` fields), then every other problem field under its own name (a problem's
    own column wins over the first three: a ``solution`` column is passed as read); like GRPOTrainer, no
    ``prompt`` or ``completion`` column. Trainer arguments: ``trainer_state`` (the env's
    :class:`~llm_gym.envs.problems.TrainerState`, with ``global_step``; None when the caller passed none), and
    no-op ``log_extra`` and ``log_metric`` callables.
    """
    renamed = {TRL_FIELD_NAMES[key]: _as_list(value) for key, value in problem_fields.items()
               if key in TRL_FIELD_NAMES}
    columns = {key: _as_list(value) for key, value in problem_fields.items()
               if key not in TRL_FIELD_NAMES and key not in _NOT_COLUMNS}
    return {"answer": list(answers), **renamed, **columns, "trainer_state": problem_fields.get("trainer_state"),
            "log_extra": _no_op, "log_metric": _no_op}


def call_trl(fn: Callable[..., Any], is_async: bool, completion_ids: list[list[int]] | None,
             prompts: Sequence[str], responses: Sequence[str], answers: Sequence[str],
             problem_fields: dict[str, Any]) -> Any:
    """Call a TRL reward function as ``GRPOTrainer`` does (module level, so a worker process can run it).

    Args:
        fn: The TRL reward function.
        is_async: ``fn`` is an ``async def`` function (run with ``asyncio.run``).
        completion_ids: The responses' token ids, or None.
        prompts: ``N`` prompts.
        responses: ``N`` responses (TRL's ``completions``).
        answers: ``N`` gold answers (TRL's ``answer`` column).
        problem_fields: llm-gym's keyword arguments of the call (see :func:`trl_kwargs`).

    Returns:
        What ``fn`` returns (validated later by :func:`~llm_gym.rewards.call_reward_fn`).
    """
    out = fn(prompts=list(prompts), completions=list(responses), completion_ids=completion_ids,
             **trl_kwargs(answers, problem_fields))
    return asyncio.run(out) if is_async else out


class TRLReward:
    """An llm-gym reward function that calls a TRL ``GRPOTrainer`` reward function (:func:`from_trl` builds it).

    A module-level class holding the TRL function, so it pickles whenever that function does (a module-level
    ``def``): a call with ``timeout=`` then runs in a worker process that is killed when it overruns
    (:mod:`llm_gym.rewards.worker`). The tokenizer stays in this process: :meth:`for_worker` encodes
    ``completion_ids`` here and sends only the ids.

    Args:
        fn: The TRL reward function.
        tokenizer: The tokenizer for ``completion_ids`` (checked by :func:`from_trl`), or None.
        name: The name to log under.

    Attributes:
        fn: The TRL reward function (also ``__wrapped__``).
        tokenizer: The Hugging Face tokenizer, or None.
        is_async: ``fn`` is an ``async def`` function.
    """

    def __init__(self, fn: Callable[..., Any], tokenizer: Any, name: str) -> None:
        self.fn = fn
        self.tokenizer = tokenizer
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
        self.__name__ = self.__qualname__ = name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def completion_ids(self, responses: Sequence[str], problem_fields: dict[str, Any] | None = None
                       ) -> list[list[int]] | None:
        """Each response re-encoded without special tokens with ``tokenizer``; without one, the env's sampled ids.

        Args:
            responses: ``N`` responses.
            problem_fields: The call's keyword arguments; their ``completion_ids`` (the ids the env scored, EOS
                included) are used when there is no tokenizer.

        Returns:
            ``N`` lists of token ids, or None (no tokenizer and no ``completion_ids`` field).
        """
        if self.tokenizer is None:
            return (problem_fields or {}).get("completion_ids")
        return [list(self.tokenizer.encode(r, add_special_tokens=False)) for r in responses]

    def __call__(self, prompts: list[str], responses: list[str], answers: list[str], **problem_fields: Any) -> Any:
        """``fn(prompts=, completions=, completion_ids=, answer=, ...)``: the TRL function's list, as it is."""
        return call_trl(self.fn, self.is_async, self.completion_ids(responses, problem_fields), prompts, responses,
                        answers, problem_fields)

    def for_worker(self, args: tuple, kwargs: dict[str, Any]) -> _TRLCall:
        """What a worker process runs for the call ``self(*args, **kwargs)``: no tokenizer, the ids computed here.

        Args:
            args: ``(prompts, responses, answers)``.
            kwargs: The problem fields.

        Returns:
            A picklable (when ``fn`` is) callable with this reward's name that calls ``fn`` with those ids.
        """
        return _TRLCall(self.fn, self.is_async, self.completion_ids(args[1], kwargs), self.__name__)

    def __repr__(self) -> str:
        return f"from_trl({reward_fn_name(self.fn)}, name={self.__name__!r})"


class _TRLCall:
    """A :class:`TRLReward` call as sent to a worker process: the TRL function and the responses' token ids."""

    def __init__(self, fn: Callable[..., Any], is_async: bool, completion_ids: list[list[int]] | None,
                 name: str) -> None:
        self.fn, self.is_async, self.completion_ids, self.__name__ = fn, is_async, completion_ids, name

    def __call__(self, prompts: list[str], responses: list[str], answers: list[str], **problem_fields: Any) -> Any:
        return call_trl(self.fn, self.is_async, self.completion_ids, prompts, responses, answers, problem_fields)


def from_trl(fn: Callable[..., Any], tokenizer: Any = None, name: str | None = None) -> TRLReward:
    """Adapt a TRL ``GRPOTrainer`` reward function to llm-gym's ``fn(prompts, responses, answers, **fields)``.

    TRL calls ``fn(prompts=..., completions=..., completion_ids=..., **kwargs)`` with every dataset column
    (but ``prompt``) and ``trainer_state`` as keyword arguments, and reads one float (or None) per
    completion. The adapted function calls ``fn`` once per batch the same way, in TRL's standard
    (non-conversational) format: ``prompts`` and ``completions`` are lists of strings.

    - ``completion_ids``: without ``tokenizer``, the token ids the env sampled and scored (each response's
      real tokens, EOS included, as GRPOTrainer passes them; llm-gym envs pass them as the ``completion_ids``
      field); with ``tokenizer``, each response re-encoded without special tokens (no EOS). None when neither
      is available (a direct call without the field).
    - Dataset columns: ``answer`` (the gold answers), ``solution`` and ``problem_id`` (from the env's
      ``solutions`` and ``problem_ids`` fields), and every other problem field under its own name: the
      problem's extra columns (``ground_truth`` when ``answer_column="ground_truth"``, ``difficulty``,
      ``metadata``...).
    - ``trainer_state``: the env's :class:`~llm_gym.envs.problems.TrainerState` (``global_step``: the
      algorithm's optimizer steps so far), None on a direct call without it; ``log_extra`` and
      ``log_metric`` that log nothing.
    - An ``async def`` reward function (TRL 1.x runs those concurrently) is run with ``asyncio.run``.

    The result is an ordinary llm-gym reward function: ``SequenceEnv(reward_fn=from_trl(fn))``,
    ``CombinedReward``, the ``RewardFunction`` wrapper; it keeps ``fn``'s name (:func:`reward_fn_name`)
    for logging, and :func:`~llm_gym.rewards.call_reward_fn` validates what it returns (None = no opinion;
    NaN, which TRL tolerates, is rejected). With a ``timeout`` (``reward_timeout=`` of an env) it runs in a
    worker process that is killed when it overruns, provided ``fn`` is defined at module level (a lambda or
    a nested function cannot be sent there: its timeout falls back to a thread, with a warning).

    Args:
        fn: A TRL reward function, e.g. ``def reward_len(completions, **kwargs)``.
        tokenizer: A Hugging Face tokenizer object or :class:`~llm_gym.lm.LanguageModel` to re-encode the
            responses into ``completion_ids``; None (the default) passes the env's sampled ids. Checked now (a
            name such as ``"gpt2"`` is refused: load the tokenizer first).
        name: The name to log under; default ``reward_fn_name(fn)``.

    Returns:
        A :class:`TRLReward`: ``reward(prompts, responses, answers, **problem_fields) -> fn's list``, with
        ``__name__`` set and the TRL function in ``__wrapped__``.

    Raises:
        TypeError: ``fn`` is not callable, or ``tokenizer`` is not a tokenizer object whose
            ``encode(text, add_special_tokens=False)`` returns token ids.

    Example:
        >>> def accuracy(completions, answer, **kwargs):
        ...     return [float(a in c) for c, a in zip(completions, answer)]
        >>> from_trl(accuracy)(["1 + 1?"], ["It is 2"], ["2"])
        [1.0]
    """
    if not callable(fn):
        raise TypeError(f"from_trl: fn must be a TRL reward function fn(completions, **kwargs), got "
                        f"{type(fn).__name__}.")
    return TRLReward(fn, _checked_tokenizer(tokenizer), reward_fn_name(fn) if name is None else name)
